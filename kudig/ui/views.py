"""The JSON the UI's API answers, made from Session and Workflow objects (docs/ui.md "API").

Sessions are read through `kudig.sessionread` only (their summary and task rows); this module
shapes them: camelCase JSON with secret-looking values scrubbed, the sessions list's filters and
cursor paging, the Gantt rows with the step gap, the changed task rows of a watch event, and a
workflow's schedule calendar. Pure: time is an argument, no I/O.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import Any

from kudig.sessionread import SessionSummary, TaskRow
from kudig.ui.layout import label

SECRET_KEY = re.compile(r"password|passwd|secret|token|api_?key|credential|private_?key", re.IGNORECASE)
SCRUBBED = "***"
MAX_LIMIT = 500
DEFAULT_LIMIT = 50
PHASES = ("Pending", "Running", "Succeeded", "Failed", "Killed", "Error")


class BadRequest(ValueError):
    """A query parameter the API cannot use (answered with 400 and this message)."""


# --------------------------------------------------------------------------------------- secrets


def scrub(value: Any, key: str | None = None) -> Any:
    """`value` with the values of secret-looking keys replaced by "***" (a `${secret:...}`
    reference is kept: it names a secret, it is not one)."""
    if key is not None and SECRET_KEY.search(key):
        if isinstance(value, str) and value.startswith("${secret:") and value.endswith("}"):
            return value
        return SCRUBBED
    if isinstance(value, Mapping):
        return {str(k): scrub(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [scrub(v) for v in value]
    return value


# ------------------------------------------------------------------------------------ sessions


def parse_time(text: str) -> datetime:
    """An ISO time with an offset (a naive one is taken as UTC)."""
    t = datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def _epoch(text: str) -> float:
    try:
        return parse_time(text).timestamp()
    except ValueError:
        return 0.0


def spec_flags(obj: Mapping[str, Any]) -> dict[str, Any]:
    """How a Session came to be (its spec, not its stored status): scheduled, and a backfill
    (`kudig backfill` chains its Sessions with `after`)."""
    spec = obj.get("spec") or {}
    scheduled = bool(spec.get("scheduled"))
    return {"scheduled": scheduled, "backfill": scheduled and bool(spec.get("after"))}


def summary_json(s: SessionSummary, flags: Mapping[str, Any] | None = None) -> dict[str, Any]:
    return {
        "namespace": s.namespace,
        "name": s.name,
        "workflow": s.workflow,
        "sessionTime": s.session_time,
        "phase": s.phase,
        "attempt": s.attempt,
        "progress": s.progress,
        "created": s.created,
        "startedAt": s.started_at,
        "finishedAt": s.finished_at,
        "message": s.message,
        "failedTasks": [{"name": n, "message": m} for n, m in s.failed_tasks],
        "attempts": [dict(a) for a in s.attempts],
        "params": scrub(dict(s.params)),
        "labels": dict(s.labels),
        "scheduled": bool((flags or {}).get("scheduled", False)),
        "backfill": bool((flags or {}).get("backfill", False)),
    }


def row_json(r: TaskRow, parent_name: str | None = None) -> dict[str, Any]:
    return {
        "id": r.id,
        "name": r.name,
        "label": label(r.name, parent_name),
        "parent": r.parent,
        "upstreams": list(r.upstreams),
        "group": r.is_group,
        "state": r.state,
        "retries": r.retries,
        "error": r.error,
        "operator": r.operator,
        "file": r.file,
        "line": r.line,
        "readyAt": r.ready_at,
        "startedAt": r.started_at,
        "podCreatedAt": r.pod_created_at,
        "runningAt": r.running_at,
        "finishedAt": r.finished_at,
        "pod": r.pod,
    }


def rows_json(rows: Sequence[TaskRow]) -> list[dict[str, Any]]:
    names = {r.id: r.name for r in rows}
    return [row_json(r, names.get(r.parent) if r.parent is not None else None) for r in rows]


def find_task(rows: Sequence[TaskRow], task: str) -> TaskRow | None:
    """A task by its full name (`+wf+t`) or its id."""
    for r in rows:
        if r.name == task:
            return r
    if task.isdigit():
        return next((r for r in rows if r.id == int(task)), None)
    return None


def commands(s: SessionSummary) -> dict[str, str]:
    """The CLI commands a viewer copies (the UI itself changes nothing)."""
    ns = f"-n {s.namespace}"
    return {
        "retry": f"kudig retry {s.name} {ns}",
        "retryAll": f"kudig retry {s.name} --all {ns}",
        "kill": f"kudig kill {s.name} {ns}",
        "log": f"kudig log {s.name} {ns}",
    }


@dataclass(frozen=True)
class Filters:
    """The sessions list's query (docs/ui.md): all optional."""

    workflow: str | None = None
    phases: frozenset[str] = frozenset()
    since: float | None = None
    until: float | None = None
    limit: int = DEFAULT_LIMIT
    cursor: tuple[float, str, str] | None = None


