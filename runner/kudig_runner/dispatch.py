"""Operator dispatch: task type -> implementation.

Every operator is `run(task_input, cwd) -> TaskOutput`, where `cwd` is the workspace (project)
directory and the task runs in `cwd / task_input["workdir"]`. Failures are raised as
`RunnerError` (or `SecretNotFoundError`) and become error outputs in `run_task`; any other
exception is reported with its class and backtrace.

To add an operator (mail, http, pg, td, ...): write `kudig_runner/<name>.py` with a `run_<name>`
function and register it in `OPERATORS` below. Operators that need client libraries must import
them inside the function: this module and the sh/py core stay standard-library only, because they
are copied into users' images.
"""

from __future__ import annotations

import os
import traceback
from typing import Protocol

from .durations import show_seconds, timeout_seconds
from .proc import TimedOut
from .protocol import RunnerError, TaskInput, TaskOutput, error_output
from .pyop import run_py
from .secrets import SecretNotFoundError
from .shell import run_sh


class Operator(Protocol):
    def __call__(self, task_input: TaskInput, cwd: str | os.PathLike[str]) -> TaskOutput: ...


OPERATORS: dict[str, Operator] = {
    "sh": run_sh,
    "py": run_py,
}


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
