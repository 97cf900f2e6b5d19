"""Results larger than a termination message: framed through the runner's stdout (the container
log), with a pointer in the output file; one 1.5 MiB limit in both modes."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kudig_runner.protocol import (
    FRAME_LINE_MAX,
    FRAME_PREFIX,
    MAX_FRAME_LINES,
    MAX_RESULT_BYTES,
    MIN_OUTPUT_BYTES,
    ProtocolError,
    ResultPointer,
    TaskOutput,
    dumps_output,
    empty_output,
    encode_output,
    error_output,
    frame_result,
    normalize_output,
    read_framed_result,
    result_pointer,
    strip_frames,
    write_frame,
    write_output,
)
from runner_helpers import RUNNER_DIR, RunTask, find_python, task

LIMIT_MESSAGE = (
    "bytes of stored/exported params and generated subtasks (kudig's limit is 1572864 bytes = "
    "1.5 MiB per task); pass large data through files or external storage"
)


def output_with(**store: Any) -> TaskOutput:
    out = empty_output()
    out["store_params"] = dict(store)
    return out


def random_text(n: int, seed: int = 1) -> str:
    """`n` characters that gzip cannot shrink much (so the frame has many lines)."""
    rng = random.Random(seed)
    return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(n))


def framed(out: TaskOutput, max_bytes: int = 4096) -> tuple[ResultPointer, list[str]]:
    encoded = encode_output(out, max_bytes)
    assert encoded.error is None and encoded.frame
    pointer = result_pointer(json.loads(encoded.data))
    assert pointer is not None
    return pointer, [line.decode("ascii") for line in encoded.frame]


# --- encoding ----------------------------------------------------------------------------------


def test_small_output_is_written_as_is() -> None:
    out = output_with(k="v")
    encoded = encode_output(out, 4096)
    assert encoded.frame == [] and encoded.error is None
    assert json.loads(encoded.data) == out
    assert result_pointer(json.loads(encoded.data)) is None


def test_overflow_pointer_and_frame_format() -> None:
    out = output_with(blob=random_text(10_000))
    data = dumps_output(out)
    encoded = encode_output(out, 4096)
    doc = json.loads(encoded.data)
    assert len(encoded.data) < MIN_OUTPUT_BYTES
    assert set(doc) == {"result_in_log", "error"} and doc["error"] is None
    # a reader that knows no pointers sees a successful empty result, not an error
    assert normalize_output(doc)["error"] is None
    pointer = result_pointer(doc)
    assert pointer is not None
    assert pointer["bytes"] == len(data) and pointer["lines"] == len(encoded.frame) > 1
    for seq, line in enumerate(encoded.frame, 1):
        assert len(line) <= FRAME_LINE_MAX and line.endswith(b"\n") and line.count(b"\n") == 1
        prefix, sha12, counter, chunk = line.decode("ascii").split(" ")
        assert len(chunk) % 4 == 1  # whole base64 quanta, then "\n"
        assert prefix == FRAME_PREFIX and sha12 == pointer["sha256"][:12]
        assert counter == f"{seq}/{len(encoded.frame)}"
    assert read_framed_result(b"".join(encoded.frame).decode("ascii"), pointer) == out


def test_frame_is_deterministic() -> None:
    data = dumps_output(output_with(blob=random_text(20_000)))
    assert frame_result(data) == frame_result(data)


def test_boundary_of_the_result_limit() -> None:
    overhead = len(dumps_output(output_with(blob="")))
    exact = output_with(blob="x" * (MAX_RESULT_BYTES - overhead))
    assert len(dumps_output(exact)) == MAX_RESULT_BYTES
    for max_bytes in (None, 4096):
        encoded = encode_output(exact, max_bytes)
        assert encoded.error is None
    one_more = output_with(blob="x" * (MAX_RESULT_BYTES - overhead + 1))
    for max_bytes in (None, 4096):
        encoded = encode_output(one_more, max_bytes)
        assert encoded.frame == []
        assert encoded.error is not None and encoded.error["class"] == "ResultTooLarge"
        assert encoded.error["message"] == (
            f"Task result is too large: {MAX_RESULT_BYTES + 1} {LIMIT_MESSAGE}"
        )
        assert len(encoded.data) <= (max_bytes or MAX_RESULT_BYTES)


def test_error_outputs_are_trimmed_never_framed() -> None:
    backtrace = "".join(f"  frame {i}\n" for i in range(2000)) + "ValueError: the end\n"
    encoded = encode_output(error_output("m" * 10_000, "ValueError", backtrace), 4096)
    assert encoded.frame == [] and len(encoded.data) <= 4096
    assert encoded.error is not None and encoded.error["class"] == "ValueError"
    assert json.loads(encoded.data)["error"] == encoded.error
    # locally too an error output stays within the result limit
    huge = encode_output(error_output("m" * (MAX_RESULT_BYTES + 10)))
    assert huge.frame == [] and len(huge.data) <= MAX_RESULT_BYTES
    assert huge.error is not None and huge.error["message"].endswith("...(truncated)")


def test_unserialisable_output_is_an_error() -> None:
    encoded = encode_output(output_with(x=object()), 4096)
    assert encoded.error is not None and "not serializable" in encoded.error["message"]


# --- reading -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "doc",
    [
        {"result_in_log": "x"},
        {"result_in_log": {"sha256": "abc", "bytes": 1, "lines": 1}},
        {"result_in_log": {"sha256": "a" * 64, "bytes": True, "lines": 1}},
        {"result_in_log": {"sha256": "a" * 64, "bytes": MAX_RESULT_BYTES + 1, "lines": 1}},
        {"result_in_log": {"sha256": "a" * 64, "bytes": 10, "lines": MAX_FRAME_LINES + 1}},
        {"result_in_log": {"sha256": "a" * 64, "bytes": 10, "lines": 0}},
    ],
)
def test_bad_pointers(doc: dict[str, Any]) -> None:
    with pytest.raises(ProtocolError, match="result_in_log"):
        result_pointer(doc)


def test_not_pointers() -> None:
    assert result_pointer(empty_output()) is None
    assert result_pointer([]) is None
    assert result_pointer("result_in_log") is None


def test_noise_between_and_around_frame_lines() -> None:
    out = output_with(blob=random_text(30_000), more={"n": [1, 2, 3]})
    pointer, lines = framed(out)
    assert len(lines) >= 5
    # an earlier run in the same log (another result, another sha) must be ignored
    _, earlier = framed(output_with(blob=random_text(30_000, seed=2)))
    rng = random.Random(7)
    noise = [f"noise {i}\n" for i in range(200)]
    mixed = earlier + noise[:50] + lines + noise[50:]
    rng.shuffle(mixed)
    # a user's partial line (no newline) just before a frame line, and a CRLF log
    mixed.insert(3, "progress: 10%")
    text = "".join(mixed)
    assert read_framed_result(text, pointer) == out
    assert read_framed_result(text.replace("\n", "\r\n"), pointer) == out
    # the same frame twice (a log read twice, say) is still one result
    assert read_framed_result("".join(lines + noise + lines), pointer) == out
    # the log without any frame line is what the user wrote, byte for byte
    assert strip_frames(text) == "".join(line for line in mixed if not line.startswith(FRAME_PREFIX))
    assert FRAME_PREFIX not in strip_frames(text)
    assert strip_frames("a\nKUDIG-RESULT but not a frame\n") == "a\nKUDIG-RESULT but not a frame\n"


def test_frame_without_final_newline() -> None:
    out = output_with(blob=random_text(10_000))
    pointer, lines = framed(out)
    assert read_framed_result("".join(lines).rstrip("\n"), pointer) == out


def test_truncated_frame_is_a_clear_error() -> None:
    pointer, lines = framed(output_with(blob=random_text(20_000)))
    total = len(lines)
    kept = lines[:2] + lines[4:]
    with pytest.raises(
        ProtocolError, match=rf"^result frame incomplete: {total - 2} of {total} lines found in the log$"
    ):
        read_framed_result("".join(kept), pointer)
    with pytest.raises(ProtocolError, match=rf"incomplete: 0 of {total} lines"):
        read_framed_result("no frame here\n", pointer)


def test_corrupt_frame_is_a_clear_error() -> None:
    pointer, lines = framed(output_with(blob=random_text(20_000)))
    broken = list(lines)
    head, chunk = broken[1].rsplit(" ", 1)
    broken[1] = f"{head} {'A' if chunk[0] != 'A' else 'B'}{chunk[1:]}"
    with pytest.raises(ProtocolError, match="does not match the pointer"):
        read_framed_result("".join(broken), pointer)
    wrong_size: ResultPointer = {**pointer, "bytes": pointer["bytes"] - 1}
    with pytest.raises(ProtocolError, match="corrupt"):
        read_framed_result("".join(lines), wrong_size)


def test_reader_does_not_inflate_more_than_the_pointer_says() -> None:
    # the pointer comes from the task's own container: a "bomb" must not be inflated in full
    bomb = b'{"store_params":{"x":"' + b"x" * (50 * 1024 * 1024) + b'"}}'
    pointer, lines = frame_result(bomb)
    small: ResultPointer = {**pointer, "bytes": 1000}
    with pytest.raises(ProtocolError, match="corrupt"):
        read_framed_result(b"".join(lines).decode("ascii"), small)


@settings(max_examples=60, deadline=None)
@given(
    params=st.dictionaries(
        st.text(min_size=1, max_size=20),
        st.one_of(st.text(max_size=3000), st.integers(), st.booleans(), st.none()),
        max_size=8,
    ),
    limit=st.integers(MIN_OUTPUT_BYTES, 4096),
    noise_seed=st.integers(0, 1000),
)
def test_any_output_round_trips(params: dict[str, Any], limit: int, noise_seed: int) -> None:
    out = output_with(**params)
    encoded = encode_output(out, limit)
    assert len(encoded.data) <= limit
    pointer = result_pointer(json.loads(encoded.data))
    if pointer is None:
        assert encoded.frame == [] and normalize_output(json.loads(encoded.data)) == out
        return
    rng = random.Random(noise_seed)
    text: list[str] = []
    for line in encoded.frame:
        text += [f"n{rng.random()}\n"] * rng.randrange(3) + [line.decode("ascii")]
    assert read_framed_result("".join(text), pointer) == out


# --- writing -----------------------------------------------------------------------------------


def test_write_output_frames_to_the_fd(tmp_path: Path) -> None:
    out = output_with(blob=random_text(50_000))
    log = tmp_path / "log"
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        assert write_output(tmp_path / "out.json", out, max_bytes=4096, frame_fd=fd) is None
    finally:
        os.close(fd)
    pointer = result_pointer(json.loads((tmp_path / "out.json").read_bytes()))
    assert pointer is not None
    assert read_framed_result(log.read_text(), pointer) == out


def test_write_frame_to_a_nonblocking_pipe() -> None:
    # a user's process sharing our stdout may have set O_NONBLOCK on it
    data = dumps_output(output_with(blob=random_text(300_000)))
    pointer, lines = frame_result(data)
    r, w = os.pipe()
    os.set_blocking(w, False)
    got: list[bytes] = []

    def slow_reader() -> None:
        with os.fdopen(r, "rb", buffering=0) as f:
            while True:
                time.sleep(0.001)
                chunk = f.read(1000)
                if not chunk:
                    return
                got.append(chunk)

    reader = threading.Thread(target=slow_reader)
    reader.start()
    try:
        write_frame(w, lines)
    finally:
        os.close(w)
        reader.join(30)
    assert b"".join(got) == b"".join(lines)
    assert json.loads(json.dumps(read_framed_result(b"".join(got).decode(), pointer))) == json.loads(data)


# --- the runner as a subprocess ------------------------------------------------------------------

STORE = """
import json, random

