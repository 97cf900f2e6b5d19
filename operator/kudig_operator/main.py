"""The kopf entry point: watch Workflows, Sessions and task pods; hand every event to the controller.

Only `on.event` handlers are used (Workflows and Sessions): kopf then keeps no per-object progress
annotations (our state is the Session's status). Task pods are watched by `PodWatch`, with the
label selector applied by the API server; a pod's completion triggers its Session's reconcile at
once — no fixed requeue between steps. Retries and `wait>` wake a Session at the exact time its plan asks
for (`Wakeups`); the `Watchdog`'s resync is the safety net for missed events and the source of
/healthz and /readyz.

Identity: the controller names itself after its pod (`KUDIG_POD_NAME` or kopf's `POD_ID`, from
the downward API), else `<host>-<pid>`. kopf would otherwise call `getpass.getuser()`, which fails
for a non-root UID without a passwd entry (the operator image runs as 65532): the documented
install crash-looped on that.

Leader election (`KUDIG_LEADER_ELECTION=true`, as deploy/operator.yaml sets it; docs/ha.md): the
process serves /healthz, /readyz and /metrics at once, then waits as a standby — no watch, no
write — until it holds the `kudig-operator` Lease of its namespace (`leader.py`), and only then
starts kopf and the controller. It releases the lease after kopf has stopped on SIGTERM, and exits
non-zero the moment it loses it. Without the variable (the host-process e2e fixture, `kudig`
developers) it starts at once, alone, as before.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, cast

import kopf

from kudig.api import GROUP, SESSIONS, VERSION, WORKFLOWS
from kudig.cluster.kube import Kube
from kudig.cluster.logstore import RETENTION_ENV, log_store, retention
from kudig.cluster.ratelimit import BURST_ENV, QPS_ENV, TokenBucket, rate_from_env
from kudig.errors import KudigError
from kudig_operator.controller import Controller, Wakeups
from kudig_operator.health import HealthServer, Watchdog
from kudig_operator.leader import LEASE_NAME, LeaseElector
from kudig_operator.plan.budget import DEFAULT_WRITE_INTERVAL
from kudig_operator.plan.settings import (
    CREATE_CONCURRENCY_ENV,
    TASK_MAX_RUN_ENV,
    WRITE_INTERVAL_ENV,
    create_concurrency,
    task_max_run,
    write_interval,
)
from kudig_operator.podspec import TASK_POD_ENV, PodSettingsError, task_pod_defaults
from kudig_operator.podwatch import PodWatch
from kudig_operator.scope import Scope

log = logging.getLogger("kudig.operator")


class _Runtime:
    controller: Controller | None = None
    executor: ThreadPoolExecutor | None = None
    watchdog: Watchdog | None = None
    wakeups: Wakeups | None = None
    health: HealthServer | None = None
    pods: PodWatch | None = None
    api: Kube | None = None  # made before kopf starts when leader election needs it
    elector: LeaseElector | None = None
    probes: Probes | None = None
    leader: bool | None = None  # None: no leader election (a lone controller)
    stopping = threading.Event()  # SIGTERM before kopf took the signals over


_rt = _Runtime()


def identity() -> str:
    """Who this controller is, without a passwd lookup."""
    return (
        os.environ.get("KUDIG_POD_NAME")
        or os.environ.get("POD_ID")
        or f"{socket.gethostname()}-{os.getpid()}"
    )


def controller() -> Controller:
    assert _rt.controller is not None, "operator not started"
    return _rt.controller


# ----- leader election (docs/ha.md)


def leader_election_enabled() -> bool:
    return os.environ.get("KUDIG_LEADER_ELECTION", "").strip().lower() in ("1", "true", "yes", "on")


_SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def own_namespace() -> str:
    """The controller's namespace (downward API), where its Lease lives."""
    for var in ("KUDIG_LEADER_ELECTION_NAMESPACE", "KUDIG_POD_NAMESPACE", "POD_NAMESPACE"):
        if os.environ.get(var):
            return os.environ[var]
    try:
        return _SERVICE_ACCOUNT_NAMESPACE.read_text().strip()
    except OSError:
        raise SystemExit(
            "leader election needs the controller's namespace: set KUDIG_POD_NAMESPACE "
            "(downward API: metadata.namespace)"
        ) from None


