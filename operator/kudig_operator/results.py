"""Where a Session's engine state lives: a small index in its status, the rows in immutable chunks.

A Session's engine state (every task row with its stored/exported params and generated
subtasks) may hold 10,000 rows of a few KiB each, and a reconcile typically changes a handful.
So the status holds only an index (`status.engine.data`, gzip'd JSON, format 2):

    {"v": 2, "n": rows, "chunks": [entry, ...], "killed": ..., "resume"|"resume_ext": ..., ...}

and the rows live in chunks of `CHUNK_ROWS` consecutive rows (rows are only ever appended, so a
row stays in its chunk): each chunk is gzip'd JSON rows, one a line, in one ConfigMap (or
several, at most `PART_BYTES` each) named after its content (`<session>-c-<sha256>`), owned by
the Session and immutable. A reconcile that changes one row rewrites one chunk (one small
ConfigMap) and one index entry; the status write stays a few KiB.

Which rows changed is known without looking at the others: `encode` makes the rows record their
attribute assignments (`kudig.engine.state.track`), and re-checks the few rows the engine may
mutate in place (active rows: their `state_params` and `children`). Each row's serialised bytes
are kept in the `Memo` (from `decode` or the previous `encode`), so a changed chunk is the
changed rows serialised plus the others' bytes joined; an unchanged state gives the very same
index, so no status write. See docs/architecture.md (where results live) for the numbers.

Inside a row, its bulky parts still move to their own ConfigMap (`<session>-r-<sha256>`) when
large: a *result* (store/export params, generated subtasks) over `RESULT_INLINE_MAX`, a generated
row's *config* over `CONFIG_INLINE_MAX`; the row keeps `"ext": {"result": {"cm": name, "parts": n}}`.
So a chunk stays small whatever the tasks store, and one big result is written once.

Names derive from content: writing the same ConfigMap twice is a no-op (AlreadyExists), a crash
between creating them and writing the status loses nothing, and readers cache them forever.
Chunks the new index no longer names are garbage (`garbage`), deleted after the status commit.

Format 1 (every row inline in the status, bulky parts moved as above) is still decoded: a
controller upgraded mid-session continues it, and its next write is format 2.

Everything here is pure: the controller creates the ConfigMaps `encode` asks for before it
writes the status that references them (the status write is the commit point), and fetches the
ConfigMaps `refs` names before `decode` (two rounds: chunks, then what their rows reference).
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from kudig.engine.state import (
    ACTIVE,
    BLOB_KEY,
    CHUNKED,
    Changes,
    SessionState,
    Task,
    chunk_lines,
    chunk_names,
    track,
)
from kudig.sessionread import operator_of

RESULT_KEYS = ("store_params", "export_params", "subtask_config", "reset_store_params")
RESULT_INLINE_MAX = 2048
CONFIG_INLINE_MAX = 4096
INLINE_BUDGET = 128 * 1024  # format 1 only: results kept inline in the status, in total
PART_BYTES = 900 * 1024
CHUNK_ROWS = 32
INLINE_BYTES = 64 * 1024
DATA_KEY = BLOB_KEY


class MissingResult(Exception):
    """A referenced result ConfigMap is gone (deleted by hand): the session cannot go on."""


@dataclass(frozen=True)
class Blob:
    """One ConfigMap to create: name and gzip'd bytes (one part of a chunk or of a moved part)."""

    name: str
    data: bytes


def _dumps(value: Any) -> bytes:
    # Key order is kept (not sorted): a stored map must come back exactly as the task stored it.
    return json.dumps(value, separators=(",", ":"), default=str).encode()


def _gzip(raw: bytes) -> bytes:
    return gzip.compress(raw, compresslevel=6, mtime=0)


def _blob_base(session: str) -> str:
    return session[:36].rstrip("-.")


