"""The controller's Prometheus metrics (prometheus-client), in a registry of their own.

Every metric is listed, with what it measures, in docs/metrics.md; the Grafana dashboard and the
Prometheus e2e test are built against these names, so they do not change lightly.

How they are counted, in short:
* what a Session plan does (an attempt starts or ends, a task try reports, a retry, an SLA miss)
  is counted by the controller from the plan (`observe_session_plan`) **only after its status
  write succeeded**: a plan dropped on a 409 counts nothing, its re-plan counts once, and a
  controller restarting meets those Sessions as already written (nothing twice; a crash between
  the write and the count loses that count, never doubles it);
* what only the controller sees (pod creation, a pod seen started, a scheduled Session created,
  a reconcile's duration) is observed where it happens;
* gauges that describe the present (running task pods, the work queue, what the controller keeps,
  the Kubernetes requests of the one client wrapper) are read from the controller when scraped.

Labels are bounded: namespaces, Workflow names, operators, outcomes and kinds — never a Session,
task or pod name. Series whose labels are known in advance exist from the start at 0 (reconcile
errors and durations per kind, task runs per known operator, and a Workflow's session counters
once it compiled), so dashboards and alerts see a 0, not "no data".
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from typing import Any

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from kudig_operator.plan.sessionplan import SessionPlan

#: The metrics docs/metrics.md lists and the Grafana dashboard shows (tests check both against this).
PUBLIC_METRICS = (
    "kudig_controller_info",
    "kudig_controller_leader",
    "kudig_sessions_started_total",
    "kudig_sessions_finished_total",
    "kudig_session_duration_seconds",
    "kudig_task_runs_total",
    "kudig_task_retries_total",
    "kudig_task_duration_seconds",
    "kudig_tasks_running",
    "kudig_pod_start_latency_seconds",
    "kudig_step_gap_seconds",
    "kudig_schedule_lag_seconds",
    "kudig_sla_misses_total",
    "kudig_reconcile_duration_seconds",
    "kudig_reconcile_errors_total",
    "kudig_work_queue_depth",
    "kudig_kube_requests_total",
)
OUTCOMES = ("succeeded", "failed", "killed")
RUN_OUTCOMES = ("succeeded", "failed")
KINDS = ("session", "workflow")
WORK_OPERATORS = ("sh", "py", "require")  # the work operators kudig runs (pre-initialised series)

SESSION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 28800, 86400)
TASK_BUCKETS = (0.5, 1, 2, 3, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600, 7200)
POD_START_BUCKETS = (0.1, 0.25, 0.5, 1, 1.5, 2, 3, 5, 10, 20, 30, 60, 120, 300)
STEP_GAP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
SCHEDULE_LAG_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)
RECONCILE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

# No `<name>_created` series next to every counter and histogram (prometheus-client's default):
# they double the series count and nothing here uses them. (A process-wide switch of the library.)
prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]


def version() -> str:
    """kudig's version (the installed distribution's, else the source tree's)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("kudig")
    except PackageNotFoundError:
        from kudig import __version__

        return __version__


