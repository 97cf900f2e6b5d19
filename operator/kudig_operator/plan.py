"""Reconcile as a plan: pure functions from what the controller observed to what it must do.

`plan_session(view, workflow, pods, suspects, fetched, now, settings)` takes a Session as the
API server sent it, its compiled Workflow, the task pods the controller observed and the result
ConfigMaps it fetched, and returns a `SessionPlan`: the status to write, the ConfigMaps and pods to
create, the pods to delete and when to wake up next. It does no I/O (but for the engine reading a
`call>`ed file of the compiled project), so every decision of the controller — first attempt,
retry, resume, kill, lost pods, image errors, timers — is unit-tested without a cluster; the
controller (`controller.py`) only gathers the inputs and carries plans out.

The order the controller carries a plan out in is part of the design:
1. create the result ConfigMaps and the pods (names are deterministic, so a repeat adopts);
2. write the status with the resourceVersion it was planned from — the commit point; a 409 means
   the plan was made from a stale Session: it is dropped and made again from a fresh read;
3. only after a successful commit, delete pods (`delete_pods`): the pods of killed tasks and
   orphans — running pods of this Session that the committed state does not know (created by a
   plan that never committed, e.g. one made just before a `kudig kill`; the controller passes
   those it knows of as `suspects`). Deleting only after the commit means a plan made from a stale
   Session can never delete a pod the real state runs. A killed Session also asks for a `sweep`:
   every still-running pod of the Session is deleted, including ones this controller never saw
   (created before a restart by a plan that never committed).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kudig_runner.protocol import ProtocolError, ResultPointer, read_framed_result, result_pointer

from kudig.api import (
    API_VERSION,
    ERROR,
    FAILED,
    KILLED,
    LABEL_FINISHED,
    LABEL_RESULT,
    LABEL_SESSION,
    LABEL_WORKFLOW,
    MANAGED_BY,
    MANAGER,
    PENDING,
    RUNNING,
    SUCCEEDED,
    TASK_CONTAINER,
    TERMINAL,
    Attempt,
    Condition,
    EngineBlob,
    FailedTask,
    SessionSpec,
    SessionStatus,
    WorkflowSpec,
    WorkflowStatus,
    label_value,
    session_manifest,
)
from kudig.engine.core import (
    Action,
    Engine,
    Evaluator,
    Event,
    KillRequested,
    SessionContext,
    StartTask,
    TaskFailed,
    TaskFinished,
    TaskLog,
    TaskSucceeded,
    failed_tasks,
    parse_retry,
    resumable_results,
    resume_from,
)
from kudig.engine.state import SessionState, Task, TaskState
from kudig.errors import KudigError
from kudig.params import ancestors, deep_merge
from kudig.schedule import ScheduleTime
from kudig.scheduler import ScheduleState, plan_schedule
from kudig.session_vars import session_params
from kudig.taskio import output_event
from kudig.workflow import Workflow
from kudig_operator import events as ev
from kudig_operator import require, results
from kudig_operator.events import SessionEvent
from kudig_operator.podspec import PodContext, build_task, pod_name
from kudig_operator.require import is_require, waiting_targets

MAX_LOG_CHARS = 4000
MAX_FAILED_TASKS = 20
IMAGE_ERRORS = frozenset(
    {
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
        "ErrImageNeverPull",
        "CreateContainerConfigError",
    }
)


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --------------------------------------------------------------------------- observed pods


@dataclass(frozen=True)
class PodView:
    """What kudig needs of a task pod (from a watch event or a GET), small enough to cache."""

    name: str
    rv: str = ""
    owner_uid: str | None = None
    phase: str | None = None
    deleting: bool = False
    exit_code: int | None = None
    reason: str | None = None  # the task container's termination reason
    message: str = ""  # the task container's termination message (the runner's output)
    waiting: tuple[str, str] | None = None  # a container stuck on an image/config error
    init_failure: tuple[int, str] | None = None  # (exit code, message) of a failed init container
    pod_reason: str | None = None
    pod_message: str | None = None
    log: str | None = None  # the container log, fetched only when the output points to it
    seen: float | None = None  # when the controller received this view (a finished one: first seen so)

    @property
    def finished(self) -> bool:
        return self.phase in ("Succeeded", "Failed")

    @property
    def active(self) -> bool:
        return not self.finished and not self.deleting


def pod_view(pod: Mapping[str, Any], seen: float | None = None) -> PodView:
    meta = pod.get("metadata") or {}
    status = pod.get("status") or {}
    owner = next(
        (r.get("uid") for r in meta.get("ownerReferences") or [] if r.get("kind") == "Session"), None
    )
    container: Mapping[str, Any] = next(
        (c for c in status.get("containerStatuses") or [] if c.get("name") == TASK_CONTAINER), {}
    )
    terminated = (container.get("state") or {}).get("terminated") or {}
    waiting = None
    init_failure = None
    for c in [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]:
        w = (c.get("state") or {}).get("waiting") or {}
        if w.get("reason") in IMAGE_ERRORS:
            waiting = (str(w["reason"]), str(w.get("message") or ""))
    for c in status.get("initContainerStatuses") or []:
        t = (c.get("state") or {}).get("terminated") or {}
        if t.get("exitCode"):
            init_failure = (int(t["exitCode"]), str(t.get("message") or t.get("reason") or ""))
    code = terminated.get("exitCode")
    return PodView(
        name=str(meta.get("name", "")),
        rv=str(meta.get("resourceVersion", "")),
        owner_uid=owner,
        phase=status.get("phase"),
        deleting=bool(meta.get("deletionTimestamp")),
        exit_code=int(code) if code is not None else None,
        reason=terminated.get("reason"),
        message=str(terminated.get("message") or ""),
        waiting=waiting,
        init_failure=init_failure,
        pod_reason=status.get("reason") or status.get("message"),
        pod_message=status.get("message"),
        seen=seen,
    )


def _output_doc(view: PodView) -> Any:
    text = view.message.strip()
    if not text.startswith("{"):
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


def _pointer(view: PodView) -> ResultPointer | None:
    try:
        return result_pointer(_output_doc(view))
    except ProtocolError:
        return None  # a malformed pointer: `pod_event` reports it


def log_lines_needed(view: PodView) -> int | None:
    """How many lines at the end of a finished pod's log hold its result (too large for a
    termination message), or None when the result is in the termination message."""
    if not view.finished:
        return None
    pointer = _pointer(view)
    return None if pointer is None else int(pointer["lines"])


def frame_complete(view: PodView, log_text: str) -> bool:
    """Whether `log_text` holds the whole result frame the pod's output points to."""
    pointer = _pointer(view)
    if pointer is None:
        return True
    try:
        read_framed_result(log_text, pointer)
    except ProtocolError:
        return False
    return True


