"""The session's task table: what the controller persists and the local executor saves.

This mirrors digdag's `tasks` table (state code, flags, state params, stored results) because
digdag's behaviour is defined in terms of it: a group retry re-inserts rows, only the newest row
per name counts, a blocked task whose upstream failed stays blocked forever. Rows are plain data
so they serialise to JSON compactly (CR status, `.digdag/status`).
"""

from __future__ import annotations

import base64
import gzip
import heapq
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from itertools import pairwise
from typing import Any


class TaskState(StrEnum):
    BLOCKED = "blocked"
    READY = "ready"
    RETRY_WAITING = "retry_waiting"
    GROUP_RETRY_WAITING = "group_retry_waiting"
    RUNNING = "running"
    PLANNED = "planned"
    GROUP_ERROR = "group_error"
    SUCCESS = "success"
    ERROR = "error"
    CANCELED = "canceled"


ACTIVE = frozenset(
    {
        TaskState.READY,
        TaskState.RETRY_WAITING,
        TaskState.GROUP_RETRY_WAITING,
        TaskState.RUNNING,
        TaskState.PLANNED,
    }
)
DONE = frozenset({TaskState.SUCCESS, TaskState.ERROR, TaskState.GROUP_ERROR, TaskState.CANCELED})
FAILED = frozenset({TaskState.ERROR, TaskState.GROUP_ERROR})


@dataclass(slots=True)
class Task:
    """One row. `children` lists the current generation only; superseded rows keep their data."""

    id: int
    name: str
    parent: int | None
    upstreams: Sequence[int]  # a range or a tuple (`compact_ids`): shared, never mutated
    is_group: bool
    config: dict[str, Any]
    state: TaskState = TaskState.BLOCKED
    # Which insertion created this row (the id of the batch's first row: 0 for the compiled
    # workflow, the subtree root for ^sub/^error/^check). A group retry re-inserts only the
    # descendants of its own batch: digdag's INITIAL_TASK, relative to generated subtrees too.
    batch: int = 0
    children: list[int] = field(default_factory=list)
    # Who waits for this row, as blocks of ids (`link`): the tasks of one `_parallel: {limit: N}`
    # batch share one block, listed once in each of the N upstreams it waits for.
    downstreams: list[list[int]] = field(default_factory=list)
    file: str | None = None
    line: int | None = None
    delayed_error: bool = False
    delayed_group_error: bool = False
    cancel_requested: bool = False
    superseded: bool = False
    retry_count: int = 0
    retry_at: float | None = None
    state_params: dict[str, Any] = field(default_factory=dict)
    store_params: dict[str, Any] = field(default_factory=dict)
    reset_store_params: list[str] = field(default_factory=list)
    export_params: dict[str, Any] = field(default_factory=dict)
    subtask_config: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    started_at: float | None = None
    finished_at: float | None = None
    skipped: bool = False
    # For a timeline (epoch seconds): when the task last became ready (set by the engine), and
    # when its pod was created and its container started (set by the controller from the pod).
    ready_at: float | None = None
    pod_created_at: float | None = None
    running_at: float | None = None
    # bookkeeping kept in sync by Engine._set_state
    active_children: int = 0
    failed_children: int = 0
    stores_below: bool = False
    # Where a tracked row records that it was assigned to (see `track`); not part of the row.
    changes: Changes | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def done(self) -> bool:
        return self.state in DONE

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "parent": self.parent,
            "upstreams": list(self.upstreams),
            "group": self.is_group,
            "config": self.config,
            "state": self.state.value,
        }
        optional = {
            "batch": (self.batch, 0),
            "children": (self.children, []),
            "file": (self.file, None),
            "line": (self.line, None),
            "delayed_error": (self.delayed_error, False),
            "delayed_group_error": (self.delayed_group_error, False),
            "cancel_requested": (self.cancel_requested, False),
            "superseded": (self.superseded, False),
            "retry_count": (self.retry_count, 0),
            "retry_at": (self.retry_at, None),
            "state_params": (self.state_params, {}),
            "store_params": (self.store_params, {}),
            "reset_store_params": (self.reset_store_params, []),
            "export_params": (self.export_params, {}),
            "subtask_config": (self.subtask_config, None),
            "error": (self.error, None),
            "started_at": (self.started_at, None),
            "finished_at": (self.finished_at, None),
            "skipped": (self.skipped, False),
            "ready_at": (self.ready_at, None),
            "pod_created_at": (self.pod_created_at, None),
            "running_at": (self.running_at, None),
        }
        for key, (value, default) in optional.items():
            if value != default:
                out[key] = value
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Task:
        return cls(
            id=data["id"],
            name=data["name"],
            parent=data.get("parent"),
            upstreams=compact_ids(data.get("upstreams", ())),
            is_group=data.get("group", False),
            config=data.get("config", {}),
            state=TaskState(data["state"]),
            batch=data.get("batch", 0),
            children=list(data.get("children", [])),
            file=data.get("file"),
            line=data.get("line"),
            delayed_error=data.get("delayed_error", False),
            delayed_group_error=data.get("delayed_group_error", False),
            cancel_requested=data.get("cancel_requested", False),
            superseded=data.get("superseded", False),
            retry_count=data.get("retry_count", 0),
            retry_at=data.get("retry_at"),
            state_params=data.get("state_params", {}),
            store_params=data.get("store_params", {}),
            reset_store_params=list(data.get("reset_store_params", [])),
            export_params=data.get("export_params", {}),
            subtask_config=data.get("subtask_config"),
            error=data.get("error"),
            started_at=data.get("started_at"),
            finished_at=data.get("finished_at"),
            skipped=data.get("skipped", False),
            ready_at=data.get("ready_at"),
            pod_created_at=data.get("pod_created_at"),
            running_at=data.get("running_at"),
        )


