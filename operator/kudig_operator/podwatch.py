"""kudig's own watch of its task pods: filtered by the API server, cheap per event.

kopf filters watched objects on the client: a kopf handler for "pods with label X" lists and
watches every pod of the cluster (or of the served namespaces) and drops the others in Python,
and its per-object machinery (a worker, a queue, causes, a handler call through an executor) is
most of the controller's CPU per task when a task pod produces five or six events. Task pods are
the one kind kudig watches in volume, so it watches them itself: a list-then-watch loop with the
label selector sent to the API server (only kudig's pods travel), bookmarks, and a re-list when
the server says the resourceVersion is too old (410 Gone). Each event is handed to a callback as
raw JSON; the callback (`Controller.note_pod`) only updates what the controller remembers and says
whether a reconcile is due. Sessions and Workflows (few objects, large) stay with kopf.

`healthy()` feeds /healthz: the loop must have (re)connected or seen an event recently — the
server ends every watch after `timeout` seconds, so a working loop reconnects at least that often.
`counts` (lists, watch streams, events, errors) go to /metrics as operations
(`kudig_controller_operations_total{operation="pod_watch_..."}`): that the watch came back after an
API server restart is seen there (an error, then a list and events again).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from kudig.api import LABEL_SESSION
from kudig.cluster.kube import KubeApi
from kudig_operator.scope import EVERY, Scope

log = logging.getLogger("kudig.podwatch")

PodCallback = Callable[[str, Mapping[str, Any], bool], None]  # (namespace, pod, deleted)
# lists done, watch requests made, watch events delivered (bookmarks aside), failures (each followed by a list)
COUNTS = ("pod_watch_lists", "pod_watch_streams", "pod_watch_events", "pod_watch_errors")


class PodWatch:
    def __init__(
        self,
        api: KubeApi,
        on_event: PodCallback,
        *,
        scope: Scope = EVERY,
        selector: str = LABEL_SESSION,
        timeout: int = 300,
        clock: Callable[[], float] = time.monotonic,
        backoff: tuple[float, float] = (0.5, 30.0),
    ) -> None:
        self.api = api
        self.on_event = on_event
        self.scope = scope  # the namespaces served: pods of others are skipped as they arrive
        self.selector = selector
        self.timeout = timeout
        self.clock = clock
        self.backoff = backoff  # after a failure: first wait, doubled up to the second
        self.known: dict[tuple[str, str], str] = {}  # (namespace, name) -> resourceVersion
        self.resource_version = ""
        self.last_alive: float | None = None  # last list, event or bookmark
        self.synced = False  # the first list was delivered
        self.last_error: str | None = None
        self.counts = dict.fromkeys(COUNTS, 0)  # only this loop's thread writes them
        self._stop = threading.Event()

    # ----- one step each (the loop below; unit tests drive them directly)

    def relist(self) -> None:
        """List the pods, deliver each, and deliver a deletion for each pod gone meanwhile."""
        items, rv = self.api.list_pods_version(self.scope.api_namespace, self.selector)
        seen: dict[tuple[str, str], str] = {}
        for pod in items:
            meta = pod.get("metadata") or {}
            key = (str(meta.get("namespace")), str(meta.get("name")))
            if not self.scope.serves(key[0]):
                continue  # another controller's (a pattern lists cluster-wide): not even remembered
            seen[key] = str(meta.get("resourceVersion", ""))
            if self.known.get(key) != seen[key]:
                self._deliver(key[0], pod, False)
        for key in [k for k in self.known if k not in seen]:
            self._deliver(key[0], {"metadata": {"name": key[1], "namespace": key[0]}}, True)
        self.known = seen
        self.resource_version = rv
        self.last_alive = self.clock()
        self.synced = True
        self.counts["pod_watch_lists"] += 1

    def watch_once(self) -> bool:
        """Follow one watch stream to its end; False when the server says to list again."""
        events = self.api.watch_pods(
            self.scope.api_namespace, self.selector, self.resource_version, self.timeout
        )
        self.counts["pod_watch_streams"] += 1
        for event in events:
            if self._stop.is_set():
                return True
            kind = event.get("type")
            obj = event.get("object") or {}
            meta = obj.get("metadata") or {}
            self.last_alive = self.clock()
            if kind == "ERROR":
                if obj.get("code") == 410:
                    return False  # too old: list again
                raise RuntimeError(f"pod watch error: {obj.get('message') or obj}")
            if meta.get("resourceVersion"):
                self.resource_version = str(meta["resourceVersion"])
            if kind == "BOOKMARK":
                continue
            key = (str(meta.get("namespace")), str(meta.get("name")))
            if not self.scope.serves(key[0]):
                continue
            self.counts["pod_watch_events"] += 1
            if kind == "DELETED":
                self.known.pop(key, None)
                self._deliver(key[0], obj, True)
            elif kind in ("ADDED", "MODIFIED"):
                self.known[key] = str(meta.get("resourceVersion", ""))
                self._deliver(key[0], obj, False)
        self.last_alive = self.clock()  # the server closed a healthy stream at its timeout
        return True

    def _deliver(self, namespace: str, pod: Mapping[str, Any], deleted: bool) -> None:
        try:
            self.on_event(namespace, pod, deleted)
        except Exception:  # one bad pod must not stop the watch
            log.exception("handling pod %s/%s failed", namespace, (pod.get("metadata") or {}).get("name"))

    # ----- the loop

    def run(self) -> None:
        first, most = self.backoff
        backoff = first
        need_list = True
        while not self._stop.is_set():
            try:
                if need_list:
                    self.relist()
                need_list = not self.watch_once()
                backoff = first
                self.last_error = None
            except Exception as e:
                self.counts["pod_watch_errors"] += 1
                self.last_error = f"{type(e).__name__}: {e}"
                log.warning("pod watch failed (%s); listing again in %.1fs", self.last_error, backoff)
                need_list = True
                if self._stop.wait(backoff):
                    return
                backoff = min(backoff * 2, most)

    def stop(self) -> None:
        self._stop.set()

    def healthy(self, now: float | None = None) -> tuple[bool, str]:
        now = self.clock() if now is None else now
        if not self.synced:
            return False, f"pod watch not listed yet ({self.last_error or 'starting'})"
        assert self.last_alive is not None
        if now - self.last_alive > self.timeout + 90:
            return (
                False,
                f"pod watch silent for {now - self.last_alive:.0f}s ({self.last_error or 'no error seen'})",
            )
        return True, "ok"