def parse_filters(query: Mapping[str, str]) -> Filters:
    phases = frozenset(p for p in (query.get("phase") or "").split(",") if p)
    unknown = sorted(phases - set(PHASES))
    if unknown:
        raise BadRequest(f"phase: unknown {', '.join(unknown)} (expected one of {', '.join(PHASES)})")

    def when(key: str) -> float | None:
        text = query.get(key)
        if not text:
            return None
        try:
            return parse_time(text).timestamp()
        except ValueError:
            raise BadRequest(
                f"{key}: expected an ISO time like 2024-01-30T00:00:00+00:00, got {text!r}"
            ) from None

    try:
        limit = int(query.get("limit") or DEFAULT_LIMIT)
    except ValueError:
        raise BadRequest(f"limit: expected a number, got {query.get('limit')!r}") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise BadRequest(f"limit: expected 1 to {MAX_LIMIT}, got {limit}")
    return Filters(
        workflow=query.get("workflow") or None,
        phases=phases,
        since=when("from"),
        until=when("to"),
        limit=limit,
        cursor=decode_cursor(query["cursor"]) if query.get("cursor") else None,
    )


def _sort_key(s: SessionSummary) -> tuple[float, str, str]:
    return (-_epoch(s.session_time), s.namespace, s.name)


def encode_cursor(key: tuple[float, str, str]) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(key)).encode()).decode().rstrip("=")


def decode_cursor(text: str) -> tuple[float, str, str]:
    try:
        raw = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
        t, ns, name = raw
        return (float(t), str(ns), str(name))
    except (ValueError, TypeError, binascii.Error):
        raise BadRequest("cursor: not a cursor this server made (take `next` of the previous page)") from None


def page(sessions: Iterable[SessionSummary], f: Filters) -> tuple[list[SessionSummary], str | None]:
    """The sessions that pass the filters, newest session time first (then namespace, name), from
    the position after `f.cursor`; and the cursor of the next page (None: this is the last)."""
    chosen = []
    for s in sessions:
        if f.workflow and s.workflow != f.workflow:
            continue
        if f.phases and s.phase not in f.phases:
            continue
        t = _epoch(s.session_time)
        if (f.since is not None and t < f.since) or (f.until is not None and t >= f.until):
            continue
        key = _sort_key(s)
        if f.cursor is not None and key <= f.cursor:
            continue
        chosen.append((key, s))
    chosen.sort(key=lambda ks: ks[0])
    items = chosen[: f.limit]
    nxt = encode_cursor(items[-1][0]) if len(chosen) > f.limit else None
    return [s for _, s in items], nxt


def changed_rows(
    before: Mapping[int, Mapping[str, Any]], after: Sequence[Mapping[str, Any]]
) -> list[Mapping[str, Any]]:
    """The task rows (JSON) that are new or differ from `before` (by id)."""
    return [r for r in after if before.get(int(r["id"])) != r]


# --------------------------------------------------------------------------------------- gantt


def _successors(rows: Sequence[TaskRow]) -> dict[int, list[int]]:
    """Who waited for each task: its direct downstreams; for the last tasks of a group (no
    downstream inside it), the group's downstreams, up through the ancestors."""
    by_id = {r.id: r for r in rows}
    downs: dict[int, list[int]] = {r.id: [] for r in rows}
    for r in rows:
        for u in r.upstreams:
            if u in downs:
                downs[u].append(r.id)
    out: dict[int, list[int]] = {}
    for r in rows:
        node: TaskRow | None = r
        while node is not None and not downs[node.id]:
            node = by_id.get(node.parent) if node.parent is not None else None
        out[r.id] = downs[node.id] if node is not None else []
    return out


