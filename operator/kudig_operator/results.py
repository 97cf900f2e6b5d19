"""Where a Session's task results live: inline in its status, or in immutable ConfigMaps.

A Session's engine state (every task row with its stored/exported params and generated
subtasks) is kept gzip'd in `status.engine`. A Kubernetes object must stay well under etcd's
request limit (1.5 MiB), while one task may produce up to `MAX_RESULT_BYTES` (1.5 MiB) of results
and a session may have thousands of tasks. So the bulky parts of a row are moved out of the
status when they are large:

* a row's *result* (store/export params, generated subtasks) when its JSON exceeds
  `RESULT_INLINE_MAX`, or once the results kept inline already total `INLINE_BUDGET`;
* a row's *config* when its JSON exceeds `CONFIG_INLINE_MAX` (big generated subtasks);
* a carried-over result of an earlier attempt (`resume`) by the same rules.

Each moved part is gzip'd JSON in one or more ConfigMaps (`binaryData`, at most `PART_BYTES`
each) owned by the Session, so they are garbage-collected with it. Their names are derived from
the content (`<session>-r-<sha256>`): writing the same part twice is a no-op (AlreadyExists), a
crash between creating them and writing the status loses nothing, and a reader can cache them
forever. The row keeps a reference: `"ext": {"result": {"cm": name, "parts": n}}`.

Everything here is pure: the controller creates the ConfigMaps `encode` asks for before it
writes the status that references them (the status write is the commit point), and fetches the
ConfigMaps `refs` names before `decode`.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from kudig.engine.state import SessionState, Task

RESULT_KEYS = ("store_params", "export_params", "subtask_config", "reset_store_params")
RESULT_INLINE_MAX = 2048
CONFIG_INLINE_MAX = 4096
INLINE_BUDGET = 128 * 1024
PART_BYTES = 900 * 1024
DATA_KEY = "part.json.gz"


class MissingResult(Exception):
    """A referenced result ConfigMap is gone (deleted by hand): the session cannot go on."""


@dataclass(frozen=True)
class Blob:
    """One ConfigMap to create: name and gzip'd bytes (one part of a moved row part)."""

    name: str
    data: bytes


def _dumps(value: Any) -> bytes:
    # Key order is kept (not sorted): a stored map must come back exactly as the task stored it.
    return json.dumps(value, separators=(",", ":"), default=str).encode()


def _gzip(raw: bytes) -> bytes:
    return gzip.compress(raw, compresslevel=6, mtime=0)


def _blob_base(session: str) -> str:
    return session[:36].rstrip("-.")


def _store(session: str, payload: Any, blobs: list[Blob]) -> dict[str, Any]:
    packed = _gzip(_dumps(payload))
    digest = hashlib.sha256(packed).hexdigest()[:20]
    base = f"{_blob_base(session)}-r-{digest}"
    chunks = [packed[i : i + PART_BYTES] for i in range(0, len(packed), PART_BYTES)] or [b""]
    for i, chunk in enumerate(chunks):
        blobs.append(Blob(base if i == 0 else f"{base}-{i}", chunk))
    return {"cm": base, "parts": len(chunks)}


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


@dataclass
class Memo:
    """What `decode` saw, so `encode` need not serialise unchanged parts again: for each moved or
    measured part, the very objects it was loaded into (compared by identity, and kept alive so
    their ids cannot be reused), its reference if it lives in a ConfigMap, and its size."""

    parts: dict[tuple[Any, str], tuple[tuple[Any, ...], dict[str, Any] | None, int]] = field(
        default_factory=dict
    )

    def unchanged(
        self, key: tuple[Any, str], objects: tuple[Any, ...]
    ) -> tuple[dict[str, Any] | None, int] | None:
        seen = self.parts.get(key)
        if (
            seen is None
            or len(seen[0]) != len(objects)
            or any(a is not b for a, b in zip(seen[0], objects, strict=True))
        ):
            return None
        return seen[1], seen[2]


def _result_objects(task: Task) -> tuple[Any, ...]:
    return (task.store_params, task.export_params, task.subtask_config, task.reset_store_params)


