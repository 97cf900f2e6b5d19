"""Reconcile Workflows and Sessions: the imperative shell around the session engine.

Level-based: every reconcile reads the Session (fresh, never a cache), rebuilds the engine from
its status, turns the pods of running tasks into events, steps, creates pods for `StartTask`
actions and writes status back with the resourceVersion it read. Pod names are deterministic, so
repeating a reconcile (after a crash or a 409) adopts pods instead of creating twins; the status
write is the commit point.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import shutil
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kudig_runner.prepare import decode_key

from kudig.engine.core import (
    Engine,
    Event,
    KillRequested,
    SessionContext,
    StartTask,
    TaskFailed,
    TaskLog,
    TaskResult,
    TaskSucceeded,
    failed_tasks,
    resumable_results,
)
from kudig.engine.state import FAILED, SessionState, Task, TaskState, decode_state, encode_state
from kudig.errors import KudigError
from kudig.expr import TemplateEngine
from kudig.params import ancestors, deep_merge
from kudig.session_vars import session_params
from kudig.workflow import Workflow, load_workflow_text
from kudig_operator.kube import Conflict, KubeApi
from kudig_operator.models import (
    Attempt,
    Condition,
    EngineBlob,
    FailedTask,
    SessionSpec,
    SessionStatus,
    WorkflowSpec,
    WorkflowStatus,
)
from kudig_operator.podspec import PodContext, build_pod, pod_name

log = logging.getLogger("kudig.controller")

TERMINAL = ("Succeeded", "Failed", "Killed")
MAX_LOG_CHARS = 4000
_IMAGE_ERRORS = (
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "ErrImageNeverPull",
    "CreateContainerConfigError",
)


def now_iso(t: float | None = None) -> str:
    return datetime.fromtimestamp(t if t is not None else time.time(), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def task_generation(state: SessionState, task: Task) -> str:
    """Retry counts of the task and its ancestors: a new try gets a new pod name."""
    return ".".join(str(t.retry_count) for t in ancestors(state, task))


def pod_event(task: Task, pod: dict[str, Any] | None) -> Event | None:
    """What a task pod says about its task, or None while it is still working."""
    if pod is None:
        return TaskFailed(task.id, "Task pod was deleted while it was running", retryable=True)
    status = pod.get("status") or {}
    phase = status.get("phase")
    container: dict[str, Any] = next(
        (c for c in status.get("containerStatuses") or [] if c.get("name") == "task"), {}
    )
    terminated = (container.get("state") or {}).get("terminated") or {}
    message = terminated.get("message") or ""
    output: dict[str, Any] | None = None
    if message.strip().startswith("{"):
        try:
            output = json.loads(message)
        except ValueError:
            output = None
    if phase == "Succeeded":
        if output and output.get("error"):
            return TaskFailed(task.id, str(output["error"].get("message", "task failed")))
        return TaskSucceeded(task.id, TaskResult.from_json(output or {}))
    if phase == "Failed":
        if output and output.get("error"):
            err = output["error"]
            return TaskFailed(
                task.id,
                str(err.get("message", "task failed")),
                error={"message": str(err.get("message", ""))},
            )
        for init in status.get("initContainerStatuses") or []:
            t = (init.get("state") or {}).get("terminated") or {}
            if t.get("exitCode"):
                return TaskFailed(
                    task.id,
                    f"Workspace preparation failed (exit code {t.get('exitCode')}): {t.get('message') or t.get('reason') or ''}".strip(),
                )
        code = terminated.get("exitCode")
        if code is not None:
            text = f"Command failed with code {code}"
            if terminated.get("reason") and terminated.get("reason") not in ("Error", "Completed"):
                text += f" ({terminated['reason']})"
            return TaskFailed(task.id, text)
        return TaskFailed(
            task.id, f"Task pod failed: {status.get('reason') or status.get('message') or 'unknown reason'}"
        )
    for c in [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]:
        waiting = (c.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in _IMAGE_ERRORS:
            return TaskFailed(
                task.id,
                f"Task pod cannot start: {waiting['reason']}: {waiting.get('message', '')}".strip(),
                retryable=False,
            )
    return None


class PodCache:
    """Latest status of task pods as the pod watch delivered them.

    Saves one GET per running task per reconcile (a 1,000-way fan-out would otherwise GET every
    running pod each time one finishes). Only used to *skip* work safely: a pod seen finished
    stays finished, and a pod seen running will produce another watch event when it ends. A pod
    never seen, or seen deleted, is read from the API server (the truth after a restart).
    """

    def __init__(self) -> None:
        self._pods: dict[tuple[str, str], dict[str, Any]] = {}
        self._lock = threading.Lock()

    def update(self, namespace: str, name: str, pod: dict[str, Any] | None) -> None:
        """Record a watched pod; None (deleted) forgets it, so the next look asks the API server."""
        with self._lock:
            if pod is None:
                self._pods.pop((namespace, name), None)
            else:
                self._pods[(namespace, name)] = pod

    def forget(self, namespace: str, name: str) -> None:
        with self._lock:
            self._pods.pop((namespace, name), None)

    def lookup(self, namespace: str, name: str) -> tuple[bool, dict[str, Any] | None]:
        """(known, pod): known is False when the API server must be asked."""
        with self._lock:
            pod = self._pods.get((namespace, name))
        return pod is not None, pod


@dataclass
class LoadedWorkflow:
    key: str
    workflow: Workflow
    spec: WorkflowSpec
    generation: int


class WorkflowCache:
    """Compiled workflows by (uid, generation, project ConfigMap versions); files on local disk."""

    def __init__(self, api: KubeApi, root: Path) -> None:
        self.api = api
        self.root = root
        self._cache: dict[str, LoadedWorkflow] = {}
        self._lock = threading.Lock()

    def load(self, obj: Mapping[str, Any]) -> LoadedWorkflow:
        meta = obj["metadata"]
        spec = WorkflowSpec.model_validate(obj.get("spec") or {})
        namespace = meta["namespace"]
        cms = []
        for name in spec.project.config_maps:
            cm = self.api.get_config_map(namespace, name)
            if cm is None:
                raise KudigError(f"Project ConfigMap '{name}' not found")
            cms.append(cm)
        versions = ",".join(cm["metadata"]["resourceVersion"] for cm in cms)
        key = f"{meta['uid']}:{meta.get('generation', 1)}:{versions}"
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                return hit
            digest = hashlib.sha256(key.encode()).hexdigest()[:16]
            project = self.root / namespace / meta["name"] / digest
            if project.exists():
                shutil.rmtree(project)
            project.mkdir(parents=True)
            for cm in cms:
                for file_key, text in (cm.get("data") or {}).items():
                    rel = decode_key(file_key)
                    if rel.startswith("/") or ".." in rel.split("/"):
                        raise KudigError(f"Project file path must stay inside the project: {rel}")
                    target = project / rel
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_text(text, encoding="utf-8")
                for file_key, b64 in (cm.get("binaryData") or {}).items():
                    target = project / decode_key(file_key)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(base64.b64decode(b64))
            name = spec.name or meta["name"]
            workflow = load_workflow_text(name, spec.dig, project, f"{name}.dig")
            loaded = LoadedWorkflow(key, workflow, spec, int(meta.get("generation", 1)))
            self._cache[key] = loaded
            return loaded


class Controller:
    def __init__(
        self,
        api: KubeApi,
        *,
        runner_image: str,
        cache_dir: Path,
        clock: Callable[[], float] = time.time,
        schedule_wakeup: Callable[[str, str, float], None] | None = None,
        pod_cache: PodCache | None = None,
    ) -> None:
        self.api = api
        self.pods = pod_cache or PodCache()
        self.runner_image = runner_image
        self.workflows = WorkflowCache(api, cache_dir)
        self.clock = clock
        self.evaluator = TemplateEngine()
        self.schedule_wakeup = schedule_wakeup
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self.stats: dict[str, int] = {"reconciles": 0, "pods_created": 0, "pods_adopted": 0, "conflicts": 0}

    def _lock(self, key: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(key, threading.Lock())

    # ------------------------------------------------------------------ workflows

    def reconcile_workflow(self, namespace: str, name: str) -> None:
        with self._lock(f"wf/{namespace}/{name}"):
            for _ in range(5):
                obj = self.api.get("workflows", namespace, name)
                if obj is None:
                    return
                status = WorkflowStatus.model_validate(obj.get("status") or {})
                generation = int(obj["metadata"].get("generation", 1))
                new = status.model_copy(deep=True)
                try:
                    loaded = self.workflows.load(obj)
                except (KudigError, ValueError) as e:
                    new.error = str(e)
                    new.workflow_name = (obj.get("spec") or {}).get("name") or name
                    cond = Condition(
                        type="Compiled",
                        status="False",
                        reason="CompileError",
                        message=str(e)[:1000],
                        last_transition_time=now_iso(),
                        observed_generation=generation,
                    )
                else:
                    wf = loaded.workflow
                    new.error = None
                    new.revision = generation
                    new.workflow_name = wf.name
                    new.tasks = len(wf.tasks)
                    new.timezone = wf.timezone_name
                    new.schedule = json.dumps(wf.schedule_config) if wf.schedule is not None else None
                    warnings = "; ".join(f"warning: {w}" for w in wf.warnings[:3])
                    cond = Condition(
                        type="Compiled",
                        status="True",
                        reason="CompiledWithWarnings" if wf.warnings else "Compiled",
                        message=(
                            f"{len(wf.tasks)} tasks; {warnings}" if warnings else f"{len(wf.tasks)} tasks"
                        )[:1000],
                        last_transition_time=now_iso(),
                        observed_generation=generation,
                    )
                new.conditions = _set_condition(status.conditions, cond)
                if new == status:
                    return
                obj["status"] = new.model_dump(by_alias=True, exclude_none=True)
                try:
                    self.api.replace_status("workflows", obj)
                    return
                except Conflict:
                    self.stats["conflicts"] += 1
                    continue

    # ------------------------------------------------------------------ sessions

    def reconcile_session(self, namespace: str, name: str) -> float | None:
        with self._lock(f"s/{namespace}/{name}"):
            for _ in range(8):
                try:
                    return self._reconcile_session_once(namespace, name)
                except Conflict:
                    self.stats["conflicts"] += 1
                    continue
            return None

    def _write_session_status(self, obj: dict[str, Any], old: SessionStatus, new: SessionStatus) -> None:
        if new == old:
            return
        obj["status"] = new.model_dump(by_alias=True, exclude_none=True)
        self.api.replace_status("sessions", obj)

    def _fail_session(self, obj: dict[str, Any], status: SessionStatus, message: str) -> None:
        new = status.model_copy(deep=True)
        new.phase = "Error" if not status.engine else status.phase
        new.message = message[:2000]
        generation = int(obj["metadata"].get("generation", 1))
        new.conditions = _set_condition(
            status.conditions,
            Condition(
                type="Succeeded",
                status="False",
                reason="InvalidSession",
                message=message[:1000],
                last_transition_time=now_iso(self.clock()),
                observed_generation=generation,
            ),
        )
        self._write_session_status(obj, status, new)

    def _reconcile_session_once(self, namespace: str, name: str) -> float | None:
        self.stats["reconciles"] += 1
        obj = self.api.get("sessions", namespace, name)
        if obj is None:
            return None
        status = SessionStatus.model_validate(obj.get("status") or {})
        try:
            spec = SessionSpec.model_validate(obj.get("spec") or {})
        except ValueError as e:
            self._fail_session(obj, status, f"Invalid Session spec: {e}")
            return None
        current_attempt = status.attempt or 0
        wants_new_attempt = spec.attempt > current_attempt
        if status.phase in TERMINAL and not wants_new_attempt:
            return None
        wf_obj = self.api.get("workflows", namespace, spec.workflow)
        if wf_obj is None:
            self._fail_session(obj, status, f"Workflow '{spec.workflow}' not found in namespace {namespace}")
            return None
        try:
            loaded = self.workflows.load(wf_obj)
            session_time = datetime.fromisoformat(spec.session_time)
            if session_time.tzinfo is None:
                raise KudigError(f"sessionTime needs a UTC offset: {spec.session_time}")
        except (KudigError, ValueError) as e:
            self._fail_session(obj, status, str(e))
            return None
        wf = loaded.workflow
        now = self.clock()
        attempt = max(current_attempt, 1)
        if status.engine is None or (wants_new_attempt and status.phase in TERMINAL):
            attempt = spec.attempt if status.engine is not None else max(spec.attempt, 1)
            previous = decode_state(status.engine.data) if status.engine is not None else None
            ctx = self._context(obj, spec, loaded, session_time, attempt)
            engine = Engine.new(ctx, wf.tasks)
            if previous is not None and spec.retry_mode == "failed":
                engine.state.resume = resumable_results(previous)
            attempts = [
                *status.attempts,
                Attempt(index=attempt, revision=loaded.generation, phase="Running", started_at=now_iso(now)),
            ]
            revision = loaded.generation
        else:
            ctx = self._context(obj, spec, loaded, session_time, attempt)
            engine = Engine(ctx, decode_state(status.engine.data))
            attempts = list(status.attempts)
            revision = status.workflow_revision or loaded.generation
        events: list[Event] = []
        if spec.kill and not engine.state.killed and not engine.state.done:
            events.append(KillRequested())
        pod_ctx = self._pod_context(obj, loaded, attempt)
        for task in engine.running():
            pname = pod_name(name, attempt, task.name, task_generation(engine.state, task))
            known, pod = self.pods.lookup(namespace, pname)
            if not known:
                pod = self.api.get_pod(namespace, pname)
                self.stats["pod_reads"] = self.stats.get("pod_reads", 0) + 1
            event = pod_event(task, pod)
            if event is not None:
                events.append(event)
                self.pods.forget(namespace, pname)
        actions = engine.step(events, now)
        if engine.state.killed:
            for task in engine.running():
                self.api.delete_pod(
                    namespace, pod_name(name, attempt, task.name, task_generation(engine.state, task))
                )
        for action in actions:
            if isinstance(action, StartTask):
                task = engine.state.tasks[action.task_id]
                pname = pod_name(name, attempt, task.name, task_generation(engine.state, task))
                body = build_pod(
                    pod_ctx,
                    name=pname,
                    task_id=task.id,
                    task_name=task.name,
                    op_type=action.op_type,
                    config=action.config,
                )
                if self.api.create_pod(namespace, body):
                    self.stats["pods_created"] += 1
                else:
                    self.stats["pods_adopted"] += 1
            elif isinstance(action, TaskLog):
                task = engine.state.tasks[action.task_id]
                text = (str(task.state_params.get("log", "")) + action.text + "\n")[-MAX_LOG_CHARS:]
                task.state_params["log"] = text
        new = self._status(obj, status, engine, attempt, attempts, revision, now)
        self._write_session_status(obj, status, new)
        wake = engine.next_wakeup()
        if wake is not None and self.schedule_wakeup is not None:
            self.schedule_wakeup(namespace, name, wake)
        return wake

    def _context(
        self,
        obj: Mapping[str, Any],
        spec: SessionSpec,
        loaded: LoadedWorkflow,
        session_time: datetime,
        attempt: int,
    ) -> SessionContext:
        wf = loaded.workflow
        uid = str(obj["metadata"].get("uid", ""))
        builtins = session_params(
            session_time=session_time.astimezone(wf.tz),
            timezone=wf.timezone_name,
            session_id=int(uid.replace("-", "")[:8] or "0", 16),
            attempt_id=attempt,
            session_uuid=uid,
            project_id=1,
            retry_attempt_name=None if attempt == 1 else f"attempt-{attempt}",
            schedule=wf.schedule,
            last_executed_session_time=None,
        )
        params: dict[str, Any] = {}
        deep_merge(params, loaded.spec.params)
        deep_merge(params, spec.params)
        return SessionContext(
            workflow_name=wf.name,
            timezone=wf.timezone_name,
            session_params=builtins,
            attempt_params=params,
            evaluator=self.evaluator,
            project_dir=wf.project_dir,
        )

    def _pod_context(self, obj: Mapping[str, Any], loaded: LoadedWorkflow, attempt: int) -> PodContext:
        meta = obj["metadata"]
        return PodContext(
            namespace=meta["namespace"],
            session_name=meta["name"],
            session_uid=meta["uid"],
            workflow=loaded.workflow.name,
            attempt=attempt,
            runner_image=self.runner_image,
            config_maps=loaded.spec.project.config_maps,
            defaults=loaded.spec.pod,
            secret_name=loaded.spec.secret_name or "kudig-secrets",
        )

    def _status(
        self,
        obj: Mapping[str, Any],
        old: SessionStatus,
        engine: Engine,
        attempt: int,
        attempts: list[Attempt],
        revision: int,
        now: float,
    ) -> SessionStatus:
        state = engine.state
        current = [t for t in state.tasks if not t.superseded]
        done = sum(1 for t in current if t.done)
        if state.done:
            phase = "Succeeded" if state.success else ("Killed" if state.killed else "Failed")
        else:
            phase = "Running"
        failed = [
            FailedTask(name=t.name, message=str((t.error or {}).get("message", ""))[:500])
            for t in failed_tasks(state)
        ][:20]
        started = old.started_at if old.attempt == attempt and old.started_at else now_iso(now)
        finished = (old.finished_at or now_iso(now)) if state.done else None
        if state.done and old.phase not in TERMINAL:
            finished = now_iso(now)
        attempts = [a.model_copy() for a in attempts]
        if attempts:
            attempts[-1].phase = phase
            attempts[-1].finished_at = finished
        generation = int(obj["metadata"].get("generation", 1))
        cond_status = "True" if phase == "Succeeded" else ("False" if state.done else "Unknown")
        message = "; ".join(f"{f.name}: {f.message}" for f in failed[:3]) if phase == "Failed" else None
        condition = Condition(
            type="Succeeded",
            status=cond_status,  # type: ignore[arg-type]
            reason=phase,
            message=message or "",
            last_transition_time=now_iso(now),
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
            next_wakeup=now_iso(wake) if wake is not None and not state.done else None,
            message=message,
            failed_tasks=failed,
            attempts=attempts,
            engine=EngineBlob(data=encode_state(state)),
            conditions=_set_condition(old.conditions, condition),
        )


def _set_condition(conditions: list[Condition], new: Condition) -> list[Condition]:
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


def task_rows(state: SessionState) -> list[dict[str, Any]]:
    """A readable table of the current tasks (for `kudig tasks`)."""
    rows = []
    for t in state.tasks:
        if t.superseded:
            continue
        rows.append(
            {
                "id": t.id,
                "name": t.name,
                "state": t.state.value,
                "retries": t.retry_count,
                "error": (t.error or {}).get("message", "") if t.state in FAILED else "",
                "started_at": t.started_at,
                "finished_at": t.finished_at,
                "group": t.is_group,
                "log": t.state_params.get("log", ""),
            }
        )
    return rows


__all__ = ["Controller", "TaskState", "decode_state", "encode_state", "pod_event", "task_rows"]
