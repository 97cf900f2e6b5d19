"""The Workflow plan: its status and, for a scheduled Workflow, the Sessions now due."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kudig.schema import Condition, WorkflowStatus
from kudig_operator.plan.compiled import CompiledWorkflow
from kudig_operator.plan.conditions import iso, set_condition
from kudig_operator.plan.schedule import plan_workflow_schedule


@dataclass
class WorkflowPlan:
    status: dict[str, Any] | None = None  # the status to write (None: unchanged)
    create_sessions: list[dict[str, Any]] = field(default_factory=list)  # scheduled sessions due
    run_times: dict[str, float] = field(default_factory=dict)  # their slots' run times, by Session name
    skipped: list[str] = field(default_factory=list)  # slots skipped, for the log
    wakeup: float | None = None  # the next run time
    needs_active: bool = False  # skip_on_overtime: plan again knowing whether an attempt runs


def plan_workflow(
    obj: Mapping[str, Any],
    compiled: CompiledWorkflow,
    now: float,
    *,
    active_attempt: bool | None = None,
    trigger_found: bool | None = None,
) -> WorkflowPlan:
    """The Workflow status for `compiled` and, for a scheduled Workflow, the Sessions now due.

    The scheduled Sessions are created before the status that moves the schedule on is written:
    their names are derived from (workflow, session time), so a repeat after a crash or a 409 meets
    AlreadyExists — each slot runs exactly once, across restarts and replicas. `active_attempt`
    (None: unknown) matters only for `skip_on_overtime`; when it is needed and unknown, the plan
    asks for it (`needs_active`) instead of guessing."""
    status = WorkflowStatus.model_validate(obj.get("status") or {})
    new = status.model_copy(deep=True)
    generation = compiled.generation
    plan = WorkflowPlan()
    if compiled.ok:
        assert compiled.workflow is not None and compiled.spec is not None
        wf = compiled.workflow
        new.error = None
        new.revision = generation
        new.workflow_name = wf.name
        new.tasks = len(wf.tasks)
        new.timezone = wf.timezone_name
        new.project_digest = compiled.digest
        new.schedule = json.dumps(wf.schedule_config) if wf.schedule is not None else None
        warnings = "; ".join(f"warning: {w}" for w in wf.warnings[:3])
        message = f"{len(wf.tasks)} tasks; {warnings}" if warnings else f"{len(wf.tasks)} tasks"
        cond = Condition(
            type="Compiled",
            status="True",
            reason="CompiledWithWarnings" if wf.warnings else "Compiled",
            message=message[:1000],
            last_transition_time=iso(now),
            observed_generation=generation,
        )
        if wf.schedule is not None:
            plan_workflow_schedule(obj, compiled, status, new, plan, now, active_attempt)
        else:
            new.next_session_time = new.next_run_time = new.schedule_key = None
    else:
        new.error = compiled.error
        new.workflow_name = (compiled.spec.name if compiled.spec else None) or compiled.name
        cond = Condition(
            type="Compiled",
            status="False",
            reason=compiled.reason,
            message=(compiled.error or "")[:1000],
            last_transition_time=iso(now),
            observed_generation=generation,
        )
    new.conditions = set_condition(status.conditions, cond)
    trigger = compiled.workflow.trigger if compiled.ok and compiled.workflow is not None else None
    if trigger is not None and trigger_found is not None:
        assert compiled.workflow is not None
        where = f"{compiled.workflow.file}:{trigger.line}: " if trigger.line else ""
        project = f" of project '{trigger.project}'" if trigger.project else ""
        new.conditions = set_condition(
            new.conditions,
            Condition(
                type="TriggerReady",
                status="True" if trigger_found else "False",
                reason="DependentWorkflowFound" if trigger_found else "DependentWorkflowNotFound",
                message=""
                if trigger_found
                else (
                    f"{where}trigger: workflow '{trigger.workflow}'{project} not found in this namespace; "
                    "this workflow starts once it exists and one of its sessions succeeds"
                )[:1000],
                last_transition_time=iso(now),
                observed_generation=generation,
            ),
        )
    if new != status:
        plan.status = new.model_dump(by_alias=True, exclude_none=True)
    return plan
