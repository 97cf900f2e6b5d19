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
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import kopf

from kudig.api import GROUP, SESSIONS, VERSION, WORKFLOWS
from kudig.cluster.kube import Kube
from kudig_operator.controller import Controller, Wakeups
from kudig_operator.health import HealthServer, Watchdog
from kudig_operator.podwatch import PodWatch

log = logging.getLogger("kudig.operator")


class _Runtime:
    controller: Controller | None = None
    executor: ThreadPoolExecutor | None = None
    watchdog: Watchdog | None = None
    wakeups: Wakeups | None = None
    health: HealthServer | None = None
    pods: PodWatch | None = None


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


def _metrics() -> tuple[bytes, str]:
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
    from prometheus_client.core import CollectorRegistry, CounterMetricFamily, GaugeMetricFamily

    ctl = _rt.controller

    class Collector:
        def collect(self) -> Any:
            requests = CounterMetricFamily(
                "kudig_kube_requests",
                "Kubernetes API requests made by the controller",
                labels=["verb", "resource"],
            )
            kept = GaugeMetricFamily(
                "kudig_controller_cached_objects", "What the controller keeps in memory", labels=["kind"]
            )
            stats = CounterMetricFamily(
                "kudig_controller_operations", "Controller operations", labels=["operation"]
            )
            if ctl is not None:
                api = ctl.api
                counts = dict(getattr(api, "requests", {}))
                for (verb, resource), n in sorted(counts.items()):
                    requests.add_metric([verb, resource], n)
                for kind, n in ctl.memory().items():
                    kept.add_metric([kind], n)
                for op, n in sorted(ctl.stats.items()):
                    stats.add_metric([op], n)
            yield requests
            yield kept
            yield stats

    registry = CollectorRegistry()
    registry.register(Collector())
    return generate_latest(registry), CONTENT_TYPE_LATEST


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


@kopf.on.startup()
def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.persistence.diffbase_storage = NoDiffBase()
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    workers = int(os.environ.get("KUDIG_WORKERS", "8"))
    settings.execution.max_workers = workers
    _rt.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="kudig-reconcile")
    settings.peering.standalone = True
    api = Kube.connect()
    ctl = Controller(
        api,
        runner_image=os.environ.get("KUDIG_RUNNER_IMAGE", "kudig-runner:dev"),
        cache_dir=Path(os.environ.get("KUDIG_CACHE_DIR", "/tmp/kudig-projects")),
        identity=identity(),
    )
    wakeups = Wakeups(ctl.fire)
    ctl.wakeups = wakeups
    period = float(os.environ.get("KUDIG_RESYNC_SECONDS", "30"))
    namespace = os.environ.get("KUDIG_NAMESPACE") or None
    watchdog = Watchdog(ctl, namespace=namespace, period=period)
    executor = _rt.executor
    assert executor is not None

    def pod_event(pod_namespace: str, pod: Any, deleted: bool) -> None:
        key = ctl.note_pod(pod_namespace, pod, deleted)
        if key is not None:
            executor.submit(_safe_reconcile, ctl, key)

    pods = PodWatch(api, pod_event, namespace=namespace)
    watchdog.checks.append(pods.healthy)
    _rt.controller, _rt.wakeups, _rt.watchdog, _rt.pods = ctl, wakeups, watchdog, pods
    threading.Thread(target=wakeups.run, daemon=True, name="kudig-wakeups").start()
    threading.Thread(target=pods.run, daemon=True, name="kudig-pods").start()
    threading.Thread(target=watchdog.run, daemon=True, name="kudig-resync").start()
    address = os.environ.get("KUDIG_HEALTH_ADDRESS", "0.0.0.0:8080")
    health = HealthServer(address, watchdog, _metrics)
    health.start()
    _rt.health = health
    log.info(
        "kudig controller %s started (runner image %s; /healthz /readyz /metrics on port %d)",
        ctl.settings.controller_id,
        ctl.settings.runner_image,
        health.port,
    )
    port_file = os.environ.get("KUDIG_HEALTH_PORT_FILE")
    if port_file:
        Path(port_file).write_text(str(health.port))


def _safe_reconcile(ctl: Controller, key: tuple[str, str]) -> None:
    try:
        ctl.reconcile_session(*key)
    except Exception:  # the next event or the resync tries again; never lose a worker silently
        log.exception("reconcile of session %s/%s failed", *key)


@kopf.on.cleanup()
def cleanup(**_: Any) -> None:
    if _rt.pods is not None:
        _rt.pods.stop()
    if _rt.watchdog is not None:
        _rt.watchdog.stop()
    if _rt.wakeups is not None:
        _rt.wakeups.stop()
    if _rt.health is not None:
        _rt.health.stop()


def _deleted(event: dict[str, Any]) -> bool:
    return event.get("type") == "DELETED"


@kopf.on.event(GROUP, VERSION, WORKFLOWS)
def on_workflow(event: dict[str, Any], body: kopf.Body, name: str, namespace: str, **_: Any) -> None:
    deleted = _deleted(event)
    if _rt.watchdog is not None:
        _rt.watchdog.saw(
            WORKFLOWS, namespace, name, None if deleted else body["metadata"].get("resourceVersion")
        )
    controller().on_workflow_event(namespace, name, None if deleted else dict(body))


async def _reconcile(namespace: str, name: str) -> None:
    """Reconcile in a worker thread (the API client blocks), not on kopf's event loop."""
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(_rt.executor, controller().reconcile_session, namespace, name)


# Sessions are handled by an async handler: most events (the echo of our own status write) only
# update what the controller remembers, on the event loop, and only news costs a thread hop and a
# reconcile. Task pods are not watched through kopf at all (see podwatch.py).


@kopf.on.event(GROUP, VERSION, SESSIONS)
async def on_session(event: dict[str, Any], body: kopf.Body, name: str, namespace: str, **_: Any) -> None:
    deleted = _deleted(event)
    if _rt.watchdog is not None:
        _rt.watchdog.saw(
            SESSIONS, namespace, name, None if deleted else body["metadata"].get("resourceVersion")
        )
    if controller().note_session(namespace, name, None if deleted else dict(body)):
        await _reconcile(namespace, name)


def run() -> None:
    """`python -m kudig_operator`: run the controller (all namespaces unless KUDIG_NAMESPACE)."""
    os.environ.setdefault("POD_ID", identity())  # kopf's identity without getpass
    namespace = os.environ.get("KUDIG_NAMESPACE")
    kopf.configure(verbose=False)  # kopf's log format, one handler
    logging.getLogger().setLevel(logging.INFO)
    logging.getLogger("kudig").setLevel(os.environ.get("KUDIG_LOG_LEVEL", "INFO"))  # kudig's own loggers
    # one line per handled event is noise at our event rate; kudig logs what matters itself
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    kopf.run(
        clusterwide=namespace is None,
        namespaces=[namespace] if namespace else [],
        standalone=True,
    )
