"""Where the UI's objects come from: the Kubernetes API server, or a directory of recorded objects.

* `KubeSource` -- the API server, over aiohttp's client (the one web stack), one per request with
  that request's credentials: the kubeconfig's (`kudig ui` on a machine), the viewer's bearer
  token (in-cluster, the default), or the UI's ServiceAccount impersonating the user an auth proxy
  names. Lists, gets, watches and pod logs; never Secrets.
* `FixtureSource` -- `DIR/NAMESPACE/{sessions,workflows,configmaps,pods}/NAME.json` and
  `DIR/NAMESPACE/logs/POD.log`, as `hack/ui-record` writes them; its watch reports the changes
  made to those files, and a log grows while its pod's recorded phase is Running.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import aiohttp
from multidict import CIMultiDict

from kudig.api import GROUP, VERSION
from kudig.errors import KudigError

CRDS = ("sessions", "workflows")
FIXTURE_KINDS = ("sessions", "workflows", "configmaps", "pods")
WATCH_SECONDS = 240


class ApiError(Exception):
    """The API server refused or failed a request (its status is passed to the browser)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Source(Protocol):
    """What the UI reads. Namespaced calls raise ApiError (403 ...) when the viewer may not."""

    async def namespaces(self) -> list[str] | None:
        """The namespaces the viewer may list (None: not allowed to list namespaces)."""
        ...

    async def list_objects(
        self, plural: str, namespace: str | None, name: str | None = None
    ) -> tuple[list[dict[str, Any]], str]:
        """Objects (`sessions`, `workflows`) of a namespace or of all (None), only the one called
        `name` when given, and the list's resourceVersion (to watch from)."""
        ...

    async def get(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None: ...
    async def config_map(self, namespace: str, name: str) -> dict[str, Any] | None: ...
    async def config_maps(self, namespace: str, selector: str) -> list[dict[str, Any]]: ...
    async def pods(self, namespace: str, selector: str) -> list[dict[str, Any]]: ...
    async def pod(self, namespace: str, name: str) -> dict[str, Any] | None: ...
    async def pod_log(self, namespace: str, pod: str, container: str) -> str | None: ...
    def follow_log(self, namespace: str, pod: str, container: str) -> AsyncIterator[str]:
        """The pod's log lines (without line ends) from the first, until the container ends."""
        ...

    def watch(
        self, plural: str, namespace: str | None, resource_version: str, name: str | None = None
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """(type, object) events (ADDED, MODIFIED, DELETED) after `resource_version`, forever
        (of the one object called `name` when given)."""
        ...


def _path(plural: str, namespace: str | None, name: str | None = None) -> str:
    base = f"/apis/{GROUP}/{VERSION}" if plural in CRDS else "/api/v1"
    ns = f"/namespaces/{namespace}" if namespace else ""
    return f"{base}{ns}/{plural}" + (f"/{name}" if name else "")


# ----------------------------------------------------------------------------------- the cluster


@dataclass(frozen=True)
class Cluster:
    """How to reach the API server: its URL, TLS, and the server's own credentials (the
    kubeconfig's, or the in-cluster ServiceAccount's token)."""

    host: str
    ssl: ssl.SSLContext | bool
    config: Any = field(repr=False, default=None)  # kubernetes.client.Configuration (token refresh)

    def own_headers(self) -> dict[str, str]:
        if self.config is None:
            return {}
        token = self.config.get_api_key_with_prefix("authorization")
        return {"Authorization": token} if token else {}

    @classmethod
    def load(cls, in_cluster: bool, credentials: bool = True) -> tuple[Cluster, str | None]:
        """The cluster and the kubeconfig context's namespace (None in the cluster). Without
        `credentials` only the address and CA are kept (no client certificate, no token): every
        request then carries its viewer's."""
        from kubernetes import client, config

        cfg = client.Configuration()
        namespace = None
        try:
            if in_cluster:
                config.load_incluster_config(client_configuration=cfg)
            else:
                config.load_kube_config(client_configuration=cfg)
                _, active = config.list_kube_config_contexts()
                namespace = (active or {}).get("context", {}).get("namespace") or "default"
        except Exception as e:
            where = "the in-cluster ServiceAccount" if in_cluster else "the kubeconfig (KUBECONFIG)"
            raise KudigError(f"no Kubernetes cluster configured: {where}: {e}") from None
        ctx: ssl.SSLContext | bool
        if cfg.verify_ssl:
            ctx = (
                ssl.create_default_context(cafile=cfg.ssl_ca_cert)
                if cfg.ssl_ca_cert
                else ssl.create_default_context()
            )
            if cfg.cert_file and credentials:
                ctx.load_cert_chain(cfg.cert_file, cfg.key_file)
        else:
            ctx = False
        return cls(cfg.host.rstrip("/"), ctx, cfg if credentials else None), namespace


class KubeSource:
    """The API server with one request's credentials (`headers`: Authorization and/or
    Impersonate-*). Never logs or keeps the headers."""

    def __init__(
        self,
        cluster: Cluster,
        http: aiohttp.ClientSession,
        headers: Mapping[str, str] | Iterable[tuple[str, str]],
    ) -> None:
        self.cluster = cluster
        self.http = http
        self.headers: CIMultiDict[str] = CIMultiDict(headers)  # a header may repeat (Impersonate-Group)

    async def _request(self, path: str, params: Mapping[str, str] | None = None, timeout: float = 30) -> Any:
        async with self.http.get(
            self.cluster.host + path,
            params=params,
            headers=self.headers,
            ssl=self.cluster.ssl,
            timeout=aiohttp.ClientTimeout(total=timeout),
        ) as resp:
            if resp.status == 404:
                return None
            if resp.status >= 400:
                raise ApiError(resp.status, await _message(resp))
            if resp.content_type == "application/json":
                return await resp.json()
            return await resp.text(errors="replace")

    async def namespaces(self) -> list[str] | None:
        try:
            body = await self._request("/api/v1/namespaces")
        except ApiError as e:
            if e.status == 403:
                return None
            raise
        return sorted(i["metadata"]["name"] for i in (body or {}).get("items", []))

    async def list_objects(
        self, plural: str, namespace: str | None, name: str | None = None
    ) -> tuple[list[dict[str, Any]], str]:
        body = await self._request(
            _path(plural, namespace), {"fieldSelector": f"metadata.name={name}"} if name else None
        )
        if body is None:  # the CRD is not installed
            return [], ""
        items = body.get("items", [])
        kind = {"sessions": "Session", "workflows": "Workflow"}.get(plural)
        for i in items:  # lists drop kind/apiVersion from their items
            if kind:
                i.setdefault("kind", kind)
        return items, str((body.get("metadata") or {}).get("resourceVersion", ""))

    async def get(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        obj: dict[str, Any] | None = await self._request(_path(plural, namespace, name))
        return obj

    async def config_map(self, namespace: str, name: str) -> dict[str, Any] | None:
        obj: dict[str, Any] | None = await self._request(_path("configmaps", namespace, name))
        return obj

    async def config_maps(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        body = await self._request(_path("configmaps", namespace), {"labelSelector": selector})
        return list((body or {}).get("items", []))

    async def pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        body = await self._request(_path("pods", namespace), {"labelSelector": selector})
        return list((body or {}).get("items", []))

    async def pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        obj: dict[str, Any] | None = await self._request(_path("pods", namespace, name))
        return obj

    async def pod_log(self, namespace: str, pod: str, container: str) -> str | None:
        try:
            text = await self._request(f"{_path('pods', namespace, pod)}/log", {"container": container}, 60)
        except ApiError as e:
            if e.status == 400:  # the container has not started yet
                return ""
            raise
        return None if text is None else str(text)

    async def follow_log(self, namespace: str, pod: str, container: str) -> AsyncIterator[str]:
        url = f"{self.cluster.host}{_path('pods', namespace, pod)}/log"
        params = {"container": container, "follow": "true"}
        async with self.http.get(
            url,
            params=params,
            headers=self.headers,
            ssl=self.cluster.ssl,
            timeout=aiohttp.ClientTimeout(total=None),
        ) as resp:
            if resp.status >= 400:
                raise ApiError(resp.status, await _message(resp))
            async for line in _lines(resp):
                yield line.decode(errors="replace").rstrip("\r")

    async def watch(
        self, plural: str, namespace: str | None, resource_version: str, name: str | None = None
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        rv = resource_version
        while True:
            params = {"watch": "true", "allowWatchBookmarks": "true", "timeoutSeconds": str(WATCH_SECONDS)}
            if name:
                params["fieldSelector"] = f"metadata.name={name}"
            if rv:
                params["resourceVersion"] = rv
            async with self.http.get(
                self.cluster.host + _path(plural, namespace),
                params=params,
                headers=self.headers,
                ssl=self.cluster.ssl,
                timeout=aiohttp.ClientTimeout(total=WATCH_SECONDS + 30, sock_read=WATCH_SECONDS + 30),
            ) as resp:
                if resp.status >= 400:
                    raise ApiError(resp.status, await _message(resp))
                async for line in _lines(resp):  # a Session's status can be larger than aiohttp's line limit
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    obj = event.get("object") or {}
                    if event.get("type") == "ERROR":
                        if obj.get("code") == 410:  # too old: list again and go on from there
                            items, rv = await self.list_objects(plural, namespace, name)
                            for i in items:
                                yield "MODIFIED", i
                            break
                        raise ApiError(int(obj.get("code", 500)), str(obj.get("message", "watch failed")))
                    rv = str((obj.get("metadata") or {}).get("resourceVersion", rv))
                    if event.get("type") != "BOOKMARK":
                        yield str(event["type"]), obj


async def _lines(resp: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    """The body's lines (without the newline), however long."""
    parts: list[bytes] = []
    async for chunk in resp.content.iter_any():
        start = 0
        while (end := chunk.find(b"\n", start)) >= 0:
            parts.append(chunk[start:end])
            yield b"".join(parts)
            parts.clear()
            start = end + 1
        if start < len(chunk):
            parts.append(chunk[start:])
    if parts:
        yield b"".join(parts)


async def _message(resp: aiohttp.ClientResponse) -> str:
    try:
        body = await resp.json(content_type=None)
        return str(body.get("message") or body)
    except Exception:
        return f"{resp.status} {resp.reason}"


# ---------------------------------------------------------------------------------- fixtures


class FixtureSource:
    """Recorded objects in a directory (see the module's docstring)."""

    POLL = 0.1

    def __init__(self, root: Path) -> None:
        self.root = root

    def _file(self, namespace: str, kind: str, name: str) -> Path:
        return self.root / namespace / kind / f"{name}.json"

    def _read(self, path: Path) -> dict[str, Any] | None:
        try:
            obj: dict[str, Any] = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        return obj

    def _namespaces(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir() if p.is_dir()) if self.root.is_dir() else []

    async def namespaces(self) -> list[str] | None:
        return self._namespaces()

    def _snapshot(self, plural: str, namespace: str | None) -> dict[Path, float]:
        out: dict[Path, float] = {}
        for ns in [namespace] if namespace else self._namespaces():
            d = self.root / ns / plural
            if d.is_dir():
                for p in d.glob("*.json"):
                    with contextlib.suppress(OSError):
                        out[p] = p.stat().st_mtime_ns
        return out

    async def list_objects(
        self, plural: str, namespace: str | None, name: str | None = None
    ) -> tuple[list[dict[str, Any]], str]:
        paths = [p for p in sorted(self._snapshot(plural, namespace)) if name is None or p.stem == name]
        return [o for p in paths if (o := self._read(p)) is not None], "0"

    async def get(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        return self._read(self._file(namespace, plural, name))

    async def config_map(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._read(self._file(namespace, "configmaps", name))

    async def config_maps(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        want = dict(s.split("=", 1) for s in selector.split(",") if "=" in s)
        items, _ = await self.list_objects("configmaps", namespace)
        return [
            c for c in items if all((c["metadata"].get("labels") or {}).get(k) == v for k, v in want.items())
        ]

    async def pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        want = dict(s.split("=", 1) for s in selector.split(",") if "=" in s)
        items, _ = await self.list_objects("pods", namespace)
        return [
            p for p in items if all((p["metadata"].get("labels") or {}).get(k) == v for k, v in want.items())
        ]

    async def pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._read(self._file(namespace, "pods", name))

    async def pod_log(self, namespace: str, pod: str, container: str) -> str | None:
        try:
            return (self.root / namespace / "logs" / f"{pod}.log").read_text(errors="replace")
        except OSError:
            return None

    async def follow_log(self, namespace: str, pod: str, container: str) -> AsyncIterator[str]:
        path = self.root / namespace / "logs" / f"{pod}.log"
        sent = 0
        while True:
            try:
                text = path.read_text(errors="replace")
            except OSError:
                text = ""
            complete = text[: text.rfind("\n") + 1]
            lines = complete.splitlines()
            for line in lines[sent:]:
                yield line
            sent = max(sent, len(lines))
            obj = await self.pod(namespace, pod)
            if ((obj or {}).get("status") or {}).get("phase") not in ("Pending", "Running"):
                for line in text[len(complete) :].splitlines():
                    yield line
                return
            await asyncio.sleep(self.POLL)

    async def watch(
        self, plural: str, namespace: str | None, resource_version: str, name: str | None = None
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        seen = self._snapshot(plural, namespace)
        while True:
            await asyncio.sleep(self.POLL)
            now = self._snapshot(plural, namespace)
            for p, mtime in now.items():
                if seen.get(p) != mtime and (obj := self._read(p)) is not None:
                    yield ("ADDED" if p not in seen else "MODIFIED"), obj
            for p in seen.keys() - now.keys():
                ns = p.parent.parent.name
                yield "DELETED", {"metadata": {"namespace": ns, "name": p.stem}}
            seen = now
