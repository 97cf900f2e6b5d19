"""Where a task's log lives once its pod is gone: kudig's log store.

The controller copies a finished task pod's log here after the task's result is committed, and
only then deletes the pod (`KUDIG_POD_RETENTION`); `kudig log` and the web UI read the pod while
it exists and the store afterwards, so a log reads the same before and after. Two stores:

* `configmap` (the default, no set-up on any cluster): one immutable ConfigMap per task pod,
  `<pod>-log`, gzip'd, owned by the Session (so it goes when the Session goes), at most
  `CONFIGMAP_MAX_BYTES` compressed (a longer log keeps its end, with a line saying so).
* `s3://BUCKET/PREFIX?endpoint=URL&region=R`: an S3-compatible bucket (AWS S3, MinIO, Ceph...),
  as digdag's `log-server.type: s3` and Argo's artifact repository; credentials from the standard
  `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`. One object per task pod,
  `PREFIX<namespace>/<session>/<created>.<pod>.<task>.log`, so one listing finds a session's logs.

`KUDIG_LOG_STORE` chooses the store for the controller, `kudig log` and `kudig ui` alike.
Requests to S3 are signed with the runner's SigV4 code (`kudig_runner.s3_wait`, standard library
only), so neither the controller image nor the CLI needs an AWS SDK.
"""

from __future__ import annotations

import base64
import datetime
import gzip
import hashlib
import http.client
import os
import ssl
import urllib.parse
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from kudig_runner.s3_wait import Client, signed_headers

from kudig.api import ANNOTATION_TASK, API_VERSION, LABEL_SESSION, MANAGED_BY, MANAGER, label_value
from kudig.cluster.kube import KubeApi
from kudig.errors import KudigError

STORE_ENV = "KUDIG_LOG_STORE"
RETENTION_ENV = "KUDIG_POD_RETENTION"
RETENTION = ("all", "failed", "none")
CONFIGMAP_MAX_BYTES = 900 * 1024
DATA_KEY = "log.gz"
ANNOTATION_POD = "kudig.io/pod"
ANNOTATION_CREATED = "kudig.io/pod-created"
TRUNCATED = "[kudig: the start of this log was dropped: {n} bytes kept of {total}]\n"
REQUEST_TIMEOUT = 30


@dataclass(frozen=True)
class StoredLog:
    """One task pod's log in the store."""

    task: str
    pod: str
    created: str  # the pod's creationTimestamp: logs are shown in the order their pods started


class LogStore(Protocol):
    where: str

    def put(self, namespace: str, session: Mapping[str, Any], log: StoredLog, text: str) -> None: ...
    def get(self, namespace: str, session: str, pod: str) -> str | None: ...
    def list(self, namespace: str, session: str) -> list[StoredLog]: ...


def retention(value: str | None) -> str:
    """`KUDIG_POD_RETENTION`: which finished task pods stay once their logs are stored."""
    text = (value or "all").strip().lower()
    if text not in RETENTION:
        raise KudigError(f"{RETENTION_ENV}={value!r}: expected one of {', '.join(RETENTION)}")
    return text


def _fit(text: str, limit: int) -> bytes:
    """gzip'd `text`, its start dropped (and said so) until it fits `limit` bytes."""
    raw = text.encode()
    packed = gzip.compress(raw, compresslevel=6, mtime=0)
    keep = len(raw)
    while len(packed) > limit and keep > 0:
        keep = int(keep * limit / len(packed) * 0.9)
        tail = raw[len(raw) - keep :]
        packed = gzip.compress(TRUNCATED.format(n=keep, total=len(raw)).encode() + tail, 6, mtime=0)
    return packed


