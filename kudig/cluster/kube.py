"""The one Kubernetes client wrapper: every API call kudig makes (CLI and controller) goes here.

Why a wrapper around the official client:

* callers speak in kudig's terms (`get("sessions", ns, name)`, `create_pod`) and get plain JSON
  dicts exactly as the API server sends them (camelCase, as kopf delivers watch events), not the
  generated model classes; pods and config maps are read raw (`_preload_content=False`), which
  also skips the client's slow model deserialisation;
* it is the one place that knows HTTP status codes: 404 -> None / NotFound, 409 -> Conflict or
  AlreadyExists, so no other module imports `kubernetes`;
* `KubeApi` is the protocol both this class and the unit tests' in-memory fake implement, so
  the controller's reconcile is tested without a cluster;
* it counts its requests by verb and resource (`requests`), which the controller exports as a
  metric and `bench/controller_cost.py` reads.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from kudig.api import GROUP, VERSION
from kudig.cluster.ratelimit import TokenBucket, retry_429
from kudig.errors import KudigError

_METADATA_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"


class Conflict(Exception):
    """The object changed since we read it (HTTP 409 on a write with a resourceVersion)."""


class AlreadyExists(Exception):
    """An object of that name exists already (HTTP 409 on a create)."""


class KubeApi(Protocol):
    """What kudig needs from the API server (the real `Kube` and the tests' fake both provide it)."""

    def get(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None: ...
    def list_objects(self, plural: str, namespace: str | None = None) -> list[dict[str, Any]]: ...
    def list_metadata(
        self, plural: str, namespace: str | None = None, selector: str | None = None
    ) -> list[dict[str, Any]]: ...
    def delete(self, plural: str, namespace: str, name: str) -> None: ...
    def create(self, plural: str, namespace: str, body: dict[str, Any]) -> dict[str, Any]: ...
    def patch(self, plural: str, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]: ...
    def replace(self, plural: str, obj: dict[str, Any]) -> dict[str, Any]: ...
    def replace_status(self, plural: str, obj: dict[str, Any]) -> dict[str, Any]: ...
    def get_pod(self, namespace: str, name: str) -> dict[str, Any] | None: ...
    def create_pod(self, namespace: str, body: dict[str, Any]) -> bool: ...
    def delete_pod(self, namespace: str, name: str) -> None: ...
    def list_pods(self, namespace: str, selector: str) -> list[dict[str, Any]]: ...
    def list_pod_metadata(self, namespace: str, selector: str) -> list[dict[str, Any]]: ...
    def list_pods_version(self, namespace: str | None, selector: str) -> tuple[list[dict[str, Any]], str]: ...
    def watch_pods(
        self, namespace: str | None, selector: str, resource_version: str, timeout: int
    ) -> Iterator[dict[str, Any]]: ...
    def pod_log(
        self, namespace: str, name: str, container: str = "task", tail_lines: int | None = None
    ) -> str | None: ...
    def follow_pod_log(self, namespace: str, name: str, container: str = "task") -> Iterator[str]: ...
    def get_config_map(self, namespace: str, name: str) -> dict[str, Any] | None: ...
    def create_config_map(self, namespace: str, body: dict[str, Any]) -> bool: ...
    def delete_config_map(self, namespace: str, name: str) -> None: ...
    def list_config_maps(self, namespace: str, selector: str) -> list[dict[str, Any]]: ...
    def apply_config_map(self, namespace: str, body: dict[str, Any]) -> str: ...
    def create_event(self, namespace: str, body: dict[str, Any]) -> bool: ...
    # leader election (coordination.k8s.io/v1 Leases)
    def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None: ...
    def create_lease(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]: ...
    def replace_lease(self, body: dict[str, Any]) -> dict[str, Any]: ...


class Kube:
    """`KubeApi` on the official `kubernetes` client (imported here only)."""

    def __init__(self, api_client: Any = None, *, rate: TokenBucket | None = None) -> None:
        """`rate`: the client-side rate limit every request waits on (the controller's; None: none).
        A client made here retries 429s after their Retry-After (`ratelimit.retry_429`)."""
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        self._ApiException = ApiException
        if api_client is None:
            configuration = client.Configuration.get_default_copy()
            configuration.retries = retry_429()
            # room for the reconcile workers, a plan's concurrent pod creates and the watches
            # (urllib3 drops a connection beyond the pool, and the next request pays a handshake)
            configuration.connection_pool_maxsize = max(configuration.connection_pool_maxsize or 0, 64)
            api_client = client.ApiClient(configuration)
        self.api_client = api_client
        self.rate = rate
        self.core = client.CoreV1Api(self.api_client)
        self.custom = client.CustomObjectsApi(self.api_client)
        self.requests: Counter[tuple[str, str]] = Counter()
        self._count_lock = threading.Lock()

    # ----- connecting

    @classmethod
    def connect(cls, rate: TokenBucket | None = None) -> Kube:
        """In a pod: its service account; elsewhere: the kubeconfig (as kubectl)."""
        from kubernetes import config

        try:
            config.load_incluster_config()
        except config.ConfigException:
            try:
                config.load_kube_config()
            except Exception as e:
                raise KudigError(f"no Kubernetes cluster configured (KUBECONFIG): {e}") from None
        return cls(rate=rate)

    @classmethod
    def from_kubeconfig(cls, namespace: str | None = None) -> tuple[Kube, str]:
        """For the CLI: the kubeconfig's cluster and namespace (`namespace` overrides it), or the
        in-cluster service account when there is no kubeconfig."""
        from kubernetes import config

        try:
            config.load_kube_config()
            _, active = config.list_kube_config_contexts()
            default_ns = (active or {}).get("context", {}).get("namespace") or "default"
        except Exception as e:
            try:
                config.load_incluster_config()
                default_ns = "default"
            except Exception:
                raise KudigError(f"no Kubernetes cluster configured (KUBECONFIG): {e}") from None
        return cls(), namespace or default_ns

    # ----- plumbing

    def _count(self, verb: str, resource: str) -> None:
        """Every request passes here: counted, and held to the rate limit."""
        with self._count_lock:
            self.requests[(verb, resource)] += 1
        if self.rate is not None:
            self.rate.take()

    def _status(self, e: Exception) -> int:
        return int(getattr(e, "status", 0) or 0)

    @staticmethod
    def _json(response: Any) -> Any:
        return json.loads(response.data)

    @staticmethod
    def _done(response: Any) -> None:
        """Read a raw response to its end, so its connection goes back to the pool (an unread
        one is dropped, and the next request pays a new TLS handshake)."""
        _ = response.data

    def _or_none(self, call: Callable[[], Any]) -> Any:
        """`call()`, or None when the object is not there (404)."""
        try:
            return call()
        except self._ApiException as e:
            if self._status(e) == 404:
                return None
            raise

    def _created(self, call: Callable[[], Any]) -> bool:
        """Run a create; False when an object of that name exists already (409)."""
        try:
            self._done(call())
            return True
        except self._ApiException as e:
            if self._status(e) == 409:
                return False
            raise

    def _custom_list(self, plural: str, namespace: str | None, **kwargs: Any) -> Any:
        if namespace is None:
            return self.custom.list_cluster_custom_object(GROUP, VERSION, plural, **kwargs)
        return self.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, plural, **kwargs)

    def _pod_list(self, namespace: str | None, **kwargs: Any) -> Any:
        if namespace is None:
            return self.core.list_pod_for_all_namespaces(**kwargs)
        return self.core.list_namespaced_pod(namespace, **kwargs)

    @staticmethod
    def _lines(response: Any, chunk_size: int) -> Iterator[bytes]:
        """A streamed raw response as lines, each with its newline (a last unterminated one too)."""
        buffer = b""
        try:
            for chunk in response.stream(chunk_size, decode_content=True):
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    yield line + b"\n"
            if buffer:
                yield buffer
        finally:
            response.release_conn()

    # ----- custom resources

    def get(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        self._count("get", plural)
        obj: dict[str, Any] | None = self._or_none(
            lambda: self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, plural, name)
        )
        return obj

    def list_objects(self, plural: str, namespace: str | None = None) -> list[dict[str, Any]]:
        self._count("list", plural)
        items: list[dict[str, Any]] = self._custom_list(plural, namespace).get("items") or []
        return items

    def list_metadata(
        self, plural: str, namespace: str | None = None, selector: str | None = None
    ) -> list[dict[str, Any]]:
        """Only the objects' metadata (name, resourceVersion, generation, labels): a cheap listing
        of resources whose status can be large. (Read raw: the client does not parse the
        PartialObjectMetadataList media type.)"""
        self._count("list", plural)
        kwargs: dict[str, Any] = {"_headers": {"Accept": _METADATA_LIST}, "_preload_content": False}
        if selector:
            kwargs["label_selector"] = selector
        items: list[dict[str, Any]] = (
            self._json(self._custom_list(plural, namespace, **kwargs)).get("items") or []
        )
        return items

    def create(self, plural: str, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        self._count("create", plural)
        try:
            obj: dict[str, Any] = self.custom.create_namespaced_custom_object(
                GROUP, VERSION, namespace, plural, body
            )
            return obj
        except self._ApiException as e:
            if self._status(e) == 409:
                raise AlreadyExists(str(e.reason)) from None
            raise

    def patch(self, plural: str, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        self._count("patch", plural)
        try:
            obj: dict[str, Any] = self.custom.patch_namespaced_custom_object(
                GROUP, VERSION, namespace, plural, name, body
            )
            return obj
        except self._ApiException as e:
            if self._status(e) == 404:
                raise KudigError(
                    f"{plural[:-1].capitalize()} '{name}' not found in namespace {namespace}"
                ) from None
            raise

    def delete(self, plural: str, namespace: str, name: str) -> None:
        """Delete (its pods and ConfigMaps go with it: they are owned); gone already is fine."""
        self._count("delete", plural)
        try:
            self._done(
                self.custom.delete_namespaced_custom_object(
                    GROUP,
                    VERSION,
                    namespace,
                    plural,
                    name,
                    propagation_policy="Background",
                    _preload_content=False,
                )
            )
        except self._ApiException as e:
            if self._status(e) != 404:
                raise

    def replace(self, plural: str, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        self._count("update", plural)
        try:
            result: dict[str, Any] = self.custom.replace_namespaced_custom_object(
                GROUP, VERSION, meta["namespace"], plural, meta["name"], obj
            )
            return result
        except self._ApiException as e:
            if self._status(e) == 409:
                raise Conflict(str(e.reason)) from None
            raise

    def replace_status(self, plural: str, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        self._count("update", plural + "/status")
        try:
            result: dict[str, Any] = self.custom.replace_namespaced_custom_object_status(
                GROUP, VERSION, meta["namespace"], plural, meta["name"], obj
            )
            return result
        except self._ApiException as e:
            if self._status(e) in (404, 409):
                # 404: deleted meanwhile; the caller re-reads and finds it gone.
                raise Conflict(str(e.reason)) from None
            raise

    # ----- pods

    def get_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        self._count("get", "pods")
        pod: dict[str, Any] | None = self._or_none(
            lambda: self._json(self.core.read_namespaced_pod(name, namespace, _preload_content=False))
        )
        return pod

    def create_pod(self, namespace: str, body: dict[str, Any]) -> bool:
        """Create; False when a pod of that name already exists (adopted, not duplicated)."""
        self._count("create", "pods")
        return self._created(lambda: self.core.create_namespaced_pod(namespace, body, _preload_content=False))

    def delete_pod(self, namespace: str, name: str) -> None:
        self._count("delete", "pods")
        try:
            self._done(
                self.core.delete_namespaced_pod(
                    name, namespace, grace_period_seconds=5, _preload_content=False
                )
            )
        except self._ApiException as e:
            if self._status(e) != 404:
                raise

    def list_pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        self._count("list", "pods")
        data = self._json(
            self.core.list_namespaced_pod(namespace, label_selector=selector, _preload_content=False)
        )
        items: list[dict[str, Any]] = data.get("items") or []
        return items

    def list_pod_metadata(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        """Only the pods' metadata (name, resourceVersion, labels): cheap, for the resync."""
        self._count("list", "pods")
        data = self._json(
            self.core.list_namespaced_pod(
                namespace,
                label_selector=selector,
                _preload_content=False,
                _headers={"Accept": _METADATA_LIST},
            )
        )
        items: list[dict[str, Any]] = data.get("items") or []
        return items

    def list_pods_version(self, namespace: str | None, selector: str) -> tuple[list[dict[str, Any]], str]:
        """Pods matching `selector` (in one namespace, or all) and the list's resourceVersion, to
        watch from."""
        self._count("list", "pods")
        data = self._json(self._pod_list(namespace, label_selector=selector, _preload_content=False))
        return data.get("items") or [], str((data.get("metadata") or {}).get("resourceVersion", ""))

    def watch_pods(
        self, namespace: str | None, selector: str, resource_version: str, timeout: int
    ) -> Iterator[dict[str, Any]]:
        """Watch events (`{"type", "object"}`, raw JSON) for pods matching `selector`, from
        `resource_version`, with bookmarks, until the server ends the stream after `timeout`
        seconds. The label selector is applied by the API server: only kudig's pods travel."""
        self._count("watch", "pods")
        response = self._pod_list(
            namespace,
            label_selector=selector,
            watch=True,
            allow_watch_bookmarks=True,
            resource_version=resource_version,
            timeout_seconds=timeout,
            _preload_content=False,
            _request_timeout=(10, timeout + 30),
        )
        for line in self._lines(response, 64 * 1024):
            if line.strip():
                yield json.loads(line)

    def pod_log(
        self, namespace: str, name: str, container: str = "task", tail_lines: int | None = None
    ) -> str | None:
        """The container's log, or None when there is none (pod gone, container never started)."""
        self._count("get", "pods/log")
        kwargs: dict[str, Any] = {"container": container, "_preload_content": False}
        if tail_lines is not None:
            kwargs["tail_lines"] = tail_lines
        try:
            response = self.core.read_namespaced_pod_log(name, namespace, **kwargs)
        except self._ApiException as e:
            if self._status(e) in (400, 404):
                return None
            raise
        text: str = response.data.decode("utf-8", "replace")
        return text

    def follow_pod_log(self, namespace: str, name: str, container: str = "task") -> Iterator[str]:
        """The container's log line by line as it is written, until the container ends."""
        self._count("get", "pods/log")
        response = self.core.read_namespaced_pod_log(
            name, namespace, container=container, follow=True, _preload_content=False
        )
        for line in self._lines(response, 4096):
            yield line.decode("utf-8", "replace")

    # ----- config maps

    def get_config_map(self, namespace: str, name: str) -> dict[str, Any] | None:
        self._count("get", "configmaps")
        cm: dict[str, Any] | None = self._or_none(
            lambda: self._json(self.core.read_namespaced_config_map(name, namespace, _preload_content=False))
        )
        return cm

    def create_config_map(self, namespace: str, body: dict[str, Any]) -> bool:
        """Create; False when one of that name exists already."""
        self._count("create", "configmaps")
        return self._created(
            lambda: self.core.create_namespaced_config_map(namespace, body, _preload_content=False)
        )

    def list_config_maps(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        self._count("list", "configmaps")
        data = self._json(
            self.core.list_namespaced_config_map(namespace, label_selector=selector, _preload_content=False)
        )
        items: list[dict[str, Any]] = data.get("items") or []
        return items

    def delete_config_map(self, namespace: str, name: str) -> None:
        """Delete; gone already is fine."""
        self._count("delete", "configmaps")
        try:
            self._done(self.core.delete_namespaced_config_map(name, namespace, _preload_content=False))
        except self._ApiException as e:
            if self._status(e) != 404:
                raise

    def apply_config_map(self, namespace: str, body: dict[str, Any]) -> str:
        """Create, or replace (last writer wins, as `kubectl replace`): "created", "configured" or
        "unchanged"."""
        if self.create_config_map(namespace, body):
            return "created"
        current = self.get_config_map(namespace, body["metadata"]["name"])
        if current is None:
            return "created" if self.create_config_map(namespace, body) else "configured"
        if (
            (current.get("data") or {}) == (body.get("data") or {})
            and (current.get("binaryData") or {}) == (body.get("binaryData") or {})
            and (current["metadata"].get("labels") or {}) == (body["metadata"].get("labels") or {})
        ):
            return "unchanged"
        body = {
            **body,
            "metadata": {**body["metadata"], "resourceVersion": current["metadata"]["resourceVersion"]},
        }
        self._count("update", "configmaps")
        self.core.replace_namespaced_config_map(
            body["metadata"]["name"], namespace, body, _preload_content=False
        )
        return "configured"

    def list_config_map_names(self, namespace: str, selector: str) -> list[str]:
        """The names of the config maps matching `selector` (metadata only)."""
        self._count("list", "configmaps")
        data = self._json(
            self.core.list_namespaced_config_map(
                namespace,
                label_selector=selector,
                _preload_content=False,
                _headers={"Accept": _METADATA_LIST},
            )
        )
        return [str(item["metadata"]["name"]) for item in data.get("items") or []]

    # ----- secrets (`kudig secrets --project`: the CLI only; the controller never reads a Secret)

    def secret_keys(self, namespace: str, name: str) -> list[str] | None:
        """The keys of Secret `name` (never its values), or None when it does not exist."""
        self._count("get", "secrets")
        secret: dict[str, Any] | None = self._or_none(
            lambda: self._json(self.core.read_namespaced_secret(name, namespace, _preload_content=False))
        )
        return None if secret is None else sorted(secret.get("data") or {})

    def update_secret(
        self, namespace: str, name: str, values: dict[str, str], delete: list[str], labels: dict[str, str]
    ) -> None:
        """Set `values` and remove the keys `delete` of Secret `name` (an Opaque Secret with
        `labels` is created when it does not exist)."""
        if self.secret_keys(namespace, name) is None:
            body = {
                "apiVersion": "v1",
                "kind": "Secret",
                "type": "Opaque",
                "metadata": {"name": name, "labels": labels},
                "stringData": values,
            }
            self._count("create", "secrets")
            if self._created(
                lambda: self.core.create_namespaced_secret(namespace, body, _preload_content=False)
            ):
                return
        patch: dict[str, Any] = {"stringData": values, "data": dict.fromkeys(delete)}
        self._count("patch", "secrets")
        self._done(self.core.patch_namespaced_secret(name, namespace, patch, _preload_content=False))

    # ----- events

    # An Event is best effort: never worth a reconcile stuck on a slow API server.
    _EVENT_TIMEOUT = (5, 10)  # connect, read (seconds)

    def create_event(self, namespace: str, body: dict[str, Any]) -> bool:
        """Create a core/v1 Event (the controller's Events on Sessions); False when one of that
        name exists already."""
        self._count("create", "events")
        return self._created(
            lambda: self.core.create_namespaced_event(
                namespace, body, _preload_content=False, _request_timeout=self._EVENT_TIMEOUT
            )
        )

    # ----- leases (leader election)
    #
    # Short request timeouts: a renewal must fail in time for the leader to stop before a standby
    # may take over (leader.py), never hang past its deadline.

    _LEASE_TIMEOUT = (3, 5)  # connect, read (seconds)

    def _leases(self) -> Any:
        from kubernetes import client

        return client.CoordinationV1Api(self.api_client)

    def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        self._count("get", "leases")
        lease: dict[str, Any] | None = self._or_none(
            lambda: self._json(
                self._leases().read_namespaced_lease(
                    name, namespace, _preload_content=False, _request_timeout=self._LEASE_TIMEOUT
                )
            )
        )
        return lease

    def create_lease(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        """Create; AlreadyExists when another replica created it first."""
        self._count("create", "leases")
        try:
            lease: dict[str, Any] = self._json(
                self._leases().create_namespaced_lease(
                    namespace, body, _preload_content=False, _request_timeout=self._LEASE_TIMEOUT
                )
            )
            return lease
        except self._ApiException as e:
            if self._status(e) == 409:
                raise AlreadyExists(str(e.reason)) from None
            raise

    def replace_lease(self, body: dict[str, Any]) -> dict[str, Any]:
        """Replace with the body's resourceVersion; Conflict when it changed (or was deleted)."""
        meta = body["metadata"]
        self._count("update", "leases")
        try:
            lease: dict[str, Any] = self._json(
                self._leases().replace_namespaced_lease(
                    meta["name"],
                    meta["namespace"],
                    body,
                    _preload_content=False,
                    _request_timeout=self._LEASE_TIMEOUT,
                )
            )
            return lease
        except self._ApiException as e:
            if self._status(e) in (404, 409):
                raise Conflict(str(e.reason)) from None
            raise


def resource_version_number(value: str | None) -> int | None:
    """A resourceVersion as a number, only to guess which of two copies of an object is newer (the
    API says they are opaque; a wrong guess costs a 409 or a repeated reconcile, nothing else)."""
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None