class Changes:
    """The ids of tracked rows assigned to since `gen` began (see `track`)."""

    __slots__ = ("gen", "ids")

    def __init__(self) -> None:
        self.ids: set[int] = set()
        self.gen = 0

    def next(self) -> None:
        self.ids.clear()
        self.gen += 1


_setattr = object.__setattr__
# Derived bookkeeping, never serialised: assigning it changes nothing stored.
_DERIVED = frozenset({"downstreams", "active_children", "failed_children", "stores_below", "changes"})


class _TrackedTask(Task):
    """A row that records every attribute assignment in its `changes` (same slots as Task, so a
    row becomes tracked by a class change, without copying; untracked rows pay nothing)."""

    __slots__ = ()

    def __setattr__(self, name: str, value: Any) -> None:
        _setattr(self, name, value)
        changes = self.changes
        if changes is not None and name not in _DERIVED:
            changes.ids.add(self.id)


def track(tasks: list[Task], changes: Changes) -> None:
    """Make `tasks` record their assignments in `changes`, so a persister can rewrite only the
    rows that changed. (A row mutated in place, e.g. `state_params[k] = v`, records nothing: the
    persister re-checks the active rows, the only ones the engine mutates that way.)"""
    for task in tasks:
        _setattr(task, "changes", changes)
        if task.__class__ is Task:
            task.__class__ = _TrackedTask


@dataclass(slots=True)
class SessionState:
    """Everything needed to continue a session after a restart."""

    tasks: list[Task] = field(default_factory=list)
    killed: bool = False
    # Results carried over from an earlier attempt (retry --resume), by full task name.
    resume: dict[str, dict[str, Any]] = field(default_factory=dict)
    # `sla:`: the attempt's deadline (epoch seconds) once known, and whether it fired.
    sla_at: float | None = None
    sla_fired: bool = False

    @property
    def root(self) -> Task:
        return self.tasks[0]

    @property
    def done(self) -> bool:
        return bool(self.tasks) and self.tasks[0].done

    @property
    def success(self) -> bool:
        return bool(self.tasks) and self.tasks[0].state == TaskState.SUCCESS

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"tasks": [t.to_json() for t in self.tasks], "killed": self.killed}
        if self.resume:
            out["resume"] = self.resume
        if self.sla_at is not None:
            out["sla_at"] = self.sla_at
        if self.sla_fired:
            out["sla_fired"] = True
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SessionState:
        state = cls(
            [Task.from_json(t) for t in data.get("tasks", [])],
            data.get("killed", False),
            dict(data.get("resume", {})),
            data.get("sla_at"),
            bool(data.get("sla_fired", False)),
        )
        rebuild_indexes(state)
        return state


