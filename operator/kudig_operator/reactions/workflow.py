"""The Workflow reaction: compile a Workflow, plan its status (and schedule), commit."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from kudig.api import WORKFLOWS
from kudig.cluster.kube import Conflict
from kudig_operator.plan.compiled import CompiledWorkflow
from kudig_operator.plan.workflow import plan_workflow
from kudig_operator.plumbing import Key
from kudig_operator.reactions import history, schedule

log = logging.getLogger("kudig.controller")
MAX_CONFLICTS = 8

if TYPE_CHECKING:
    from kudig_operator.controller import Controller


def reconcile(
    ctl: Controller,
    namespace: str,
    name: str,
    body: dict[str, Any] | None = None,
    *,
    recheck: bool = False,
    watched: bool = False,
) -> None:
    """Reconcile a Workflow: `body` as given (None: read from the API server), or with `watched`
    as its watch last delivered it, read under the Workflow's lock so that reconciles queued by a
    burst of events each work on the newest version, never an older one after a newer; a
    Workflow whose last event was its deletion is forgotten."""
    key = (namespace, name)
    before = ctl.workflows.get(key)
    with ctl.locks.hold(("workflow", key)):
        if watched:
            with ctl.guard:
                latest = ctl.workflow_bodies.get(key)
            if latest is None:
                forget(ctl, key)
                return
            body = dict(latest)
        with ctl.metrics.reconcile("workflow"):
            reconcile_once(ctl, key, body, recheck)
    compiled_now = ctl.workflows.get((namespace, name))
    if compiled_now is not None and compiled_now.ok:
        ctl.metrics.workflow_known(namespace, name)
        if before is None or not before.ok:
            # newly known here: the Workflows whose trigger names it can say so now
            for dependent in ctl.workflows.dependents(namespace, compiled_now):
                if dependent != name:
                    ctl.reconcile_workflow(namespace, dependent)
        if before is None or before.generation != compiled_now.generation:
            # `history.keep` as this revision says, once per revision and controller: a controller
            # that died between a finished label and its deletes (or a lowered keep) catches up
            history.keep_history(ctl, namespace, name)
    if compiled_now is not None and compiled_now.reason == "ProjectFilesPending" and ctl.wakeups is not None:
        ctl.wakeups.set(("workflow", (namespace, name)), ctl.clock() + 5)
    if compiled_now is not None and compiled_now.ok:
        with ctl.guard:
            waiting = ctl.waiting.pop((namespace, name), set())
        for key in sorted(waiting):
            ctl.reconcile_session(*key)


def forget(ctl: Controller, key: Key) -> None:
    """A deleted Workflow: its compiled form, metrics and timers go."""
    ctl.workflows.drop(key)
    ctl.metrics.workflow_gone(*key)
    if ctl.wakeups is not None:
        ctl.wakeups.cancel(("schedule", key))
        ctl.wakeups.cancel(("workflow", key))


def reconcile_once(ctl: Controller, key: Key, body: dict[str, Any] | None, recheck: bool) -> None:
    """Compile, create the scheduled Sessions that are due, commit the status (the schedule's
    pointer) with the resourceVersion read; a 409 plans again from a fresh read."""
    namespace, name = key
    obj = body
    for _ in range(MAX_CONFLICTS):
        if obj is None:
            log.debug("workflow %s/%s: read from the API server", namespace, name)
            obj = ctl.api.get(WORKFLOWS, namespace, name)
            if obj is None:
                ctl.workflows.drop(key)
                return
        compiled = ctl.workflows.compile(obj, recheck=recheck)
        now = ctl.clock()
        found = trigger_found(ctl, namespace, compiled)
        plan = plan_workflow(obj, compiled, now, trigger_found=found)
        if plan.needs_active:
            plan = plan_workflow(
                obj,
                compiled,
                now,
                active_attempt=schedule.attempt_running(ctl, namespace, name),
                trigger_found=found,
            )
        schedule.create_sessions(ctl, namespace, plan.create_sessions, f"scheduled by {name}", plan.run_times)
        for skipped in plan.skipped:
            log.info("workflow %s/%s: skipped the scheduled session of %s", namespace, name, skipped)
        if plan.status is not None:
            try:
                ctl.api.replace_status(WORKFLOWS, {**obj, "status": plan.status})
            except Conflict:
                ctl.stats["conflicts"] += 1
                obj = None
                continue
        if ctl.wakeups is not None:
            if plan.wakeup is not None:
                ctl.wakeups.set(("schedule", key), plan.wakeup)
            else:
                ctl.wakeups.cancel(("schedule", key))
        return


def trigger_found(ctl: Controller, namespace: str, compiled: CompiledWorkflow) -> bool | None:
    """Whether the workflow a `trigger: attempt>:` names exists here (None: no trigger)."""
    wf = compiled.workflow if compiled.ok else None
    if wf is None or wf.trigger is None:
        return None
    project = wf.trigger.project if wf.trigger.project is not None else compiled.project
    return ctl.workflows.find(namespace, wf.trigger.workflow, project) is not None
