"""`sh>`: digdag's ShOperatorFactory.

The evaluated command (`config["_command"]`, with `${secret:...}` substituted) is written to a temp
file `runner.sh` and run with `/bin/sh <file>` (or `sh: {shell: [argv...]}` + the file) in the
workspace plus the task's `workdir`, stderr merged into stdout and streamed live.

Environment (`sh_environment`), lowest priority first:

1. the runner's own environment, minus the variables that carry secret values (the ones named in
   the input's `secrets` map): a script sees a secret only through `${secret:...}` or `_env`;
2. every parameter whose name matches `[A-Za-z_][A-Za-z0-9_]*` (digdag `CommandOperators.
   isValidEnvKey`), converted as digdag does with Jackson's `JsonNode.toString()`:
   strings as is; `true`/`false`; `null` as the text `null`; numbers as JSON numbers
   (Python's float text: `1e+20` where Java prints `1.0E20`); maps and arrays as compact JSON
   (`{"a":1,"b":[1,2]}`, non-ASCII unescaped). Like digdag this includes underscore keys such as
   `_command`; unlike digdag, an entry that no exec() could accept is left out (a value with a
   NUL character, or `NAME=value` longer than Linux's 128 KiB per-string limit);
3. `_env` (the task's own, evaluated): values with `${secret:...}` substituted, non-strings
   converted as above; a name not matching the pattern fails the task with digdag's
   `Invalid _env key name: X`.

digdag computes "workspace appended to PATH" but never applies it; neither do we.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .proc import run_streaming, task_timeout
from .protocol import RunnerError, TaskInput, TaskOutput, empty_output, merged_params
from .secrets import secret_env_names, substitute_secrets

VALID_ENV_KEY = re.compile(r"[a-zA-Z_][a-zA-Z_0-9]*")
MAX_ENV_STRING = 131072 - 1  # MAX_ARG_STRLEN (32 pages) including the trailing NUL


def is_valid_env_key(key: str) -> bool:
    return VALID_ENV_KEY.fullmatch(key) is not None


def env_value(value: Any) -> str:
    """A parameter value as an environment string, as digdag's Jackson `JsonNode.toString()`."""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def fits_exec(key: str, value: str) -> bool:
    return "\0" not in value and len(key.encode()) + 1 + len(value.encode("utf-8", "surrogateescape")) <= (
        MAX_ENV_STRING
    )


def base_environment(secrets: Mapping[str, str], environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The runner's environment without the variables that carry secret values."""
    environ = os.environ if environ is None else environ
    hidden = secret_env_names(secrets)
    return {k: v for k, v in environ.items() if k not in hidden}


def task_env(
    env: Mapping[str, Any],
    secrets: Mapping[str, str] | None = None,
    secret_environ: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The evaluated `_env` as strings, `${secret:...}` substituted. Raises RunnerError on a bad name."""
    out: dict[str, str] = {}
    for key, value in env.items():
        if not is_valid_env_key(key):
            raise RunnerError(f"Invalid _env key name: {key}", "ConfigError")
        out[key] = substitute_secrets(env_value(value), secrets or {}, secret_environ)
    return out


def sh_environment(
    params: Mapping[str, Any],
    env: Mapping[str, Any],
    base_env: Mapping[str, str],
    *,
    secrets: Mapping[str, str] | None = None,
    secret_environ: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """digdag's sh> process environment: base_env, then valid-name params, then `_env`.

    `secrets`/`secret_environ` resolve `${secret:key}` in `_env` values (default: os.environ).
    """
    result = dict(base_env)
    for key, value in params.items():
        if not is_valid_env_key(key):
            continue
        text = env_value(value)
        if fits_exec(key, text):
            result[key] = text
    result.update(task_env(env, secrets, secret_environ))
    return result


def task_cwd(task_input: TaskInput, cwd: str | os.PathLike[str]) -> Path:
    """The directory a task runs in: the workspace plus `workdir` (which must stay inside it)."""
    root = Path(os.path.abspath(cwd))
    workdir = task_input["workdir"]
    # A lexical check: `..` may not climb out, but symlinks inside the project may point anywhere.
    path = Path(os.path.normpath(root / workdir)) if workdir else root
    if path != root and root not in path.parents:
        raise RunnerError(f"workdir {workdir!r} is outside the project directory", "ConfigError")
    if not path.is_dir():
        raise RunnerError(f"Working directory not found: {workdir}", "ConfigError")
    return path


def shell_argv(params: Mapping[str, Any]) -> list[str]:
    shell = params.get("shell")
    if shell is None or shell == []:
        return ["/bin/sh"]
    if isinstance(shell, str):
        return [shell]
    if isinstance(shell, list) and all(isinstance(a, str) for a in shell):
        return list(shell)
    raise RunnerError("sh> option 'shell' must be a list of strings", "ConfigError")


def run_sh(task_input: TaskInput, cwd: str | os.PathLike[str]) -> TaskOutput:
    """Run an `sh>` task. Failures are raised as RunnerError / SecretNotFoundError."""
    params = merged_params(task_input, "sh")
    command = params.get("_command")
    if command is None or isinstance(command, (dict, list)):
        raise RunnerError("sh> requires a command string", "ConfigError")
    secrets = task_input["secrets"]
    script = substitute_secrets(env_value(command), secrets)
    argv = shell_argv(params)
    workdir = task_cwd(task_input, cwd)
    environment = sh_environment(params, task_input["env"], base_environment(secrets), secrets=secrets)

    tmp = tempfile.mkdtemp(prefix="kudig-sh-")
    try:
        script_path = Path(tmp) / "runner.sh"
        script_path.write_text(script, encoding="utf-8")
        try:
            code = run_streaming([*argv, str(script_path)], workdir, environment, task_timeout(task_input))
        except OSError as e:
            raise RunnerError(f"Cannot run shell {argv[0]!r}: {e.strerror or e}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if code != 0:
        # digdag's ShOperator throws RuntimeException("Command failed with code N"); the task's error
        # message gets the exception kind appended (TaskExecutionException.buildExceptionErrorConfig)
        raise RunnerError(f"Command failed with code {code} (runtime)", "CommandFailed")
    return empty_output()
