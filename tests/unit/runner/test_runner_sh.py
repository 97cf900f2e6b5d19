"""sh>: environment mapping, _env, secrets, exit codes, workdir, shell option, live output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from kudig_runner.secrets import SecretNotFoundError, substitute_secrets
from kudig_runner.shell import env_value, sh_environment
from runner_helpers import RUNNER_DIR, RunTask, task


def test_env_value_mapping() -> None:
    assert env_value("plain") == "plain"
    assert env_value(1) == "1"
    assert env_value(1.5) == "1.5"
    assert env_value(True) == "true"
    assert env_value(False) == "false"
    assert env_value(None) == "null"
    assert env_value({"a": 1, "b": [1, "x"], "c": None}) == '{"a":1,"b":[1,"x"],"c":null}'
    assert env_value(["é", {"k": True}]) == '["é",{"k":true}]'


def test_sh_environment_layers() -> None:
    env = sh_environment(
        {"name": "p", "HOME": "/param/home", "a-b": "x", "1x": "y", "ok_1": {"k": 1}, "over": "param"},
        {"over": "env", "num": 5},
        {"HOME": "/base/home", "PATH": "/bin", "over": "base"},
    )
    assert env["name"] == "p"
    assert env["HOME"] == "/param/home"  # params override the base environment, as in digdag
    assert env["PATH"] == "/bin"
    assert "a-b" not in env and "1x" not in env
    assert env["ok_1"] == '{"k":1}'
    assert env["over"] == "env"  # _env wins over params
    assert env["num"] == "5"


def test_sh_environment_skips_values_exec_cannot_take() -> None:
    env = sh_environment({"nul": "a\0b", "huge": "x" * 200_000, "fine": "y"}, {}, {})
    assert env == {"fine": "y"}


def test_substitute_secrets() -> None:
    secrets = {"db.password": "DB_PW", "k": "K"}
    environ = {"DB_PW": "pa$$\\1", "K": "v"}
    assert substitute_secrets(
        "x ${secret:db.password} ${secret: k } ${HOME:-d} ${foo}", secrets, environ
    ) == ("x pa$$\\1 v ${HOME:-d} ${foo}")
    try:
        substitute_secrets("${secret:nope}", secrets, environ)
    except SecretNotFoundError as e:
        assert str(e) == "Secret not found: nope"
    else:
        raise AssertionError("expected SecretNotFoundError")
    # a mapped key whose variable is missing is "not found" too
    try:
        substitute_secrets("${secret:k}", secrets, {})
    except SecretNotFoundError as e:
        assert str(e) == "Secret not found: k"
    else:
        raise AssertionError("expected SecretNotFoundError")


def test_params_become_env(run_task: RunTask) -> None:
    params = {
        "s": "hello world",
        "i": 42,
        "f": 1.5,
        "t": True,
        "n": None,
        "m": {"a": 1, "b": ["x", "é"]},
        "l": [1, 2],
        "bad-key": "ignored",
    }
    script = 'for v in s i f t n m l; do eval "printf \'%s=%s\\n\' $v \\"\\$$v\\""; done; env | grep -c "^bad-key=" || true'
    result = run_task(task("sh", script, params=params))
    assert result.rc == 0, result.stderr
    assert result.error is None
    lines = result.stdout.splitlines()
    assert lines[:7] == [
        "s=hello world",
        "i=42",
        "f=1.5",
        "t=true",
        "n=null",
        'm={"a":1,"b":["x","é"]}',
        "l=[1,2]",
    ]
    assert lines[7] == "0"


def test_env_overrides_params_and_process_env(run_task: RunTask) -> None:
    result = run_task(
        task(
            "sh", 'echo "$x $FROM_PARENT $only_env"', params={"x": "param"}, env={"x": "env", "only_env": 1}
        ),
        extra_env={"FROM_PARENT": "parent"},
    )
    assert result.rc == 0
    assert result.stdout.strip() == "env parent 1"


def test_invalid_env_key(run_task: RunTask) -> None:
    result = run_task(task("sh", "true", env={"bad-name": "x"}))
    assert result.rc == 1
    assert result.error is not None and result.error["message"] == "Invalid _env key name: bad-name"


def test_secrets_in_script_and_env(run_task: RunTask) -> None:
    result = run_task(
        task(
            "sh",
            'echo "script:${secret:db.password}"; echo "env:$PW"; env | grep -c ^KUDIG_SECRET_DB= || true; echo "${UNSET:-default}"',
            env={"PW": "${secret:db.password}"},
            secrets={"db.password": "KUDIG_SECRET_DB"},
        ),
        extra_env={"KUDIG_SECRET_DB": "hunter2"},
    )
    assert result.rc == 0, result.stdout
    # the variable carrying the secret is not passed on: only ${secret:...} and _env reveal it
    assert result.stdout.splitlines() == ["script:hunter2", "env:hunter2", "0", "default"]


def test_secret_not_found(run_task: RunTask) -> None:
    result = run_task(task("sh", "echo ${secret:nope}", secrets={"other": "X"}), extra_env={"X": "v"})
    assert result.rc == 1
    assert result.error is not None
    assert result.error["message"] == "Secret not found: nope"
    assert result.stdout == ""  # the script did not run


def test_secret_not_found_in_env(run_task: RunTask) -> None:
    result = run_task(task("sh", "true", env={"A": "${secret:missing.key}"}))
    assert result.error is not None and result.error["message"] == "Secret not found: missing.key"


def test_exit_code(run_task: RunTask) -> None:
    result = run_task(task("sh", "echo before; exit 3"))
    assert result.rc == 1
    assert result.error is not None
    assert result.error["message"] == "Command failed with code 3 (runtime)"
    assert result.stdout == "before\n"
    assert "Command failed with code 3" in result.stderr


def test_stderr_is_merged_into_stdout(run_task: RunTask) -> None:
    result = run_task(task("sh", "echo one; echo two >&2; echo three"))
    assert result.rc == 0
    assert result.stdout.splitlines() == ["one", "two", "three"]


def test_multiline_script(run_task: RunTask) -> None:
    result = run_task(task("sh", "a=1\nif [ $a = 1 ]; then\n  echo yes\nfi\n"))
    assert result.stdout == "yes\n"


def test_workdir(run_task: RunTask, project: Path) -> None:
    (project / "sub" / "dir").mkdir(parents=True)
    result = run_task(task("sh", "pwd", workdir="sub/dir"))
    assert result.rc == 0
    assert Path(result.stdout.strip()).resolve() == (project / "sub" / "dir").resolve()

    missing = run_task(task("sh", "pwd", workdir="nope"))
    assert missing.error is not None and "Working directory not found: nope" in missing.error["message"]

    outside = run_task(task("sh", "pwd", workdir="../.."))
    assert outside.error is not None and "outside the project directory" in outside.error["message"]


def test_shell_option(run_task: RunTask) -> None:
    # `_export: {sh: {shell: [...]}}` arrives in params; -e stops at the first failing command
    result = run_task(task("sh", "false\necho after", params={"sh": {"shell": ["/bin/sh", "-e"]}}))
    assert result.rc == 1
    assert result.error is not None and result.error["message"] == "Command failed with code 1 (runtime)"
    assert "after" not in result.stdout

    bad = run_task(task("sh", "true", config={"sh": {"shell": ["/no/such/shell"]}}))
    assert bad.error is not None and "Cannot run shell '/no/such/shell'" in bad.error["message"]


def test_output_is_streamed_live(tmp_path: Path, project: Path) -> None:
    in_file = tmp_path / "in.json"
    in_file.write_text(json.dumps(task("sh", "echo first; sleep 3; echo second")))
    env = dict(os.environ, PYTHONPATH=str(RUNNER_DIR))
    argv = [
        sys.executable,
        "-m",
        "kudig_runner",
        "--input",
        str(in_file),
        "--output",
        str(tmp_path / "o.json"),
    ]
    started = time.monotonic()
    proc = subprocess.Popen(argv, cwd=project, env=env, stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        elapsed = time.monotonic() - started
        assert first == b"first\n"
        assert elapsed < 2.5, f"first line arrived after {elapsed:.1f}s: output is buffered"
        assert proc.stdout.read() == b"second\n"
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == 0


def test_sigterm_is_forwarded(tmp_path: Path, project: Path) -> None:
    in_file = tmp_path / "in.json"
    in_file.write_text(json.dumps(task("sh", "echo started; sleep 30; echo not-reached")))
    env = dict(os.environ, PYTHONPATH=str(RUNNER_DIR))
    argv = [
        sys.executable,
        "-m",
        "kudig_runner",
        "--input",
        str(in_file),
        "--output",
        str(tmp_path / "o.json"),
    ]
    proc = subprocess.Popen(argv, cwd=project, env=env, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"started\n"
    started = time.monotonic()
    proc.terminate()
    rest = proc.stdout.read()
    proc.wait(timeout=20)
    assert time.monotonic() - started < 10
    assert b"not-reached" not in rest
    assert proc.returncode == 1
    error = json.loads((tmp_path / "o.json").read_text())["error"]
    assert error["message"] == "Command failed with code 143 (runtime)"


def test_timeout_stops_the_whole_process_group(tmp_path: Path) -> None:
    import time

    from kudig_runner.dispatch import run_task

    marker = tmp_path / "late"
    started = time.monotonic()
    out = run_task(
        {
            "task_name": "+wf+slow",
            "type": "sh",
            "config": {"_command": f"(sleep 3; touch {marker}) & sleep 30", "timeout": "1s"},
            "params": {},
            "env": {},
            "secrets": {},
            "workdir": "",
        },
        tmp_path,
    )
    assert time.monotonic() - started < 10
    assert out["error"] is not None
    assert out["error"]["message"] == "Task timed out after 1s (timeout: 1s); it was stopped"
    time.sleep(3.5)
    assert not marker.exists(), "the background job of the group was stopped too"


def test_a_bad_timeout_is_a_clear_error(tmp_path: Path) -> None:
    from kudig_runner.dispatch import run_task

    out = run_task(
        {
            "task_name": "+wf+t",
            "type": "sh",
            "config": {"_command": "true", "timeout": "soon"},
            "params": {},
            "env": {},
            "secrets": {},
            "workdir": "",
        },
        tmp_path,
    )
    assert out["error"] is not None
    assert out["error"]["message"].startswith(
        "Invalid timeout: 'soon' (expected seconds, or a duration like 30s"
    )