class Probes:
    """/healthz and /readyz of a process that may be a standby: the election loop's own health
    until this process leads, then the controller's `Watchdog` (a standby is Ready when it can read
    the lease, so a rolling update can replace it; the leader is Ready once its first resync
    succeeded, as a lone controller)."""

    def __init__(self, elector: LeaseElector) -> None:
        self.elector = elector
        self.watchdog: Watchdog | None = None

    def healthy(self, now: float) -> tuple[bool, str]:
        if self.watchdog is not None:
            return self.watchdog.healthy(now)
        return self.elector.healthy()

    def ready(self, now: float) -> tuple[bool, str]:
        if self.watchdog is not None:
            return self.watchdog.ready(now)
        return self.elector.ready()


def report_leadership(leader: bool) -> None:
    """Called on every leadership change (won, lost, released): the one place that tells
    /metrics (`kudig_controller_leader`) whether this replica is the active one. `_rt.leader` is
    None without leader election (a lone controller always leads)."""
    from kudig_operator.metrics import standby_metrics

    _rt.leader = leader
    ctl = _rt.controller
    (ctl.metrics if ctl is not None else standby_metrics(identity(), _rt.api)).set_leader(leader)


def _serve_health(probes: Watchdog | Probes) -> HealthServer:
    address = os.environ.get("KUDIG_HEALTH_ADDRESS", "0.0.0.0:8080")
    # HealthServer only calls .healthy(now) and .ready(now), which Probes provides
    health = HealthServer(address, cast(Watchdog, probes), _metrics)
    health.start()
    _rt.health = health
    port_file = os.environ.get("KUDIG_HEALTH_PORT_FILE")
    if port_file:
        Path(port_file).write_text(str(health.port))
    return health


def _lost_leadership() -> None:
    """client-go's rule: a leader that cannot renew stops acting at once — exit, and let the
    kubelet restart this container as a standby. Never two active controllers."""
    log.critical("lost the leader lease: exiting so that only one controller acts")
    logging.shutdown()
    os._exit(1)


def _connect() -> Kube:
    """The controller's client, held to KUDIG_API_QPS / KUDIG_API_BURST (a bad value stops it)."""
    try:
        qps, burst = rate_from_env(os.environ.get(QPS_ENV), os.environ.get(BURST_ENV))
    except ValueError as e:
        raise SystemExit(str(e)) from None
    return Kube.connect(rate=TokenBucket(qps, burst))


def _stand_by() -> bool:
    """Serve the probes, then wait until this process holds the lease (True) or SIGTERM (False)."""
    api = _rt.api = _connect()
    me = identity()
    elector = LeaseElector(
        api,
        namespace=own_namespace(),
        name=os.environ.get("KUDIG_LEADER_ELECTION_LEASE", LEASE_NAME),
        identity=me,
        on_change=report_leadership,
    )
    _rt.elector = elector
    report_leadership(False)
    probes = _rt.probes = Probes(elector)
    health = _serve_health(probes)

    def stop(signum: int, _frame: Any) -> None:
        log.info("signal %s while waiting for the lease: stopping", signal.Signals(signum).name)
        _rt.stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info(
        "kudig controller %s: standby until it holds lease %s (/healthz /readyz /metrics on port %d)",
        me,
        elector.where,
        health.port,
    )
    elector.start(on_lost=_lost_leadership)
    while not _rt.stopping.is_set():
        if elector.became_leader.wait(0.5):
            return True
    elector.release()  # in case it won just now
    health.stop()
    return False