def _put(session: str, kind: str, packed: bytes, blobs: list[Blob]) -> tuple[str, int]:
    digest = hashlib.sha256(packed).hexdigest()[:20]
    base = f"{_blob_base(session)}-{kind}-{digest}"
    chunks = [packed[i : i + PART_BYTES] for i in range(0, len(packed), PART_BYTES)] or [b""]
    for i, chunk in enumerate(chunks):
        blobs.append(Blob(base if i == 0 else f"{base}-{i}", chunk))
    return base, len(chunks)


def _store(session: str, payload: Any, blobs: list[Blob]) -> dict[str, Any]:
    base, parts = _put(session, "r", _gzip(_dumps(payload)), blobs)
    return {"cm": base, "parts": parts}


def _names(ref: Mapping[str, Any]) -> Iterator[str]:
    base = str(ref["cm"])
    for i in range(int(ref.get("parts", 1))):
        yield base if i == 0 else f"{base}-{i}"


def _load(ref: Mapping[str, Any], fetched: Mapping[str, bytes]) -> Any:
    chunks = []
    for name in _names(ref):
        if name not in fetched:
            raise MissingResult(f"task results in ConfigMap {name} are missing (it was deleted)")
        chunks.append(fetched[name])
    return json.loads(gzip.decompress(b"".join(chunks)))


def _row_bytes(task: Task, session: str, blobs: list[Blob]) -> bytes:
    """One row as a chunk line, its bulky parts moved to their own ConfigMaps."""
    row = task.to_json()
    raw = _dumps(row)
    if len(raw) <= RESULT_INLINE_MAX:
        return raw  # nothing in it can be over a limit
    ext: dict[str, Any] = {}
    # Configs of the compiled workflow's rows (batch 0) are bounded by the .dig file itself;
    # generated rows (loops, py> subtasks, ^error...) can be anything.
    if task.batch and "config" in row and len(_dumps(row["config"])) > CONFIG_INLINE_MAX:
        config = row.pop("config")
        ext["config"] = _store(session, config, blobs)
        row["op"] = operator_of(config)  # what a viewer shows without fetching it
    result = {k: row[k] for k in RESULT_KEYS if k in row}
    if result and len(_dumps(result)) > RESULT_INLINE_MAX:
        ext["result"] = _store(session, result, blobs)
        for k in result:
            del row[k]
    if not ext:
        return raw
    row["ext"] = ext
    return _dumps(row)


def _watch(task: Task) -> tuple[bytes, int]:
    """What of an active row the engine may change in place (so no assignment records it)."""
    return _dumps(task.state_params), len(task.children)


@dataclass
class Memo:
    """What the last `encode` (or `decode`) of one state object wrote, so the next `encode` of
    the same object rewrites only what changed since: each row's serialised bytes, the index's
    chunk entries (None: the chunk is inline), the inline chunks (oldest change first, with
    their sizes), the active rows' in-place-mutable parts, and the index itself."""

    tasks: list[Task] | None = None  # the very list encoded (an encode of another state starts over)
    changes: Changes | None = None
    gen: int = -1
    rows: list[bytes] = field(default_factory=list)
    entries: list[Any] = field(default_factory=list)
    inline: dict[int, int] = field(default_factory=dict)
    active: dict[int, tuple[bytes, int]] = field(default_factory=dict)
    resume: tuple[Any, int, dict[str, Any]] | None = None  # (the dict, its size, its index keys)
    index: bytes = b""
    blob: str = ""

    def follows(self, state: SessionState) -> bool:
        """Whether this memo describes `state` as of its last encode (all its changes tracked)."""
        return (
            self.tasks is state.tasks
            and self.changes is not None
            and self.changes.gen == self.gen
            and len(self.rows) <= len(state.tasks)
        )

    def names(self) -> set[str]:
        """The chunk ConfigMaps the index names."""
        return {name for entry in self.entries if entry is not None for name in chunk_names(entry)}


