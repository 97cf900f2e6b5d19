"""Kubernetes Events on Sessions: what a plan says happened, as `kubectl describe session` shows it.

A plan (`plan.plan_session`) lists the `SessionEvent`s its status write commits — an attempt
started, a task failed or is retried, an SLA deadline passed, the attempt succeeded, failed or was
killed — and the controller creates them only after that write succeeded, so a plan dropped on a
409 emits nothing and its re-plan emits each once. Messages hold only task names and error
messages already in the Session's status (never a parameter or a secret value), cut short.

Events survive a controller crash (an outbox in the committed state): the status write that
commits a plan also records its Events (`status.lastEvents`, an `Outbox`: at most the plan's few,
capped by `MAX_TASK_EVENTS`), and the next status write the Session makes anyway replaces them
(no write only to clear them; a finished Session keeps its last ones). Each Event's name derives
from the Session and its place in the outbox (`event_name`: the Session's name, the outbox's id —
the commit's time, then a hash of the Session's uid and the resourceVersion the write replaced, so
unique per commit — and the Event's index), so creating it twice meets AlreadyExists (409), which is "already there",
never an error nor a duplicate. A controller that did not write the version it reads (a restart,
a 409, a foreign write: `plan.outbox.owed`) creates that version's Events again before its own
write drops them; the controller that wrote it created them right after the write.

Events are core/v1 `Event`s in the Session's namespace (RBAC: `events` create), written in the
long-standing form (`firstTimestamp`/`lastTimestamp`: when the plan committed, `count: 1`,
`source.component`) with `reportingComponent` `kudig.io/controller` and the controller's identity
as `reportingInstance`. Creating one must never fail a reconcile: the controller logs the error
and goes on.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kudig.api import API_VERSION
from kudig.schema import EventRecord, LastEvents

REPORTING_CONTROLLER = "kudig.io/controller"
SOURCE_COMPONENT = "kudig-controller"
NORMAL, WARNING = "Normal", "Warning"
STARTED, TASK_FAILED, RETRYING = "Started", "TaskFailed", "Retrying"
SUCCEEDED, FAILED, KILLED, SLA_MISSED = "Succeeded", "Failed", "Killed", "SLAMissed"
MAX_ERROR_CHARS = 200  # of an error message quoted in an event
MAX_MESSAGE_CHARS = 1000  # of a whole message (the API server's limit is 1 KiB for the new API)
MAX_TASK_EVENTS = 10  # task events per status write; more are summed up in one more event
MAX_NAME_CHARS = 253  # an Event's name is a DNS subdomain


@dataclass(frozen=True)
class SessionEvent:
    type: str  # Normal | Warning
    reason: str
    message: str


def cut(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    """`text` on one line, at most `limit` characters (an ellipsis says it was cut)."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _time(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse(text: str) -> float:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        return 0.0
    return (value if value.tzinfo is not None else value.replace(tzinfo=UTC)).timestamp()


@dataclass(frozen=True)
class Outbox:
    """The Events one status write commits (as `status.lastEvents` records them): `id` is unique
    per commit (`outbox_id`), `at` when it was planned (the Events' timestamps)."""

    id: str
    at: float
    events: tuple[SessionEvent, ...]

    def named(self, session: str) -> list[tuple[str, SessionEvent]]:
        """Each Event with its name: the same on every controller, so a repeat meets 409."""
        return [(event_name(session, self.id, i), e) for i, e in enumerate(self.events)]

    def record(self) -> dict[str, Any]:
        """As the status holds it."""
        return LastEvents(
            id=self.id,
            at=_time(self.at),
            events=[
                EventRecord(type=e.type, reason=e.reason, message=cut(e.message, MAX_MESSAGE_CHARS))
                for e in self.events
            ],
        ).model_dump(by_alias=True)

    @classmethod
    def of(cls, record: LastEvents) -> Outbox:
        return cls(
            record.id,
            _parse(record.at),
            tuple(SessionEvent(e.type, e.reason, e.message) for e in record.events),
        )


def outbox_id(uid: str, resource_version: str, events: Iterable[SessionEvent], at: float) -> str:
    """Unique per status write of a Session (only one write can replace a given resourceVersion),
    and per list of Events a plan made from that version without a write; it starts with `at` in
    nanoseconds (hex, as client-go names Events), so a listing by name is in time order."""
    digest = hashlib.sha256(f"{uid}/{resource_version}".encode())
    for e in events:
        digest.update(f"\0{e.type}\0{e.reason}\0{e.message}".encode())
    return f"{max(0, int(at * 1e9)):016x}{digest.hexdigest()[:12]}"


def event_name(session: str, outbox: str, index: int) -> str:
    """The name of Event `index` of outbox `outbox` about `session` (a valid DNS subdomain: the
    Session's name cut short, without a trailing dot or dash, then `.<outbox>-<index, hex>`)."""
    suffix = f".{outbox}-{index:02x}"
    return session[: MAX_NAME_CHARS - len(suffix)].rstrip(".-") + suffix


def event_body(
    session: Mapping[str, Any], name: str, event: SessionEvent, at: float, instance: str
) -> dict[str, Any]:
    """The core/v1 Event `name` for `event` about `session` (its metadata: name, namespace, uid),
    which happened at `at`."""
    meta = session["metadata"]
    stamp = _time(at)
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": name, "namespace": meta["namespace"]},
        "involvedObject": {
            "apiVersion": API_VERSION,
            "kind": "Session",
            "name": str(meta["name"]),
            "namespace": meta["namespace"],
            "uid": meta.get("uid", ""),
            "resourceVersion": meta.get("resourceVersion", ""),
        },
        "type": event.type,
        "reason": event.reason,
        "message": cut(event.message, MAX_MESSAGE_CHARS),
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
        "source": {"component": SOURCE_COMPONENT},
        "reportingComponent": REPORTING_CONTROLLER,
        "reportingInstance": instance[:128],
    }


__all__ = [
    "FAILED",
    "KILLED",
    "MAX_TASK_EVENTS",
    "NORMAL",
    "RETRYING",
    "SLA_MISSED",
    "STARTED",
    "SUCCEEDED",
    "TASK_FAILED",
    "WARNING",
    "Outbox",
    "SessionEvent",
    "cut",
    "event_body",
    "event_name",
    "outbox_id",
]