def pod_event(task: Task, view: PodView | None) -> Event | None:
    """What a task pod says about its task, or None while it is still working."""
    if view is None:
        return TaskFailed(task.id, "Task pod was deleted while it was running", retryable=True)
    output = _output_doc(view)
    try:
        pointer = result_pointer(output)
    except ProtocolError as e:
        return TaskFailed(task.id, f"Invalid task output: {e}", retryable=True)
    if pointer is not None and view.finished:
        if view.log is None:
            return TaskFailed(
                task.id, "Task result lost: the task pod's log could not be read", retryable=True
            )
        try:
            output = read_framed_result(view.log, pointer)
        except ProtocolError as e:
            return TaskFailed(task.id, f"Task result lost: {e}", retryable=True)
    if view.phase == "Succeeded":
        return output_event(task.id, output or {})
    if view.phase == "Failed":
        if output and output.get("error"):
            return output_event(task.id, output)
        if view.pod_reason == "DeadlineExceeded":
            return TaskFailed(
                task.id, f"Task timed out: {view.pod_message or 'the pod ran past its deadline'}"
            )
        if view.init_failure is not None:
            code, message = view.init_failure
            return TaskFailed(task.id, f"Workspace preparation failed (exit code {code}): {message}".strip())
        if view.exit_code is not None:
            # digdag's sh> text ("(runtime)": the exception kind it appends); a pod-level reason
            # such as OOMKilled says more and takes its place
            reason = view.reason if view.reason and view.reason not in ("Error", "Completed") else "runtime"
            return TaskFailed(task.id, f"Command failed with code {view.exit_code} ({reason})")
        return TaskFailed(task.id, f"Task pod failed: {view.pod_reason or 'unknown reason'}")
    if view.waiting is not None:
        reason, message = view.waiting
        return TaskFailed(task.id, f"Task pod cannot start: {reason}: {message}".strip(), retryable=False)
    if view.deleting and not view.finished:
        return None  # being deleted: the DELETED event (or a 404) decides
    return None


# --------------------------------------------------------------------------- workflows


