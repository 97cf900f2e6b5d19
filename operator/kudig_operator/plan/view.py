"""Reading a Session: its spec, status, and which pods and ConfigMaps must be observed."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kudig.api import (
    TERMINAL,
    SessionSpec,
    SessionStatus,
)
from kudig.engine.state import SessionState, Task, TaskState
from kudig.params import ancestors
from kudig_operator import require, results
from kudig_operator.podspec import pod_name
from kudig_operator.require import is_require, waiting_targets


@dataclass
class SessionView:
    """A Session as read, with what the controller must observe before planning (`prepare`)."""

    obj: dict[str, Any]
    status: SessionStatus
    spec: SessionSpec | None
    spec_error: str | None
    data: dict[str, Any] | None  # the stored engine state, references unresolved
    pods: list[str]  # pod names of the running tasks (their statuses are inputs)
    refs: list[str]  # result ConfigMaps the state refers to
    decoded: Decoded | None = None  # the state already decoded (consumed by the plan)
    required: list[str] = field(default_factory=list)  # Sessions running require> tasks wait for

    @property
    def namespace(self) -> str:
        return str(self.obj["metadata"]["namespace"])

    @property
    def name(self) -> str:
        return str(self.obj["metadata"]["name"])

    @property
    def uid(self) -> str:
        return str(self.obj["metadata"].get("uid", ""))

    @property
    def finished(self) -> bool:
        """Terminal, and no new attempt asked for: nothing to run."""
        attempt = self.status.attempt or 0
        return self.status.phase in TERMINAL and (self.spec is None or self.spec.attempt <= attempt)


Decoded = tuple[SessionState, results.Memo]


def _generation(rows: list[dict[str, Any]], row: dict[str, Any]) -> str:
    """Retry counts of the task and its ancestors: a new try gets a new pod name."""
    chain = [row]
    while chain[-1].get("parent") is not None:
        chain.append(rows[chain[-1]["parent"]])
    return ".".join(str(r.get("retry_count", 0)) for r in reversed(chain))


def _running(state: SessionState) -> list[Task]:
    """Running tasks with a pod (a require> task has none: it waits for a Session)."""
    return [t for t in state.tasks if t.state == TaskState.RUNNING and not t.superseded and not is_require(t)]


def task_pod_name(session: str, attempt: int, state: SessionState, task: Task) -> str:
    return pod_name(session, attempt, task.name, ".".join(str(t.retry_count) for t in ancestors(state, task)))


def prepare(obj: dict[str, Any], decoded: Decoded | None = None) -> SessionView:
    """Read a Session: its spec, status, and which pods and ConfigMaps must be observed.

    `decoded` is the engine state of exactly this version of the Session, when the controller
    still holds it from its own last status write (saves decoding the blob); the plan consumes
    (mutates) it."""
    status = SessionStatus.model_validate(obj.get("status") or {})
    spec: SessionSpec | None = None
    spec_error = None
    try:
        spec = SessionSpec.model_validate(obj.get("spec") or {})
    except ValueError as e:
        spec_error = f"Invalid Session spec: {e}"
    pods: list[str] = []
    refs: list[str] = []
    if spec is not None and status.phase in TERMINAL and spec.attempt <= (status.attempt or 0):
        # finished: nothing to observe, and the plan needs no state (a controller starting up
        # meets every finished Session of the cluster once)
        return SessionView(obj, status, spec, spec_error, None, [], [])
    if status.engine is None:
        decoded = None
    if decoded is not None:
        state = decoded[0]
        attempt = max(status.attempt or 1, 1)
        pods = [task_pod_name(str(obj["metadata"]["name"]), attempt, state, t) for t in _running(state)]
        required = waiting_targets([t.to_json() for t in state.tasks if is_require(t)])
        return SessionView(obj, status, spec, spec_error, None, pods, [], decoded, required)
    data = results.decode_json(status.engine.data) if status.engine is not None else None
    if data is not None:
        refs = results.refs(data)
        rows = data.get("tasks", [])
        attempt = max(status.attempt or 1, 1)
        name = str(obj["metadata"]["name"])
        pods = [
            pod_name(name, attempt, r["name"], _generation(rows, r))
            for r in rows
            if r.get("state") == TaskState.RUNNING.value
            and not r.get("superseded")
            and require.KEY not in (r.get("state_params") or {})
        ]
        return SessionView(obj, status, spec, spec_error, data, pods, refs, required=waiting_targets(rows))
    return SessionView(obj, status, spec, spec_error, data, pods, refs)