def encode(state: SessionState, session: str, memo: Memo | None = None) -> tuple[str, list[Blob], Memo]:
    """The status blob for `state`, the ConfigMaps it references (create them first), and the
    memo describing the result (what `decode` of that blob would give).

    `memo` (from `decode`, or an earlier `encode`) lets parts that did not change keep their
    reference and size without being serialised again: a reconcile then costs one pass over the
    rows, not one serialisation per part."""
    memo = memo or Memo()
    after = Memo()
    data = state.to_json()
    blobs: list[Blob] = []
    inline = 0
    for task, row in zip(state.tasks, data["tasks"], strict=True):
        ext: dict[str, Any] = {}
        # Configs of the compiled workflow's rows (batch 0) are bounded by the .dig file itself;
        # generated rows (loops, py> subtasks, ^error...) can be anything.
        if task.batch and "config" in row:
            known = memo.unchanged((task.id, "config"), (task.config,))
            if known is not None and known[0] is not None:
                ext["config"] = known[0]
                del row["config"]
            elif known is None:
                size = len(_dumps(row["config"]))
                if size > CONFIG_INLINE_MAX:
                    ext["config"] = _store(session, row.pop("config"), blobs)
                else:
                    row["csz"] = size
            else:
                row["csz"] = known[1]
            after.parts[(task.id, "config")] = ((task.config,), ext.get("config"), int(row.get("csz", 0)))
        result = {k: row[k] for k in RESULT_KEYS if k in row}
        if result:
            known = memo.unchanged((task.id, "result"), _result_objects(task))
            if known is not None and known[0] is not None:
                ext["result"] = known[0]
            else:
                size = known[1] if known is not None else len(_dumps(result))
                if known is None and (size > RESULT_INLINE_MAX or inline + size > INLINE_BUDGET):
                    ext["result"] = _store(session, result, blobs)
                else:
                    inline += size
                    row["rsz"] = size
            if "result" in ext:
                for k in result:
                    del row[k]
            after.parts[(task.id, "result")] = (
                _result_objects(task),
                ext.get("result"),
                int(row.get("rsz", 0)),
            )
        if ext:
            row["ext"] = ext
    resume = data.get("resume") or {}
    for name, result in list(resume.items()):
        known = memo.unchanged(("resume", name), (result,))
        if known is not None and known[0] is not None:
            resume[name] = {"ext": known[0]}
        else:
            size = len(_dumps(result))
            if size > RESULT_INLINE_MAX or inline + size > INLINE_BUDGET:
                resume[name] = {"ext": _store(session, result, blobs)}
            else:
                inline += size
                continue
        after.parts[("resume", name)] = ((result,), resume[name]["ext"], 0)
    raw = json.dumps(data, separators=(",", ":"), default=str).encode()
    return base64.b64encode(_gzip(raw)).decode(), blobs, after


def decode_json(blob: str) -> dict[str, Any]:
    """The stored JSON of a status blob, references unresolved (see `refs`, `decode`)."""
    data: dict[str, Any] = json.loads(gzip.decompress(base64.b64decode(blob)))
    return data


def refs(data: Mapping[str, Any]) -> list[str]:
    """Every ConfigMap name the stored state refers to."""
    out: list[str] = []
    for row in data.get("tasks", []):
        for ref in (row.get("ext") or {}).values():
            out.extend(_names(ref))
    for value in (data.get("resume") or {}).values():
        if isinstance(value, Mapping) and set(value) == {"ext"}:
            out.extend(_names(value["ext"]))
    return out


def decode(data: dict[str, Any], fetched: Mapping[str, bytes]) -> tuple[SessionState, Memo]:
    """The engine state, with every moved part put back from the fetched ConfigMap bytes, and
    the memo `encode` uses to skip what did not change."""
    seen: dict[int, dict[str, tuple[dict[str, Any] | None, int]]] = {}
    for row in data.get("tasks", []):
        ext = row.pop("ext", None) or {}
        parts: dict[str, tuple[dict[str, Any] | None, int]] = {}
        if "config" in ext:
            row["config"] = _load(ext["config"], fetched)
            parts["config"] = (ext["config"], 0)
        elif "csz" in row:
            parts["config"] = (None, int(row["csz"]))
        if "result" in ext:
            row.update(_load(ext["result"], fetched))
            parts["result"] = (ext["result"], 0)
        elif "rsz" in row:
            parts["result"] = (None, int(row["rsz"]))
        row.pop("csz", None)
        row.pop("rsz", None)
        if parts:
            seen[int(row["id"])] = parts
    resume = data.get("resume") or {}
    resume_refs: dict[str, dict[str, Any]] = {}
    for name, value in list(resume.items()):
        if isinstance(value, Mapping) and set(value) == {"ext"}:
            resume[name] = _load(value["ext"], fetched)
            resume_refs[name] = value["ext"]
    state = SessionState.from_json(data)
    memo = Memo()
    for task_id, parts in seen.items():
        task = state.tasks[task_id]
        if "config" in parts:
            memo.parts[(task_id, "config")] = ((task.config,), *parts["config"])
        if "result" in parts:
            memo.parts[(task_id, "result")] = (_result_objects(task), *parts["result"])
    for name, ref in resume_refs.items():
        memo.parts[("resume", name)] = ((state.resume[name],), ref, 0)
    return state, memo


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