@dataclass(frozen=True)
class CompiledWorkflow:
    """A Workflow object as the controller compiled it (the shell's WorkflowStore builds it)."""

    name: str
    uid: str
    generation: int
    spec: WorkflowSpec | None
    workflow: Workflow | None = None
    digest: str | None = None
    error: str | None = None
    reason: str = "CompileError"
    project: str | None = None  # the `kudig.io/project` label (a trigger may name the project)

    @property
    def ok(self) -> bool:
        return self.workflow is not None and self.spec is not None and self.error is None


def set_condition(conditions: list[Condition], new: Condition) -> list[Condition]:
    """Replace the condition of `new.type`, keeping its lastTransitionTime when nothing changed."""
    out = []
    replaced = False
    for c in conditions:
        if c.type == new.type:
            replaced = True
            if c.status == new.status and c.reason == new.reason and c.message == new.message:
                keep = c.model_copy()
                keep.observed_generation = new.observed_generation
                out.append(keep)
            else:
                out.append(new)
        else:
            out.append(c)
    if not replaced:
        out.append(new)
    return out


@dataclass
class WorkflowPlan:
    status: dict[str, Any] | None = None  # the status to write (None: unchanged)
    create_sessions: list[dict[str, Any]] = field(default_factory=list)  # scheduled sessions due
    run_times: dict[str, float] = field(default_factory=dict)  # their slots' run times, by Session name
    skipped: list[str] = field(default_factory=list)  # slots skipped, for the log
    wakeup: float | None = None  # the next run time
    needs_active: bool = False  # skip_on_overtime: plan again knowing whether an attempt runs


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


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
            _plan_schedule(obj, compiled, status, new, plan, now, active_attempt)
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


