"""The imperative shell around `plan`: gather what a plan needs, carry plans out, remember little.

Per reconcile of a Session the controller
1. takes the Session as the watch last delivered it (or as its own last status write returned
   it), reading it from the API server only when it has none or a write met a 409;
2. takes the compiled Workflow from its store (compiled once per Workflow revision);
3. observes the pods of the running tasks (from the pod watch; a pod never seen is read once) and
   reads a pod's log only when its result is too large for the termination message, and the
   result ConfigMaps the state refers to (immutable, read once);
4. calls `plan.plan_session` and carries the plan out in the order `plan` documents (create, then
   commit the status with the resourceVersion read, then delete); a 409 starts over from a fresh
   read. Pod names are deterministic, so a repeated plan adopts pods instead of creating twins.

Everything cached here is only there to save API requests, never to decide: a stale Session body
costs a 409, a pod seen finished stays finished. Every cache entry belongs to a Session or a
Workflow and is dropped with it (when it is deleted, and for a Session when it finishes), so the
controller's memory follows the live objects, not its history.
"""

from __future__ import annotations

import base64
import heapq
import logging
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from kudig_runner.projectfiles import materialize

from kudig.api import (
    LABEL_FINISHED,
    LABEL_PROJECT,
    LABEL_SESSION,
    LABEL_WORKFLOW,
    SESSIONS,
    TERMINAL,
    WORKFLOWS,
    UnsafePath,
    WorkflowSpec,
    key_path,
    label_value,
    project_digest,
)
from kudig.cluster.kube import AlreadyExists, Conflict, KubeApi, resource_version_number
from kudig.errors import KudigError
from kudig.expr import TemplateEngine
from kudig.workflow import load_workflow_text
from kudig_operator import results
from kudig_operator.events import SessionEvent, event_body
from kudig_operator.metrics import Metrics
from kudig_operator.plan import (
    CompiledWorkflow,
    Decoded,
    PodView,
    SessionPlan,
    Settings,
    frame_complete,
    invalid_plan,
    log_lines_needed,
    plan_session,
    plan_workflow,
    pod_view,
    prepare,
    waiting_plan,
)

log = logging.getLogger("kudig.controller")

Key = tuple[str, str]  # (namespace, name)
MAX_CONFLICTS = 8
LOG_TAIL_MARGIN = 50
STARTED_PHASES = frozenset({"Running", "Succeeded", "Failed"})  # a pod's container has started


def _rv(obj: Mapping[str, Any] | None) -> int:
    """An object's resourceVersion as a number (-1: none), to prefer the newer of two copies."""
    number = resource_version_number(((obj or {}).get("metadata") or {}).get("resourceVersion"))
    return -1 if number is None else number


