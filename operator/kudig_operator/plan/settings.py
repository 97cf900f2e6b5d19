"""The controller's own configuration, as far as plans depend on it."""

from __future__ import annotations

from dataclasses import dataclass

from kudig.compiler import DEFAULT_MAX_TASKS
from kudig.engine.core import Evaluator
from kudig.schema import PodDefaults

TASK_MAX_RUN_ENV = "KUDIG_TASK_MAX_RUN"
WRITE_INTERVAL_ENV = "KUDIG_STATUS_WRITE_INTERVAL"
CREATE_CONCURRENCY_ENV = "KUDIG_POD_CREATE_CONCURRENCY"
DEFAULT_CREATE_CONCURRENCY = 16


@dataclass(frozen=True)
class Settings:
    """The controller's own configuration, as far as plans depend on it."""

    runner_image: str
    controller_id: str
    evaluator: Evaluator
    # every task pod's defaults (KUDIG_TASK_POD, Helm's `taskPod`), under the Workflow's `spec.pod`
    task_pod: PodDefaults | None = None
    # which finished task pods stay once their logs are stored (KUDIG_POD_RETENTION): all, failed, none
    pod_retention: str = "all"
    # digdag's `executor.task_max_run`: tasks per attempt, in the Workflow as compiled and as
    # generated at run time ("Too many tasks. Limit: N" beyond it)
    task_max_run: int = DEFAULT_MAX_TASKS
    # the per-session status write budget (KUDIG_STATUS_WRITE_INTERVAL, see plan/budget.py): a
    # bookkeeping-only write waits until this long after the last one (0: every plan writes)
    status_write_interval: float = 0.0


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


def write_interval(text: str | None, default: float) -> float:
    """The status write interval as `KUDIG_STATUS_WRITE_INTERVAL` says, in seconds (unset: `default`)."""
    if text is None or not text.strip():
        return default
    try:
        value = float(text.strip())
    except ValueError:
        value = -1.0
    if not 0 <= value <= 60:
        raise ValueError(f"{WRITE_INTERVAL_ENV} must be a number of seconds from 0 to 60, got {text!r}")
    return value


def create_concurrency(text: str | None) -> int:
    """How many pod creates of one plan run at once, as `KUDIG_POD_CREATE_CONCURRENCY` says (unset:
    16; 1: one after the other)."""
    if text is None or not text.strip():
        return DEFAULT_CREATE_CONCURRENCY
    try:
        value = int(text.strip())
    except ValueError:
        value = 0
    if not 1 <= value <= 256:
        raise ValueError(f"{CREATE_CONCURRENCY_ENV} must be a whole number from 1 to 256, got {text!r}")
    return value
