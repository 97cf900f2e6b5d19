"""The Session plan: from what the controller observed of a Session to what it must do."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from kudig.api import (
    API_VERSION,
    ERROR,
    LABEL_FINISHED,
    LABEL_RESULT,
    LABEL_SESSION,
    LABEL_WORKFLOW,
    MANAGED_BY,
    MANAGER,
    PENDING,
    RUNNING,
    TERMINAL,
    label_value,
    session_manifest,
)
from kudig.engine.core import (
    Action,
    Engine,
    Event,
    KillRequested,
    SessionContext,
    StartTask,
    TaskFailed,
    TaskLog,
    resumable_results,
    resume_from,
)
from kudig.engine.state import SessionState, Task
from kudig.errors import KudigError
from kudig.params import deep_merge
from kudig.schema import Attempt, Condition, SessionSpec
from kudig.session_vars import session_params
from kudig_operator import require, results
from kudig_operator.plan.compiled import CompiledWorkflow
from kudig_operator.plan.conditions import iso, parse_time, set_condition
from kudig_operator.plan.pods import PodView, pod_event
from kudig_operator.plan.release import pods_to_release
from kudig_operator.plan.report import Try, outcome_event, report
from kudig_operator.plan.sessionplan import SessionPlan
from kudig_operator.plan.settings import Settings
from kudig_operator.plan.status import session_status
from kudig_operator.plan.view import SessionView, Warm, task_pod_name
from kudig_operator.podspec import PodContext, PodSettingsError, build_task
from kudig_operator.require import is_require

MAX_LOG_CHARS = 4000


def _context(
    view: SessionView,
    spec: SessionSpec,
    compiled: CompiledWorkflow,
    session_time: datetime,
    attempt: int,
    settings: Settings,
) -> SessionContext:
    wf = compiled.workflow
    assert wf is not None and compiled.spec is not None
    uid = view.uid
    builtins = session_params(
        session_time=session_time.astimezone(wf.tz),
        timezone=wf.timezone_name,
        session_id=int(uid.replace("-", "")[:8] or "0", 16),
        attempt_id=attempt,
        session_uuid=uid,
        project_id=1,
        retry_attempt_name=None if attempt == 1 else f"attempt-{attempt}",
        schedule=wf.schedule,
        last_executed_session_time=parse_time(spec.last_executed_session_time),
    )
    params: dict[str, Any] = {}
    deep_merge(params, compiled.spec.params)
    deep_merge(params, spec.params)
    return SessionContext(
        workflow_name=wf.name,
        timezone=wf.timezone_name,
        session_params=builtins,
        attempt_params=params,
        evaluator=settings.evaluator,
        project_dir=Path(wf.project_dir),
        sla=wf.sla,
        max_tasks=settings.task_max_run,
    )


def invalid_plan(view: SessionView, message: str, now: float, settings: Settings) -> SessionPlan:
    """The Session cannot run (bad spec, missing or broken Workflow): say so in its status.

    A Session that never started is `Error` (not terminal: it starts once the cause is fixed); one
    that was running keeps its phase and shows the message."""
    status = view.status
    new = status.model_copy(deep=True)
    new.phase = ERROR if not status.engine else status.phase  # type: ignore[assignment]
    new.message = message[:2000]
    new.controller = settings.controller_id
    generation = int(view.obj["metadata"].get("generation", 1))
    new.conditions = set_condition(
        status.conditions,
        Condition(
            type="Succeeded",
            status="False",
            reason="InvalidSession",
            message=message[:1000],
            last_transition_time=iso(now),
            observed_generation=generation,
        ),
    )
    plan = SessionPlan()
    if new.model_copy(update={"controller": status.controller}) != status:
        plan.status = new.model_dump(by_alias=True, exclude_none=True)
    if view.spec is not None:
        plan.waiting_for_workflow = view.spec.workflow
    return plan


def waiting_plan(view: SessionView, after: str, now: float, settings: Settings) -> SessionPlan:
    """A Session chained after another (`spec.after`, as `kudig backfill` creates them) that has not
    finished yet: Pending, saying what it waits for."""
    status = view.status
    new = status.model_copy(deep=True)
    new.phase = PENDING  # type: ignore[assignment]
    new.message = f"waiting for session {after} to finish"
    new.controller = settings.controller_id
    plan = SessionPlan(waiting_for_session=after)
    if new.model_copy(update={"controller": status.controller}) != status:
        plan.status = new.model_dump(by_alias=True, exclude_none=True)
    return plan


def _orphans(
    view: SessionView, expected: set[str], suspects: Iterable[PodView], pods: Mapping[str, PodView | None]
) -> list[str]:
    """Running pods of this Session that the state does not run. A pod observed for this plan is
    judged by that observation, never by an older one (a suspect seen running before its task's
    pod reported Succeeded is that finished task's pod, not an orphan)."""
    out = set()
    for suspect in suspects:
        p = pods.get(suspect.name, suspect)
        if p is not None and p.active and p.owner_uid == view.uid and p.name not in expected:
            out.add(p.name)
    return sorted(out)


def _finished_plan(
    view: SessionView,
    suspects: Iterable[PodView],
    pods: Mapping[str, PodView | None],
    now: float,
    retention: str = "all",
) -> SessionPlan:
    """A committed, finished Session. What its last plan did after the commit is re-derived here:
    without the `kudig.io/finished` label, the controller died between the status commit and the
    label patch, so the label is set (its value: when the Session finished, from the status) and
    the Events its last write recorded, created just before the label, are created again
    (`outbox.owed`; a status written without that record gets its outcome Event derived)."""
    plan = SessionPlan(delete_pods=_orphans(view, set(), suspects, pods), finished=True)
    plan.release_pods = pods_to_release(view.uid, set(), suspects, pods, retention)
    assert view.spec is not None
    if LABEL_FINISHED in (view.obj["metadata"].get("labels") or {}):
        return plan
    status = view.status
    ended = parse_time(status.finished_at)
    started = parse_time(status.started_at)
    at = ended.timestamp() if ended is not None else now
    plan.labels = {LABEL_FINISHED: str(int(at)), LABEL_WORKFLOW: label_value(view.spec.workflow)}
    if status.last_events is None:
        plan.events.append(
            outcome_event(status, max(0.0, at - started.timestamp()) if started is not None else 0.0)
        )
    return plan


def _no_workflows(name: str, project: str | None) -> str | None:
    return None


def _carry(
    action: Action, engine: Engine, plan: SessionPlan, pod_ctx: PodContext, pod_of: Callable[[Task], str]
) -> None:
    """One engine action into the plan: a work task's pod, or a control task's log line."""
    if isinstance(action, StartTask):
        pod, inputs = build_task(pod_ctx, name=pod_of(engine.state.tasks[action.task_id]), action=action)
        plan.create_config_maps.extend(inputs)
        plan.create_pods.append(pod)
    elif isinstance(action, TaskLog):
        task = engine.state.tasks[action.task_id]
        text = (str(task.state_params.get("log", "")) + action.text + "\n")[-MAX_LOG_CHARS:]
        task.state_params["log"] = text


def plan_session(
    view: SessionView,
    workflow: CompiledWorkflow | None,
    pods: Mapping[str, PodView | None],
    suspects: Iterable[PodView],
    fetched: Mapping[str, bytes],
    now: float,
    settings: Settings,
    triggered: Iterable[str] = (),
    required: Mapping[str, Mapping[str, Any] | None] | None = None,
    resolve: require.Resolver | None = None,
) -> SessionPlan:
    """Decide one reconcile of a Session (see the module docstring). `triggered` names the
    Workflows whose `trigger: attempt>:` depends on this one: when this plan makes the Session
    succeed, it starts theirs at the same session time (before the commit, so a crash or a 409
    only repeats a create that then meets AlreadyExists). Its Events are named and recorded by
    `outbox.settle`, which the reaction applies to every plan before carrying it out."""
    suspects = list(suspects)
    if view.spec is None:
        return invalid_plan(view, view.spec_error or "Invalid Session spec", now, settings)
    spec = view.spec
    status = view.status
    if view.finished:
        # Nothing to run; a pod still running here was started by a plan that never committed.
        return _finished_plan(view, suspects, pods, now, settings.pod_retention)
    if workflow is None:
        return invalid_plan(
            view, f"Workflow '{spec.workflow}' not found in namespace {view.namespace}", now, settings
        )
    if not workflow.ok:
        return invalid_plan(
            view, workflow.error or f"Workflow '{spec.workflow}' does not compile", now, settings
        )
    try:
        session_time = datetime.fromisoformat(spec.session_time)
        if session_time.tzinfo is None:
            raise KudigError(f"sessionTime needs a UTC offset: {spec.session_time}")
    except (KudigError, ValueError) as e:
        return invalid_plan(view, str(e), now, settings)
    assert workflow.workflow is not None
    current_attempt = status.attempt or 0
    stored = view.data is not None or view.decoded is not None
    new_attempt = not stored or (spec.attempt > current_attempt and status.phase in TERMINAL)
    memo: results.Memo | None = None
    previous: SessionState | None = None
    try:
        if view.decoded is not None:
            previous, memo = view.decoded.state, view.decoded.memo
        elif view.data is not None:
            previous, memo = results.decode(view.data, fetched)
    except results.MissingResult as e:
        return invalid_plan(view, f"Cannot continue the session: {e}", now, settings)
    if new_attempt:
        attempt = spec.attempt if previous is not None else max(spec.attempt, 1)
        ctx = _context(view, spec, workflow, session_time, attempt, settings)
        try:
            engine = Engine.new(ctx, workflow.workflow.tasks)
        except KudigError as e:
            return invalid_plan(view, str(e), now, settings)
        if previous is not None and spec.retry_mode == "failed":
            engine.state.resume = resumable_results(previous)
        elif previous is not None and spec.retry_mode == "from":
            try:
                engine.state.resume = resume_from(previous, spec.resume_from or "")
            except KudigError as e:
                return invalid_plan(view, f"Cannot retry: {e}", now, settings)
        attempts = [
            *status.attempts,
            Attempt(index=attempt, revision=workflow.generation, phase=RUNNING, started_at=iso(now)),
        ]
        revision = workflow.generation
    else:
        assert previous is not None
        attempt = max(current_attempt, 1)
        ctx = _context(view, spec, workflow, session_time, attempt, settings)
        warm = view.decoded.engine if view.decoded is not None else None
        if warm is not None and warm.state is previous:
            engine = warm  # its running/waiting sets as the last plan left them: no walk of the state
            engine.ctx = ctx
        else:
            engine = Engine(ctx, previous)
        attempts = list(status.attempts)
        revision = status.workflow_revision or workflow.generation

    events: list[Event] = []
    if spec.kill and not engine.state.killed and not engine.state.done:
        events.append(KillRequested())
    name = view.name
    seen_done: dict[int, float] = {}  # task -> when its pod was seen done (for step gaps)
    known_names: dict[tuple[int, int], str] = (
        view.decoded.pod_names if view.decoded is not None and not new_attempt else {}
    )

    def pod_of(task: Task) -> str:
        key = (task.id, task.retry_count)  # ancestors' retries supersede the row: a new id
        found = known_names.get(key)
        if found is None:
            found = known_names[key] = task_pod_name(name, attempt, engine.state, task)
        return found

    steps = require.RequireSteps()
    required = required or {}
    consumed: list[str] = []
    for task in engine.running():
        if is_require(task):
            name_ = str(task.state_params[require.KEY]["session"])
            if spec.kill:
                steps.events.append(TaskFailed(task.id, "killed"))
            elif name_ in required:
                require.step(task, required[name_], name, steps)
            else:
                steps.waiting.append(name_)  # not read this time: the next plan reads it
            continue
        pname = pod_of(task)
        if pname not in pods:
            continue  # not observed (the controller always observes running tasks' pods)
        seen_view = pods[pname]
        event = pod_event(task, seen_view)
        if event is not None and seen_view is not None:  # when its pod was created, its container started
            task.pod_created_at = task.pod_created_at or seen_view.created_at
            task.running_at = task.running_at or seen_view.started_at
        if event is not None:
            events.append(event)
            consumed.append(pname)
            seen_done[task.id] = (
                seen_view.seen if seen_view is not None and seen_view.seen is not None else now
            )
    events.extend(steps.events)
    tries = [Try.of(engine.state, e) for e in events if not isinstance(e, KillRequested)]
    sla_before = engine.state.sla_fired
    actions = engine.step(events, now)
    all_actions = list(actions)

    plan = SessionPlan(consumed_pods=consumed)
    expected: set[str] = set()
    wf_spec = workflow.spec
    assert wf_spec is not None
    pod_ctx = PodContext(
        namespace=view.namespace,
        session_name=name,
        session_uid=view.uid,
        workflow=workflow.workflow.name,
        attempt=attempt,
        runner_image=settings.runner_image,
        config_maps=wf_spec.project.config_maps,
        defaults=wf_spec.pod,
        secret_name=wf_spec.secret_name or "kudig-secrets",
        base=settings.task_pod,
    )
    started_require = False
    pending = actions
    while pending:
        actions, pending, failures = pending, [], []
        for action in actions:
            if isinstance(action, StartTask) and action.op_type == require.OP:
                try:
                    record = require.start(
                        action,
                        engine.state.tasks[action.task_id].config,
                        session_time,
                        resolve or _no_workflows,
                    )
                except ValueError as e:
                    failures.append(TaskFailed(action.task_id, str(e), retryable=False))
                    continue
                engine.state.tasks[action.task_id].state_params[require.KEY] = record
                started_require = True
            else:
                try:
                    _carry(action, engine, plan, pod_ctx, pod_of)
                except PodSettingsError as e:
                    failures.append(TaskFailed(action.task_id, str(e), retryable=False))
        if failures:
            pending = engine.step(failures, now)
            all_actions.extend(pending)
    for task in engine.running():
        if not is_require(task):
            expected.add(pod_of(task))
    if engine.state.killed:
        # Killed tasks stay "running" until their pods report; deleting the pods makes them.
        for pname in sorted(expected):
            seen = pods.get(pname)
            if seen is not None and seen.active:
                plan.delete_pods.append(pname)
        plan.sweep = True
    plan.delete_pods.extend(p for p in _orphans(view, expected, suspects, pods) if p not in plan.delete_pods)
    retention = wf_spec.history.pods or settings.pod_retention
    plan.release_pods = pods_to_release(view.uid, expected, suspects, pods, retention)

    blob, blobs, after = results.encode(engine.state, name, memo if not new_attempt else None)
    plan.decoded = Warm(
        engine.state,
        after,
        engine,
        sorted(expected),
        [str(t.state_params[require.KEY]["session"]) for t in engine.running() if is_require(t)],
        known_names,
    )
    plan.delete_config_maps = results.garbage(memo, after)
    labels = {MANAGED_BY: MANAGER, LABEL_SESSION: label_value(name), LABEL_RESULT: "true"}
    known = set(view.refs)
    for b in blobs:
        if b.name not in known:
            plan.create_config_maps.append(
                results.config_map(
                    b,
                    namespace=view.namespace,
                    owner={"apiVersion": API_VERSION, "kind": "Session", "metadata": view.obj["metadata"]},
                    labels=labels,
                )
            )
    new = session_status(view, engine, attempt, attempts, revision, blob, now, settings)
    if new.model_copy(update={"controller": status.controller}) != status:
        # (the controller's name alone is no reason to write: two controllers overlapping during
        # a hand-over would otherwise take turns writing it)
        plan.status = new.model_dump(by_alias=True, exclude_none=True)
    plan.running = len(expected)
    report(plan, view, engine, tries, all_actions, seen_done, pod_of, new, new_attempt, sla_before, now)
    wake = engine.next_wakeup()
    plan.wakeup = wake if not engine.state.done else None
    plan.finished = engine.state.done and not plan.create_pods
    plan.create_sessions.extend(steps.create)
    plan.patch_sessions = steps.rerun
    plan.waiting_for_sessions = sorted(set(steps.waiting))
    if started_require or steps.create or steps.rerun:
        plan.wakeup = now  # read the required Sessions and go on at once
    elif plan.waiting_for_sessions:
        fallback = now + require.FALLBACK_SECONDS
        plan.wakeup = fallback if plan.wakeup is None else min(plan.wakeup, fallback)
    if engine.state.done and engine.state.success and status.phase not in TERMINAL:
        for dependent in sorted(set(triggered)):
            plan.create_sessions.append(session_manifest(dependent, session_time, triggeredBy=name))
    labels = view.obj["metadata"].get("labels") or {}
    if plan.finished and LABEL_FINISHED not in labels:
        # finished: say when, by label, so history limits work from a metadata-only listing
        plan.labels = {LABEL_FINISHED: str(int(now)), LABEL_WORKFLOW: label_value(spec.workflow)}
    elif not engine.state.done and LABEL_FINISHED in labels:
        plan.labels = {LABEL_FINISHED: None}  # a new attempt runs: not finished any more
    return plan