def _first_start(
    r: TaskRow, rows: Sequence[TaskRow], children: Mapping[int, list[int]], by_id: Mapping[int, TaskRow]
) -> float | None:
    """When a task began its work: its container start, else its start; a group's is its first
    child's."""
    if r.running_at is not None:
        return r.running_at
    starts = [
        s for c in children.get(r.id, ()) if (s := _first_start(by_id[c], rows, children, by_id)) is not None
    ]
    if starts:
        return min(starts)
    return r.started_at


def gantt(rows: Sequence[TaskRow], attempt: int | None) -> dict[str, Any]:
    """The Gantt rows of the current attempt with the step gap (`gapAfter`, seconds)."""
    by_id = {r.id: r for r in rows}
    children: dict[int, list[int]] = {}
    for r in rows:
        if r.parent is not None:
            children.setdefault(r.parent, []).append(r.id)
    succ = _successors(rows)
    starts = {r.id: _first_start(r, rows, children, by_id) for r in rows}
    out = []
    times: list[float] = []
    for r in rows:
        gap = None
        nexts = [starts[s] for s in succ[r.id] if starts.get(s) is not None]
        if r.finished_at is not None and nexts:
            gap = round(max(0.0, min(t for t in nexts if t is not None) - r.finished_at), 3)
        out.append(
            {
                "id": r.id,
                "name": r.name,
                "parent": r.parent,
                "state": r.state,
                "readyAt": r.ready_at,
                "startedAt": r.started_at,
                "podCreatedAt": r.pod_created_at,
                "runningAt": r.running_at,
                "finishedAt": r.finished_at,
                "gapAfter": gap,
            }
        )
        times.extend(
            t
            for t in (r.ready_at, r.started_at, r.pod_created_at, r.running_at, r.finished_at)
            if t is not None
        )
    return {
        "attempt": attempt,
        "start": min(times) if times else None,
        "end": max(times) if times else None,
        "rows": out,
    }


# ------------------------------------------------------------------------------------ workflows


def workflow_item(obj: Mapping[str, Any]) -> dict[str, Any]:
    meta, spec, status = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
    return {
        "namespace": meta.get("namespace", ""),
        "objectName": meta.get("name", ""),
        "name": status.get("workflowName") or spec.get("name") or meta.get("name", ""),
        "revision": status.get("revision"),
        "timezone": status.get("timezone"),
        "schedule": status.get("schedule"),
        "nextSessionTime": status.get("nextSessionTime"),
        "nextRunTime": status.get("nextRunTime"),
        "suspended": bool(spec.get("suspend")),
        "error": status.get("error"),
    }


def calendar(
    schedule: Any,
    tz: tzinfo,
    sessions: Sequence[tuple[SessionSummary, Mapping[str, Any]]],
    now: datetime,
    count: int = 20,
    max_skipped: int = 500,
) -> dict[str, Any]:
    """The next `count` session times (in the workflow's zone) and the past: the Sessions of the
    workflow, newest first, plus the slots the schedule passed without a Session (`skipped`),
    back from now to the oldest scheduled Session (at most `max_skipped` slots back). `schedule` is a
    `kudig.schedule.Schedule` or None."""
    nxt: list[str] = []
    past: list[dict[str, Any]] = [
        {
            "sessionTime": s.session_time,
            "phase": s.phase,
            "session": s.name,
            "backfill": bool(flags.get("backfill")),
            "skipped": False,
        }
        for s, flags in sessions
    ]
    if schedule is not None:
        slot = schedule.first_schedule_time(now)
        while not slot.finished and len(nxt) < count:
            nxt.append(slot.session_time.astimezone(tz).isoformat())
            slot = schedule.next_schedule_time(slot.session_time)
        scheduled = [_epoch(s.session_time) for s, flags in sessions if flags.get("scheduled")]
        if scheduled:
            # back from now to the oldest scheduled Session: the slots without a Session
            have = {_epoch(s.session_time) for s, _ in sessions}
            oldest = min(scheduled)
            slot = schedule.last_schedule_time(now)
            for _ in range(max_skipped):
                t = slot.session_time.timestamp()
                if t <= oldest:
                    break
                if slot.run_time <= now and t not in have:
                    past.append(
                        {
                            "sessionTime": slot.session_time.astimezone(tz).isoformat(),
                            "phase": None,
                            "session": None,
                            "backfill": False,
                            "skipped": True,
                        }
                    )
                slot = schedule.last_schedule_time(slot.session_time)
    past.sort(key=lambda p: -_epoch(str(p["sessionTime"])))
    return {"next": nxt, "past": past}
