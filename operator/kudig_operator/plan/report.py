"""Reporting: the metrics and Kubernetes Events a committed Session plan stands for."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from kudig.api import FAILED, KILLED, SUCCEEDED, TERMINAL
from kudig.engine.core import (
    Action,
    Engine,
    Event,
    KillRequested,
    StartTask,
    TaskFinished,
    TaskSucceeded,
    parse_retry,
)
from kudig.engine.state import SessionState, Task, TaskState
from kudig.errors import KudigError
from kudig.schema import SessionStatus
from kudig_operator import events as ev
from kudig_operator.events import SessionEvent
from kudig_operator.plan.conditions import parse_time
from kudig_operator.plan.sessionplan import SessionPlan, TaskRun
from kudig_operator.plan.view import SessionView


@dataclass(frozen=True)
class Try:
    """A work task's try as it stood before the step its result is applied in."""

    task: Task
    succeeded: bool
    started_at: float | None
    retry_count: int
    ancestors: tuple[tuple[Task, int], ...]  # (group, its retry count) from the parent up

    @classmethod
    def of(cls, state: SessionState, event: Event) -> Try:
        assert not isinstance(event, KillRequested)
        task = state.tasks[event.task_id]
        chain = []
        parent = task.parent
        while parent is not None:
            chain.append((state.tasks[parent], state.tasks[parent].retry_count))
            parent = state.tasks[parent].parent
        return cls(task, isinstance(event, TaskSucceeded), task.started_at, task.retry_count, tuple(chain))


def _retry_limit(raw: Any) -> str:
    try:
        policy = parse_retry(raw)
    except (KudigError, ValueError, TypeError):
        return "?"
    return str(policy.limit) if policy is not None else "?"


def _error_message(task: Task) -> str:
    return ev.cut(str((task.error or {}).get("message", "")) or "unknown error")


def _task_events(
    state: SessionState, tries: list[Try], actions: Iterable[Action], now: float
) -> tuple[list[TaskRun], list[SessionEvent]]:
    """What the tries that reported in this step did (runs for metrics; failures and retries as
    Events), and the tasks that failed in the step without a try (`${...}` errors, `fail>`)."""
    runs: list[TaskRun] = []
    out: list[SessionEvent] = []
    retried_groups: set[int] = set()
    reported: set[int] = set()
    for t in tries:
        task = t.task
        if task.cancel_requested or task.state == TaskState.CANCELED:
            continue  # stopped by a kill: not a run that finished
        reported.add(task.id)
        retried = task.retry_count > t.retry_count
        ok = (
            t.succeeded
            and not retried
            and task.state in (TaskState.SUCCESS, TaskState.PLANNED)
            and not task.delayed_error
        )
        operator = str(task.config.get("_type") or "unknown")
        seconds = max(0.0, now - t.started_at) if t.started_at is not None else 0.0
        runs.append(TaskRun(operator, "succeeded" if ok else "failed", seconds, retried))
        if ok:
            continue
        if retried:
            limit = _retry_limit(task.state_params.get("_retry"))
            when = f" in {task.retry_at - now:.0f}s" if task.retry_at is not None else ""
            out.append(
                SessionEvent(
                    ev.WARNING,
                    ev.RETRYING,
                    f"{task.name} failed, retry {task.retry_count} of {limit}{when}: {_error_message(task)}",
                )
            )
            continue
        out.append(SessionEvent(ev.WARNING, ev.TASK_FAILED, f"{task.name} failed: {_error_message(task)}"))
        for group, count in t.ancestors:
            if group.retry_count > count and group.id not in retried_groups:
                retried_groups.add(group.id)
                limit = _retry_limit(group.config.get("_retry"))
                out.append(
                    SessionEvent(
                        ev.WARNING,
                        ev.RETRYING,
                        f"{group.name} is retried ({group.retry_count} of {limit}) after {task.name} failed",
                    )
                )
                break
    for action in actions:
        if isinstance(action, TaskFinished) and action.state == TaskState.ERROR:
            task = state.tasks[action.task_id]
            if not task.is_group and task.id not in reported and not task.delayed_error:
                out.append(
                    SessionEvent(ev.WARNING, ev.TASK_FAILED, f"{task.name} failed: {_error_message(task)}")
                )
    if len(out) > ev.MAX_TASK_EVENTS:
        more = len(out) - ev.MAX_TASK_EVENTS
        out = out[: ev.MAX_TASK_EVENTS]
        out.append(SessionEvent(ev.WARNING, ev.TASK_FAILED, f"{more} more task failures or retries"))
    return runs, out


