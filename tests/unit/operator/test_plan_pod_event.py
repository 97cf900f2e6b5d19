"""The plan's pure pieces: pod status -> engine event, state encoding."""

from __future__ import annotations

import json

from kudig_operator.plan.pods import pod_event, pod_view

from kudig.engine.core import TaskFailed, TaskSucceeded
from kudig.engine.state import SessionState, Task, decode_state, encode_state


def task() -> Task:
    return Task(id=4, name="+wf+t", parent=0, upstreams=[], is_group=False, config={})


def pod(phase: str, message: str = "", exit_code: int = 0, waiting: str | None = None) -> dict:
    state = (
        {"waiting": {"reason": waiting, "message": "x"}}
        if waiting
        else {"terminated": {"exitCode": exit_code, "message": message, "reason": "Error"}}
    )
    return {"status": {"phase": phase, "containerStatuses": [{"name": "task", "state": state}]}}


def view(phase: str, message: str = "", exit_code: int = 0, waiting: str | None = None):  # type: ignore[no-untyped-def]
    return pod_view(pod(phase, message, exit_code, waiting))


def test_success_with_termination_message() -> None:
    out = {
        "store_params": {"a": 1},
        "export_params": {},
        "subtask_config": None,
        "reset_store_params": [],
        "error": None,
    }
    event = pod_event(task(), view("Succeeded", json.dumps(out)))
    assert isinstance(event, TaskSucceeded) and event.result.store_params == {"a": 1}


def test_failures() -> None:
    event = pod_event(task(), view("Failed", exit_code=3))
    assert isinstance(event, TaskFailed) and event.message == "Command failed with code 3 (runtime)"
    out = {"error": {"message": "Python command failed with code 1", "class": "X", "backtrace": ""}}
    event = pod_event(task(), view("Failed", json.dumps(out), 1))
    assert isinstance(event, TaskFailed) and event.message.startswith("Python command failed")
    event = pod_event(task(), None)
    assert isinstance(event, TaskFailed) and event.retryable and "deleted" in event.message
    event = pod_event(task(), view("Pending", waiting="ErrImageNeverPull"))
    assert isinstance(event, TaskFailed) and not event.retryable
    assert pod_event(task(), view("Running")) is None


def test_state_encoding_round_trips_and_is_compact() -> None:
    state = SessionState(
        [
            Task(
                id=i,
                name=f"+wf+t{i}",
                parent=0 if i else None,
                upstreams=[i - 1] if i > 1 else [],
                is_group=i == 0,
                config={"_type": "sh", "_command": "echo hello world"},
            )
            for i in range(1001)
        ]
    )
    blob = encode_state(state)
    assert decode_state(blob).to_json() == state.to_json()
    assert len(blob) < 64 * 1024, len(blob)