def compact_ids(ids: Iterable[int]) -> Sequence[int]:
    """Task ids as a `range` when they step evenly (a `_parallel: {limit: N}` batch waits for the
    N tasks of the batch before it: N ids per task, N x tasks in all), else a tuple. Either is
    immutable, so rows can share one."""
    t = tuple(ids)
    if len(t) > 2:
        step = t[1] - t[0]
        if step > 0 and all(b - a == step for a, b in pairwise(t)):
            return range(t[0], t[-1] + 1, step)
    return t


def link(tasks: Sequence[Task], task: Task, blocks: dict[Sequence[int], list[int]]) -> None:
    """Record `task` as a downstream of each of its upstreams. Tasks with equal upstreams share
    one block (`blocks`, per batch of insertions): a batch of N waiting for N costs N + N entries,
    not N x N."""
    ups = task.upstreams
    if not ups:
        return
    block = blocks.get(ups)
    if block is None:
        block = blocks[ups] = []
        for up in ups:
            tasks[up].downstreams.append(block)
    block.append(task.id)


def downstream_ids(task: Task) -> Iterator[int]:
    """The ids of the tasks that wait for `task`, in id order."""
    blocks = task.downstreams
    if len(blocks) == 1:
        return iter(blocks[0])
    return heapq.merge(*blocks)


def rebuild_indexes(state: SessionState) -> None:
    """Recompute the derived bookkeeping (downstreams, counters) after loading rows."""
    for task in state.tasks:
        task.downstreams = []
        task.active_children = 0
        task.failed_children = 0
        task.stores_below = bool(task.store_params or task.reset_store_params)
    blocks: dict[Sequence[int], list[int]] = {}
    for task in state.tasks:
        if task.superseded:
            continue
        link(state.tasks, task, blocks)
        if task.parent is not None:
            parent = state.tasks[task.parent]
            if task.state in ACTIVE:
                parent.active_children += 1
            if task.state in FAILED:
                parent.failed_children += 1
    for task in reversed(state.tasks):
        if task.stores_below and task.parent is not None and not task.superseded:
            state.tasks[task.parent].stores_below = True


def encode_state(state: SessionState) -> str:
    """The whole state as one blob: gzip'd JSON, base64 (deterministic bytes). A Session's status
    kept this until the operator moved the rows to chunks (`kudig_operator.results`, format 2)."""
    raw = json.dumps(state.to_json(), separators=(",", ":"), default=str).encode()
    return base64.b64encode(gzip.compress(raw, compresslevel=6, mtime=0)).decode()


def decode_state_json(blob: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(gzip.decompress(base64.b64decode(blob)))
    return data


def decode_state(blob: str) -> SessionState:
    return SessionState.from_json(decode_state_json(blob))


# A Session's state in chunks (format 2, written by the operator's `results` module): the status
# holds {"v": 2, "chunks": [entry, ...], ...}; an entry holds a chunk's rows inline
# ({"rows": [...]}) or names an immutable ConfigMap of them -- its name, or [name, parts] when its
# bytes are split over `parts` ConfigMaps (the first named `name`, then `name-1`, ...) -- whose
# joined bytes are gzip'd JSON rows, one a line.
CHUNKED = 2
BLOB_KEY = "part.json.gz"  # the binaryData key of a chunk's (or a moved part's) ConfigMap


def chunk_names(entry: str | list[Any] | dict[str, Any]) -> list[str]:
    """The ConfigMaps one chunk entry of the status occupies (none for an inline chunk)."""
    if isinstance(entry, dict):
        return []
    if isinstance(entry, str):
        return [entry]
    base, parts = str(entry[0]), int(entry[1])
    return [base if i == 0 else f"{base}-{i}" for i in range(parts)]


def chunk_lines(parts: list[bytes]) -> list[bytes]:
    """The serialised rows of one chunk, from its ConfigMaps' bytes (in order)."""
    raw = gzip.decompress(b"".join(parts))
    return raw.split(b"\n") if raw else []
