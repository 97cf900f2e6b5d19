"""The one task protocol: a work task's runner input, and its output as an engine event.

`kudig run` (subprocesses) and the controller (pods) both start work tasks through the runner
(`kudig_runner`, whose `protocol` module defines the wire format), so both build the input here
and turn the output into an engine event here. A task therefore sees the same input on this
machine and in a pod (`_env` values rendered once, the same way), and a result means the same
thing to both: local mode and the cluster cannot drift apart again.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kudig_runner.protocol import WORKFLOW_TEXT_KEY, TaskInput, normalize_output
from kudig_runner.shell import env_value

from kudig.engine.core import Event, StartTask, TaskFailed, TaskResult, TaskSucceeded
from kudig.errors import KudigError
from kudig.yamlload import Loader, YMap, plain

FETCHED_WORKFLOW = "http_call.dig"  # the name digdag gives a workflow http_call> fetched


def fetched_workflow(text: str) -> dict[str, Any]:
    """The subtask config of a workflow `http_call>` fetched (a `.dig`'s text), loaded like
    `call>` loads a file: `timezone`, `schedule` and `sla` do not apply to subtasks. The text is
    not in the project, so `!include` finds nothing. Raises KudigError when it is not a workflow."""
    data = Loader(Path("/nonexistent-kudig-http-call")).load_text(text, FETCHED_WORKFLOW)
    if not isinstance(data, YMap):
        raise KudigError(f"{FETCHED_WORKFLOW}: a workflow must be a YAML map of keys")
    result: dict[str, Any] = plain(
        {k: v for k, v in data.items() if k not in ("timezone", "schedule", "sla")}
    )
    return result


def task_env(config: Mapping[str, Any]) -> dict[str, str]:
    """The task's evaluated `_env` as environment strings (digdag's `JsonNode.toString()`:
    strings as they are, numbers/booleans/objects as compact JSON, non-ASCII unescaped)."""
    env_cfg = config.get("_env")
    if not isinstance(env_cfg, Mapping):
        return {}
    return {str(k): env_value(v) for k, v in env_cfg.items()}


def task_input(action: StartTask, secrets: Mapping[str, str]) -> TaskInput:
    """The runner input for a `StartTask`. `secrets` maps each `${secret:key}` the task may use
    to the environment variable that holds its value (never the value itself)."""
    config = dict(action.config)
    return {
        "task_name": action.name,
        "type": action.op_type,
        # The evaluated config already holds every parameter the task sees (digdag's merged
        # request config): sending it twice would double what a pod spec must carry.
        "config": config,
        "params": {},
        "env": task_env(config),
        "secrets": dict(secrets),
        "workdir": str(config.get("_workdir") or ""),
    }


def output_event(task_id: int, output: Any) -> Event:
    """The engine event for a runner output document (already decoded JSON, any shape).

    A pointer to a result in the pod's log (`result_in_log`) must be resolved by the caller
    first (`kudig_runner.protocol.read_framed_result`); one that reaches here is an error, never
    an empty success."""
    if isinstance(output, Mapping) and "result_in_log" in output:
        return TaskFailed(task_id, "Task result lost: it was not read from the task's log", retryable=True)
    out = normalize_output(output)
    error = out["error"]
    if error is not None:
        message = error["message"]
        return TaskFailed(task_id, message, retryable=True, error={"message": message})
    subtasks = out["subtask_config"]
    if subtasks is not None and set(subtasks) == {WORKFLOW_TEXT_KEY}:
        try:
            subtasks = fetched_workflow(str(subtasks[WORKFLOW_TEXT_KEY]))
        except KudigError as e:
            message = f"Invalid workflow fetched by http_call>: {e}"
            return TaskFailed(task_id, message, retryable=False, error={"message": message})
    return TaskSucceeded(
        task_id,
        TaskResult(
            store_params=out["store_params"],
            export_params=out["export_params"],
            subtask_config=subtasks or None,
            reset_store_params=tuple(out["reset_store_params"]),
        ),
    )
