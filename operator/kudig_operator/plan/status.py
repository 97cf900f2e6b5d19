"""The Session status a plan writes."""

from __future__ import annotations

from kudig.api import FAILED, KILLED, RUNNING, SUCCEEDED, TERMINAL
from kudig.engine.core import (
    Engine,
)
from kudig.schema import Attempt, Condition, EngineBlob, FailedTask, SessionStatus
from kudig_operator.plan.conditions import iso, set_condition
from kudig_operator.plan.settings import Settings
from kudig_operator.plan.view import SessionView

MAX_FAILED_TASKS = 20


def session_status(
    view: SessionView,
    engine: Engine,
    attempt: int,
    attempts: list[Attempt],
    revision: int,
    blob: str,
    now: float,
    settings: Settings,
) -> SessionStatus:
    old = view.status
    state = engine.state
    done, current = engine.progress()
    phase = (SUCCEEDED if state.success else KILLED if state.killed else FAILED) if state.done else RUNNING
    failed = [
        FailedTask(name=t.name, message=str((t.error or {}).get("message", ""))[:500])
        for t in engine.failed_tasks()
    ][:MAX_FAILED_TASKS]
    started = old.started_at if old.attempt == attempt and old.started_at else iso(now)
    finished = (old.finished_at or iso(now)) if state.done else None
    if state.done and old.phase not in TERMINAL:
        finished = iso(now)
    attempts = [a.model_copy() for a in attempts]
    if attempts:
        attempts[-1].phase = phase
        attempts[-1].finished_at = finished
    generation = int(view.obj["metadata"].get("generation", 1))
    cond_status = "True" if phase == SUCCEEDED else ("False" if state.done else "Unknown")
    message = "; ".join(f"{f.name}: {f.message}" for f in failed[:3]) if phase == FAILED else None
    condition = Condition(
        type="Succeeded",
        status=cond_status,  # type: ignore[arg-type]
        reason=phase,
        message=message or "",
        last_transition_time=iso(now),
        observed_generation=generation,
    )
    wake = engine.next_wakeup()
    return SessionStatus(
        phase=phase,  # type: ignore[arg-type]
        attempt=attempt,
        workflow_revision=revision,
        progress=f"{done}/{current}",
        started_at=started,
        finished_at=finished,
        next_wakeup=iso(wake) if wake is not None and not state.done else None,
        message=message,
        failed_tasks=failed,
        attempts=attempts,
        engine=EngineBlob(data=blob),
        controller=settings.controller_id,
        conditions=set_condition(old.conditions, condition),
        last_events=old.last_events,  # (replaced when written: plan/outbox.py)
    )
