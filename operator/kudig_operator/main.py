"""The kopf entry point: watch Workflows, Sessions and task pods; reconcile on every change.

Only `on.event` handlers are used: kopf then keeps no per-object progress annotations (our
state is the Session's status), and a pod's completion triggers its Session's reconcile at once
— no fixed requeue between steps. Retries and `wait>` wake a session with a timer at the exact
time the engine asks for; a slow resync loop is the safety net for missed events.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import kopf

from kudig_operator.controller import Controller
from kudig_operator.kube import KubeApi, load_config
from kudig_operator.models import GROUP, VERSION
from kudig_operator.podspec import LABEL_SESSION

log = logging.getLogger("kudig.operator")

_controller: Controller | None = None
_timers: dict[str, threading.Timer] = {}
_timers_lock = threading.Lock()
RESYNC_SECONDS = float(os.environ.get("KUDIG_RESYNC_SECONDS", "30"))


def controller() -> Controller:
    assert _controller is not None, "operator not started"
    return _controller


def _schedule_wakeup(namespace: str, name: str, at: float) -> None:
    key = f"{namespace}/{name}"
    delay = max(0.0, at - time.time()) + 0.01
    with _timers_lock:
        old = _timers.get(key)
        if old is not None and old.is_alive():
            old.cancel()
        timer = threading.Timer(delay, _safe_reconcile, args=(namespace, name))
        timer.daemon = True
        _timers[key] = timer
        timer.start()


def _safe_reconcile(namespace: str, name: str) -> None:
    try:
        controller().reconcile_session(namespace, name)
    except Exception:  # the next event or resync retries; never let a thread die silently
        log.exception("reconcile of session %s/%s failed", namespace, name)


def _resync_loop(stop: threading.Event) -> None:
    while not stop.wait(RESYNC_SECONDS):
        try:
            for obj in controller().api.list_objects("sessions"):
                phase = (obj.get("status") or {}).get("phase")
                spec = obj.get("spec") or {}
                attempt = (obj.get("status") or {}).get("attempt") or 0
                if phase in ("Succeeded", "Failed", "Killed") and int(spec.get("attempt", 1)) <= attempt:
                    continue
                _safe_reconcile(obj["metadata"]["namespace"], obj["metadata"]["name"])
        except Exception:
            log.exception("resync failed")


_stop = threading.Event()


@kopf.on.startup()
def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
    global _controller
    load_config()
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    settings.execution.max_workers = int(os.environ.get("KUDIG_WORKERS", "8"))
    cache = Path(os.environ.get("KUDIG_CACHE_DIR", "/tmp/kudig-projects"))
    _controller = Controller(
        KubeApi(),
        runner_image=os.environ.get("KUDIG_RUNNER_IMAGE", "kudig-runner:dev"),
        cache_dir=cache,
        schedule_wakeup=_schedule_wakeup,
    )
    threading.Thread(target=_resync_loop, args=(_stop,), daemon=True, name="kudig-resync").start()
    log.info("kudig operator started (runner image %s)", _controller.runner_image)


@kopf.on.cleanup()
def cleanup(**_: Any) -> None:
    _stop.set()


@kopf.on.event(GROUP, VERSION, "workflows")
def on_workflow(event: dict[str, Any], name: str, namespace: str, **_: Any) -> None:
    if event.get("type") == "DELETED":
        return
    controller().reconcile_workflow(namespace, name)
    # sessions waiting for this workflow (created before it) can go on now
    for obj in controller().api.list_objects("sessions", namespace):
        if (obj.get("spec") or {}).get("workflow") == name and (obj.get("status") or {}).get("phase") in (
            None,
            "Error",
            "Pending",
        ):
            _safe_reconcile(namespace, obj["metadata"]["name"])


@kopf.on.event(GROUP, VERSION, "sessions")
def on_session(event: dict[str, Any], name: str, namespace: str, **_: Any) -> None:
    if event.get("type") == "DELETED":
        return
    controller().reconcile_session(namespace, name)


@kopf.on.event("", "v1", "pods", labels={LABEL_SESSION: kopf.PRESENT})
def on_pod(event: dict[str, Any], body: kopf.Body, namespace: str, **_: Any) -> None:
    phase = (body.get("status") or {}).get("phase")
    deleted = event.get("type") == "DELETED"
    waiting_error = any(
        ((c.get("state") or {}).get("waiting") or {}).get("reason")
        in (
            "ErrImagePull",
            "ImagePullBackOff",
            "InvalidImageName",
            "ErrImageNeverPull",
            "CreateContainerConfigError",
        )
        for c in [
            *((body.get("status") or {}).get("containerStatuses") or []),
            *((body.get("status") or {}).get("initContainerStatuses") or []),
        ]
    )
    name = body["metadata"]["name"]
    controller().pods.update(namespace, name, None if deleted else {"status": dict(body.get("status") or {})})
    if deleted or phase in ("Succeeded", "Failed") or waiting_error:
        session = body["metadata"]["labels"][LABEL_SESSION]
        controller().reconcile_session(namespace, session)


def run() -> None:
    """`python -m kudig_operator`: run the operator (all namespaces unless KUDIG_NAMESPACE)."""
    logging.basicConfig(
        level=os.environ.get("KUDIG_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    namespace = os.environ.get("KUDIG_NAMESPACE")
    kopf.configure(verbose=False)
    # one line per handled event is noise at our event rate; kudig logs what matters itself
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    kopf.run(
        clusterwide=namespace is None,
        namespaces=[namespace] if namespace else [],
        standalone=True,
        liveness_endpoint=os.environ.get("KUDIG_HEALTH_ENDPOINT", "http://0.0.0.0:8080/healthz"),
    )
