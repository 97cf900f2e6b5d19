"""Is the controller really working? The resync safety net, and /healthz, /readyz, /metrics.

kopf keeps watch streams open and hands us their events; if a stream silently stops (a known
failure mode of long-lived watches behind load balancers), the process looks alive while nothing
happens. So health is measured end to end, against the API server's own listing:

* every `RESYNC_SECONDS` the `Watchdog` lists Workflows and Sessions (metadata only: names and
  resourceVersions, a few hundred bytes per object, never the Sessions' large status) and compares
  each resourceVersion with the newest one the watch delivered for that object. An object the
  watch has not caught up with is reconciled at once (the safety net), and remembered as
  *pending*; if the watch still has not delivered that version `STALE_SECONDS` later, the watch
  is broken and `/healthz` fails, so the kubelet restarts the controller.
* Sessions the controller holds as running are re-read fresh and their pods re-listed (metadata
  only) at each resync, so a pod event the watch lost is noticed too.
* `/readyz` is ready once the first resync has succeeded (the API server answers, the RBAC is
  right, the CRDs exist) and the watch is not stale; `/healthz` fails when resyncs stop
  succeeding or the watch is stale.

The checks are plain methods taking `now`, unit-tested without a server.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from kudig.api import SESSIONS, WORKFLOWS
from kudig.cluster.kube import resource_version_number
from kudig_operator.scope import EVERY, Scope

log = logging.getLogger("kudig.health")

Ref = tuple[str, str, str]  # (plural, namespace, name)


class Watchdog:
    def __init__(
        self,
        controller: Any,
        *,
        scope: Scope = EVERY,
        period: float = 30.0,
        stale_after: float | None = None,
        recheck_workflows: float = 60.0,
        clock: Callable[[], float] = time.time,
        submit: Callable[[Callable[[], None]], None] | None = None,
    ) -> None:
        self.controller = controller
        self.submit = submit  # runs a resync's reconcile on the worker pool; None: in the resync
        self.scope = scope  # the namespaces the controller serves
        self.period = period
        self.stale_after = stale_after if stale_after is not None else 2 * period + 30
        self.recheck_workflows = recheck_workflows
        self.clock = clock
        self._seen: dict[Ref, str] = {}
        self._pending: dict[Ref, tuple[str, float]] = {}
        self._queued: set[Ref] = set()  # fresh reconciles a resync queued that have not run yet
        self._lock = threading.Lock()
        self.started_at = clock()
        self.last_ok: float | None = None
        self.last_error: str | None = None
        self._last_recheck = 0.0
        self._stop = threading.Event()
        self.checks: list[Callable[[], tuple[bool, str]]] = []  # more watches (e.g. the pod watch)

    # ----- fed by the watch handlers

    def saw(self, plural: str, namespace: str, name: str, rv: str | None) -> None:
        """The watch delivered this version of an object (None: its deletion)."""
        ref = (plural, namespace, name)
        with self._lock:
            if rv is None:
                self._seen.pop(ref, None)
                self._pending.pop(ref, None)
                return
            old = self._seen.get(ref)
            if old is None or (resource_version_number(rv) or 0) >= (resource_version_number(old) or 0):
                self._seen[ref] = rv
            pending = self._pending.get(ref)
            if pending is not None and self._caught_up(rv, pending[0]):
                del self._pending[ref]

    @staticmethod
    def _caught_up(seen: str, wanted: str) -> bool:
        a, b = resource_version_number(seen), resource_version_number(wanted)
        return seen == wanted if a is None or b is None else a >= b

    # ----- the resync

    def resync_once(self) -> None:
        """List, compare, reconcile what the watch missed; raise if the API server fails us."""
        now = self.clock()
        api = self.controller.api
        for namespace, name in self.controller.active_sessions():
            self._fresh(namespace, name)
        listed_all: dict[Ref, str] = {}
        for plural in (WORKFLOWS, SESSIONS):
            for item in api.list_metadata(plural, self.scope.api_namespace):
                meta = item.get("metadata") or {}
                namespace = str(meta.get("namespace"))
                if not self.scope.serves(namespace):
                    continue
                listed_all[(plural, namespace, str(meta.get("name")))] = str(meta.get("resourceVersion", ""))
        missed: list[Ref] = []
        with self._lock:
            for ref, rv in listed_all.items():
                seen = self._seen.get(ref)
                if seen is not None and self._caught_up(seen, rv):
                    self._pending.pop(ref, None)
                    continue
                if ref in self._pending:
                    # The watch had a whole period to deliver it and did not: reconcile now (a
                    # version listed this time only may simply be on its way).
                    missed.append(ref)
                if ref not in self._pending or not self._caught_up(self._pending[ref][0], rv):
                    first = self._pending.get(ref, (rv, now))[1]
                    self._pending[ref] = (rv, first)
            gone = [ref for ref in self._seen if ref not in listed_all]
        for ref in gone:  # deleted, and the watch did not say so
            self.saw(*ref, None)
            if ref[0] == SESSIONS:
                self.controller.on_session_event(ref[1], ref[2], None)
            else:
                self.controller.on_workflow_event(ref[1], ref[2], None)
        for plural, namespace, name in missed:
            log.debug("resync: %s %s/%s changed without a watch event", plural, namespace, name)
            if plural == SESSIONS:
                self._safe(self.controller.reconcile_session, namespace, name, fresh=True)
            else:
                self._safe(self.controller.reconcile_workflow, namespace, name)
        if now - self._last_recheck >= self.recheck_workflows:
            self._last_recheck = now
            for plural, namespace, name in listed_all:
                if plural == WORKFLOWS:
                    self._safe(self.controller.recheck_workflow, namespace, name)
        self.last_ok = self.clock()
        self.last_error = None

    def _fresh(self, namespace: str, name: str) -> None:
        """Re-read a running Session and re-list its pods: on the worker pool when there is one,
        at most one queued per Session. Run here, a resync waited for the Session's lock behind
        reconciles that were all retrying against an API server coming back, stopped resyncing,
        and /healthz said so ("no successful resync for 50s")."""
        if self.submit is None:
            self._safe(self.controller.reconcile_session, namespace, name, fresh=True)
            return
        ref = (SESSIONS, namespace, name)
        with self._lock:
            if ref in self._queued:
                return
            self._queued.add(ref)

        def run() -> None:
            try:
                self._safe(self.controller.reconcile_session, namespace, name, fresh=True)
            finally:
                with self._lock:
                    self._queued.discard(ref)

        self.submit(run)

    def _safe(self, fn: Callable[..., None], *args: Any, **kwargs: Any) -> None:
        try:
            fn(*args, **kwargs)
        except Exception:
            log.exception("resync: reconcile failed")

    def run(self) -> None:
        while True:
            try:
                self.resync_once()
            except Exception as e:
                self.last_error = f"{type(e).__name__}: {e}"
                log.exception("resync failed")
            if self._stop.wait(self.period):
                return

    def stop(self) -> None:
        self._stop.set()

    # ----- the verdicts

    def stale(self, now: float) -> list[Ref]:
        with self._lock:
            return sorted(ref for ref, (_, since) in self._pending.items() if now - since > self.stale_after)

    def healthy(self, now: float) -> tuple[bool, str]:
        for check in self.checks:
            ok, why = check()
            if not ok:
                return False, why
        stale = self.stale(now)
        if stale:
            plural, namespace, name = stale[0]
            return (
                False,
                f"watch is stale: {len(stale)} change(s) never delivered, e.g. {plural} {namespace}/{name}",
            )
        last = self.last_ok if self.last_ok is not None else self.started_at
        if now - last > 3 * self.period + 30:
            return (
                False,
                f"no successful resync for {now - last:.0f}s ({self.last_error or 'no error recorded'})",
            )
        return True, "ok"

    def ready(self, now: float) -> tuple[bool, str]:
        if self.last_ok is None:
            return False, f"first resync not done yet ({self.last_error or 'starting'})"
        return self.healthy(now)


class HealthServer:
    """/healthz, /readyz and /metrics on a small threaded HTTP server of the standard library
    (kopf's own liveness endpoint only proves its event loop runs)."""

    def __init__(self, address: str, watchdog: Watchdog, metrics: Callable[[], tuple[bytes, str]]) -> None:
        host, _, port = address.rpartition(":")
        dog = watchdog

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.startswith("/healthz"):
                    ok, text = dog.healthy(time.time())
                    self._send(200 if ok else 503, text.encode(), "text/plain; charset=utf-8")
                elif self.path.startswith("/readyz"):
                    ok, text = dog.ready(time.time())
                    self._send(200 if ok else 503, text.encode(), "text/plain; charset=utf-8")
                elif self.path.startswith("/metrics"):
                    body, content_type = metrics()
                    self._send(200, body, content_type)
                else:
                    self._send(404, b"not found", "text/plain")

            def _send(self, code: int, body: bytes, content_type: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # probes every few seconds are not news

        self.server = ThreadingHTTPServer((host or "0.0.0.0", int(port or 8080)), Handler)
        self.server.daemon_threads = True

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def start(self) -> None:
        threading.Thread(target=self.server.serve_forever, name="kudig-health", daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