class _ControllerCollector:
    """Read at scrape time from the controller: the client wrapper's request counter, what the
    controller keeps in memory, its operation counters."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def describe(self) -> Iterator[Metric]:
        yield from self._families()

    def collect(self) -> Iterator[Metric]:
        requests, kept, operations = self._families()
        m = self.metrics
        for (verb, resource), n in sorted(dict(m.requests_source()).items()):
            requests.add_metric([resource, verb], n)
        for kind, n in sorted(m.memory_source().items()):
            kept.add_metric([kind], n)
        ops = dict(m.stats_source())
        for more in m.more_stats:
            ops.update(more())
        for op, n in sorted(ops.items()):
            operations.add_metric([op], n)
        yield requests
        yield kept
        yield operations

    @staticmethod
    def _families() -> tuple[CounterMetricFamily, GaugeMetricFamily, CounterMetricFamily]:
        return (
            CounterMetricFamily(
                "kudig_kube_requests",
                "Kubernetes API requests made by kudig's code (its one client wrapper), by resource and verb",
                labels=["resource", "verb"],
            ),
            GaugeMetricFamily(
                "kudig_controller_cached_objects", "What the controller keeps in memory", labels=["kind"]
            ),
            CounterMetricFamily("kudig_controller_operations", "Controller operations", labels=["operation"]),
        )


def _nothing() -> Mapping[Any, int]:
    return {}


class Metrics:
    """The controller's metrics. `Controller` makes one when not given one (tests and benches need
    nothing); `main.py` serves `registry` on /metrics. Thread-safe (prometheus-client's locks)."""

    def __init__(self, *, identity: str = "kudig", registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry if registry is not None else CollectorRegistry()
        self.info = Gauge(
            "kudig_controller_info",
            "The controller: its version and identity (always 1)",
            ["version", "identity"],
            registry=r,
        )
        self.info.labels(version(), identity).set(1)
        self.leader = Gauge(
            "kudig_controller_leader",
            "1 when this controller is the active one (the leader; always 1 without leader election)",
            registry=r,
        )
        self.leader.set(1)
        self.sessions_started = Counter(
            "kudig_sessions_started",
            "Session attempts started (a retry is another attempt)",
            ["namespace", "workflow"],
            registry=r,
        )
        self.sessions_finished = Counter(
            "kudig_sessions_finished",
            "Session attempts finished, by outcome (succeeded, failed, killed)",
            ["namespace", "workflow", "outcome"],
            registry=r,
        )
        self.session_duration = Histogram(
            "kudig_session_duration_seconds",
            "Session attempts' duration, from the attempt's start to its end",
            ["namespace", "workflow", "outcome"],
            buckets=SESSION_BUCKETS,
            registry=r,
        )
        self.task_runs = Counter(
            "kudig_task_runs",
            "Finished tries of work tasks (each retry counts), by operator and outcome",
            ["operator", "outcome"],
            registry=r,
        )
        self.task_retries = Counter(
            "kudig_task_retries",
            "Failed tries of work tasks that their own _retry runs again",
            ["operator"],
            registry=r,
        )
        self.task_duration = Histogram(
            "kudig_task_duration_seconds",
            "Work task tries' duration, from the try's start to its result",
            ["operator"],
            buckets=TASK_BUCKETS,
            registry=r,
        )
        self.tasks_running = Gauge(
            "kudig_tasks_running",
            "Task pods running now (created and not yet reported), all Sessions",
            registry=r,
        )
        self.pod_start_latency = Histogram(
            "kudig_pod_start_latency_seconds",
            "From a task pod's creation to the watch seeing it started (Running or already finished)",
            buckets=POD_START_BUCKETS,
            registry=r,
        )
        self.step_gap = Histogram(
            "kudig_step_gap_seconds",
            "From an upstream task's pod seen done to the pod of the task it let start created",
            buckets=STEP_GAP_BUCKETS,
            registry=r,
        )
        self.schedule_lag = Histogram(
            "kudig_schedule_lag_seconds",
            "From a scheduled slot's run time to its Session created",
            buckets=SCHEDULE_LAG_BUCKETS,
            registry=r,
        )
        self.sla_misses = Counter(
            "kudig_sla_misses",
            "Session attempts still running at their sla: deadline",
            ["namespace", "workflow"],
            registry=r,
        )
        self.reconcile_duration = Histogram(
            "kudig_reconcile_duration_seconds",
            "Reconciles' duration, by kind (session, workflow)",
            ["kind"],
            buckets=RECONCILE_BUCKETS,
            registry=r,
        )
        self.reconcile_errors = Counter(
            "kudig_reconcile_errors",
            "Reconciles that failed (an API error, a planning error, or too many conflicting writes)",
            ["kind"],
            registry=r,
        )
        self.work_queue_depth = Gauge(
            "kudig_work_queue_depth",
            "Reconciles waiting or in flight: queued for a worker, holding or awaiting an object's "
            "lock, and timers past due",
            registry=r,
        )
        for kind in KINDS:
            self.reconcile_errors.labels(kind)
            self.reconcile_duration.labels(kind)
        for op in WORK_OPERATORS:
            self.task_retries.labels(op)
            self.task_duration.labels(op)
            for outcome in RUN_OUTCOMES:
                self.task_runs.labels(op, outcome)
        self._reconcile_timers = {kind: self.reconcile_duration.labels(kind) for kind in KINDS}
        self._queues: list[Callable[[], int]] = []
        self._local = threading.local()
        self.requests_source: Callable[[], Mapping[tuple[str, str], int]] = _nothing
        self.memory_source: Callable[[], Mapping[str, int]] = _nothing
        self.stats_source: Callable[[], Mapping[str, int]] = _nothing
        self.more_stats: list[Callable[[], Mapping[str, int]]] = []
        self.tasks_running.set_function(lambda: 0)
        self.work_queue_depth.set_function(lambda: sum(q() for q in self._queues))
        r.register(_ControllerCollector(self))

    # ----- wiring

    def bind(
        self,
        *,
        requests: Callable[[], Mapping[tuple[str, str], int]],
        memory: Callable[[], Mapping[str, int]],
        stats: Callable[[], Mapping[str, int]],
        running: Callable[[], int],
        queue: Callable[[], int],
    ) -> None:
        """Where the scrape-time values come from (the controller calls this)."""
        self.requests_source, self.memory_source, self.stats_source = requests, memory, stats
        self.tasks_running.set_function(running)
        self.add_queue(queue)

    def add_queue(self, depth: Callable[[], int]) -> None:
        """Count more waiting reconciles in `kudig_work_queue_depth` (e.g. the worker pool's queue)."""
        self._queues.append(depth)

    def add_stats(self, source: Callable[[], Mapping[str, int]]) -> None:
        """Count more operations in `kudig_controller_operations_total` (e.g. the pod watch's)."""
        self.more_stats.append(source)

    def set_leader(self, leader: bool) -> None:
        self.leader.set(1 if leader else 0)

    # ----- observations

    @contextmanager
    def reconcile(self, kind: str) -> Iterator[None]:
        """Time a reconcile of `kind`; an exception escaping it is a reconcile error, counted once
        by the innermost reconcile it escapes (a Session reconciled from within another's reconcile,
        as a chained Session is, is timed on its own and inside the outer one)."""
        local = self._local
        depth = getattr(local, "depth", 0)
        local.depth = depth + 1
        started = time.perf_counter()
        try:
            yield
        except Exception as e:
            if getattr(local, "counted", None) != id(e):
                local.counted = id(e)  # the outer reconciles it escapes next do not count it again
                self.reconcile_errors.labels(kind).inc()
            raise
        finally:
            self._reconcile_timers[kind].observe(time.perf_counter() - started)
            local.depth = depth
            if depth == 0:
                local.counted = None

    def workflow_known(self, namespace: str, workflow: str) -> None:
        """A Workflow compiled: its session series exist from now on (at 0)."""
        self.sessions_started.labels(namespace, workflow)
        self.sla_misses.labels(namespace, workflow)
        for outcome in OUTCOMES:
            self.sessions_finished.labels(namespace, workflow, outcome)

    def workflow_gone(self, namespace: str, workflow: str) -> None:
        """A Workflow was deleted: drop its series (memory follows live objects)."""
        for metric, labels in [
            (self.sessions_started, ()),
            (self.sla_misses, ()),
            *((m, (o,)) for m in (self.sessions_finished, self.session_duration) for o in OUTCOMES),
        ]:
            with suppress(KeyError):
                metric.remove(namespace, workflow, *labels)

    def observe_session_plan(self, namespace: str, workflow: str, plan: SessionPlan) -> None:
        """Count what a Session plan did, once its status write has succeeded."""
        if plan.started_attempt is not None:
            self.sessions_started.labels(namespace, workflow).inc()
        for run in plan.runs:
            self.task_runs.labels(run.operator, run.outcome).inc()
            self.task_duration.labels(run.operator).observe(run.seconds)
            if run.retried:
                self.task_retries.labels(run.operator).inc()
        if plan.sla_missed:
            self.sla_misses.labels(namespace, workflow).inc()
        if plan.outcome is not None:
            self.sessions_finished.labels(namespace, workflow, plan.outcome).inc()
            self.session_duration.labels(namespace, workflow, plan.outcome).observe(plan.duration or 0.0)


_standby: dict[str, Metrics] = {}
_standby_lock = threading.Lock()


def standby_metrics(identity: str, api: Any = None) -> Metrics:
    """What a standby replica serves before it leads (leader election: no controller yet): its
    info, `kudig_controller_leader` 0, and the requests of its client (`api`, the lease's)."""
    with _standby_lock:
        metrics = _standby.get(identity)
        if metrics is None:
            metrics = _standby[identity] = Metrics(identity=identity)
            metrics.set_leader(False)
    if api is not None:
        metrics.requests_source = lambda: getattr(api, "requests", {})
    return metrics


__all__ = ["Metrics", "standby_metrics", "version"]