class KeyedLocks:
    """One lock per key, existing only while someone holds or waits for it."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[Any, tuple[threading.Lock, int]] = {}

    @contextmanager
    def hold(self, key: Any) -> Iterator[None]:
        with self._guard:
            lock, users = self._locks.get(key, (threading.Lock(), 0))
            self._locks[key] = (lock, users + 1)
        try:
            with lock:
                yield
        finally:
            with self._guard:
                lock, users = self._locks[key]
                if users == 1:
                    del self._locks[key]
                else:
                    self._locks[key] = (lock, users - 1)

    def __len__(self) -> int:
        return len(self._locks)


class Wakeups:
    """Timers for retries and `wait>`: one thread and a heap, one pending time per key."""

    def __init__(self, fire: Callable[[Any], None], clock: Callable[[], float] = time.time) -> None:
        self._fire = fire
        self._clock = clock
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Any]] = []
        self._due: dict[Any, float] = {}
        self._seq = 0
        self._stopped = False

    def set(self, key: Any, at: float) -> None:
        with self._cond:
            if self._due.get(key) == at:
                return
            self._due[key] = at
            self._seq += 1
            heapq.heappush(self._heap, (at, self._seq, key))
            self._cond.notify()

    def due(self, key: Any) -> float | None:
        """When `key` fires next (None: not pending)."""
        with self._cond:
            return self._due.get(key)

    def cancel(self, key: Any) -> None:
        with self._cond:
            self._due.pop(key, None)  # its heap entry is skipped when it comes up

    def __len__(self) -> int:
        return len(self._due)

    def overdue(self) -> int:
        """How many timers are past due and not fired yet (waiting for the timer thread)."""
        now = self._clock()
        with self._cond:
            return sum(1 for at in self._due.values() if at <= now)

    def run(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._stopped:
                        return
                    while self._heap and self._due.get(self._heap[0][2]) != self._heap[0][0]:
                        heapq.heappop(self._heap)  # cancelled or superseded
                    if not self._heap:
                        self._cond.wait()
                        continue
                    at, _, key = self._heap[0]
                    delay = at - self._clock()
                    if delay <= 0:
                        heapq.heappop(self._heap)
                        del self._due[key]
                        break
                    self._cond.wait(delay)
            try:
                self._fire(key)
            except Exception:
                log.exception("wake-up of %s failed", key)

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()


@dataclass
class _Bucket:
    """Everything remembered for one Session."""

    body: dict[str, Any] | None = None
    pods: dict[str, PodView] | None = None
    blobs: dict[str, bytes] | None = None
    uncommitted: set[str] | None = None  # pods created by plans whose status write failed
    decoded: tuple[str, Decoded] | None = None  # (resourceVersion, its engine state) after our write
    running: int = 0  # task pods its last committed plan runs (the kudig_tasks_running gauge)
    created: dict[str, float] | None = None  # pods we created, not yet seen started -> when


class WorkflowStore:
    """Compiled Workflows, one per Workflow object, recompiled when its revision changes.

    Compiling reads the project ConfigMaps (once per revision), refuses any file key that would
    land outside the project (`data` and `binaryData` alike), checks them against the digest
    `kudig push` put in the spec, and writes the files to a private directory per revision for
    `call>` to read. Nothing else reads the ConfigMaps: a Session's reconcile costs no ConfigMap
    request at all.
    """

    def __init__(self, api: KubeApi, root: Path) -> None:
        self.api = api
        self.root = root
        self._entries: dict[Key, CompiledWorkflow] = {}
        self._guard = threading.Lock()
        self._locks = KeyedLocks()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Key) -> CompiledWorkflow | None:
        return self._entries.get(key)

    def drop(self, key: Key) -> None:
        with self._guard:
            self._entries.pop(key, None)
        shutil.rmtree(self.root / key[0] / key[1], ignore_errors=True)

    def compile(self, obj: Mapping[str, Any], *, recheck: bool = False) -> CompiledWorkflow:
        """The compiled form of Workflow `obj`: cached per revision (uid, generation); `recheck`
        reads the ConfigMaps again (for Workflows without a digest, whose files can change under
        the same revision) and recompiles only when their content changed."""
        meta = obj["metadata"]
        key = (str(meta["namespace"]), str(meta["name"]))
        uid = str(meta.get("uid", ""))
        generation = int(meta.get("generation", 1))
        with self._locks.hold(key):
            current = self._entries.get(key)
            same = (
                current
                if current is not None and (current.uid, current.generation) == (uid, generation)
                else None
            )
            if same is not None and not recheck and same.reason != "ProjectFilesPending":
                return same
            compiled = self._compile(key, uid, generation, obj, same)
            project = ((meta.get("labels") or {}).get(LABEL_PROJECT)) or None
            if compiled.project != project:
                compiled = replace(compiled, project=project)
            with self._guard:
                self._entries[key] = compiled
            return compiled

    def dependents(self, namespace: str, upstream: CompiledWorkflow) -> list[str]:
        """The Workflows of `namespace` whose `trigger: attempt>:` names `upstream`."""
        if upstream.workflow is None:
            return []
        with self._guard:
            entries = [(k, c) for k, c in self._entries.items() if k[0] == namespace]
        out = []
        for (_, name), compiled in entries:
            trigger = compiled.workflow.trigger if compiled.ok and compiled.workflow is not None else None
            if trigger is None or trigger.workflow != upstream.workflow.name:
                continue
            if trigger.project is not None and trigger.project != upstream.project:
                continue
            out.append(name)
        return out

    def find(self, namespace: str, workflow: str, project: str | None) -> str | None:
        """The Workflow object of `namespace` that compiles workflow `workflow` of `project`."""
        with self._guard:
            entries = [(k, c) for k, c in self._entries.items() if k[0] == namespace]
        for (_, name), compiled in sorted(entries):
            wf = compiled.workflow if compiled.ok else None
            if wf is not None and wf.name == workflow and compiled.project == project:
                return name
        return None

    def _files(self, namespace: str, spec: WorkflowSpec) -> list[tuple[str, bytes]]:
        files: list[tuple[str, bytes]] = []
        for name in spec.project.config_maps:
            cm = self.api.get_config_map(namespace, name)
            if cm is None:
                raise KudigError(f"Project ConfigMap '{name}' not found in namespace {namespace}")
            for key, text in (cm.get("data") or {}).items():
                files.append((key, str(text).encode("utf-8")))
            for key, b64 in (cm.get("binaryData") or {}).items():
                files.append((key, base64.b64decode(b64)))
        for key, _ in files:
            key_path(key)  # UnsafePath: refused before anything is written
        return files

    def _compile(
        self, key: Key, uid: str, generation: int, obj: Mapping[str, Any], previous: CompiledWorkflow | None
    ) -> CompiledWorkflow:
        name = key[1]
        try:
            spec = WorkflowSpec.model_validate(obj.get("spec") or {})
        except ValueError as e:
            return CompiledWorkflow(name, uid, generation, None, error=f"Invalid Workflow spec: {e}")
        try:
            files = self._files(key[0], spec)
        except UnsafePath as e:
            return _unsafe(name, uid, generation, spec, e)
        except KudigError as e:
            return CompiledWorkflow(name, uid, generation, spec, error=str(e), reason="ProjectFilesMissing")
        digest = project_digest(files)
        if previous is not None and previous.ok and previous.digest == digest:
            return previous
        if spec.project.digest and spec.project.digest != digest:
            return CompiledWorkflow(
                name,
                uid,
                generation,
                spec,
                digest=digest,
                error=(
                    f"The project ConfigMaps hold files with digest {digest}, the Workflow expects "
                    f"{spec.project.digest}: waiting for the ConfigMaps of this revision"
                ),
                reason="ProjectFilesPending",
            )
        workflow_dir = self.root / key[0] / key[1]
        project = workflow_dir / digest.split(":")[-1][:16]
        try:
            if not project.is_dir():
                tmp = workflow_dir / f".tmp-{generation}-{threading.get_ident()}"
                shutil.rmtree(tmp, ignore_errors=True)
                tmp.mkdir(parents=True)
                materialize(tmp, files)
                tmp.rename(project)
            for old in workflow_dir.iterdir():
                if old != project:
                    shutil.rmtree(old, ignore_errors=True)
            wf_name = spec.name or name
            workflow = load_workflow_text(wf_name, spec.dig, project, f"{wf_name}.dig")
        except UnsafePath as e:
            return _unsafe(name, uid, generation, spec, e)
        except (KudigError, ValueError, OSError) as e:
            return CompiledWorkflow(name, uid, generation, spec, digest=digest, error=str(e))
        return CompiledWorkflow(name, uid, generation, spec, workflow=workflow, digest=digest)


def _unsafe(name: str, uid: str, generation: int, spec: WorkflowSpec, e: UnsafePath) -> CompiledWorkflow:
    return CompiledWorkflow(
        name,
        uid,
        generation,
        spec,
        error=f"Unsafe project file in ConfigMap: {e}",
        reason="UnsafeProjectFile",
    )


class Controller:
    def __init__(
        self,
        api: KubeApi,
        *,
        runner_image: str,
        cache_dir: Path,
        identity: str = "kudig",
        clock: Callable[[], float] = time.time,
        wakeups: Wakeups | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.api = api
        self.clock = clock
        self.settings = Settings(
            runner_image=runner_image, controller_id=identity, evaluator=TemplateEngine()
        )
        self.workflows = WorkflowStore(api, cache_dir)
        self.wakeups = wakeups
        self._locks = KeyedLocks()
        self._sessions: dict[Key, _Bucket] = {}
        self._waiting: dict[Key, set[Key]] = {}  # workflow -> sessions waiting for it to compile
        self._after: dict[Key, set[Key]] = {}  # session -> sessions chained after it (backfill)
        self._workflow_bodies: dict[Key, dict[str, Any]] = {}  # as the watch last delivered them
        self._guard = threading.Lock()
        self.stats: dict[str, int] = {
            "reconciles": 0,
            "pods_created": 0,
            "pods_adopted": 0,
            "pods_deleted": 0,
            "conflicts": 0,
            "pod_reads": 0,
            "log_reads": 0,
            "result_reads": 0,
            "results_written": 0,
            "sessions_started": 0,
            "events": 0,
        }
        self.metrics = metrics if metrics is not None else Metrics(identity=identity)
        self.metrics.bind(
            requests=lambda: getattr(api, "requests", {}),
            memory=self.memory,
            stats=lambda: self.stats,
            running=self.running_tasks,
            queue=self.queue_depth,
        )

    # ------------------------------------------------------------------ bookkeeping

    def _bucket(self, key: Key) -> _Bucket:
        with self._guard:
            bucket = self._sessions.get(key)
            if bucket is None:
                bucket = self._sessions[key] = _Bucket()
            return bucket

    def forget_session(self, key: Key) -> None:
        """Drop everything remembered for a Session (deleted, or finished)."""
        with self._guard:
            self._sessions.pop(key, None)
            for waiting in [*self._waiting.values(), *self._after.values()]:
                waiting.discard(key)
            self._waiting = {k: v for k, v in self._waiting.items() if v}
            self._after = {k: v for k, v in self._after.items() if v}
        if self.wakeups is not None:
            self.wakeups.cancel(("session", key))

    def memory(self) -> dict[str, int]:
        """Sizes of what the controller keeps (for tests and the cost benchmark)."""
        with self._guard:
            return {
                "sessions": len(self._sessions),
                "workflow_bodies": len(self._workflow_bodies),
                "pods": sum(len(b.pods or {}) for b in self._sessions.values()),
                "blobs": sum(len(b.blobs or {}) for b in self._sessions.values()),
                "workflows": len(self.workflows),
                "locks": len(self._locks),
                "waiting": sum(len(v) for v in self._waiting.values())
                + sum(len(v) for v in self._after.values()),
                "wakeups": len(self.wakeups) if self.wakeups is not None else 0,
            }

    def running_tasks(self) -> int:
        """Task pods the running Sessions' committed states run (for the metrics)."""
        with self._guard:
            return sum(b.running for b in self._sessions.values())

    def queue_depth(self) -> int:
        """Reconciles in flight or waiting for an object's lock, and timers past due (the worker
        pool's queue, which only main.py knows, is added there)."""
        return len(self._locks) + (self.wakeups.overdue() if self.wakeups is not None else 0)

    def active_sessions(self) -> list[Key]:
        """Sessions the controller believes are not finished (the resync re-reads them)."""
        with self._guard:
            return [k for k, b in self._sessions.items() if b.body is not None]

    # ------------------------------------------------------------------ watch events

    def on_session_event(self, namespace: str, name: str, body: Mapping[str, Any] | None) -> None:
        """A watch event for a Session (None: deleted): remember it, reconcile if it is news."""
        if self.note_session(namespace, name, body):
            self.reconcile_session(namespace, name)

    def note_session(self, namespace: str, name: str, body: Mapping[str, Any] | None) -> bool:
        """Remember a watched Session; True when it needs a reconcile. Cheap and non-blocking, so
        the watch can call it on its event loop: the echo of the controller's own status write
        (a version it already holds) is not news."""
        key = (namespace, name)
        if body is None:
            self.forget_session(key)
            return False
        rv = _rv(body)
        with self._guard:
            bucket = self._sessions.get(key)
            if bucket is not None and bucket.body is not None and rv >= 0 and _rv(bucket.body) == rv:
                return False
        self._remember_body(key, dict(body))
        return True

    def on_pod_event(self, namespace: str, pod: Mapping[str, Any], deleted: bool) -> None:
        """A watch event for a task pod: remember its status; reconcile when it means progress."""
        key = self.note_pod(namespace, pod, deleted)
        if key is not None:
            self.reconcile_session(*key)

    def note_pod(self, namespace: str, pod: Mapping[str, Any], deleted: bool) -> Key | None:
        """Remember a watched task pod; the Session to reconcile when the event means progress
        (finished, lost, stuck on its image), else None. Cheap and non-blocking."""
        # The owner reference has the Session's full name (the label is cut to 63 characters).
        meta = pod.get("metadata") or {}
        session = next(
            (r.get("name") for r in meta.get("ownerReferences") or [] if r.get("kind") == "Session"), None
        )
        if not session:
            return None
        key = (namespace, str(session))
        now = self.clock()
        view = pod_view(pod, now)
        created = None
        with self._guard:
            bucket = self._sessions.get(key)
            if bucket is None and not deleted and (view.finished or view.waiting is not None):
                bucket = self._sessions[key] = _Bucket()
            if bucket is not None:
                if bucket.pods is None:
                    bucket.pods = {}
                if deleted:
                    bucket.pods.pop(view.name, None)
                else:
                    old = bucket.pods.get(view.name)
                    if view.finished and old is not None and old.finished and old.seen is not None:
                        view = replace(view, seen=old.seen)  # seen done when first seen so
                    bucket.pods[view.name] = view
                if bucket.created and (deleted or view.phase in STARTED_PHASES):
                    created = bucket.created.pop(view.name, None)
        if created is not None and not deleted:
            self.metrics.pod_start_latency.observe(max(0.0, now - created))
        return key if deleted or view.finished or view.waiting is not None else None

    def on_workflow_event(self, namespace: str, name: str, body: Mapping[str, Any] | None) -> None:
        key = (namespace, name)
        if body is None:
            with self._guard:
                self._workflow_bodies.pop(key, None)
            self.workflows.drop(key)
            self.metrics.workflow_gone(namespace, name)
            if self.wakeups is not None:
                self.wakeups.cancel(("schedule", key))
                self.wakeups.cancel(("workflow", key))
            return
        with self._guard:
            self._workflow_bodies[key] = dict(body)
        self.reconcile_workflow(namespace, name, dict(body))

    def recheck_workflow(self, namespace: str, name: str) -> None:
        """For a Workflow without `spec.project.digest`, whose ConfigMaps can change under the
        same revision: read them again and recompile if their content changed (the resync calls
        this about once a minute; with a digest, a change is a new revision and needs no polling)."""
        with self._guard:
            body = self._workflow_bodies.get((namespace, name))
        if body is None or ((body.get("spec") or {}).get("project") or {}).get("digest"):
            return
        self.reconcile_workflow(namespace, name, body, recheck=True)

    def _remember_body(self, key: Key, body: dict[str, Any]) -> None:
        with self._guard:
            bucket = self._sessions.get(key)
            if bucket is None:
                bucket = self._sessions[key] = _Bucket()
            if bucket.body is None or _rv(body) >= _rv(bucket.body) or _rv(body) < 0:
                bucket.body = body

    # ------------------------------------------------------------------ workflows

    def reconcile_workflow(
        self, namespace: str, name: str, body: dict[str, Any] | None = None, *, recheck: bool = False
    ) -> None:
        key = (namespace, name)
        before = self.workflows.get(key)
        with self._locks.hold(("workflow", key)), self.metrics.reconcile("workflow"):
            self._reconcile_workflow(key, body, recheck)
        compiled_now = self.workflows.get((namespace, name))
        if compiled_now is not None and compiled_now.ok:
            self.metrics.workflow_known(namespace, name)
            if before is None or not before.ok:
                # newly known here: the Workflows whose trigger names it can say so now
                for dependent in self.workflows.dependents(namespace, compiled_now):
                    if dependent != name:
                        self.reconcile_workflow(namespace, dependent)
        if (
            compiled_now is not None
            and compiled_now.reason == "ProjectFilesPending"
            and self.wakeups is not None
        ):
            self.wakeups.set(("workflow", (namespace, name)), self.clock() + 5)
        if compiled_now is not None and compiled_now.ok:
            with self._guard:
                waiting = self._waiting.pop((namespace, name), set())
            for key in sorted(waiting):
                self.reconcile_session(*key)

    def _reconcile_workflow(self, key: Key, body: dict[str, Any] | None, recheck: bool) -> None:
        """Compile, create the scheduled Sessions that are due, commit the status (the schedule's
        pointer) with the resourceVersion read; a 409 plans again from a fresh read."""
        namespace, name = key
        obj = body
        for _ in range(MAX_CONFLICTS):
            if obj is None:
                log.debug("workflow %s/%s: read from the API server", namespace, name)
                obj = self.api.get(WORKFLOWS, namespace, name)
                if obj is None:
                    self.workflows.drop(key)
                    return
            compiled = self.workflows.compile(obj, recheck=recheck)
            now = self.clock()
            found = self._trigger_found(namespace, compiled)
            plan = plan_workflow(obj, compiled, now, trigger_found=found)
            if plan.needs_active:
                plan = plan_workflow(
                    obj,
                    compiled,
                    now,
                    active_attempt=self._attempt_running(namespace, name),
                    trigger_found=found,
                )
            self._create_sessions(namespace, plan.create_sessions, f"scheduled by {name}", plan.run_times)
            for skipped in plan.skipped:
                log.info("workflow %s/%s: skipped the scheduled session of %s", namespace, name, skipped)
            if plan.status is not None:
                try:
                    self.api.replace_status(WORKFLOWS, {**obj, "status": plan.status})
                except Conflict:
                    self.stats["conflicts"] += 1
                    obj = None
                    continue
            if self.wakeups is not None:
                if plan.wakeup is not None:
                    self.wakeups.set(("schedule", key), plan.wakeup)
                else:
                    self.wakeups.cancel(("schedule", key))
            return

    def _trigger_found(self, namespace: str, compiled: CompiledWorkflow) -> bool | None:
        """Whether the workflow a `trigger: attempt>:` names exists here (None: no trigger)."""
        wf = compiled.workflow if compiled.ok else None
        if wf is None or wf.trigger is None:
            return None
        project = wf.trigger.project if wf.trigger.project is not None else compiled.project
        return self.workflows.find(namespace, wf.trigger.workflow, project) is not None

    def _create_sessions(
        self,
        namespace: str,
        sessions: list[dict[str, Any]],
        why: str,
        run_times: Mapping[str, float] | None = None,
    ) -> None:
        """Create Sessions a plan asks for; one that exists already was started before (another
        replica, an earlier try that did not commit, or by hand): its name makes it once only.
        `run_times`: the scheduled slots' run times, by Session name (for the schedule lag)."""
        for session in sessions:
            try:
                self.api.create(SESSIONS, namespace, session)
                self.stats["sessions_started"] += 1
                run_time = (run_times or {}).get(session["metadata"]["name"])
                if run_time is not None:
                    self.metrics.schedule_lag.observe(max(0.0, self.clock() - run_time))
                log.info("started session %s/%s (%s)", namespace, session["metadata"]["name"], why)
            except AlreadyExists:
                pass

    def _phase_of(self, key: Key) -> str | None:
        """A Session's phase as last seen (read once when unknown); None when it does not exist."""
        with self._guard:
            bucket = self._sessions.get(key)
            body = bucket.body if bucket is not None else None
        if body is None:
            body = self.api.get(SESSIONS, *key)
        if body is None:
            return None
        return (body.get("status") or {}).get("phase")

    def _attempt_running(self, namespace: str, workflow: str) -> bool:
        """Whether a Session of `workflow` is still running (for `skip_on_overtime`)."""
        for obj in self.api.list_objects(SESSIONS, namespace):
            if (obj.get("spec") or {}).get("workflow") != workflow:
                continue
            phase = (obj.get("status") or {}).get("phase")
            if phase not in TERMINAL:
                return True
        return False

    def _workflow(self, namespace: str, name: str) -> CompiledWorkflow | None:
        compiled = self.workflows.get((namespace, name))
        if compiled is not None:
            return compiled
        log.debug("workflow %s/%s: not compiled yet, read from the API server", namespace, name)
        obj = self.api.get(WORKFLOWS, namespace, name)
        if obj is None:
            return None
        return self.workflows.compile(obj)

    # ------------------------------------------------------------------ sessions

    def reconcile_session(self, namespace: str, name: str, *, fresh: bool = False) -> None:
        """Reconcile a Session; `fresh` reads it from the API server first (the resync does)."""
        key = (namespace, name)
        with self._locks.hold(("session", key)), self.metrics.reconcile("session"):
            for _ in range(MAX_CONFLICTS):
                try:
                    self._reconcile_once(key, fresh)
                    return
                except Conflict:
                    self.stats["conflicts"] += 1
                    fresh = True
            log.warning("session %s/%s: gave up after %d conflicting writes", namespace, name, MAX_CONFLICTS)
            self.metrics.reconcile_errors.labels("session").inc()

    def _session_body(self, key: Key, fresh: bool) -> dict[str, Any] | None:
        bucket = self._bucket(key)
        if not fresh and bucket.body is not None:
            return bucket.body
        obj = self.api.get(SESSIONS, *key)
        if obj is None:
            return None
        self._remember_body(key, obj)
        return obj

    def _observe_pod(self, key: Key, name: str) -> PodView | None:
        bucket = self._bucket(key)
        view = (bucket.pods or {}).get(name)
        if view is None:
            self.stats["pod_reads"] += 1
            pod = self.api.get_pod(key[0], name)
            if pod is None:
                return None
            view = pod_view(pod, self.clock())
            with self._guard:
                if bucket.pods is None:
                    bucket.pods = {}
                bucket.pods[name] = view
        tail = log_lines_needed(view)
        if tail is not None and view.log is None:
            # The result is too large for a termination message: it is in the log, at the end
            # unless the task's own background processes wrote after it.
            self.stats["log_reads"] += 1
            text = self.api.pod_log(key[0], name, tail_lines=tail + LOG_TAIL_MARGIN)
            if text is not None and not frame_complete(view, text):
                self.stats["log_reads"] += 1
                text = self.api.pod_log(key[0], name)
            view = replace(view, log=text)
        return view

    def _refresh_pods(self, key: Key, session: str) -> None:
        """Forget cached pod views the API server has newer versions of (a lost watch event)."""
        listed = {
            str(p["metadata"]["name"]): str(p["metadata"].get("resourceVersion", ""))
            for p in self.api.list_pod_metadata(key[0], f"{LABEL_SESSION}={label_value(session)}")
        }
        bucket = self._bucket(key)
        with self._guard:
            for name, view in list((bucket.pods or {}).items()):
                if listed.get(name) != view.rv:
                    del bucket.pods[name]  # type: ignore[union-attr]

    def _fetch_blobs(self, key: Key, names: list[str]) -> dict[str, bytes]:
        bucket = self._bucket(key)
        have = dict(bucket.blobs or {})
        for cm_name in names:
            if cm_name in have:
                continue
            self.stats["result_reads"] += 1
            cm = self.api.get_config_map(key[0], cm_name)
            if cm is not None:
                have[cm_name] = results.blob_of(cm)
        with self._guard:
            bucket.blobs = {n: have[n] for n in names if n in have}
        return bucket.blobs

    def _reconcile_once(self, key: Key, fresh: bool) -> None:
        self.stats["reconciles"] += 1
        obj = self._session_body(key, fresh)
        if obj is None:
            self.forget_session(key)
            return
        bucket = self._bucket(key)
        with self._guard:
            cached, bucket.decoded = bucket.decoded, None  # consumed: the plan mutates it
        rv = str(obj["metadata"].get("resourceVersion", ""))
        view = prepare(obj, cached[1] if cached is not None and cached[0] == rv else None)
        if fresh and view.pods:
            self._refresh_pods(key, view.name)
        suspects = [
            *(bucket.pods or {}).values(),
            *(PodView(name, owner_uid=view.uid) for name in bucket.uncommitted or ()),
        ]
        if view.finished:
            self._carry_out(key, obj, plan_session(view, None, {}, suspects, {}, self.clock(), self.settings))
            self._expire(key, view)
            return
        if view.spec is not None and view.spec.after and view.data is None and view.decoded is None:
            after = self._phase_of((key[0], view.spec.after))
            if after not in TERMINAL:
                self._carry_out(key, obj, waiting_plan(view, view.spec.after, self.clock(), self.settings))
                return
        workflow = self._workflow(key[0], view.spec.workflow) if view.spec is not None else None
        pods = {name: self._observe_pod(key, name) for name in view.pods}
        fetched = self._fetch_blobs(key, view.refs)
        now = self.clock()
        triggered = self.workflows.dependents(key[0], workflow) if workflow is not None else []
        required = {name: self.api.get(SESSIONS, key[0], name) for name in view.required}
        project = workflow.project if workflow is not None else None

        def resolve(name: str, in_project: str | None) -> str | None:
            return self.workflows.find(key[0], name, in_project if in_project is not None else project)

        try:
            plan = plan_session(
                view, workflow, pods, suspects, fetched, now, self.settings, triggered, required, resolve
            )
        except Exception as e:  # a bug of ours: say so on the Session instead of retrying forever
            log.exception("planning session %s/%s failed", *key)
            self.metrics.reconcile_errors.labels("session").inc()
            message = f"kudig internal error while planning this session: {type(e).__name__}: {e}"
            plan = invalid_plan(view, message, now, self.settings)
        self._carry_out(key, obj, plan)

    def _carry_out(self, key: Key, obj: dict[str, Any], plan: SessionPlan) -> None:
        namespace = key[0]
        bucket = self._bucket(key)
        for cm in plan.create_config_maps:
            if self.api.create_config_map(namespace, cm):
                self.stats["results_written"] += 1
        for pod in plan.create_pods:
            with self._guard:
                bucket.uncommitted = (bucket.uncommitted or set()) | {pod["metadata"]["name"]}
            if self.api.create_pod(namespace, pod):
                self.stats["pods_created"] += 1
                at = self.clock()
                # We know it exists and has not run yet: no need to ask before the watch says more.
                created = PodView(
                    pod["metadata"]["name"], owner_uid=obj["metadata"].get("uid"), phase="Pending"
                )
                with self._guard:
                    if bucket.pods is None:
                        bucket.pods = {}
                    bucket.pods.setdefault(created.name, created)
                    if bucket.created is None:
                        bucket.created = {}
                    bucket.created[created.name] = at
                origin = plan.step_origins.get(created.name)
                if origin is not None:
                    self.metrics.step_gap.observe(max(0.0, at - origin))
            else:
                self.stats["pods_adopted"] += 1
        rv = str(obj["metadata"].get("resourceVersion", ""))
        written = obj
        self._create_sessions(namespace, plan.create_sessions, f"for {key[1]}")
        for other, spec in plan.patch_sessions.items():
            log.info(
                "session %s/%s: new attempt %s, required by %s", namespace, other, spec["attempt"], key[1]
            )
            self.api.patch(SESSIONS, namespace, other, {"spec": spec})
        if plan.status is not None:
            if log.isEnabledFor(logging.DEBUG):
                old = obj.get("status") or {}
                changed = sorted(k for k in set(old) | set(plan.status) if old.get(k) != plan.status.get(k))
                log.debug("session %s/%s: status write (%s changed)", *key, ", ".join(changed))
            written = self.api.replace_status(SESSIONS, {**obj, "status": plan.status})  # Conflict: retry
            self._remember_body(key, written)
            rv = str(written["metadata"].get("resourceVersion", ""))
            # committed: count what it did (once; a plan dropped on a 409 never got here)
            self.metrics.observe_session_plan(namespace, str((obj.get("spec") or {}).get("workflow")), plan)
        with self._guard:
            bucket.uncommitted = None  # committed: the state knows them, or the plan deletes them
            if plan.decoded is not None and not plan.finished:
                bucket.decoded = (rv, plan.decoded)
            if plan.running is not None:
                bucket.running = plan.running
        self._delete_pods(key, plan.delete_pods)
        if plan.sweep:
            self._sweep(key, obj, set(plan.delete_pods))
        if plan.labels:
            self.api.patch(SESSIONS, namespace, key[1], {"metadata": {"labels": plan.labels}})
            workflow = (obj.get("spec") or {}).get("workflow")
            if plan.labels.get(LABEL_FINISHED) and workflow:
                self._keep_history(namespace, str(workflow))
        if plan.status is not None and plan.events:
            self._emit(key, written, plan.events)
        if plan.waiting_for_workflow is not None:
            with self._guard:
                self._waiting.setdefault((namespace, plan.waiting_for_workflow), set()).add(key)
        waits = [plan.waiting_for_session] if plan.waiting_for_session is not None else []
        for other in [*waits, *plan.waiting_for_sessions]:
            with self._guard:
                self._after.setdefault((namespace, other), set()).add(key)
        if plan.finished:
            self.forget_session(key)
            with self._guard:
                waiters = self._after.pop(key, set())
            for waiter in sorted(waiters):
                self.reconcile_session(*waiter)
        elif self.wakeups is not None:
            if plan.wakeup is not None:
                self.wakeups.set(("session", key), plan.wakeup)
            else:
                self.wakeups.cancel(("session", key))

    def _emit(self, key: Key, session: Mapping[str, Any], events: list[SessionEvent]) -> None:
        """Create the Events a committed plan lists; a failure is logged, never raised (an Event
        is worth less than the reconcile that reports it)."""
        now = self.clock()
        for i, event in enumerate(events):
            body = event_body(session, event, now, self.settings.controller_id, f"{time.time_ns() + i:x}")
            try:
                self.api.create_event(key[0], body)
                self.stats["events"] += 1
            except Exception as e:
                log.warning("session %s/%s: event %s not created: %s", *key, event.reason, e)

    # ------------------------------------------------------------------ history

    def _history(self, namespace: str, workflow: str) -> Any:
        compiled = self._workflow(namespace, workflow)
        return compiled.spec.history if compiled is not None and compiled.spec is not None else None

    def _expire(self, key: Key, view: Any) -> None:
        """A finished Session past its Workflow's `history.ttlSecondsAfterFinished` is deleted (its
        pods, logs and result ConfigMaps go with it); one not yet past it gets a timer."""
        if view.spec is None or not view.status.finished_at:
            return
        history = self._history(key[0], view.spec.workflow)
        ttl = history.ttl_seconds_after_finished if history is not None else None
        if ttl is None:
            return
        ended = datetime.fromisoformat(view.status.finished_at.replace("Z", "+00:00")).timestamp()
        if self.clock() >= ended + ttl:
            log.info("session %s/%s: deleted, %ss after it finished (history TTL)", *key, ttl)
            self.api.delete(SESSIONS, *key)
            self.forget_session(key)
            if self.wakeups is not None:
                self.wakeups.cancel(("ttl", key))
        elif self.wakeups is not None:
            self.wakeups.set(("ttl", key), ended + ttl)

    def _keep_history(self, namespace: str, workflow: str) -> None:
        """Delete the oldest finished Sessions of `workflow` beyond its `history.keep`."""
        history = self._history(namespace, workflow)
        keep = history.keep if history is not None else None
        if keep is None:
            return
        finished = self.api.list_metadata(
            SESSIONS, namespace, f"{LABEL_WORKFLOW}={label_value(workflow)},{LABEL_FINISHED}"
        )

        def ended(item: Mapping[str, Any]) -> int:
            try:
                return int(item["metadata"]["labels"][LABEL_FINISHED])
            except (KeyError, ValueError):
                return 0

        finished.sort(key=lambda item: (ended(item), item["metadata"]["name"]), reverse=True)
        for item in finished[keep:]:
            name = str(item["metadata"]["name"])
            current = self.api.get(SESSIONS, namespace, name)  # still finished? (a retry may run)
            if current is None or not prepare(current).finished:
                continue
            log.info(
                "session %s/%s: deleted, beyond the newest %d kept (history limit)", namespace, name, keep
            )
            self.api.delete(SESSIONS, namespace, name)
            self.forget_session((namespace, name))

    def _sweep(self, key: Key, obj: Mapping[str, Any], done: set[str]) -> None:
        """Delete every still-running pod of a killed Session, seen by this controller or not."""
        uid = obj["metadata"].get("uid")
        for pod in self.api.list_pods(key[0], f"{LABEL_SESSION}={label_value(key[1])}"):
            view = pod_view(pod)
            if view.active and view.owner_uid == uid and view.name not in done:
                self._delete_pods(key, [view.name])

    def _delete_pods(self, key: Key, names: list[str]) -> None:
        for name in names:
            self.api.delete_pod(key[0], name)
            self.stats["pods_deleted"] += 1

    def fire(self, what: Any) -> None:
        """A wake-up came due (see `Wakeups`)."""
        kind, key = what
        if kind in ("session", "ttl"):
            self.reconcile_session(*key)
        elif kind in ("workflow", "schedule"):
            self.reconcile_workflow(*key)


__all__ = ["TERMINAL", "Controller", "KeyedLocks", "Wakeups", "WorkflowStore"]
