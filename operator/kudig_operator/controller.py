"""The imperative shell around `plan`: what the controller remembers, and where watch events and
timers enter. Each reaction (`reactions/session.py`, `workflow.py`, `schedule.py`, `history.py`)
observes, calls its pure plan (`plan/`) and commits; this module holds the state they share.

Per reconcile of a Session the controller
1. takes the Session as the watch last delivered it (or as its own last status write returned
   it), reading it from the API server only when it has none or a write met a 409;
2. takes the compiled Workflow from its store (compiled once per Workflow revision);
3. observes the pods of the running tasks (from the pod watch; a pod never seen is read once) and
   reads a pod's log only when its result is too large for the termination message, and the
   result ConfigMaps the state refers to (immutable, read once);
4. calls `plan.session.plan_session` and carries the plan out in the order `plan` documents (create, then
   commit the status with the resourceVersion read, then delete); a 409 starts over from a fresh
   read. Pod names are deterministic, so a repeated plan adopts pods instead of creating twins.

Everything cached here is only there to save API requests, never to decide: a stale Session body
costs a 409, a pod seen finished stays finished. Every cache entry belongs to a Session or a
Workflow and is dropped with it (when it is deleted, and for a Session when it finishes), so the
controller's memory follows the live objects, not its history.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from kudig.api import SESSIONS, TERMINAL, WORKFLOWS
from kudig.cluster.kube import KubeApi, resource_version_number
from kudig.cluster.logstore import ConfigMapLogStore, LogStore
from kudig.compiler import DEFAULT_MAX_TASKS
from kudig.errors import KudigError
from kudig.expr import TemplateEngine
from kudig.schema import PodDefaults
from kudig.workflowref import resolve, selector, workflow_ref
from kudig_operator.metrics import Metrics
from kudig_operator.plan.compiled import CompiledWorkflow
from kudig_operator.plan.pods import PodView, pod_view
from kudig_operator.plan.sessionplan import TaskRun
from kudig_operator.plan.settings import Settings
from kudig_operator.plan.view import Decoded
from kudig_operator.plumbing import Fanout, Key, KeyedLocks, Wakeups
from kudig_operator.reactions import session as session_reaction
from kudig_operator.reactions import workflow as workflow_reaction
from kudig_operator.workflowstore import WorkflowStore

log = logging.getLogger("kudig.controller")

STARTED_PHASES = frozenset({"Running", "Succeeded", "Failed"})  # a pod's container has started


def _rv(obj: Mapping[str, Any] | None) -> int:
    """An object's resourceVersion as a number (-1: none), to prefer the newer of two copies."""
    number = resource_version_number(((obj or {}).get("metadata") or {}).get("resourceVersion"))
    return -1 if number is None else number


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
    news: set[str] | None = None  # pods with progress (finished, lost, stuck) since the last plan began
    dirty: bool = False  # progress since the last plan began: a reconcile for news has work to do
    last_write: float | None = None  # when this controller last wrote its status (the write budget)
    held_runs: list[TaskRun] | None = None  # task runs of deferred plans, counted with the next write
    held_garbage: set[str] | None = None  # row chunks deferred plans replaced, deleted after the next write


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
        task_pod: PodDefaults | None = None,
        pod_retention: str = "all",
        logs: LogStore | None = None,
        task_max_run: int = DEFAULT_MAX_TASKS,
        status_write_interval: float = 0.0,
        create_concurrency: int = 1,
    ) -> None:
        self.api = api
        self.clock = clock
        self.settings = Settings(
            runner_image=runner_image,
            controller_id=identity,
            evaluator=TemplateEngine(),
            task_pod=task_pod,
            pod_retention=pod_retention,
            task_max_run=task_max_run,
            status_write_interval=status_write_interval,
        )
        self.logs: LogStore = logs if logs is not None else ConfigMapLogStore(api)
        self.workflows = WorkflowStore(api, cache_dir, task_max_run)
        self.wakeups = wakeups
        self.creates = Fanout(create_concurrency)  # a plan's pod creates, side by side
        self.locks = KeyedLocks()
        self.sessions: dict[Key, _Bucket] = {}
        self.waiting: dict[Key, set[Key]] = {}  # workflow -> sessions waiting for it to compile
        self.after: dict[Key, set[Key]] = {}  # session -> sessions chained after it (backfill)
        self.workflow_bodies: dict[Key, dict[str, Any]] = {}  # as the watch last delivered them
        self.guard = threading.Lock()
        self.stats: dict[str, int] = {
            "reconciles": 0,
            "pods_created": 0,
            "pods_adopted": 0,
            "pods_deleted": 0,
            "pods_released": 0,
            "conflicts": 0,
            "pod_reads": 0,
            "log_reads": 0,
            "result_reads": 0,
            "results_written": 0,
            "sessions_started": 0,
            "events": 0,
            "events_existing": 0,  # created already (before a crash, by another controller)
            "coalesced": 0,
            "writes_deferred": 0,
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

    def bucket(self, key: Key) -> _Bucket:
        with self.guard:
            bucket = self.sessions.get(key)
            if bucket is None:
                bucket = self.sessions[key] = _Bucket()
            return bucket

    def forget_session(self, key: Key) -> None:
        """Drop everything remembered for a Session (deleted, or finished)."""
        with self.guard:
            self.sessions.pop(key, None)
            for waiting in [*self.waiting.values(), *self.after.values()]:
                waiting.discard(key)
            self.waiting = {k: v for k, v in self.waiting.items() if v}
            self.after = {k: v for k, v in self.after.items() if v}
        if self.wakeups is not None:
            self.wakeups.cancel(("session", key))

    def memory(self) -> dict[str, int]:
        """Sizes of what the controller keeps (for tests and the cost benchmark)."""
        with self.guard:
            return {
                "sessions": len(self.sessions),
                "workflow_bodies": len(self.workflow_bodies),
                "pods": sum(len(b.pods or {}) for b in self.sessions.values()),
                "blobs": sum(len(b.blobs or {}) for b in self.sessions.values()),
                "workflows": len(self.workflows),
                "locks": len(self.locks),
                "waiting": sum(len(v) for v in self.waiting.values())
                + sum(len(v) for v in self.after.values()),
                "wakeups": len(self.wakeups) if self.wakeups is not None else 0,
            }

    def running_tasks(self) -> int:
        """Task pods the running Sessions' committed states run (for the metrics)."""
        with self.guard:
            return sum(b.running for b in self.sessions.values())

    def queue_depth(self) -> int:
        """Reconciles in flight or waiting for an object's lock, and timers past due (the worker
        pool's queue, which only main.py knows, is added there)."""
        return len(self.locks) + (self.wakeups.overdue() if self.wakeups is not None else 0)

    def active_sessions(self) -> list[Key]:
        """Sessions the controller believes are not finished (the resync re-reads them)."""
        with self.guard:
            return [k for k, b in self.sessions.items() if b.body is not None]

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
        with self.guard:
            bucket = self.sessions.get(key)
            if bucket is not None and bucket.body is not None and rv >= 0 and _rv(bucket.body) == rv:
                return False
        self.remember_body(key, dict(body))
        return True

    def on_pod_event(self, namespace: str, pod: Mapping[str, Any], deleted: bool) -> None:
        """A watch event for a task pod: remember its status; reconcile when it means progress."""
        key = self.note_pod(namespace, pod, deleted)
        if key is not None:
            self.reconcile_news(*key)

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
        with self.guard:
            bucket = self.sessions.get(key)
            if bucket is None and not deleted and (view.finished or view.waiting is not None):
                bucket = self.sessions[key] = _Bucket()
            if bucket is not None:
                if bucket.pods is None:
                    bucket.pods = {}
                if deleted or view.finished or view.waiting is not None:
                    bucket.news = (bucket.news or set()) | {view.name}
                    bucket.dirty = True
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
        """A watch event for a Workflow (None: deleted): remember it, then forget or reconcile it."""
        self.note_workflow(namespace, name, body)
        self.reconcile_watched_workflow(namespace, name)

    def note_workflow(self, namespace: str, name: str, body: Mapping[str, Any] | None) -> None:
        """Remember the newest version of a watched Workflow (None: it was deleted). Cheap and
        non-blocking, so the watch can call it on its event loop."""
        with self.guard:
            if body is None:
                self.workflow_bodies.pop((namespace, name), None)
            else:
                self.workflow_bodies[(namespace, name)] = dict(body)

    def reconcile_watched_workflow(self, namespace: str, name: str) -> None:
        """Reconcile a Workflow as its watch last delivered it (`note_workflow`), or forget it if
        that was its deletion."""
        workflow_reaction.reconcile(self, namespace, name, watched=True)

    def recheck_workflow(self, namespace: str, name: str) -> None:
        """For a Workflow without `spec.project.digest`, whose ConfigMaps can change under the
        same revision: read them again and recompile if their content changed (the resync calls
        this about once a minute; with a digest, a change is a new revision and needs no polling)."""
        with self.guard:
            body = self.workflow_bodies.get((namespace, name))
        if body is None or ((body.get("spec") or {}).get("project") or {}).get("digest"):
            return
        self.reconcile_workflow(namespace, name, body, recheck=True)

    def remember_body(self, key: Key, body: dict[str, Any]) -> None:
        with self.guard:
            bucket = self.sessions.get(key)
            if bucket is None:
                bucket = self.sessions[key] = _Bucket()
            if bucket.body is None or _rv(body) >= _rv(bucket.body) or _rv(body) < 0:
                bucket.body = body

    def phase_of(self, key: Key) -> str | None:
        """A Session's phase as last seen (read once when unknown); None when it does not exist."""
        with self.guard:
            bucket = self.sessions.get(key)
            body = bucket.body if bucket is not None else None
        if body is None:
            body = self.api.get(SESSIONS, *key)
        if body is None:
            return None
        return (body.get("status") or {}).get("phase")

    # ------------------------------------------------------------------ reactions

    def reconcile_session(self, namespace: str, name: str, *, fresh: bool = False) -> None:
        """Reconcile a Session; `fresh` reads it from the API server first (the resync does)."""
        session_reaction.reconcile(self, namespace, name, fresh=fresh)

    def reconcile_news(self, namespace: str, name: str) -> None:
        """Reconcile a Session for pod news (`note_pod` said so), unless a plan that began after
        that news already took it in: a burst of pod events costs one plan and one status write."""
        session_reaction.reconcile(self, namespace, name, news_only=True)

    def reconcile_workflow(
        self, namespace: str, name: str, body: dict[str, Any] | None = None, *, recheck: bool = False
    ) -> None:
        workflow_reaction.reconcile(self, namespace, name, body, recheck=recheck)

    def workflow(self, namespace: str, name: str) -> CompiledWorkflow | None:
        """The compiled Workflow `name` (a Session's `spec.workflow`: its object name, or its
        digdag name, found by label as the CLI does): from the store, else read and compiled once."""
        compiled = self.workflows.get((namespace, name))
        if compiled is not None:
            return compiled
        log.debug("workflow %s/%s: not compiled yet, read from the API server", namespace, name)
        obj = self.api.get(WORKFLOWS, namespace, name)
        if obj is None:
            refs = map(workflow_ref, self.api.list_metadata(WORKFLOWS, namespace, selector(name)))
            try:
                found = resolve(name, refs, None, namespace)
            except KudigError as e:  # the same digdag name in several projects: said on the Session
                return CompiledWorkflow(name, "", 0, None, error=str(e), reason="Ambiguous")
            if found is None:
                return None
            compiled = self.workflows.get((namespace, found.object_name))
            if compiled is not None:
                return compiled
            obj = self.api.get(WORKFLOWS, namespace, found.object_name)
            if obj is None:
                return None
        return self.workflows.compile(obj)

    def fire(self, what: Any) -> None:
        """A wake-up came due (see `Wakeups`)."""
        kind, key = what
        if kind in ("session", "ttl"):
            self.reconcile_session(*key)
        elif kind in ("workflow", "schedule"):
            self.reconcile_workflow(*key)


__all__ = ["TERMINAL", "Controller", "KeyedLocks", "Wakeups", "WorkflowStore"]