def _plan_schedule(
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
        next_session_time=_parse_time(status.next_session_time),
        next_run_time=_parse_time(status.next_run_time),
        last_session_time=_parse_time(status.last_scheduled_session_time),
        from_time=status.applied_schedule_from or "",
    )
    now_dt = datetime.fromtimestamp(now, UTC)
    from_key = spec.schedule_from or ""
    kwargs: dict[str, Any] = {
        "schedule_key": key,
        "from_time": _parse_time(spec.schedule_from),
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


# --------------------------------------------------------------------------- sessions


@dataclass(frozen=True)
class Settings:
    """The controller's own configuration, as far as plans depend on it."""

    runner_image: str
    controller_id: str
    evaluator: Evaluator


@dataclass
class SessionView:
    """A Session as read, with what the controller must observe before planning (`prepare`)."""

    obj: dict[str, Any]
    status: SessionStatus
    spec: SessionSpec | None
    spec_error: str | None
    data: dict[str, Any] | None  # the stored engine state, references unresolved
    pods: list[str]  # pod names of the running tasks (their statuses are inputs)
    refs: list[str]  # result ConfigMaps the state refers to
    decoded: Decoded | None = None  # the state already decoded (consumed by the plan)
    required: list[str] = field(default_factory=list)  # Sessions running require> tasks wait for

    @property
    def namespace(self) -> str:
        return str(self.obj["metadata"]["namespace"])

    @property
    def name(self) -> str:
        return str(self.obj["metadata"]["name"])

    @property
    def uid(self) -> str:
        return str(self.obj["metadata"].get("uid", ""))

    @property
    def finished(self) -> bool:
        """Terminal, and no new attempt asked for: nothing to run."""
        attempt = self.status.attempt or 0
        return self.status.phase in TERMINAL and (self.spec is None or self.spec.attempt <= attempt)


Decoded = tuple[SessionState, results.Memo]


@dataclass
class SessionPlan:
    status: dict[str, Any] | None = None  # the status to write (None: unchanged)
    create_config_maps: list[dict[str, Any]] = field(default_factory=list)
    create_pods: list[dict[str, Any]] = field(default_factory=list)
    delete_pods: list[str] = field(default_factory=list)  # after the commit
    sweep: bool = False  # after the commit, delete every running pod of the Session (killed)
    wakeup: float | None = None
    finished: bool = False  # the Session needs nothing more (caches can be dropped)
    waiting_for_workflow: str | None = None  # retry when this Workflow compiles
    waiting_for_session: str | None = None  # retry when this Session finishes
    waiting_for_sessions: list[str] = field(default_factory=list)  # require>: re-plan when each ends
    patch_sessions: dict[str, dict[str, Any]] = field(default_factory=dict)  # require> reruns (spec)
    create_sessions: list[dict[str, Any]] = field(default_factory=list)  # triggered (before the commit)
    labels: dict[str, str | None] | None = None  # metadata labels to set (None: remove), after the commit
    decoded: Decoded | None = None  # the state the written status holds, to skip decoding it next time
    # What this plan's status write commits, for metrics and Events (the controller reports them
    # only once the write succeeded, so a plan dropped on a 409 reports nothing):
    started_attempt: int | None = None  # a new attempt starts
    outcome: str | None = None  # the attempt ends: succeeded | failed | killed
    duration: float | None = None  # of the attempt that ends (seconds from its start)
    runs: list[TaskRun] = field(default_factory=list)  # work-task tries that reported
    step_origins: dict[str, float] = field(default_factory=dict)  # pod -> its upstream seen done
    sla_missed: bool = False  # the `sla:` deadline passed in this plan
    running: int | None = None  # task pods the committed state runs (None: unknown, unchanged)
    events: list[SessionEvent] = field(default_factory=list)  # Kubernetes Events to create


@dataclass(frozen=True)
class TaskRun:
    """One try of a work task that reported in a plan (each retry is another run)."""

    operator: str  # the task's operator (sh, py, require, ...): a bounded set
    outcome: str  # succeeded | failed
    seconds: float  # from the try's start (its plan) to its result (this plan)
    retried: bool = False  # the failure is retried by the task's own `_retry`


def _generation(rows: list[dict[str, Any]], row: dict[str, Any]) -> str:
    """Retry counts of the task and its ancestors: a new try gets a new pod name."""
    chain = [row]
    while chain[-1].get("parent") is not None:
        chain.append(rows[chain[-1]["parent"]])
    return ".".join(str(r.get("retry_count", 0)) for r in reversed(chain))


def _running(state: SessionState) -> list[Task]:
    """Running tasks with a pod (a require> task has none: it waits for a Session)."""
    return [t for t in state.tasks if t.state == TaskState.RUNNING and not t.superseded and not is_require(t)]


def task_pod_name(session: str, attempt: int, state: SessionState, task: Task) -> str:
    return pod_name(session, attempt, task.name, ".".join(str(t.retry_count) for t in ancestors(state, task)))


def prepare(obj: dict[str, Any], decoded: Decoded | None = None) -> SessionView:
    """Read a Session: its spec, status, and which pods and ConfigMaps must be observed.

    `decoded` is the engine state of exactly this version of the Session, when the controller
    still holds it from its own last status write (saves decoding the blob); the plan consumes
    (mutates) it."""
    status = SessionStatus.model_validate(obj.get("status") or {})
    spec: SessionSpec | None = None
    spec_error = None
    try:
        spec = SessionSpec.model_validate(obj.get("spec") or {})
    except ValueError as e:
        spec_error = f"Invalid Session spec: {e}"
    pods: list[str] = []
    refs: list[str] = []
    if spec is not None and status.phase in TERMINAL and spec.attempt <= (status.attempt or 0):
        # finished: nothing to observe, and the plan needs no state (a controller starting up
        # meets every finished Session of the cluster once)
        return SessionView(obj, status, spec, spec_error, None, [], [])
    if status.engine is None:
        decoded = None
    if decoded is not None:
        state = decoded[0]
        attempt = max(status.attempt or 1, 1)
        pods = [task_pod_name(str(obj["metadata"]["name"]), attempt, state, t) for t in _running(state)]
        required = waiting_targets([t.to_json() for t in state.tasks if is_require(t)])
        return SessionView(obj, status, spec, spec_error, None, pods, [], decoded, required)
    data = results.decode_json(status.engine.data) if status.engine is not None else None
    if data is not None:
        refs = results.refs(data)
        rows = data.get("tasks", [])
        attempt = max(status.attempt or 1, 1)
        name = str(obj["metadata"]["name"])
        pods = [
            pod_name(name, attempt, r["name"], _generation(rows, r))
            for r in rows
            if r.get("state") == TaskState.RUNNING.value
            and not r.get("superseded")
            and require.KEY not in (r.get("state_params") or {})
        ]
        return SessionView(obj, status, spec, spec_error, data, pods, refs, required=waiting_targets(rows))
    return SessionView(obj, status, spec, spec_error, data, pods, refs)


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
        last_executed_session_time=_parse_time(spec.last_executed_session_time),
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


def _orphans(view: SessionView, expected: set[str], suspects: Iterable[PodView]) -> list[str]:
    return sorted(p.name for p in suspects if p.active and p.owner_uid == view.uid and p.name not in expected)


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
    only repeats a create that then meets AlreadyExists)."""
    suspects = list(suspects)
    if view.spec is None:
        return invalid_plan(view, view.spec_error or "Invalid Session spec", now, settings)
    spec = view.spec
    status = view.status
    if view.finished:
        # Nothing to run; a pod still running here was started by a plan that never committed.
        return SessionPlan(delete_pods=_orphans(view, set(), suspects), finished=True)
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
            previous, memo = view.decoded
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
        engine = Engine(ctx, previous)
        attempts = list(status.attempts)
        revision = status.workflow_revision or workflow.generation

    events: list[Event] = []
    if spec.kill and not engine.state.killed and not engine.state.done:
        events.append(KillRequested())
    name = view.name
    seen_done: dict[int, float] = {}  # task -> when its pod was seen done (for step gaps)
    known_names: dict[tuple[int, int], str] = {}

    def pod_of(task: Task) -> str:
        key = (task.id, task.retry_count)  # ancestors' retries supersede the row: a new id
        found = known_names.get(key)
        if found is None:
            found = known_names[key] = task_pod_name(name, attempt, engine.state, task)
        return found

    steps = require.RequireSteps()
    required = required or {}
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
        if event is not None:
            events.append(event)
            seen_done[task.id] = (
                seen_view.seen if seen_view is not None and seen_view.seen is not None else now
            )
    events.extend(steps.events)
    tries = [_Try.of(engine.state, e) for e in events if not isinstance(e, KillRequested)]
    sla_before = engine.state.sla_fired
    actions = engine.step(events, now)
    all_actions = list(actions)

    plan = SessionPlan()
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
                _carry(action, engine, plan, pod_ctx, pod_of)
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
    plan.delete_pods.extend(p for p in _orphans(view, expected, suspects) if p not in plan.delete_pods)

    blob, blobs, after = results.encode(engine.state, name, memo if not new_attempt else None)
    plan.decoded = (engine.state, after)
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
    new = _status(view, engine, attempt, attempts, revision, blob, now, settings)
    if new.model_copy(update={"controller": status.controller}) != status:
        # (the controller's name alone is no reason to write: two controllers overlapping during
        # a hand-over would otherwise take turns writing it)
        plan.status = new.model_dump(by_alias=True, exclude_none=True)
    plan.running = len(expected)
    _report(plan, view, engine, tries, all_actions, seen_done, pod_of, new, new_attempt, sla_before, now)
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


@dataclass(frozen=True)
class _Try:
    """A work task's try as it stood before the step its result is applied in."""

    task: Task
    succeeded: bool
    started_at: float | None
    retry_count: int
    ancestors: tuple[tuple[Task, int], ...]  # (group, its retry count) from the parent up

    @classmethod
    def of(cls, state: SessionState, event: Event) -> _Try:
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
    state: SessionState, tries: list[_Try], actions: Iterable[Action], now: float
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


