"""`require>` on the cluster, pure: a task that waits for another workflow's Session.

digdag (`RequireOperatorFactory`): start the target workflow's session for `session_time`
(default: this session's) unless one exists, then wait until it is done; fail when it failed
(unless `ignore_failure`). `rerun_on` (none|failed|all, default none) starts a new attempt of a
session that had already finished (failed, or any) when the task started. `params` are the only
params the new session gets.

Here the Session's name is derived from its Workflow and session time (`session_name`), so "the
session of W at T" is one object: created once whoever asks, and never busy-polled — the task
records what it waits for in its state params, and the controller re-plans this Session when the
target finishes (plus a slow fallback timer). Each step is a function of the record and what the
API server says of the target, so a crash anywhere repeats at most an idempotent create or patch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from kudig.api import ANNOTATION_REQUIRED_BY, TERMINAL, session_manifest
from kudig.engine.core import Event, StartTask, TaskFailed, TaskSucceeded
from kudig.engine.state import Task
from kudig.naming import session_name

OP = "require"
KEY = "require"  # the task's state param holding the record
#: Re-plan a waiting task this often even without news (a lost watch event, a restart).
FALLBACK_SECONDS = 60.0

#: (workflow name, project or None for this one's) -> Workflow object name, or None
Resolver = Callable[[str, str | None], str | None]


@dataclass
class RequireSteps:
    """What the plan must do for the session's require> tasks."""

    events: list[Event] = field(default_factory=list)
    create: list[dict[str, Any]] = field(default_factory=list)  # Sessions to create
    rerun: dict[str, dict[str, Any]] = field(default_factory=dict)  # Session name -> spec patch
    waiting: list[str] = field(default_factory=list)  # Sessions whose end re-plans this one


def _flag(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.lower() == "true")


def start(
    action: StartTask, local: Mapping[str, Any], default_time: datetime, resolve: Resolver
) -> dict[str, Any]:
    """The record of a require> task that starts now; raises ValueError for a bad config.

    Options come from the task's own keys (`local`), evaluated: the params it inherits include
    built-ins such as `project_id` that are not options."""
    config = {k: v for k, v in action.config.items() if k in local or k == "_command"}
    target = config.get("_command")
    if not isinstance(target, str) or not target:
        raise ValueError("require> needs a workflow name")
    if "project_id" in config:
        if "project_name" in config:
            raise ValueError("require>: set project_id or project_name, not both")
        raise ValueError("require>: project_id is not supported on kudig; use project_name")
    project = config.get("project_name")
    obj = resolve(target, str(project) if project is not None else None)
    if obj is None:
        where = f"project '{project}'" if project is not None else "this project"
        raise ValueError(f"require>: workflow '{target}' not found in {where}")
    raw_time = config.get("session_time")
    when: datetime | None = default_time
    if raw_time is not None:
        try:
            when = datetime.fromisoformat(str(raw_time).replace("Z", "+00:00"))
        except ValueError:
            when = None
        if when is None or when.tzinfo is None:
            raise ValueError(
                f"require>: session_time must be ISO-8601 with an offset, e.g. 2024-01-30T00:00:00+00:00, "
                f"got {raw_time!r}"
            )
    assert when is not None
    rerun_on = str(config.get("rerun_on", "none"))
    if rerun_on not in ("none", "failed", "all"):
        raise ValueError(f"require>: rerun_on must be none, failed or all, got {rerun_on!r}")
    params = config.get("params") or {}
    if not isinstance(params, Mapping):
        raise ValueError("require>: params must be a map")
    return {
        "workflow": obj,
        "session": session_name(obj, when),
        "sessionTime": when.isoformat(),
        "params": dict(params),
        "rerunOn": rerun_on,
        "ignoreFailure": _flag(config.get("ignore_failure", False)),
        "stage": "start",
    }


def _seen(target: Mapping[str, Any] | None) -> tuple[Mapping[str, Any], int, bool]:
    """The target's status, its attempt, and whether that attempt is over (no newer one asked)."""
    status = (target or {}).get("status") or {}
    spec = (target or {}).get("spec") or {}
    attempt = int(status.get("attempt") or 0)
    return status, attempt, status.get("phase") in TERMINAL and int(spec.get("attempt") or 1) <= attempt


def step(task: Task, target: Mapping[str, Any] | None, me: str, out: RequireSteps) -> None:
    """Advance one require> task given the target Session as last read (None: it does not exist)."""
    record = dict(task.state_params[KEY])
    name = str(record["session"])
    if task.cancel_requested:
        out.events.append(TaskFailed(task.id, "killed"))  # the engine makes it CANCELED
        return
    status, attempt, done = _seen(target)
    if record["stage"] == "start":
        record["stage"] = "wait"
        if target is None:
            manifest = session_manifest(
                str(record["workflow"]),
                datetime.fromisoformat(str(record["sessionTime"])),
                params=record["params"],
            )
            manifest["metadata"]["annotations"] = {ANNOTATION_REQUIRED_BY: f"{me}/{task.name}"}
            out.create.append(manifest)
            record["attempt"] = 1
        elif done and _rerun(record, status, target, me, task):
            record["attempt"] = attempt + 1
            out.rerun[name] = {"attempt": attempt + 1, "retryMode": "all", "kill": False, "resumeFrom": None}
        else:
            # it exists: wait for the attempt it runs, or decide now if that one is over
            record["attempt"] = max(attempt, int(((target or {}).get("spec") or {}).get("attempt") or 1))
        task.state_params[KEY] = record
        if target is None or name in out.rerun:
            out.waiting.append(name)
            return
    if target is None:
        out.events.append(TaskFailed(task.id, f"Required session {name} was deleted", retryable=False))
    elif not done or attempt < int(record.get("attempt") or 1):
        out.waiting.append(name)
    elif status.get("phase") == "Succeeded" or record["ignoreFailure"]:
        out.events.append(TaskSucceeded(task.id))
    else:
        message = f"Dependent workflow failed. Session: {name}, attempt: {attempt}"
        out.events.append(TaskFailed(task.id, message, retryable=False))


def _rerun(
    record: Mapping[str, Any], status: Mapping[str, Any], target: Mapping[str, Any], me: str, task: Task
) -> bool:
    annotations = (target.get("metadata") or {}).get("annotations") or {}
    if (
        annotations.get(ANNOTATION_REQUIRED_BY) == f"{me}/{task.name}"
        and int(status.get("attempt") or 0) <= 1
    ):
        return False  # created by this very task (a plan that did not commit): not a rerun
    rerun_on = record["rerunOn"]
    return rerun_on == "all" or (rerun_on == "failed" and status.get("phase") != "Succeeded")


def waiting_targets(state_tasks: list[dict[str, Any]]) -> list[str]:
    """The Sessions a stored state's running require> tasks wait for (rows as JSON)."""
    out = []
    for row in state_tasks:
        record = (row.get("state_params") or {}).get(KEY)
        if row.get("state") == "running" and not row.get("superseded") and isinstance(record, Mapping):
            out.append(str(record["session"]))
    return out


def is_require(task: Task) -> bool:
    return isinstance(task.state_params.get(KEY), Mapping)
