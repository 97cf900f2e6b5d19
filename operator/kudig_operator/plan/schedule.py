"""The schedule part of a Workflow plan: which slots fire, where the schedule's pointer moves."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from kudig.api import session_manifest
from kudig.schedule import ScheduleTime
from kudig.scheduler import ScheduleState, plan_schedule
from kudig.schema import WorkflowStatus
from kudig_operator.plan.compiled import CompiledWorkflow
from kudig_operator.plan.conditions import parse_time

if TYPE_CHECKING:
    from kudig_operator.plan.workflow import WorkflowPlan


def plan_workflow_schedule(
    obj: Mapping[str, Any],
    compiled: CompiledWorkflow,
    status: WorkflowStatus,
    new: WorkflowStatus,
    plan: WorkflowPlan,
    now: float,
    active_attempt: bool | None,
) -> None:
    wf, spec = compiled.workflow, compiled.spec
    assert wf is not None and wf.schedule is not None and spec is not None
    key = f"{wf.timezone_name}|{new.schedule}"
    state = ScheduleState(
        schedule_key=status.schedule_key or "",
        next_session_time=parse_time(status.next_session_time),
        next_run_time=parse_time(status.next_run_time),
        last_session_time=parse_time(status.last_scheduled_session_time),
        from_time=status.applied_schedule_from or "",
    )
    now_dt = datetime.fromtimestamp(now, UTC)
    from_key = spec.schedule_from or ""
    kwargs: dict[str, Any] = {
        "schedule_key": key,
        "from_time": parse_time(spec.schedule_from),
        "from_key": from_key,
        "suspended": spec.suspend,
    }
    decision = plan_schedule(wf.schedule, state, now_dt, active_attempt=bool(active_attempt), **kwargs)
    if wf.schedule.skip_on_overtime and active_attempt is None and decision.fire:
        plan.needs_active = True
        return
    name = str(obj["metadata"]["name"])
    for fire in decision.fire:
        extra: dict[str, Any] = {"scheduled": True}
        if fire.last_executed is not None:
            extra["lastExecutedSessionTime"] = fire.last_executed.astimezone(wf.tz).isoformat()
        manifest = session_manifest(name, fire.session_time.astimezone(wf.tz), **extra)
        plan.create_sessions.append(manifest)
        plan.run_times[str(manifest["metadata"]["name"])] = fire.run_time.timestamp()
    plan.skipped = [f"{k.session_time.astimezone(wf.tz).isoformat()} ({k.reason})" for k in decision.skipped]
    st = decision.state
    new.schedule_key = st.schedule_key
    new.applied_schedule_from = st.from_time or None
    nxt, run = st.next_session_time, st.next_run_time
    finished = nxt is None or run is None or ScheduleTime(nxt, run).finished
    new.next_session_time = None if finished or nxt is None else nxt.astimezone(wf.tz).isoformat()
    new.next_run_time = None if finished or run is None else run.astimezone(wf.tz).isoformat()
    if st.last_session_time is not None:
        new.last_scheduled_session_time = st.last_session_time.astimezone(wf.tz).isoformat()
    plan.wakeup = decision.wakeup.timestamp() if decision.wakeup is not None else None
