"""Reading a Session: its spec, status, and which pods and ConfigMaps must be observed."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kudig.api import TERMINAL
from kudig.engine.core import Engine
from kudig.engine.state import SessionState, Task, TaskState
from kudig.params import ancestors
from kudig.schema import SessionSpec, SessionStatus
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


@dataclass
class Warm:
    """What the controller keeps of its own last committed plan of a Session, so that the next
    plan starts where that one ended instead of from the whole stored state: the decoded state,
    the engine around it (its sets of running and waiting tasks), the pods of the running tasks,
    the Sessions their require> tasks wait for, and the pod names computed so far. Planning from
    it costs what the news touch, not the session's size. Consumed (mutated) by the plan."""

    state: SessionState
    memo: results.Memo
    engine: Engine | None = None
    pods: list[str] = field(default_factory=list)
    required: list[str] = field(default_factory=list)
    pod_names: dict[tuple[int, int], str] = field(default_factory=dict)  # (task id, retry) -> pod

    @property
    def cold(self) -> bool:
        """Decoded from the stored state, not kept from a plan: every running pod is observed."""
        return self.engine is None

    @classmethod
    def decoded(cls, obj: dict[str, Any], decoded: tuple[SessionState, results.Memo]) -> Warm:
        """A state decoded from the Session `obj` (not from a plan of ours): its running tasks'
        pods and require> targets found by walking it once."""
        state, memo = decoded
        attempt = max(int((obj.get("status") or {}).get("attempt") or 1), 1)
        name = str(obj["metadata"]["name"])
        running = [t for t in state.tasks if t.state == TaskState.RUNNING and not t.superseded]
        pods = [task_pod_name(name, attempt, state, t) for t in running if not is_require(t)]
        required = [str(t.state_params[require.KEY]["session"]) for t in running if is_require(t)]
        return cls(state, memo, None, pods, required)


Decoded = Warm


def _generation(rows: list[dict[str, Any]], row: dict[str, Any]) -> str:
    """Retry counts of the task and its ancestors: a new try gets a new pod name."""
    chain = [row]
    while chain[-1].get("parent") is not None:
        chain.append(rows[chain[-1]["parent"]])
    return ".".join(str(r.get("retry_count", 0)) for r in reversed(chain))


def task_pod_name(session: str, attempt: int, state: SessionState, task: Task) -> str:
    return pod_name(session, attempt, task.name, ".".join(str(t.retry_count) for t in ancestors(state, task)))


def prepare(obj: dict[str, Any], decoded: Decoded | None = None) -> SessionView:
    """Read a Session: its spec, status, and which pods and ConfigMaps must be observed.

    `decoded` is what the controller keeps of its own last status write when it wrote exactly this
    version of the Session (`Warm`: saves decoding the blob and walking the state); the plan
    consumes (mutates) it."""
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
        return SessionView(
            obj, status, spec, spec_error, None, list(decoded.pods), [], decoded, list(decoded.required)
        )
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
