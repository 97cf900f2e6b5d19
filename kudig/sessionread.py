"""What a Session object says, however the controller stores it: its summary and its task rows.

The one reader of a Session's status for everything outside the controller (the CLI's `tasks`,
`session`, `log`; the web UI). The controller's storage of the task table may change (inline,
chunked, offloaded); this module's shape does not: a `SessionSummary` from the object alone, and
`TaskRow`s from the object plus the blobs it names (`blob_refs`), fetched by the caller (the CLI
and the UI fetch them with the viewer's own credentials). Pure: no Kubernetes import.
"""

from __future__ import annotations

import base64
import json
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kudig.engine.state import BLOB_KEY, CHUNKED, chunk_lines, chunk_names, decode_state_json

OPERATOR_SUFFIX = ">"


@dataclass(frozen=True)
class SessionSummary:
    """One Session as a list shows it (no task rows needed)."""

    namespace: str
    name: str
    workflow: str
    session_time: str
    phase: str
    attempt: int | None
    progress: str
    created: str
    started_at: str | None
    finished_at: str | None
    message: str | None
    failed_tasks: tuple[tuple[str, str], ...]
    attempts: tuple[Mapping[str, Any], ...]
    params: Mapping[str, Any]
    labels: Mapping[str, str]


@dataclass(frozen=True)
class TaskRow:
    """One task row of the current attempt, as a viewer needs it.

    Times are epoch seconds or None when unknown: `ready_at` (it could start: waiting begins),
    `started_at` (the engine started it: its pod was asked for), `pod_created_at`, `running_at`
    (its container started) and `finished_at`. Older Sessions only know `started_at` and
    `finished_at`.
    """

    id: int
    name: str
    parent: int | None
    upstreams: tuple[int, ...]
    is_group: bool
    state: str
    retries: int
    error: str
    operator: str | None
    file: str | None
    line: int | None
    superseded: bool
    started_at: float | None
    finished_at: float | None
    ready_at: float | None = None
    pod_created_at: float | None = None
    running_at: float | None = None
    pod: str | None = None
    config: Mapping[str, Any] = field(default_factory=dict)


def summary(obj: Mapping[str, Any]) -> SessionSummary:
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    return SessionSummary(
        namespace=str(meta.get("namespace", "")),
        name=str(meta.get("name", "")),
        workflow=str(spec.get("workflow", "")),
        session_time=str(spec.get("sessionTime", "")),
        phase=str(status.get("phase") or "Pending"),
        attempt=status.get("attempt"),
        progress=str(status.get("progress") or ""),
        created=str(meta.get("creationTimestamp", "")),
        started_at=status.get("startedAt"),
        finished_at=status.get("finishedAt"),
        message=status.get("message"),
        failed_tasks=tuple(
            (str(f.get("name", "")), str(f.get("message", ""))) for f in status.get("failedTasks") or []
        ),
        attempts=tuple(status.get("attempts") or []),
        params=dict(spec.get("params") or {}),
        labels=dict(meta.get("labels") or {}),
    )


class MissingBlob(Exception):
    """A ConfigMap the Session named is gone: it was replaced since the Session was read (read
    the Session again), or deleted by hand."""


def _index(obj: Mapping[str, Any]) -> dict[str, Any] | None:
    data = ((obj.get("status") or {}).get("engine") or {}).get("data")
    return decode_state_json(data) if data else None


def blob_refs(obj: Mapping[str, Any]) -> list[str]:
    """The ConfigMaps (in the Session's namespace) `task_rows` needs; fetch them and pass them in
    (their bytes: `blob_of`). They carry the labels `kudig.io/session=<session>` and
    `kudig.io/result=true`, so one list by label fetches them all."""
    data = _index(obj)
    if data is None or data.get("v") != CHUNKED:
        return []
    return [name for entry in data.get("chunks") or [] for name in chunk_names(entry)]


def blob_of(config_map: Mapping[str, Any]) -> bytes:
    """The bytes one of those ConfigMaps holds (as read from the API server)."""
    return base64.b64decode((config_map.get("binaryData") or {}).get(BLOB_KEY, ""))


