"""Kubernetes Events on Sessions: what a plan says happened, as `kubectl describe session` shows it.

A plan (`plan.plan_session`) lists the `SessionEvent`s its status write commits — an attempt
started, a task failed or is retried, an SLA deadline passed, the attempt succeeded, failed or was
killed — and the controller creates them only after that write succeeded, so a plan dropped on a
409 emits nothing and its re-plan emits each once. Messages hold only task names and error
messages already in the Session's status (never a parameter or a secret value), cut short.

Events are core/v1 `Event`s in the Session's namespace (RBAC: `events` create), written in the
long-standing form (`firstTimestamp`/`lastTimestamp`, `count: 1`, `source.component`) with
`reportingComponent` `kudig.io/controller` and the controller's identity as `reportingInstance`.
Creating one must never fail a reconcile: the controller logs the error and goes on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kudig.api import API_VERSION

REPORTING_CONTROLLER = "kudig.io/controller"
SOURCE_COMPONENT = "kudig-controller"
NORMAL, WARNING = "Normal", "Warning"
STARTED, TASK_FAILED, RETRYING = "Started", "TaskFailed", "Retrying"
SUCCEEDED, FAILED, KILLED, SLA_MISSED = "Succeeded", "Failed", "Killed", "SLAMissed"
MAX_ERROR_CHARS = 200  # of an error message quoted in an event
MAX_MESSAGE_CHARS = 1000  # of a whole message (the API server's limit is 1 KiB for the new API)
MAX_TASK_EVENTS = 10  # task events per status write; more are summed up in one more event


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


def event_body(
    session: Mapping[str, Any], event: SessionEvent, now: float, instance: str, unique: str
) -> dict[str, Any]:
    """The core/v1 Event for `event` about `session` (its metadata: name, namespace, uid).
    `unique` makes the name unique (client-go names events `<object>.<unix nanoseconds hex>`)."""
    meta = session["metadata"]
    name = str(meta["name"])
    stamp = _time(now)
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{name[:200]}.{unique}", "namespace": meta["namespace"]},
        "involvedObject": {
            "apiVersion": API_VERSION,
            "kind": "Session",
            "name": name,
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
    "SessionEvent",
    "cut",
    "event_body",
]
