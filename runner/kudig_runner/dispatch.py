"""Operator dispatch: task type -> implementation.

Every operator is `run(task_input, cwd) -> TaskOutput`, where `cwd` is the workspace (project)
directory and the task runs in `cwd / task_input["workdir"]`. Failures are raised as
`RunnerError` (or `SecretNotFoundError`) and become error outputs in `run_task`; any other
exception is reported with its class and backtrace.

To add an operator (mail, http, pg, td, ...): write `kudig_runner/<name>.py` with a `run_<name>`
function and register it by name in `OPERATORS` below (imported when a task of that type runs). Operators that need client libraries must import
them inside the function: this module and the sh/py core stay standard-library only, because they
are copied into users' images. Secrets an operator reads by name (`pg.password`) go in
`OPERATOR_SECRET_KEYS`, so a pod gets them. Name the module so that it does not shadow a standard
library module (`http_op.py`, not `http.py`): py_runner.py runs with this directory on sys.path.
"""

from __future__ import annotations

import importlib
import os
import traceback
from collections.abc import Mapping
from typing import Any, Protocol, cast

from .durations import show_seconds, timeout_seconds
from .proc import TimedOut
from .protocol import RunnerError, TaskInput, TaskOutput, error_output
from .secrets import SecretNotFoundError


class Operator(Protocol):
    def __call__(self, task_input: TaskInput, cwd: str | os.PathLike[str]) -> TaskOutput: ...


# Operator name -> "module:function" in this package. Registered by name and imported when a task
# of that type runs: `kudig check` and the compiler read the names on every start, and importing
# every operator module (urllib, http.client, smtplib, ...) would cost them ~100 ms each time.
OPERATORS: dict[str, str] = {
    "sh": "shell:run_sh",
    "py": "pyop:run_py",
    "rb": "rbop:run_rb",
    "pg": "pg:run_pg",
    "param_set": "param:run_param_set",
    "param_get": "param:run_param_get",
    "http": "http_op:run_http",
    "http_call": "http_op:run_http_call",
    "mail": "mail_op:run_mail",
    "s3_wait": "s3_wait:run_s3_wait",
    "td": "td:run_td",
    "td_ddl": "td:run_td_ddl",
    "td_run": "td_family:run_td_run",
    "td_wait": "td_family:run_td_wait",
    "td_wait_table": "td_family:run_td_wait_table",
    "td_for_each": "td_family:run_td_for_each",
    "td_load": "td_data:run_td_load",
    "td_table_export": "td_data:run_td_table_export",
    "td_result_export": "td_data:run_td_result_export",
    "td_partial_delete": "td_data:run_td_partial_delete",
    "notify": "notify_op:run_notify",
}

_PG_KEYS = (
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
_PARAM_KEYS = ("host", "port", "user", "database", "ssl", "schema", "password")

# Secrets an operator reads by itself (not through `${secret:...}` in its config): a task pod gets
# these keys too when the namespace's Secret has them. `password_override` names one more (pg>).
# A tuple, or "module:NAME" of the operator module's own list (imported when asked).
OPERATOR_SECRET_KEYS: dict[str, tuple[str, ...] | str] = {
    "pg": tuple(f"pg.{k}" for k in _PG_KEYS),
    "param_set": tuple(f"param_server.{k}" for k in _PARAM_KEYS),
    "param_get": tuple(f"param_server.{k}" for k in _PARAM_KEYS),
    "http": "http_op:SECRET_KEYS",
    "http_call": "http_op:CALL_SECRET_KEYS",
    "mail": "mail_op:SECRET_KEYS",
    "s3_wait": "s3_wait:SECRET_KEYS",
    **dict.fromkeys(
        ("td", "td_ddl", "td_run", "td_wait", "td_wait_table", "td_for_each", "td_load", "td_result_export"),
        "td:SECRET_KEYS",
    ),
    "td_partial_delete": "td:SECRET_KEYS",
    "td_table_export": "td_data:EXPORT_SECRET_KEYS",
    "notify": "notify_op:SECRET_KEYS",
}


def _resolve(ref: str) -> Any:
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(f".{module}", __package__), name)


def operator(op_type: str) -> Operator | None:
    """The implementation of `op_type` (its module imported now), or None if there is none."""
    ref = OPERATORS.get(op_type)
    return None if ref is None else cast(Operator, _resolve(ref))


def operator_secret_keys(op_type: str, config: Mapping[str, Any]) -> list[str]:
    """The secret keys operator `op_type` may read itself for a task with this `config`."""
    entry = OPERATOR_SECRET_KEYS.get(op_type, ())
    keys = list(_resolve(entry) if isinstance(entry, str) else entry)
    override = config.get("password_override")
    if op_type == "pg" and isinstance(override, str) and override:
        keys.append(override)
    return keys


def run_task(task_input: TaskInput, cwd: str | os.PathLike[str] = ".") -> TaskOutput:
    """Run one task; never raises for task failures (they are in the output's `error`)."""
    implementation = operator(task_input["type"])
    if implementation is None:
        known = ", ".join(f"{name}>" for name in sorted(OPERATORS))
        return error_output(
            f"Unknown operator type {task_input['type']!r} for the runner (supported: {known})",
            "ConfigError",
        )
    try:
        return implementation(task_input, cwd)
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