def operator_of(config: Mapping[str, Any]) -> str | None:
    """The task's operator as digdag writes it (`sh>`): compiled configs say `_type: sh`."""
    op = config.get("_type")
    if isinstance(op, str) and op:
        return op + OPERATOR_SUFFIX
    return next((k for k in config if isinstance(k, str) and k.endswith(OPERATOR_SUFFIX)), None)


def _row(t: Mapping[str, Any]) -> TaskRow:
    config = t.get("config") or {}
    op = t.get("op")  # the config moved to its own ConfigMap: its operator is noted in the row
    state = str(t["state"])
    error = (t.get("error") or {}).get("message", "") if state in ("error", "group_error") else ""
    return TaskRow(
        id=int(t["id"]),
        name=str(t["name"]),
        parent=t.get("parent"),
        upstreams=tuple(t.get("upstreams") or ()),
        is_group=bool(t.get("group", False)),
        state=state,
        retries=int(t.get("retry_count", 0)),
        error=str(error),
        operator=str(op) if op else operator_of(config),
        file=t.get("file"),
        line=t.get("line"),
        superseded=bool(t.get("superseded", False)),
        started_at=t.get("started_at"),
        finished_at=t.get("finished_at"),
        ready_at=t.get("ready_at"),
        pod_created_at=t.get("pod_created_at"),
        running_at=t.get("running_at"),
        pod=t.get("pod"),
        config=config,
    )


# Chunks are immutable: their rows, by name, so a viewer polling a Session parses only the chunks
# that changed (bounded).
_CHUNKS: OrderedDict[str, tuple[TaskRow, ...]] = OrderedDict()
_CHUNKS_MAX = 1024  # 32,768 rows


def _chunk_rows(entry: Any, blobs: Mapping[str, bytes]) -> tuple[TaskRow, ...]:
    if isinstance(entry, Mapping):
        return tuple(_row(t) for t in entry.get("rows") or [])
    names = chunk_names(entry)
    cached = _CHUNKS.get(names[0])
    if cached is not None:
        _CHUNKS.move_to_end(names[0])
        return cached
    missing = [n for n in names if n not in blobs]
    if missing:
        raise MissingBlob(f"ConfigMap {missing[0]} of the Session's task rows is missing")
    lines = chunk_lines([blobs[n] for n in names])
    rows = tuple(map(_row, json.loads(b"[" + b",".join(lines) + b"]")))  # one parse a chunk
    _CHUNKS[names[0]] = rows
    while len(_CHUNKS) > _CHUNKS_MAX:
        _CHUNKS.popitem(last=False)
    return rows


def task_rows(
    obj: Mapping[str, Any], blobs: Mapping[str, bytes] | None = None, *, superseded: bool = False
) -> list[TaskRow]:
    """The task rows of the Session's current attempt, in id order (superseded rows of a group
    retry only when asked). `blobs` holds the ConfigMaps `blob_refs` named, by name (a missing
    one raises `MissingBlob`)."""
    data = _index(obj)
    if data is None:
        return []
    if data.get("v") == CHUNKED:
        rows = [r for entry in data.get("chunks") or [] for r in _chunk_rows(entry, blobs or {})]
    else:
        rows = [_row(t) for t in data.get("tasks", [])]
    return rows if superseded else [r for r in rows if not r.superseded]


def state_json(obj: Mapping[str, Any], blobs: Mapping[str, bytes] | None = None) -> dict[str, Any] | None:
    """The stored engine state as JSON (`SessionState.from_json` reads it), its rows' moved
    results not put back; None before the Session started."""
    data = _index(obj)
    if data is None or data.get("v") != CHUNKED:
        return data
    tasks: list[dict[str, Any]] = []
    for entry in data.get("chunks") or []:
        if isinstance(entry, Mapping):
            tasks.extend(entry.get("rows") or [])
            continue
        names = chunk_names(entry)
        missing = [n for n in names if n not in (blobs or {})]
        if missing:
            raise MissingBlob(f"ConfigMap {missing[0]} of the Session's task rows is missing")
        tasks.extend(json.loads(line) for line in chunk_lines([(blobs or {})[n] for n in names]))
    return {"tasks": tasks, **{k: v for k, v in data.items() if k not in ("v", "n", "chunks")}}