def _resume_entry(state: SessionState, session: str, memo: Memo, blobs: list[Blob]) -> dict[str, Any]:
    resume = state.resume
    if not resume:
        return {}
    if memo.resume is not None and memo.resume[0] is resume and memo.resume[1] == len(resume):
        return memo.resume[2]
    raw = _dumps(resume)
    entry = (
        {"resume": resume}
        if len(raw) <= RESULT_INLINE_MAX
        else {"resume_ext": _store(session, resume, blobs)}
    )
    memo.resume = (resume, len(resume), entry)
    return entry


def _index(state: SessionState, memo: Memo) -> bytes:
    """The index JSON: scalars, then one entry per chunk (a name, or the rows when inline)."""
    head: dict[str, Any] = {"v": CHUNKED, "n": len(memo.rows), "killed": state.killed}
    if memo.resume is not None and state.resume:
        head.update(memo.resume[2])
    if state.sla_at is not None:
        head["sla_at"] = state.sla_at
    if state.sla_fired:
        head["sla_fired"] = True
    rows = memo.rows
    parts = [
        b'{"rows":[' + b",".join(rows[c * CHUNK_ROWS : (c + 1) * CHUNK_ROWS]) + b"]}"
        if entry is None
        else b'"' + entry.encode() + b'"'
        if isinstance(entry, str)
        else _dumps(entry)
        for c, entry in enumerate(memo.entries)
    ]
    return _dumps(head)[:-1] + b',"chunks":[' + b",".join(parts) + b"]}"