def _metrics() -> tuple[bytes, str]:
    """/metrics: the controller's own registry (metrics.py, docs/metrics.md). A standby (leader
    election, no controller yet) serves kudig_controller_info and kudig_controller_leader 0."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    from kudig_operator.metrics import standby_metrics

    ctl = _rt.controller
    metrics = ctl.metrics if ctl is not None else standby_metrics(identity(), getattr(_rt, "api", None))
    leader = getattr(_rt, "leader", None)  # None: no leader election, this controller acts alone
    if leader is not None:
        metrics.set_leader(bool(leader))
    return generate_latest(metrics.registry), CONTENT_TYPE_LATEST


class NoDiffBase(kopf.DiffBaseStorage):
    """No diff-base: kudig has only `on.event` handlers, so kopf's change detection has nothing
    to detect — yet kopf would deep-copy every object on every event to build one (measured:
    about a fifth of the controller's CPU per task)."""

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


def _task_settings(api: Kube) -> dict[str, Any]:
    """What task pods get and what becomes of them: pod defaults (KUDIG_TASK_POD), the pod
    retention (KUDIG_POD_RETENTION), the log store (KUDIG_LOG_STORE) and the task cap
    (KUDIG_TASK_MAX_RUN), the status write budget (KUDIG_STATUS_WRITE_INTERVAL) and how many pods
    one plan creates at once (KUDIG_POD_CREATE_CONCURRENCY). A bad value (a Helm
    value, usually) stops the controller at start-up with the variable named."""
    try:
        return {
            "task_pod": task_pod_defaults(os.environ.get(TASK_POD_ENV)),
            "pod_retention": retention(os.environ.get(RETENTION_ENV)),
            "logs": log_store(api),
            "task_max_run": task_max_run(os.environ.get(TASK_MAX_RUN_ENV)),
            "status_write_interval": write_interval(
                os.environ.get(WRITE_INTERVAL_ENV), DEFAULT_WRITE_INTERVAL
            ),
            "create_concurrency": create_concurrency(os.environ.get(CREATE_CONCURRENCY_ENV)),
        }
    except (PodSettingsError, KudigError, ValueError) as e:
        raise SystemExit(str(e)) from None


class Backoffs:
    """The delays between kopf's attempts at a failed API request, without end.

    kopf retries a request that failed on the connection, a 5xx, a 403 or a 429 after each delay
    of `settings.networking.error_backoffs`, and raises the error after the last one (54 s with its
    defaults). Raised inside a watch of Workflows or Sessions, that error ends kopf's watcher for
    good (kopf issue #1276): an API server that takes longer than that to come back (a restart on
    a loaded machine answers 503 "before all known HTTP paths have been installed" and 429
    "storage is (re)initializing" for a while) left the controller without its watch until
    /healthz failed and the kubelet restarted it. With delays that never run out, the watch waits
    for the server as long as it takes, `then` seconds apart; the Watchdog's resync reconciles
    meanwhile. Iterable again for every request (kopf iterates it once per request), never Sized.
    """

    def __init__(self, first: tuple[float, ...] = (1, 1, 2, 3, 5, 8), then: float = 10.0) -> None:
        self.first = first
        self.then = then

    def __iter__(self) -> Iterator[float]:
        yield from self.first
        while True:
            yield self.then


def configure_requests(settings: kopf.OperatorSettings, backoffs: Backoffs | None = None) -> None:
    """kopf's API requests: retried without end (`Backoffs`), a watch ended by the server after 5 min."""
    settings.networking.error_backoffs = backoffs or Backoffs()
    settings.watching.server_timeout = 300


@kopf.on.startup()
def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.persistence.diffbase_storage = NoDiffBase()
    configure_requests(settings)
    settings.posting.level = logging.WARNING
    workers = int(os.environ.get("KUDIG_WORKERS", "8"))
    settings.execution.max_workers = workers
    _rt.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="kudig-reconcile")
    settings.peering.standalone = True  # one active controller: the Lease says which (not kopf's peering)
    api = _rt.api or _connect()
    ctl = Controller(
        api,
        runner_image=os.environ.get("KUDIG_RUNNER_IMAGE", "kudig-runner:dev"),
        cache_dir=Path(os.environ.get("KUDIG_CACHE_DIR", "/tmp/kudig-projects")),
        identity=identity(),
        **_task_settings(api),
    )
    wakeups = Wakeups(ctl.fire)
    ctl.wakeups = wakeups
    period = float(os.environ.get("KUDIG_RESYNC_SECONDS", "30"))
    scope = Scope.from_env()
    watchdog = Watchdog(ctl, scope=scope, period=period, submit=_in_worker)
    executor = _rt.executor
    assert executor is not None
    ctl.metrics.add_queue(executor._work_queue.qsize)  # reconciles queued for a worker

    def pod_event(pod_namespace: str, pod: Any, deleted: bool) -> None:
        key = ctl.note_pod(pod_namespace, pod, deleted)
        if key is not None:  # coalesced: a reconcile queued behind one that took the news in is free
            _in_worker(ctl.reconcile_news, *key)

    pods = PodWatch(api, pod_event, scope=scope)
    watchdog.checks.append(pods.healthy)
    ctl.metrics.add_stats(lambda: pods.counts)  # the watch's lists, streams, events, errors
    _rt.controller, _rt.wakeups, _rt.watchdog, _rt.pods = ctl, wakeups, watchdog, pods
    threading.Thread(target=wakeups.run, daemon=True, name="kudig-wakeups").start()
    threading.Thread(target=pods.run, daemon=True, name="kudig-pods").start()
    threading.Thread(target=watchdog.run, daemon=True, name="kudig-resync").start()
    if _rt.probes is not None:  # leader election: the probes serve since the standby started
        _rt.probes.watchdog = watchdog
    health = _rt.health or _serve_health(watchdog)
    log.info(
        "kudig controller %s started (runner image %s; /healthz /readyz /metrics on port %d%s)",
        ctl.settings.controller_id,
        ctl.settings.runner_image,
        health.port,
        "; leader" if _rt.elector is not None else "",
    )
    if _rt.stopping.is_set():  # SIGTERM came between winning the lease and kopf's signal handlers
        os.kill(os.getpid(), signal.SIGTERM)