def _report(
    plan: SessionPlan,
    view: SessionView,
    engine: Engine,
    tries: list[_Try],
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
        started = None if new_attempt else _parse_time(new.started_at)
        plan.duration = max(0.0, now - started.timestamp()) if started is not None else 0.0
        took = f"{plan.duration:.0f}s"
        if new.phase == SUCCEEDED:
            message = f"Attempt {attempt} succeeded: {new.progress} tasks in {took}"
            plan.events.append(SessionEvent(ev.NORMAL, ev.SUCCEEDED, message))
        elif new.phase == FAILED:
            message = f"Attempt {attempt} failed after {took}: {ev.cut(new.message or '', 300)}"
            plan.events.append(SessionEvent(ev.WARNING, ev.FAILED, message))
        else:
            plan.events.append(SessionEvent(ev.NORMAL, ev.KILLED, f"Attempt {attempt} killed after {took}"))


def _status(
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
    current = [t for t in state.tasks if not t.superseded]
    done = sum(1 for t in current if t.done)
    phase = (SUCCEEDED if state.success else KILLED if state.killed else FAILED) if state.done else RUNNING
    failed = [
        FailedTask(name=t.name, message=str((t.error or {}).get("message", ""))[:500])
        for t in failed_tasks(state)
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
        progress=f"{done}/{len(current)}",
        started_at=started,
        finished_at=finished,
        next_wakeup=iso(wake) if wake is not None and not state.done else None,
        message=message,
        failed_tasks=failed,
        attempts=attempts,
        engine=EngineBlob(data=blob),
        controller=settings.controller_id,
        conditions=set_condition(old.conditions, condition),
    )
