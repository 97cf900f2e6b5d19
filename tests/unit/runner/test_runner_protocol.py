"""protocol.py: input validation, output normalisation and trimming outputs to a size limit
(the result frame through the log: test_runner_result_frame.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from kudig_runner.protocol import (
    ProtocolError,
    dumps_output,
    empty_output,
    error_output,
    fit_output,
    merged_params,
    normalize_output,
    parse_input,
    read_input,
    write_output,
)
from runner_helpers import RunTask, task


def test_read_input_fills_defaults(tmp_path: Path) -> None:
    path = tmp_path / "in.json"
    path.write_text(json.dumps({"type": "sh", "config": {"_command": "true"}}))
    ti = read_input(path)
    assert ti == {
        "task_name": "",
        "type": "sh",
        "config": {"_command": "true"},
        "params": {},
        "env": {},
        "secrets": {},
        "workdir": "",
    }


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "must be a JSON object"),
        ({}, "'type' must be a non-empty string"),
        ({"type": "sh", "params": []}, "'params' must be an object"),
        ({"type": "sh", "secrets": {"k": 1}}, r"secrets\['k'\]"),
        ({"type": "sh", "workdir": 3}, "'workdir' must be a string"),
    ],
)
def test_parse_input_rejects_bad_documents(data: object, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        parse_input(data)


def test_read_input_bad_json(tmp_path: Path) -> None:
    path = tmp_path / "in.json"
    path.write_text("{nope")
    with pytest.raises(ProtocolError, match="not valid JSON"):
        read_input(path)


def test_normalize_output() -> None:
    assert normalize_output({}) == empty_output()
    out = normalize_output(
        {
            "store_params": {"a": 1},
            "export_params": {"b": 2},
            "subtask_config": {},
            "error": {"class": "ValueError", "message": "m", "backtrace": ["l1\n", "l2\n"]},
            "extra": 1,
        }
    )
    assert out == {
        "store_params": {"a": 1},
        "export_params": {"b": 2},
        "subtask_config": None,
        "reset_store_params": [],
        "error": {"class": "ValueError", "message": "m", "backtrace": "l1\nl2\n"},
    }
    assert normalize_output({"store_params": []})["error"] is not None
    assert normalize_output("x")["error"] is not None


def test_merged_params_nested_defaults() -> None:
    ti = parse_input(
        task(
            "py",
            "m.f",
            params={"py": {"python": "python3", "x": 1}, "a": 1, "x": 0},
            config={"py": {"python": ["py", "-u"]}, "a": 2},
        )
    )
    merged = merged_params(ti, "py")
    assert merged["python"] == ["py", "-u"]  # config's nested map wins over params'
    assert merged["x"] == 0  # a nested entry is only a default
    assert merged["a"] == 2
    assert merged["_command"] == "m.f"


def test_small_output_is_unchanged() -> None:
    out = empty_output()
    out["store_params"] = {"k": "v"}
    assert json.loads(fit_output(out, 4096)) == out


def test_too_large_success_becomes_error_that_fits() -> None:
    out = empty_output()
    out["store_params"] = {"blob": "x" * 5000}
    data = fit_output(out, 4096)
    assert len(data) <= 4096
    error = json.loads(data)["error"]
    assert error["class"] == "ResultTooLarge"
    # fit_output has no log to overflow into (encode_output does): the limit is the one given
    assert error["message"].startswith(f"Task result is too large: {len(dumps_output(out))} bytes of")
    assert "(the limit here is 4096 bytes)" in error["message"]
    assert json.loads(data)["store_params"] == {}


def test_too_large_multibyte_is_measured_in_bytes() -> None:
    out = empty_output()
    out["store_params"] = {"blob": "é" * 2100}  # 2100 chars, 4200 bytes
    error = json.loads(fit_output(out, 4096))["error"]
    assert error is not None and f"too large: {len(dumps_output(out))} bytes" in error["message"]
    assert len(dumps_output(out)) > 4200


def test_large_error_is_trimmed_keeping_backtrace_tail() -> None:
    backtrace = "".join(f"  frame {i}\n" for i in range(2000)) + "ValueError: the end\n"
    out = error_output("m" * 10000, "ValueError", backtrace)
    data = fit_output(out, 4096)
    assert len(data) <= 4096
    error = json.loads(data)["error"]
    assert error["class"] == "ValueError"
    assert error["message"].startswith("mmm") and error["message"].endswith("...(truncated)")
    # the message is cut first only as far as needed; what room is left goes to the backtrace tail
    assert error["backtrace"] == "" or error["backtrace"].endswith("ValueError: the end\n")


def test_large_backtrace_alone_is_trimmed() -> None:
    backtrace = "".join(f"  frame {i}\n" for i in range(2000)) + "ValueError: the end\n"
    data = fit_output(error_output("short", "ValueError", backtrace), 4096)
    assert 3500 < len(data) <= 4096
    error = json.loads(data)["error"]
    assert error["message"] == "short"
    assert error["backtrace"].startswith("...(truncated)\n")
    assert error["backtrace"].endswith("frame 1999\nValueError: the end\n")


def test_write_output(tmp_path: Path) -> None:
    path = tmp_path / "out.json"
    write_output(path, error_output("x" * 100000), max_bytes=4096)
    assert len(path.read_bytes()) <= 4096
    assert json.loads(path.read_bytes())["error"]["message"].startswith("xxx")


def test_cli_unknown_type(run_task: RunTask) -> None:
    result = run_task(task("no_such_op", "x"))
    assert result.rc == 1
    assert result.error is not None
    assert "Unknown operator type 'no_such_op'" in result.error["message"]
    assert "sh>" in result.error["message"] and "py>" in result.error["message"]


def test_cli_bad_input_still_writes_output(run_task: RunTask) -> None:
    result = run_task("{not json")
    assert result.rc == 2
    assert result.error is not None and result.error["message"].startswith("Invalid task input")


def test_cli_output_limit(run_task: RunTask) -> None:
    result = run_task(task("sh", "echo hi", params={"x": 1}), max_bytes=4096)
    assert result.rc == 0 and result.error is None
    assert len(result.raw) <= 4096


@pytest.mark.parametrize("limit", [256, 300, 512, 1000])
def test_any_output_fits_small_limits(limit: int) -> None:
    for out in (
        error_output("é" * 3000, "C" * 500, "b" * 3000),
        error_output("m", "ValueError", ""),
        {**empty_output(), "export_params": {"k": "v" * 10000}},
    ):
        data = fit_output(out, limit)  # type: ignore[arg-type]
        assert len(data) <= limit
        assert json.loads(data)["error"] is not None or out["error"] is None


def test_limit_below_minimum_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 256"):
        fit_output(empty_output(), 100)


def test_input_parts_round_trip(tmp_path: Path) -> None:
    import random
    import subprocess
    import sys

    from kudig_runner.protocol import INPUT_PART_BYTES, INPUT_PART_KEY, read_input_parts, split_input

    rng = random.Random(3)  # incompressible: two parts
    big = "".join(rng.choices("abcdefghijklmnopqrstuvwxyz0123456789", k=2_000_000))
    doc = {"type": "sh", "config": {"_command": "echo ${#BIG}", "BIG": big}}
    text = json.dumps(doc)
    parts = split_input(text)
    assert len(parts) >= 2 and all(len(p) <= INPUT_PART_BYTES for p in parts)
    for i, part in enumerate(parts):
        (tmp_path / "in" / str(i)).mkdir(parents=True)
        (tmp_path / "in" / str(i) / INPUT_PART_KEY).write_bytes(part)
    assert read_input_parts(tmp_path / "in") == text
    out = tmp_path / "out.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "kudig_runner",
            "--input-parts",
            str(tmp_path / "in"),
            "--output",
            str(out),
            "--cwd",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(Path(__file__).resolve().parents[3] / "runner")},
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(out.read_text())["error"] is None
    (tmp_path / "in" / "1" / INPUT_PART_KEY).write_bytes(b"garbage")
    with pytest.raises(ProtocolError, match="corrupt"):
        read_input_parts(tmp_path / "in")


def test_operators_are_registered_by_name_and_imported_when_a_task_runs() -> None:
    """`kudig check` and the compiler read the operator names on every start: no operator module
    is imported for that; each registered name resolves to a callable, with its secret keys."""
    import subprocess
    import sys

    from kudig_runner import dispatch

    code = (
        "import sys, kudig_runner.dispatch as d; import kudig.compiler; "
        "print(sorted(m for m in sys.modules if m.startswith('kudig_runner.') and m.rsplit('.', 1)[1] "
        "in {'shell', 'pyop', 'rbop', 'pg', 'param', 'http_op', 'mail_op', 's3_wait', 'td', 'td_family'}))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "[]"
    for name in dispatch.OPERATORS:
        assert callable(dispatch.operator(name)), name
        assert all(isinstance(k, str) for k in dispatch.operator_secret_keys(name, {})), name
    assert dispatch.operator("nope") is None
    assert "td.apikey" in dispatch.operator_secret_keys("td_wait", {})
    assert dispatch.operator_secret_keys("pg", {"password_override": "db.pw"})[-1] == "db.pw"