import digdag


def _text(n, seed):
    rng = random.Random(seed)
    return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(n))


def store(n, seed=1):
    print("user output before the result")
    digdag.env.store(blob=_text(n, seed), n=n)
    digdag.env.export(nested={"k": ["v", 1, None, True]}, unicode="é" * 100)
"""


@pytest.fixture
def store_project(project: Path) -> Path:
    (project / "big.py").write_text(STORE)
    return project


def expected(n: int, seed: int = 1) -> dict[str, Any]:
    out = empty_output()
    out["store_params"] = {"blob": random_text(n, seed), "n": n}
    out["export_params"] = {"nested": {"k": ["v", 1, None, True]}, "unicode": "é" * 100}
    result: dict[str, Any] = dict(out)
    return result


def store_task(n: int) -> dict[str, Any]:
    return task("py", "big.store", params={"n": n})


@pytest.mark.parametrize("n", [10_000, 1024 * 1024])
def test_cli_large_result_round_trips_through_the_log(run_task: RunTask, store_project: Path, n: int) -> None:
    result = run_task(store_task(n), max_bytes=4096)
    assert result.rc == 0, result.stderr
    assert len(result.raw) <= 4096
    pointer = result_pointer(result.output)
    assert pointer is not None
    assert read_framed_result(result.stdout, pointer) == expected(n)
    assert strip_frames(result.stdout) == "user output before the result\n"
    frame = [line for line in result.stdout.encode().splitlines(keepends=True) if b"KUDIG-RESULT" in line]
    assert len(frame) == pointer["lines"]
    assert all(len(line) <= FRAME_LINE_MAX for line in frame)


def test_cli_small_result_stays_in_the_output_file(run_task: RunTask, store_project: Path) -> None:
    result = run_task(store_task(100), max_bytes=4096)
    assert result.rc == 0 and result.output == expected(100)
    assert FRAME_PREFIX not in result.stdout


def test_cli_local_mode_writes_large_result_to_the_file(run_task: RunTask, store_project: Path) -> None:
    result = run_task(store_task(1024 * 1024))
    assert result.rc == 0, result.stderr
    assert result.output == expected(1024 * 1024)
    assert FRAME_PREFIX not in result.stdout


@pytest.mark.parametrize("max_bytes", [None, 4096])
def test_cli_result_over_the_limit_fails_in_both_modes(
    run_task: RunTask, store_project: Path, max_bytes: int | None
) -> None:
    result = run_task(store_task(2 * 1024 * 1024), max_bytes=max_bytes)
    assert result.rc == 1
    assert result.error is not None and result.error["class"] == "ResultTooLarge"
    assert result.error["message"].startswith("Task result is too large: 2097")
    assert result.error["message"].endswith(LIMIT_MESSAGE)
    assert "kudig's limit is 1572864 bytes = 1.5 MiB per task" in result.stderr
    assert FRAME_PREFIX not in result.stdout
    assert len(result.raw) <= (max_bytes or MAX_RESULT_BYTES)


def test_cli_under_python38(run_task: RunTask, store_project: Path) -> None:
    python = find_python("3.8")
    if python is None:
        pytest.skip("no python3.8 here")
    result = run_task(store_task(200_000), max_bytes=4096, python=python)
    assert result.rc == 0, result.stderr
    assert result.result == expected(200_000)


def test_cli_with_a_concurrent_writer_on_the_same_stdout(tmp_path: Path, store_project: Path) -> None:
    """Another process writes to the container's stdout while the frame is written: its lines
    land between ours, never inside one."""
    in_file = tmp_path / "in.json"
    out_file = tmp_path / "out.json"
    in_file.write_text(json.dumps(store_task(1024 * 1024)))
    runner = [sys.executable, "-m", "kudig_runner", "--input", str(in_file), "--output", str(out_file)]
    script = textwrap.dedent(
        """
        (i=0; while :; do i=$((i+1)); echo "noise $i from a background writer"; done) &
        bg=$!
        "$@"
        rc=$?
        kill $bg
        exit $rc
        """
    )
    env = dict(os.environ, PYTHONPATH=str(RUNNER_DIR))
    done = subprocess.run(
        ["sh", "-c", script, "sh", *runner, "--max-output-bytes", "4096"],
        cwd=store_project,
        env=env,
        capture_output=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    log = done.stdout.decode()
    pointer = result_pointer(json.loads(out_file.read_bytes()))
    assert pointer is not None
    assert read_framed_result(log, pointer) == expected(1024 * 1024)
    rest = strip_frames(log)
    # (the user's print is two writes, "text" and "\n": a noise line may land between them)
    assert "user output before the result" in rest
    # no piece of a frame line is left: noise never got inside one
    assert FRAME_PREFIX not in rest
    assert all(len(line) < 200 for line in rest.splitlines())


def test_cli_bad_max_output_bytes(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "kudig_runner", "--input", "x", "--output", "y", "--max-output-bytes", "100"],
        env=dict(os.environ, PYTHONPATH=str(RUNNER_DIR)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "at least 256" in done.stderr
