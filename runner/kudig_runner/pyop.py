"""`py>`: digdag's PyOperatorFactory, host side.

Runs `python py_runner.py in.json out.json` (py_runner.py is this package's standalone runner
script) in the workspace plus `workdir`, and turns its output into a TaskOutput.

* `python`: `py: {python: ...}` or a plain `python` param; a string (one program) or an argv list;
  default: the interpreter running this runner (`sys.executable`).
* The command is `config["_command"]`. With no command and a `script` param, digdag's
  undocumented form: the script text is run instead of the runner, as `python script in out`,
  and must write the output itself (`{"params": ...}` in, digdag's output format out).
* Environment: the runner's own minus the secret-carrying variables, plus `_env` (with
  `${secret:...}` substituted), and PYTHONUNBUFFERED=1 unless set, so prints reach the log as
  they happen. Parameters are not turned into env vars (unlike sh>).
* The params given to the script are everything the task sees (digdag passes its whole config,
  `_command` included), with the `py:` map's entries as defaults.
* Errors: `Python command failed with code N` and, when the script reported one,
  `Error messages from python: <message> (<class>)` on the next line; the error's class and
  backtrace are Python's.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from .proc import run_streaming, task_timeout
from .protocol import (
    RunnerError,
    TaskInput,
    TaskOutput,
    error_output,
    merged_params,
    normalize_output,
)
from .shell import base_environment, task_cwd, task_env

PY_RUNNER = Path(__file__).with_name("py_runner.py")


def python_argv(value: object) -> list[str]:
    if value is None or value == "" or value == []:
        return [sys.executable or "python3"]
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(a, str) for a in value):
        return list(value)
    raise RunnerError("py> option 'python' must be a string or a list of strings", "ConfigError")


def collect_output(raw: bytes | None, code: int, language: str) -> TaskOutput:
    """The task's output from a script runner's output file (`raw`, None when it wrote none) and
    exit status, for py> and rb> (`language`: "Python", "Ruby"), as digdag words it:
    `<language> command failed with code N`, plus `Error messages from <language>: <message>
    (<class>)` with the script's own error class and backtrace when it reported one."""
    output: TaskOutput | None = None
    if raw:
        try:
            output = normalize_output(json.loads(raw.decode("utf-8")))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            output = error_output(f"{language} output file is not valid JSON: {e}", "ProtocolError")
    if code != 0:
        message = f"{language} command failed with code {code}"
        if output is not None and output["error"] is not None:
            err = output["error"]
            message += f"\nError messages from {language.lower()}: {err['message']} ({err['class']})"
            return error_output(message, err["class"], err["backtrace"])
        return error_output(message, "CommandFailed")
    if output is None:
        return error_output(f"{language} command wrote no output file", "ProtocolError")
    return output


def run_py(task_input: TaskInput, cwd: str | os.PathLike[str]) -> TaskOutput:
    params = merged_params(task_input, "py")
    command = params.get("_command")
    script = params.get("script")
    if command is not None and not isinstance(command, str):
        raise RunnerError(
            "py> command must be a string: module.function or module.Class.method", "ConfigError"
        )
    if command is None and not isinstance(script, str):
        raise RunnerError("py> requires a command (module.function or module.Class.method)", "ConfigError")
    python = python_argv(params.get("python"))
    workdir = task_cwd(task_input, cwd)
    secrets = task_input["secrets"]
    environment = base_environment(secrets)
    environment.update(task_env(task_input["env"], secrets))
    # Live logs: a python writing to a pipe would otherwise block-buffer its prints.
    environment.setdefault("PYTHONUNBUFFERED", "1")

    tmp = tempfile.mkdtemp(prefix="kudig-py-")
    try:
        in_file = Path(tmp) / "input.json"
        out_file = Path(tmp) / "output.json"
        if command is not None:
            runner = str(PY_RUNNER)
            in_data = {"command": command, "params": params}
        else:
            assert isinstance(script, str)
            script_file = Path(tmp) / "script.py"
            script_file.write_text(script, encoding="utf-8")
            runner = str(script_file)
            in_data = {"params": params}
        in_file.write_text(json.dumps(in_data, ensure_ascii=False), encoding="utf-8")
        try:
            code = run_streaming(
                [*python, runner, str(in_file), str(out_file)], workdir, environment, task_timeout(task_input)
            )
        except OSError as e:
            raise RunnerError(f"Cannot run python {python[0]!r}: {e.strerror or e}") from None
        raw = out_file.read_bytes() if out_file.exists() else None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    return collect_output(raw, code, "Python")
