"""Pod observation: what a task pod says (`PodView`), and what that means for its task."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kudig_runner.protocol import ProtocolError, ResultPointer, read_framed_result, result_pointer

from kudig.api import ANNOTATION_TASK, TASK_CONTAINER
from kudig.engine.core import (
    Event,
    TaskFailed,
)
from kudig.engine.state import Task
from kudig.taskio import output_event
from kudig_operator.plan.conditions import parse_time

IMAGE_ERRORS = frozenset(
    {
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
        "ErrImageNeverPull",
        "CreateContainerConfigError",
    }
)


@dataclass(frozen=True)
class PodView:
    """What kudig needs of a task pod (from a watch event or a GET), small enough to cache."""

    name: str
    rv: str = ""
    owner_uid: str | None = None
    phase: str | None = None
    deleting: bool = False
    exit_code: int | None = None
    reason: str | None = None  # the task container's termination reason
    message: str = ""  # the task container's termination message (the runner's output)
    waiting: tuple[str, str] | None = None  # a container stuck on an image/config error
    init_failure: tuple[int, str] | None = None  # (exit code, message) of a failed init container
    pod_reason: str | None = None
    pod_message: str | None = None
    log: str | None = None  # the container log, fetched only when the output points to it
    seen: float | None = None  # when the controller received this view (a finished one: first seen so)
    task: str = ""  # the task's full name (annotation kudig.io/task)
    created_at: float | None = None  # the pod's creationTimestamp
    started_at: float | None = None  # when the task container started (running or terminated)

    @property
    def finished(self) -> bool:
        return self.phase in ("Succeeded", "Failed")

    @property
    def active(self) -> bool:
        return not self.finished and not self.deleting


def pod_view(pod: Mapping[str, Any], seen: float | None = None) -> PodView:
    meta = pod.get("metadata") or {}
    status = pod.get("status") or {}
    owner = next(
        (r.get("uid") for r in meta.get("ownerReferences") or [] if r.get("kind") == "Session"), None
    )
    container: Mapping[str, Any] = next(
        (c for c in status.get("containerStatuses") or [] if c.get("name") == TASK_CONTAINER), {}
    )
    terminated = (container.get("state") or {}).get("terminated") or {}
    waiting = None
    init_failure = None
    for c in [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]:
        w = (c.get("state") or {}).get("waiting") or {}
        if w.get("reason") in IMAGE_ERRORS:
            waiting = (str(w["reason"]), str(w.get("message") or ""))
    for c in status.get("initContainerStatuses") or []:
        t = (c.get("state") or {}).get("terminated") or {}
        if t.get("exitCode"):
            init_failure = (int(t["exitCode"]), str(t.get("message") or t.get("reason") or ""))
    code = terminated.get("exitCode")
    running = (container.get("state") or {}).get("running") or {}
    return PodView(
        name=str(meta.get("name", "")),
        rv=str(meta.get("resourceVersion", "")),
        owner_uid=owner,
        phase=status.get("phase"),
        deleting=bool(meta.get("deletionTimestamp")),
        exit_code=int(code) if code is not None else None,
        reason=terminated.get("reason"),
        message=str(terminated.get("message") or ""),
        waiting=waiting,
        init_failure=init_failure,
        pod_reason=status.get("reason") or status.get("message"),
        pod_message=status.get("message"),
        seen=seen,
        task=str((meta.get("annotations") or {}).get(ANNOTATION_TASK, "")),
        created_at=_timestamp(meta.get("creationTimestamp")),
        started_at=_timestamp(terminated.get("startedAt") or running.get("startedAt")),
    )


def _timestamp(value: Any) -> float | None:
    parsed = parse_time(value) if isinstance(value, str) else None
    return parsed.timestamp() if parsed is not None else None


def _output_doc(view: PodView) -> Any:
    text = view.message.strip()
    if not text.startswith("{"):
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


def _pointer(view: PodView) -> ResultPointer | None:
    try:
        return result_pointer(_output_doc(view))
    except ProtocolError:
        return None  # a malformed pointer: `pod_event` reports it


def log_lines_needed(view: PodView) -> int | None:
    """How many lines at the end of a finished pod's log hold its result (too large for a
    termination message), or None when the result is in the termination message."""
    if not view.finished:
        return None
    pointer = _pointer(view)
    return None if pointer is None else int(pointer["lines"])


def frame_complete(view: PodView, log_text: str) -> bool:
    """Whether `log_text` holds the whole result frame the pod's output points to."""
    pointer = _pointer(view)
    if pointer is None:
        return True
    try:
        read_framed_result(log_text, pointer)
    except ProtocolError:
        return False
    return True


def pod_event(task: Task, view: PodView | None) -> Event | None:
    """What a task pod says about its task, or None while it is still working."""
    if view is None:
        return TaskFailed(task.id, "Task pod was deleted while it was running", retryable=True)
    output = _output_doc(view)
    try:
        pointer = result_pointer(output)
    except ProtocolError as e:
        return TaskFailed(task.id, f"Invalid task output: {e}", retryable=True)
    if pointer is not None and view.finished:
        if view.log is None:
            return TaskFailed(
                task.id, "Task result lost: the task pod's log could not be read", retryable=True
            )
        try:
            output = read_framed_result(view.log, pointer)
        except ProtocolError as e:
            return TaskFailed(task.id, f"Task result lost: {e}", retryable=True)
    if view.phase == "Succeeded":
        return output_event(task.id, output or {})
    if view.phase == "Failed":
        if output and output.get("error"):
            return output_event(task.id, output)
        if view.pod_reason == "DeadlineExceeded":
            return TaskFailed(
                task.id, f"Task timed out: {view.pod_message or 'the pod ran past its deadline'}"
            )
        if view.init_failure is not None:
            code, message = view.init_failure
            return TaskFailed(task.id, f"Workspace preparation failed (exit code {code}): {message}".strip())
        if view.exit_code is not None:
            # digdag's sh> text ("(runtime)": the exception kind it appends); a pod-level reason
            # such as OOMKilled says more and takes its place
            reason = view.reason if view.reason and view.reason not in ("Error", "Completed") else "runtime"
            return TaskFailed(task.id, f"Command failed with code {view.exit_code} ({reason})")
        return TaskFailed(task.id, f"Task pod failed: {view.pod_reason or 'unknown reason'}")
    if view.waiting is not None:
        reason, message = view.waiting
        return TaskFailed(task.id, f"Task pod cannot start: {reason}: {message}".strip(), retryable=False)
    if view.deleting and not view.finished:
        return None  # being deleted: the DELETED event (or a 404) decides
    return None