def encode(state: SessionState, session: str, memo: Memo | None = None) -> tuple[str, list[Blob], Memo]:
    """The status blob (the index) for `state`, the ConfigMaps it references that this call
    wrote (create them first), and the memo for the next `encode` of the same state object.

    With the memo of this state's last `encode`/`decode`, the cost is the changed rows and their
    chunks, not the session; without one (or another state's), every row is serialised.

    Chunks that changed stay inline in the index while the inline rows total at most
    `INLINE_BYTES`; the oldest changed move out to ConfigMaps first. So a chain of tasks, whose
    changes stay in one or two chunks, writes a chunk ConfigMap every `CHUNK_ROWS` tasks, not
    one per status write, and a fan-out's status stays bounded."""
    tasks = state.tasks
    n = len(tasks)
    blobs: list[Blob] = []
    if memo is not None and memo.follows(state):
        assert memo.changes is not None
        changes = memo.changes
        changed = set(changes.ids)
        for tid, seen in memo.active.items():
            if tid not in changed and _watch(tasks[tid]) != seen:
                changed.add(tid)
        changed.update(range(len(memo.rows), n))
        after = Memo(
            tasks,
            changes,
            rows=memo.rows + [b""] * (n - len(memo.rows)),
            entries=list(memo.entries),
            inline=dict(memo.inline),
            active=dict(memo.active),
            resume=memo.resume,
            index=memo.index,
            blob=memo.blob,
        )
        track(tasks[len(memo.rows) :], changes)
    else:
        changes = Changes()
        changed = set(range(n))
        after = Memo(tasks, changes, rows=[b""] * n)
        track(tasks, changes)
    lines = after.rows
    dirty: set[int] = set()  # chunks with a row whose bytes changed
    for tid in changed:
        task = tasks[tid]
        moved: list[Blob] = []
        line = _row_bytes(task, session, moved)
        if line != lines[tid]:  # (the same line names the same moved parts: written already)
            lines[tid] = line
            dirty.add(tid // CHUNK_ROWS)
            blobs.extend(moved)
        if task.state in ACTIVE:
            after.active[tid] = _watch(task)
        else:
            after.active.pop(tid, None)
    entries, inline = after.entries, after.inline
    entries.extend([None] * (-(-n // CHUNK_ROWS) - len(entries)))
    for c in sorted(dirty):
        entries[c] = None  # its ConfigMap, if any, is garbage once the index is committed
        inline.pop(c, None)
        inline[c] = sum(map(len, lines[c * CHUNK_ROWS : (c + 1) * CHUNK_ROWS]))
    total = sum(inline.values())
    while total > INLINE_BYTES:
        c = next(iter(inline))
        total -= inline.pop(c)
        packed = _gzip(b"\n".join(lines[c * CHUNK_ROWS : (c + 1) * CHUNK_ROWS]))
        name, parts = _put(session, "c", packed, blobs)
        entries[c] = name if parts == 1 else [name, parts]
    _resume_entry(state, session, after, blobs)
    index = _index(state, after)
    if index != after.index:
        after.index = index
        after.blob = base64.b64encode(_gzip(index)).decode()
    changes.next()
    after.gen = changes.gen
    return after.blob, blobs, after


def garbage(before: Memo | None, after: Memo) -> list[str]:
    """The chunk ConfigMaps the index of `before` named and that of `after` does not: delete
    them once `after` is committed. (Moved result parts are shared by content and written once,
    so they stay until the Session goes.)"""
    if before is None:
        return []
    return sorted(before.names() - after.names())


def chunked(data: Mapping[str, Any]) -> bool:
    """Whether a stored state keeps its rows in chunks (format 2: read them before planning)."""
    return data.get("v") == CHUNKED


def decode_json(blob: str) -> dict[str, Any]:
    """The stored JSON of a status blob, references unresolved (see `refs`, `decode`)."""
    data: dict[str, Any] = json.loads(gzip.decompress(base64.b64decode(blob)))
    return data


# Chunks are immutable: their lines, by name, for decoding the same chunks again (bounded by
# bytes, so a controller's memory does not grow with the sessions it decoded).
_LINES: OrderedDict[str, list[bytes]] = OrderedDict()
_LINES_BYTES = 16 * 1024 * 1024
_lines_held = 0


def forget_parsed() -> None:
    """Drop the parsed chunks kept for decoding (the next decode reads the fetched bytes)."""
    global _lines_held
    _LINES.clear()
    _lines_held = 0


def _chunk(entry: Any, fetched: Mapping[str, bytes]) -> list[bytes]:
    if isinstance(entry, Mapping):
        return [_dumps(row) for row in entry.get("rows") or []]
    names = chunk_names(entry)
    lines = _LINES.get(names[0])
    if lines is not None:
        _LINES.move_to_end(names[0])
        return lines
    missing = [n for n in names if n not in fetched]
    if missing:
        raise MissingResult(f"task rows in ConfigMap {missing[0]} are missing (it was deleted)")
    global _lines_held
    lines = chunk_lines([fetched[n] for n in names])
    _LINES[names[0]] = lines
    _lines_held += sum(map(len, lines))
    while _lines_held > _LINES_BYTES and len(_LINES) > 1:
        _lines_held -= sum(map(len, _LINES.popitem(last=False)[1]))
    return lines


def refs(data: Mapping[str, Any], fetched: Mapping[str, bytes] | None = None) -> list[str]:
    """Every ConfigMap name the stored state refers to, as far as `fetched` shows: the chunks
    the index names, and the moved parts their rows name once the chunks are in `fetched`
    (fetch, then ask again until nothing new). Format 1 names everything at once."""
    out: list[str] = []
    if data.get("v") == CHUNKED:
        for entry in data.get("chunks") or []:
            names = chunk_names(entry)
            out.extend(names)
            if isinstance(entry, Mapping) or (fetched is not None and all(n in fetched for n in names)):
                for line in _chunk(entry, fetched or {}):
                    if b'"ext":' in line:
                        for ref in (json.loads(line).get("ext") or {}).values():
                            out.extend(_names(ref))
        if "resume_ext" in data:
            out.extend(_names(data["resume_ext"]))
        return out
    for row in data.get("tasks", []):
        for ref in (row.get("ext") or {}).values():
            out.extend(_names(ref))
    for value in (data.get("resume") or {}).values():
        if isinstance(value, Mapping) and set(value) == {"ext"}:
            out.extend(_names(value["ext"]))
    return out


def _unpack(row: dict[str, Any], fetched: Mapping[str, bytes]) -> dict[str, Any]:
    ext = row.pop("ext", None) or {}
    if "config" in ext:
        row["config"] = _load(ext["config"], fetched)
        row.pop("op", None)
    if "result" in ext:
        row.update(_load(ext["result"], fetched))
    row.pop("csz", None)  # format 1's inline-size notes
    row.pop("rsz", None)
    return row


def rows(data: Mapping[str, Any], fetched: Mapping[str, bytes]) -> list[dict[str, Any]]:
    """The stored task rows as JSON, bulky parts not put back (for reading states and names)."""
    if data.get("v") != CHUNKED:
        return list(data.get("tasks", []))
    return [json.loads(line) for entry in data.get("chunks") or [] for line in _chunk(entry, fetched)]


def decode(data: dict[str, Any], fetched: Mapping[str, bytes]) -> tuple[SessionState, Memo]:
    """The engine state, with every moved part put back from the fetched ConfigMap bytes, and
    the memo `encode` uses to rewrite only what changes from here."""
    if data.get("v") != CHUNKED:
        return _decode_inline(data, fetched), Memo()
    lines: list[bytes] = []
    entries: list[Any] = []
    inline: dict[int, int] = {}
    for c, entry in enumerate(data.get("chunks") or []):
        chunk = _chunk(entry, fetched)
        lines.extend(chunk)
        if isinstance(entry, Mapping):
            entries.append(None)
            inline[c] = sum(map(len, chunk))
        else:
            entries.append(entry)
    resume = data.get("resume") or {}
    if "resume_ext" in data:
        resume = _load(data["resume_ext"], fetched)
    state = SessionState.from_json(
        {
            # one row parsed at a time: a row's id lists become compact as its Task is made
            # (`compact_ids`), so the parsed lists of 10,000 rows never all live at once
            "tasks": (_unpack(json.loads(line), fetched) for line in lines),
            "killed": data.get("killed", False),
            "resume": resume,
            "sla_at": data.get("sla_at"),
            "sla_fired": data.get("sla_fired", False),
        }
    )
    changes = Changes()
    track(state.tasks, changes)
    memo = Memo(
        state.tasks,
        changes,
        changes.gen,
        rows=lines,
        entries=entries,
        inline=inline,
        active={t.id: _watch(t) for t in state.tasks if t.state in ACTIVE},
    )
    if state.resume:
        memo.resume = (
            state.resume,
            len(state.resume),
            {k: data[k] for k in ("resume", "resume_ext") if k in data},
        )
    memo.index = _index(state, memo)
    memo.blob = base64.b64encode(_gzip(memo.index)).decode()
    return state, memo


def _decode_inline(data: dict[str, Any], fetched: Mapping[str, bytes]) -> SessionState:
    """Format 1: every row in the status, bulky parts (and big carried-over results) moved."""
    for row in data.get("tasks", []):
        _unpack(row, fetched)
    resume = data.get("resume") or {}
    for name, value in list(resume.items()):
        if isinstance(value, Mapping) and set(value) == {"ext"}:
            resume[name] = _load(value["ext"], fetched)
    return SessionState.from_json(data)


def config_map(
    blob: Blob, *, namespace: str, owner: Mapping[str, Any], labels: Mapping[str, str]
) -> dict[str, Any]:
    """The immutable ConfigMap holding one blob, owned by the Session `owner`."""
    meta = owner["metadata"]
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": blob.name,
            "namespace": namespace,
            "labels": dict(labels),
            "ownerReferences": [
                {
                    "apiVersion": owner["apiVersion"],
                    "kind": owner["kind"],
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "immutable": True,
        "binaryData": {DATA_KEY: base64.b64encode(blob.data).decode()},
    }


def blob_of(config_map_obj: Mapping[str, Any]) -> bytes:
    """The bytes a result ConfigMap holds (as read from the API server)."""
    return base64.b64decode((config_map_obj.get("binaryData") or {}).get(DATA_KEY, ""))