def _step_origins(
    state: SessionState, actions: Iterable[Action], seen: Mapping[int, float]
) -> dict[int, float]:
    """For each work task this step started because a task whose pod was seen done finished (its
    upstream, an upstream of an ancestor, the last child of an upstream group, through control
    tasks run inline, or the task that generated it), when that pod was seen done (the latest,
    if several). Tasks started for another reason (a new attempt, a retry, a timer) have none."""
    cause = dict(seen)
    out: dict[int, float] = {}
    for action in actions:
        if not isinstance(action, StartTask | TaskFinished):
            continue
        task = state.tasks[action.task_id]
        times = [cause[c] for c in task.children if c in cause]
        node: Task | None = task
        while node is not None:
            if node is not task and node.id in cause:
                times.append(cause[node.id])
            times.extend(cause[u] for u in node.upstreams if u in cause)
            node = state.tasks[node.parent] if node.parent is not None else None
        if not times:
            continue
        cause.setdefault(task.id, max(times))
        if isinstance(action, StartTask):
            out[task.id] = max(times)
    return out


_OUTCOMES = {SUCCEEDED: "succeeded", FAILED: "failed", KILLED: "killed"}


def report(
    plan: SessionPlan,
    view: SessionView,
    engine: Engine,
    tries: list[Try],
    actions: list[Action],
    seen: Mapping[int, float],
    pod_of: Callable[[Task], str],
    new: SessionStatus,
    new_attempt: bool,
    sla_before: bool,
    now: float,
) -> None:
    """Fill in what the plan's status write commits, for metrics and Events."""
    state = engine.state
    attempt = new.attempt or 1
    old = view.status
    if new_attempt:
        plan.started_attempt = attempt
        spec = view.spec
        if attempt > 1 and spec is not None and old.engine is not None:
            how = {
                "failed": "retry of the failed tasks",
                "all": "all tasks again",
                "from": f"retry from {spec.resume_from}",
            }[spec.retry_mode]
            plan.events.append(SessionEvent(ev.NORMAL, ev.STARTED, f"Attempt {attempt} started ({how})"))
        else:
            plan.events.append(SessionEvent(ev.NORMAL, ev.STARTED, f"Attempt {attempt} started"))
    if state.sla_fired and not sla_before:
        plan.sla_missed = True
        plan.events.append(
            SessionEvent(ev.WARNING, ev.SLA_MISSED, f"Attempt {attempt} is still running at its SLA deadline")
        )
    if tries or actions:
        plan.runs, task_events = _task_events(state, tries, actions, now)
        plan.events.extend(task_events)
    if seen and plan.create_pods:
        for task_id, at in _step_origins(state, actions, seen).items():
            plan.step_origins[pod_of(state.tasks[task_id])] = at
    if new.phase in TERMINAL and (new_attempt or old.phase not in TERMINAL):
        plan.outcome = _OUTCOMES[new.phase]
        started = None if new_attempt else parse_time(new.started_at)
        plan.duration = max(0.0, now - started.timestamp()) if started is not None else 0.0
        plan.events.append(outcome_event(new, plan.duration))


def outcome_event(status: SessionStatus, duration: float) -> SessionEvent:
    """The Event saying how the attempt of (terminal) `status` ended, `duration` seconds long."""
    attempt = status.attempt or 1
    took = f"{duration:.0f}s"
    if status.phase == SUCCEEDED:
        return SessionEvent(
            ev.NORMAL, ev.SUCCEEDED, f"Attempt {attempt} succeeded: {status.progress} tasks in {took}"
        )
    if status.phase == FAILED:
        message = f"Attempt {attempt} failed after {took}: {ev.cut(status.message or '', 300)}"
        return SessionEvent(ev.WARNING, ev.FAILED, message)
    return SessionEvent(ev.NORMAL, ev.KILLED, f"Attempt {attempt} killed after {took}")