@kopf.on.cleanup()
def cleanup(**_: Any) -> None:
    if _rt.pods is not None:
        _rt.pods.stop()
    if _rt.watchdog is not None:
        _rt.watchdog.stop()
    if _rt.wakeups is not None:
        _rt.wakeups.stop()
    if _rt.executor is not None:  # reconciles in flight finish before the lease is released
        _rt.executor.shutdown(wait=True, cancel_futures=True)
    if _rt.controller is not None:
        _rt.controller.creates.stop()
    if _rt.health is not None:
        _rt.health.stop()


def _deleted(event: dict[str, Any]) -> bool:
    return event.get("type") == "DELETED"


def _in_worker(fn: Callable[..., None], *args: Any) -> None:
    """Run a reconcile on a worker thread, and do not wait for it. kopf hands a handler the next
    event of an object only once the handler of the one before returned, and the Watchdog counts a
    version as delivered when the handler sees it: a handler that waited for its reconcile (queued
    behind a burst of pod news, or retrying against an API server that is coming back) held back
    every later event of that object, and /healthz called a working watch stale. The reconciles
    serialise on the controller's per-object locks and read the newest version remembered."""
    executor = _rt.executor
    assert executor is not None
    executor.submit(_logged, fn, *args)


def _logged(fn: Callable[..., None], *args: Any) -> None:
    try:
        fn(*args)
    except Exception:  # the next event or the resync tries again; never lose a worker silently
        log.exception("%s%s failed", fn.__name__, args)


# Workflows and Sessions are handled by async handlers on kopf's event loop that only note the
# new version (cheap, non-blocking) and queue a reconcile on a worker thread when it is news (the
# echo of the controller's own status write is not). Task pods are not watched through kopf at
# all (see podwatch.py).


@kopf.on.event(GROUP, VERSION, WORKFLOWS)
async def on_workflow(event: dict[str, Any], body: kopf.Body, name: str, namespace: str, **_: Any) -> None:
    deleted = _deleted(event)
    if _rt.watchdog is not None:
        _rt.watchdog.saw(
            WORKFLOWS, namespace, name, None if deleted else body["metadata"].get("resourceVersion")
        )
    ctl = controller()
    ctl.note_workflow(namespace, name, None if deleted else dict(body))
    _in_worker(ctl.reconcile_watched_workflow, namespace, name)


@kopf.on.event(GROUP, VERSION, SESSIONS)
async def on_session(event: dict[str, Any], body: kopf.Body, name: str, namespace: str, **_: Any) -> None:
    deleted = _deleted(event)
    if _rt.watchdog is not None:
        _rt.watchdog.saw(
            SESSIONS, namespace, name, None if deleted else body["metadata"].get("resourceVersion")
        )
    ctl = controller()
    if ctl.note_session(namespace, name, None if deleted else dict(body)):
        _in_worker(ctl.reconcile_session, namespace, name)


def run() -> None:
    """`python -m kudig_operator`: run the controller (every namespace, or those KUDIG_NAMESPACE
    names: one, or a pattern; `scope.py`)."""
    os.environ.setdefault("POD_ID", identity())  # kopf's identity without getpass
    scope = Scope.from_env()
    kopf.configure(verbose=False)  # kopf's log format, one handler
    logging.getLogger().setLevel(logging.INFO)
    logging.getLogger("kudig").setLevel(os.environ.get("KUDIG_LOG_LEVEL", "INFO"))  # kudig's own loggers
    # one line per handled event is noise at our event rate; kudig logs what matters itself
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    if leader_election_enabled() and not _stand_by():
        return  # stopped as a standby: nothing to hand over
    try:
        kopf.run(
            clusterwide=not scope.kopf_namespaces,
            namespaces=scope.kopf_namespaces,
            standalone=True,
        )
    finally:
        if _rt.elector is not None:  # kopf and the controller have stopped: hand over at once
            _rt.elector.release()
