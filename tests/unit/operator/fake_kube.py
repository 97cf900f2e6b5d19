"""An in-memory Kubernetes API implementing `kudig.cluster.kube.KubeApi`, for the controller's
unit tests: optimistic concurrency (409 on a stale resourceVersion), AlreadyExists on create,
generations that move with the spec, pods whose status the test sets, request counting, and
fault injection (fail the next call of a method)."""

from __future__ import annotations

import base64
import copy
import itertools
import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from functools import cached_property
from typing import Any

from kudig.api import SESSIONS, WORKFLOWS
from kudig.cluster.kube import AlreadyExists, Conflict, KubeApi
from kudig.errors import KudigError


class Crash(BaseException):
    """Injected failure (a controller crash between two API calls): a BaseException, so that
    no `except Exception` of the controller (an Event that could not be created) survives it."""


class FakeKube:
    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.pods: dict[tuple[str, str], dict[str, Any]] = {}
        self.config_maps: dict[tuple[str, str], dict[str, Any]] = {}
        self.logs: dict[tuple[str, str], str] = {}
        self.requests: Counter[tuple[str, str]] = Counter()
        self.created_pods: list[str] = []  # every successful pod creation, in order
        self.deleted_pods: list[str] = []
        self._rv = itertools.count(100)
        self._faults: dict[str, list[Callable[[], None]]] = {}
        self._countdown: int | None = None
        self.watch_events: list[dict[str, Any]] = []
        self.deleted_objects: list[str] = []  # what the next watch_pods stream delivers
        self.watched_from: list[str] = []
        self.events: list[dict[str, Any]] = []  # every Event created, in order
        self._creating = threading.Lock()  # pod creates may come from several threads at once
        self.creating_at_once = 0  # pod creates in flight now, and the most ever seen
        self.most_creating_at_once = 0
        self.create_delay = 0.0  # seconds a pod create takes (the round trip it stands for)

    # ----- test helpers

    def fail_next(self, method: str, exc: Exception | None = None) -> None:
        """The next call of `method` raises `exc` (default: Crash) before doing anything."""

        def boom() -> None:
            raise exc if exc is not None else Crash(method)

        self._faults.setdefault(method, []).append(boom)

    def crash_at(self, n: int) -> None:
        """The `n`th request from now (1: the next one, whatever its method) raises Crash before
        doing anything: a controller dying between two API calls."""
        self._countdown = n

    def before(self, method: str, fn: Callable[[], None]) -> None:
        """Run `fn` right before the next call of `method` (e.g. a concurrent writer)."""
        self._faults.setdefault(method, []).append(fn)

    def _enter(self, method: str, verb: str, resource: str) -> None:
        self.requests[(verb, resource)] += 1
        if self._countdown is not None:
            self._countdown -= 1
            if self._countdown == 0:
                self._countdown = None
                raise Crash(f"{method} (crash_at)")
        hooks = self._faults.get(method)
        if hooks:
            hooks.pop(0)()

    def _meta(self, obj: dict[str, Any], namespace: str) -> None:
        meta = obj.setdefault("metadata", {})
        meta["namespace"] = namespace
        meta.setdefault("uid", str(uuid.uuid4()))
        meta["resourceVersion"] = str(next(self._rv))
        meta.setdefault("generation", 1)
        meta.setdefault("creationTimestamp", "2024-01-30T00:00:00Z")

    def add(self, plural: str, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        """Create an object without counting a request (test setup)."""
        obj = copy.deepcopy(body)
        obj.setdefault("apiVersion", "kudig.io/v1alpha1")
        obj.setdefault("kind", {WORKFLOWS: "Workflow", SESSIONS: "Session"}[plural])
        self._meta(obj, namespace)
        self.objects[(plural, namespace, obj["metadata"]["name"])] = obj
        return copy.deepcopy(obj)

    def add_config_map(
        self, namespace: str, name: str, data: dict[str, str], binary: dict[str, bytes] | None = None
    ) -> None:
        cm: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name},
            "data": data,
        }
        if binary:
            cm["binaryData"] = {k: base64.b64encode(v).decode() for k, v in binary.items()}
        self._meta(cm, namespace)
        self.config_maps[(namespace, name)] = cm

    def set_spec(self, plural: str, namespace: str, name: str, **spec: Any) -> dict[str, Any]:
        obj = self.objects[(plural, namespace, name)]
        for key, value in spec.items():  # a JSON merge patch: null removes
            if value is None:
                obj["spec"].pop(key, None)
            else:
                obj["spec"][key] = value
        obj["metadata"]["generation"] += 1
        obj["metadata"]["resourceVersion"] = str(next(self._rv))
        return copy.deepcopy(obj)

    def obj(self, plural: str, namespace: str, name: str) -> dict[str, Any]:
        return copy.deepcopy(self.objects[(plural, namespace, name)])

    def status(self, namespace: str, name: str) -> dict[str, Any]:
        return dict(self.objects[(SESSIONS, namespace, name)].get("status") or {})

    def pod(self, namespace: str, name: str) -> dict[str, Any]:
        return copy.deepcopy(self.pods[(namespace, name)])

    def pod_names(self, namespace: str) -> list[str]:
        return sorted(n for (ns, n) in self.pods if ns == namespace)

    def set_pod_status(
        self, namespace: str, name: str, status: dict[str, Any], log: str | None = None
    ) -> dict[str, Any]:
        pod = self.pods[(namespace, name)]
        pod["status"] = status
        pod["metadata"]["resourceVersion"] = str(next(self._rv))
        if log is not None:
            self.logs[(namespace, name)] = log
        return copy.deepcopy(pod)

    def finish_pod(
        self,
        namespace: str,
        name: str,
        *,
        output: dict[str, Any] | None = None,
        message: str | None = None,
        exit_code: int = 0,
        log: str = "",
    ) -> dict[str, Any]:
        """The task container terminated; `output` is the runner's output (termination message)."""
        if message is None:
            message = json.dumps(output if output is not None else {"error": None})
        phase = "Succeeded" if exit_code == 0 else "Failed"
        terminated = {
            "exitCode": exit_code,
            "message": message,
            "reason": "Completed" if exit_code == 0 else "Error",
        }
        return self.set_pod_status(
            namespace,
            name,
            {"phase": phase, "containerStatuses": [{"name": "task", "state": {"terminated": terminated}}]},
            log,
        )

    def run_pod(self, namespace: str, name: str) -> dict[str, Any]:
        return self.set_pod_status(
            namespace,
            name,
            {"phase": "Running", "containerStatuses": [{"name": "task", "state": {"running": {}}}]},
        )

    # ----- KubeApi: custom resources

    def get(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        self._enter("get", "get", plural)
        obj = self.objects.get((plural, namespace, name))
        return copy.deepcopy(obj) if obj is not None else None

    def list_objects(self, plural: str, namespace: str | None = None) -> list[dict[str, Any]]:
        self._enter("list_objects", "list", plural)
        return [
            copy.deepcopy(o)
            for (p, ns, _), o in sorted(self.objects.items())
            if p == plural and namespace in (None, ns)
        ]

    def list_metadata(
        self, plural: str, namespace: str | None = None, selector: str | None = None
    ) -> list[dict[str, Any]]:
        self._enter("list_metadata", "list", plural)
        wanted = [term.partition("=") for term in (selector or "").split(",") if term]
        return [
            {"metadata": copy.deepcopy(o["metadata"])}
            for (p, ns, _), o in sorted(self.objects.items())
            if p == plural
            and namespace in (None, ns)
            and all(
                k in (o["metadata"].get("labels") or {}) and (not eq or o["metadata"]["labels"][k] == v)
                for k, eq, v in wanted
            )
        ]

    def delete(self, plural: str, namespace: str, name: str) -> None:
        self._enter("delete", "delete", plural)
        self.objects.pop((plural, namespace, name), None)
        self.deleted_objects.append(name)

    def create(self, plural: str, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        self._enter("create", "create", plural)
        if (plural, namespace, body["metadata"]["name"]) in self.objects:
            raise AlreadyExists(body["metadata"]["name"])
        return self.add(plural, namespace, body)

    def patch(self, plural: str, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        self._enter("patch", "patch", plural)
        if (plural, namespace, name) not in self.objects:
            raise KudigError(f"{plural} {name} not found")
        labels = (body.get("metadata") or {}).get("labels")
        if labels:
            obj = self.objects[(plural, namespace, name)]
            current = obj["metadata"].setdefault("labels", {})
            for k, v in labels.items():  # a JSON merge patch: null removes
                if v is None:
                    current.pop(k, None)
                else:
                    current[k] = v
            obj["metadata"]["resourceVersion"] = str(next(self._rv))
        if "spec" not in body:
            return copy.deepcopy(self.objects[(plural, namespace, name)])
        return self.set_spec(plural, namespace, name, **body.get("spec", {}))

    def replace(self, plural: str, obj: dict[str, Any]) -> dict[str, Any]:
        self._enter("replace", "update", plural)
        meta = obj["metadata"]
        current = self.objects[(plural, meta["namespace"], meta["name"])]
        if meta.get("resourceVersion") != current["metadata"]["resourceVersion"]:
            raise Conflict("stale")
        current["spec"] = copy.deepcopy(obj["spec"])
        current["metadata"]["generation"] += 1
        current["metadata"]["resourceVersion"] = str(next(self._rv))
        return copy.deepcopy(current)

    def replace_status(self, plural: str, obj: dict[str, Any]) -> dict[str, Any]:
        self._enter("replace_status", "update", plural + "/status")
        meta = obj["metadata"]
        current = self.objects.get((plural, meta["namespace"], meta["name"]))
        if current is None or meta.get("resourceVersion") != current["metadata"]["resourceVersion"]:
            raise Conflict("stale")
        current["status"] = json.loads(json.dumps(obj["status"]))  # as the API server would store it
        current["metadata"]["resourceVersion"] = str(next(self._rv))
        return copy.deepcopy(current)

    # ----- pods

    def get_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        self._enter("get_pod", "get", "pods")
        pod = self.pods.get((namespace, name))
        return copy.deepcopy(pod) if pod is not None else None

    def create_pod(self, namespace: str, body: dict[str, Any]) -> bool:
        with self._creating:
            self.creating_at_once += 1
            self.most_creating_at_once = max(self.most_creating_at_once, self.creating_at_once)
        try:
            if self.create_delay:
                time.sleep(self.create_delay)
            with self._creating:
                self._enter("create_pod", "create", "pods")
                name = body["metadata"]["name"]
                if (namespace, name) in self.pods:
                    return False
                pod = json.loads(json.dumps(body))
                self._meta(pod, namespace)
                pod["status"] = {"phase": "Pending"}
                self.pods[(namespace, name)] = pod
                self.created_pods.append(name)
                return True
        finally:
            with self._creating:
                self.creating_at_once -= 1

    def delete_pod(self, namespace: str, name: str) -> None:
        self._enter("delete_pod", "delete", "pods")
        if self.pods.pop((namespace, name), None) is not None:
            self.deleted_pods.append(name)

    def _select(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        key, _, value = selector.partition("=")
        return [
            copy.deepcopy(p)
            for (ns, _), p in sorted(self.pods.items())
            if ns == namespace and (p["metadata"].get("labels") or {}).get(key) == value
        ]

    def list_pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        self._enter("list_pods", "list", "pods")
        return self._select(namespace, selector)

    def list_pod_metadata(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        self._enter("list_pod_metadata", "list", "pods")
        return [{"metadata": p["metadata"]} for p in self._select(namespace, selector)]

    def list_pods_version(self, namespace: str | None, selector: str) -> tuple[list[dict[str, Any]], str]:
        self._enter("list_pods_version", "list", "pods")
        key = selector.partition("=")[0]
        pods = [
            copy.deepcopy(p)
            for (ns, _), p in sorted(self.pods.items())
            if namespace in (None, ns) and key in (p["metadata"].get("labels") or {})
        ]
        return pods, str(next(self._rv))

    def watch_pods(
        self, namespace: str | None, selector: str, resource_version: str, timeout: int
    ) -> Iterator[dict[str, Any]]:
        """Replays `self.watch_events` (then ends, as a stream the server closes)."""
        self._enter("watch_pods", "watch", "pods")
        self.watched_from.append(resource_version)
        events, self.watch_events = self.watch_events, []
        yield from events

    def follow_pod_log(self, namespace: str, name: str, container: str = "task") -> Iterator[str]:
        self._enter("follow_pod_log", "get", "pods/log")
        yield from self.logs.get((namespace, name), "").splitlines(keepends=True)

    def pod_log(
        self, namespace: str, name: str, container: str = "task", tail_lines: int | None = None
    ) -> str | None:
        self._enter("pod_log", "get", "pods/log")
        if (namespace, name) not in self.pods:
            return None
        text = self.logs.get((namespace, name), "")
        if tail_lines is not None:
            lines = text.splitlines(keepends=True)
            text = "".join(lines[-tail_lines:])
        return text

    # ----- config maps

    def get_config_map(self, namespace: str, name: str) -> dict[str, Any] | None:
        self._enter("get_config_map", "get", "configmaps")
        cm = self.config_maps.get((namespace, name))
        return copy.deepcopy(cm) if cm is not None else None

    def list_config_maps(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        self._enter("list_config_maps", "list", "configmaps")
        wanted = dict(term.partition("=")[::2] for term in selector.split(","))
        return [
            copy.deepcopy(cm)
            for (ns, _), cm in sorted(self.config_maps.items())
            if ns == namespace
            and all((cm["metadata"].get("labels") or {}).get(k) == v for k, v in wanted.items())
        ]

    def delete_config_map(self, namespace: str, name: str) -> None:
        self._enter("delete_config_map", "delete", "configmaps")
        self.config_maps.pop((namespace, name), None)

    def create_config_map(self, namespace: str, body: dict[str, Any]) -> bool:
        self._enter("create_config_map", "create", "configmaps")
        name = body["metadata"]["name"]
        if (namespace, name) in self.config_maps:
            return False
        cm = json.loads(json.dumps(body))
        self._meta(cm, namespace)
        self.config_maps[(namespace, name)] = cm
        return True

    def apply_config_map(self, namespace: str, body: dict[str, Any]) -> str:
        if self.create_config_map(namespace, body):
            return "created"
        self.config_maps[(namespace, body["metadata"]["name"])].update(copy.deepcopy(body))
        return "configured"

    # ----- events

    def create_event(self, namespace: str, body: dict[str, Any]) -> bool:
        self._enter("create_event", "create", "events")
        event = json.loads(json.dumps(body))
        event.setdefault("metadata", {})["namespace"] = namespace
        name = event["metadata"].get("name")
        if any(
            e["metadata"].get("name") == name and e["metadata"]["namespace"] == namespace for e in self.events
        ):
            return False  # AlreadyExists (409)
        self.events.append(event)
        return True

    def event_reasons(self, session: str | None = None) -> list[str]:
        """The reasons of the Events created (about one Session), in order."""
        return [e["reason"] for e in self.events if session is None or e["involvedObject"]["name"] == session]

    # ----- leases (leader election)

    @cached_property
    def leases(self) -> dict[tuple[str, str], dict[str, Any]]:
        """(namespace, name) -> Lease."""
        return {}

    def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        self._enter("get_lease", "get", "leases")
        lease = self.leases.get((namespace, name))
        return copy.deepcopy(lease) if lease is not None else None

    def create_lease(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        self._enter("create_lease", "create", "leases")
        name = body["metadata"]["name"]
        if (namespace, name) in self.leases:
            raise AlreadyExists(name)
        lease = json.loads(json.dumps(body))
        self._meta(lease, namespace)
        self.leases[(namespace, name)] = lease
        return copy.deepcopy(lease)

    def replace_lease(self, body: dict[str, Any]) -> dict[str, Any]:
        self._enter("replace_lease", "update", "leases")
        meta = body["metadata"]
        current = self.leases.get((meta["namespace"], meta["name"]))
        if current is None or meta.get("resourceVersion") != current["metadata"]["resourceVersion"]:
            raise Conflict("stale")
        current["spec"] = json.loads(json.dumps(body.get("spec") or {}))
        current["metadata"]["resourceVersion"] = str(next(self._rv))
        return copy.deepcopy(current)


def kube_api(kube: FakeKube) -> KubeApi:
    """`FakeKube` is a `KubeApi` (`make typecheck` checks this file: a method that drifts from the
    protocol fails it)."""
    return kube
