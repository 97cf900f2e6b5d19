"""The controller's own configuration, as far as plans depend on it."""

from __future__ import annotations

from dataclasses import dataclass

from kudig.compiler import DEFAULT_MAX_TASKS
from kudig.engine.core import Evaluator

TASK_MAX_RUN_ENV = "KUDIG_TASK_MAX_RUN"


@dataclass(frozen=True)
class Settings:
    """The controller's own configuration, as far as plans depend on it."""

    runner_image: str
    controller_id: str
    evaluator: Evaluator
    # digdag's `executor.task_max_run`: tasks per attempt, in the Workflow as compiled and as
    # generated at run time ("Too many tasks. Limit: N" beyond it)
    task_max_run: int = DEFAULT_MAX_TASKS


def task_max_run(text: str | None) -> int:
    """The task cap as `KUDIG_TASK_MAX_RUN` says (unset or empty: digdag's default, 1000)."""
    if text is None or not text.strip():
        return DEFAULT_MAX_TASKS
    try:
        value = int(text.strip())
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"{TASK_MAX_RUN_ENV} must be a whole number of 1 or more, got {text!r}")
    return value