class ConfigMapLogStore:
    """Logs in immutable ConfigMaps owned by their Session (the default)."""

    where = "configmap"

    def __init__(self, api: KubeApi) -> None:
        self.api = api

    @staticmethod
    def name(pod: str) -> str:
        return f"{pod}-log"

    def put(self, namespace: str, session: Mapping[str, Any], log: StoredLog, text: str) -> None:
        meta = session.get("metadata") or {}
        body = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": self.name(log.pod),
                "namespace": namespace,
                "labels": {MANAGED_BY: MANAGER, LABEL_SESSION: label_value(str(meta.get("name", "")))},
                "annotations": {
                    ANNOTATION_TASK: log.task,
                    ANNOTATION_POD: log.pod,
                    ANNOTATION_CREATED: log.created,
                },
                "ownerReferences": [
                    {
                        "apiVersion": API_VERSION,
                        "kind": "Session",
                        "name": meta.get("name"),
                        "uid": meta.get("uid"),
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "immutable": True,
            "binaryData": {DATA_KEY: base64.b64encode(_fit(text, CONFIGMAP_MAX_BYTES)).decode()},
        }
        self.api.create_config_map(namespace, body)  # AlreadyExists: stored before a crash

    def get(self, namespace: str, session: str, pod: str) -> str | None:
        cm = self.api.get_config_map(namespace, self.name(pod))
        return None if cm is None else log_text(cm)

    def list(self, namespace: str, session: str) -> list[StoredLog]:
        return stored_logs(self.api.list_config_maps(namespace, f"{LABEL_SESSION}={label_value(session)}"))


def log_text(config_map: Mapping[str, Any]) -> str:
    """The log a log ConfigMap holds (the web UI reads them with the viewer's credentials)."""
    data = (config_map.get("binaryData") or {}).get(DATA_KEY)
    return gzip.decompress(base64.b64decode(data)).decode(errors="replace") if data else ""


def stored_logs(config_maps: list[dict[str, Any]]) -> list[StoredLog]:
    """The log ConfigMaps among a Session's ConfigMaps, in the order their pods started."""
    found = []
    for cm in config_maps:
        notes = (cm.get("metadata") or {}).get("annotations") or {}
        if ANNOTATION_POD in notes:
            found.append(
                StoredLog(
                    str(notes.get(ANNOTATION_TASK, "")),
                    str(notes[ANNOTATION_POD]),
                    str(notes.get(ANNOTATION_CREATED, "")),
                )
            )
    return sorted(found, key=lambda s: (s.created, s.pod))


class S3LogStore:
    """Logs as objects in an S3-compatible bucket."""

    def __init__(self, url: str, environ: Mapping[str, str]) -> None:
        parts = urllib.parse.urlsplit(url)
        query = dict(urllib.parse.parse_qsl(parts.query))
        if not parts.netloc:
            raise KudigError(f"{STORE_ENV}={url!r}: expected s3://BUCKET[/PREFIX][?endpoint=URL&region=R]")
        self.bucket = parts.netloc
        prefix = parts.path.lstrip("/")
        self.prefix = prefix if not prefix or prefix.endswith("/") else prefix + "/"
        endpoint = query.get("endpoint") or "https://s3.amazonaws.com"
        target = urllib.parse.urlsplit(endpoint if "://" in endpoint else "https://" + endpoint)
        if target.scheme not in ("http", "https") or not target.netloc:
            raise KudigError(f"{STORE_ENV}: endpoint {endpoint!r} is not an http(s) URL")
        access, secret = environ.get("AWS_ACCESS_KEY_ID"), environ.get("AWS_SECRET_ACCESS_KEY")
        if not access or not secret:
            raise KudigError(f"{STORE_ENV}={url}: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY must be set")
        self.client = Client(
            scheme=target.scheme,
            host=target.netloc,
            path_prefix="/" + urllib.parse.quote(self.bucket, safe=""),  # path style: any endpoint
            region=query.get("region", "us-east-1"),
            access_key=access,
            secret_key=secret,
            extra_headers={},
        )
        self.where = f"s3://{self.bucket}/{self.prefix}"

    def _request(self, method: str, key: str, query: str = "", body: bytes = b"") -> tuple[int, bytes]:
        path = self.client.path_prefix + ("/" + urllib.parse.quote(key, safe="/-_.~") if key else "/")
        now = datetime.datetime.now(datetime.UTC)
        headers = signed_headers(self.client, method, path, query, now, hashlib.sha256(body).hexdigest())
        conn: http.client.HTTPConnection
        if self.client.scheme == "https":
            conn = http.client.HTTPSConnection(
                self.client.host, timeout=REQUEST_TIMEOUT, context=ssl.create_default_context()
            )
        else:
            conn = http.client.HTTPConnection(self.client.host, timeout=REQUEST_TIMEOUT)
        try:
            if body:
                headers["content-type"] = "text/plain; charset=utf-8"
            conn.request(method, path + ("?" + query if query else ""), body=body or None, headers=headers)
            response = conn.getresponse()
            return response.status, response.read()
        except (OSError, http.client.HTTPException) as e:
            raise KudigError(f"log store {self.where}: cannot reach {self.client.host}: {e}") from None
        finally:
            conn.close()

    def _dir(self, namespace: str, session: str) -> str:
        return f"{self.prefix}{namespace}/{session}/"

    def put(self, namespace: str, session: Mapping[str, Any], log: StoredLog, text: str) -> None:
        name = str((session.get("metadata") or {}).get("name", ""))
        task = urllib.parse.quote(log.task, safe="+-_")
        key = f"{self._dir(namespace, name)}{log.created}.{log.pod}.{task}.log"
        status, body = self._request("PUT", key, body=text.encode())
        if status >= 300:
            raise KudigError(f"log store {self.where}: PUT {key}: HTTP {status} {body[:200]!r}")

    def _keys(self, namespace: str, session: str) -> list[str]:
        keys: list[str] = []
        token: str | None = None
        while True:
            params = {"list-type": "2", "prefix": self._dir(namespace, session)}
            if token:
                params["continuation-token"] = token
            query = "&".join(f"{k}={urllib.parse.quote(v, safe='-_.~')}" for k, v in sorted(params.items()))
            status, body = self._request("GET", "", query)
            if status == 404:
                return keys
            if status >= 300:
                raise KudigError(f"log store {self.where}: list: HTTP {status} {body[:200]!r}")
            root = ET.fromstring(body)
            ns = root.tag[: root.tag.index("}") + 1] if root.tag.startswith("{") else ""
            keys += [k.text or "" for k in root.iter(f"{ns}Key")]
            token = root.findtext(f"{ns}NextContinuationToken")
            if not token:
                return keys

    def list(self, namespace: str, session: str) -> list[StoredLog]:
        found = []
        for key in self._keys(namespace, session):
            created, _, rest = key.rpartition("/")[2].partition(".")
            pod, _, task = rest.removesuffix(".log").partition(".")
            found.append(StoredLog(urllib.parse.unquote(task), pod, created))
        return sorted(found, key=lambda s: (s.created, s.pod))

    def get(self, namespace: str, session: str, pod: str) -> str | None:
        for key in self._keys(namespace, session):
            if f".{pod}." in key.rpartition("/")[2]:
                status, body = self._request("GET", key)
                if status == 404:
                    return None
                if status >= 300:
                    raise KudigError(f"log store {self.where}: GET {key}: HTTP {status}")
                return body.decode(errors="replace")
        return None


def log_store(api: KubeApi, environ: Mapping[str, str] | None = None) -> LogStore:
    """The store `KUDIG_LOG_STORE` names (default: ConfigMaps)."""
    env = os.environ if environ is None else environ
    value = (env.get(STORE_ENV) or "configmap").strip()
    if value == "configmap":
        return ConfigMapLogStore(api)
    if value.startswith("s3://"):
        return S3LogStore(value, env)
    raise KudigError(f"{STORE_ENV}={value!r}: expected 'configmap' or s3://BUCKET/PREFIX?endpoint=URL")
