"""Operator dispatch: task type -> implementation.

Every operator is `run(task_input, cwd) -> TaskOutput`, where `cwd` is the workspace (project)
directory and the task runs in `cwd / task_input["workdir"]`. Failures are raised as
`RunnerError` (or `SecretNotFoundError`) and become error outputs in `run_task`; any other
exception is reported with its class and backtrace.

To add an operator (mail, http, pg, td, ...): write `kudig_runner/<name>.py` with a `run_<name>`
function and register it in `OPERATORS` below. Operators that need client libraries must import
them inside the function: this module and the sh/py core stay standard-library only, because they
are copied into users' images. Secrets an operator reads by name (`pg.password`) go in
`OPERATOR_SECRET_KEYS`, so a pod gets them. Name the module so that it does not shadow a standard
library module (`http_op.py`, not `http.py`): py_runner.py runs with this directory on sys.path.
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Mapping
from typing import Any, Protocol

from .durations import show_seconds, timeout_seconds
from .http_op import CALL_SECRET_KEYS, run_http, run_http_call
from .http_op import SECRET_KEYS as HTTP_SECRET_KEYS
from .mail_op import SECRET_KEYS as MAIL_SECRET_KEYS
from .mail_op import run_mail
from .param import run_param_get, run_param_set
from .pg import run_pg
from .proc import TimedOut
from .protocol import RunnerError, TaskInput, TaskOutput, error_output
from .pyop import run_py
from .rbop import run_rb
from .s3_wait import SECRET_KEYS as S3_SECRET_KEYS
from .s3_wait import run_s3_wait
from .secrets import SecretNotFoundError
from .shell import run_sh
from .td import SECRET_KEYS as TD_SECRET_KEYS
from .td import run_td, run_td_ddl


class Operator(Protocol):
    def __call__(self, task_input: TaskInput, cwd: str | os.PathLike[str]) -> TaskOutput: ...


OPERATORS: dict[str, Operator] = {
    "sh": run_sh,
    "py": run_py,
    "rb": run_rb,
    "pg": run_pg,
    "param_set": run_param_set,
    "param_get": run_param_get,
    "http": run_http,
    "http_call": run_http_call,
    "mail": run_mail,
    "s3_wait": run_s3_wait,
    "td": run_td,
    "td_ddl": run_td_ddl,
}

# Secrets an operator reads by itself (not through `${secret:...}` in its config): a task pod gets
# these keys too when the namespace's Secret has them. `password_override` names one more (pg>).
OPERATOR_SECRET_KEYS: dict[str, tuple[str, ...]] = {
    "pg": tuple(
        f"pg.{k}"
        for k in (
            "host",
            "port",
            "user",
            "database",
            "ssl",
            "schema",
            "connect_timeout",
            "socket_timeout",
            "password",
        )
    ),
    "param_set": tuple(
        f"param_server.{k}" for k in ("host", "port", "user", "database", "ssl", "schema", "password")
    ),
    "param_get": tuple(
        f"param_server.{k}" for k in ("host", "port", "user", "database", "ssl", "schema", "password")
    ),
    "http": HTTP_SECRET_KEYS,
    "http_call": CALL_SECRET_KEYS,
    "mail": MAIL_SECRET_KEYS,
    "s3_wait": S3_SECRET_KEYS,
    "td": TD_SECRET_KEYS,
    "td_ddl": TD_SECRET_KEYS,
}


def operator_secret_keys(op_type: str, config: Mapping[str, Any]) -> list[str]:
    """The secret keys operator `op_type` may read itself for a task with this `config`."""
    keys = list(OPERATOR_SECRET_KEYS.get(op_type, ()))
    override = config.get("password_override")
    if op_type == "pg" and isinstance(override, str) and override:
        keys.append(override)
    return keys


def run_task(task_input: TaskInput, cwd: str | os.PathLike[str] = ".") -> TaskOutput:
    """Run one task; never raises for task failures (they are in the output's `error`)."""
    operator = OPERATORS.get(task_input["type"])
    if operator is None:
        known = ", ".join(f"{name}>" for name in sorted(OPERATORS))
        return error_output(
            f"Unknown operator type {task_input['type']!r} for the runner (supported: {known})",
            "ConfigError",
        )
    try:
        return operator(task_input, cwd)
    except RunnerError as e:
        return error_output(e.message, e.error_class)
    except TimedOut:
        limit = task_input["config"].get("timeout")
        seconds = timeout_seconds(limit)
        return error_output(
            f"Task timed out after {show_seconds(seconds or 0)} (timeout: {limit}); it was stopped",
            "TaskTimeout",
        )
    except SecretNotFoundError as e:
        return error_output(str(e), "SecretNotFoundError")
    except Exception as e:
        return error_output(f"{type(e).__name__}: {e}", type(e).__name__, traceback.format_exc())
