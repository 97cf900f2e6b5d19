"""The runner's input/output protocol (see docs/architecture.md, "Runner").

The controller (or `kudig run`) writes one input JSON file per task and reads back one output JSON
file. In a pod the output file is the container's termination message, which Kubernetes caps at
4096 bytes, so `write_output` can enforce a byte limit: an output that does not fit is replaced by
an error output that does.

Input::

    {"task_name": "+wf+t", "type": "sh", "config": {"_command": "echo hi", ...},
     "params": {...}, "env": {"NAME": "value"}, "secrets": {"secret.key": "ENV_VAR"},
     "workdir": "sub/dir"}

Output::

    {"store_params": {}, "export_params": {}, "subtask_config": null,
     "reset_store_params": [], "error": null}

`error` is null or `{"message": str, "class": str, "backtrace": str}` (`backtrace` is a
multi-line text, possibly empty). The exit status of the runner is 0 iff `error` is null.

Standard library only: this package is copied into users' images.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any, TypedDict

MIN_OUTPUT_BYTES = 256  # room for any error output (the class name is cut to 80 characters)

# "class" is a keyword, so the functional TypedDict syntax is the only way to name that key.
ErrorDict = TypedDict("ErrorDict", {"message": str, "class": str, "backtrace": str})


class TaskInput(TypedDict):
    task_name: str
    type: str
    config: dict[str, Any]
    params: dict[str, Any]
    env: dict[str, Any]
    secrets: dict[str, str]
    workdir: str


class TaskOutput(TypedDict):
    store_params: dict[str, Any]
    export_params: dict[str, Any]
    subtask_config: dict[str, Any] | None
    reset_store_params: list[str]
    error: ErrorDict | None


class ProtocolError(Exception):
    """The input file is not a valid task input."""


def empty_output() -> TaskOutput:
    return {
        "store_params": {},
        "export_params": {},
        "subtask_config": None,
        "reset_store_params": [],
        "error": None,
    }


def error_output(message: str, error_class: str = "RuntimeError", backtrace: str = "") -> TaskOutput:
    out = empty_output()
    out["error"] = {"message": message, "class": error_class, "backtrace": backtrace}
    return out


def _expect_dict(data: dict[str, Any], key: str) -> dict[str, Any]:
    value = data.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ProtocolError(f"task input: {key!r} must be an object, got {type(value).__name__}")
    return value


def parse_input(data: Any) -> TaskInput:
    """Validate a decoded input document and fill in defaults."""
    if not isinstance(data, dict):
        raise ProtocolError("task input must be a JSON object")
    task_type = data.get("type")
    if not isinstance(task_type, str) or not task_type:
        raise ProtocolError("task input: 'type' must be a non-empty string")
    secrets = _expect_dict(data, "secrets")
    for key, var in secrets.items():
        if not isinstance(var, str):
            raise ProtocolError(f"task input: secrets[{key!r}] must be an environment variable name")
    workdir = data.get("workdir") or ""
    if not isinstance(workdir, str):
        raise ProtocolError("task input: 'workdir' must be a string")
    task_name = data.get("task_name") or ""
    if not isinstance(task_name, str):
        raise ProtocolError("task input: 'task_name' must be a string")
    return {
        "task_name": task_name,
        "type": task_type,
        "config": _expect_dict(data, "config"),
        "params": _expect_dict(data, "params"),
        "env": _expect_dict(data, "env"),
        "secrets": secrets,
        "workdir": workdir,
    }


def read_input(path: str | os.PathLike[str]) -> TaskInput:
    """Read and validate a task input file. Raises ProtocolError on bad content."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise ProtocolError(f"task input is not valid JSON: {e}") from None
    return parse_input(data)


def normalize_output(data: Any) -> TaskOutput:
    """Coerce a (possibly partial, possibly foreign) output document into a TaskOutput.

    Unknown keys are dropped; wrong types become an error output rather than an exception.
    """
    if not isinstance(data, dict):
        return error_output("task output must be a JSON object", "ProtocolError")
    out = empty_output()
    for key in ("store_params", "export_params"):
        value = data.get(key)
        if value is None:
            continue
        if not isinstance(value, dict):
            return error_output(f"task output: {key!r} must be an object", "ProtocolError")
        out[key] = value
    subtasks = data.get("subtask_config")
    if subtasks is not None:
        if not isinstance(subtasks, dict):
            return error_output("task output: 'subtask_config' must be an object", "ProtocolError")
        out["subtask_config"] = subtasks or None
    reset = data.get("reset_store_params")
    if reset is not None:
        if not isinstance(reset, list) or not all(isinstance(k, str) for k in reset):
            return error_output(
                "task output: 'reset_store_params' must be a list of strings", "ProtocolError"
            )
        out["reset_store_params"] = reset
    error = data.get("error")
    if error is not None:
        if isinstance(error, dict):
            backtrace = error.get("backtrace") or ""
            if isinstance(backtrace, list):
                backtrace = "".join(str(line) for line in backtrace)
            out["error"] = {
                "message": str(error.get("message") or "task failed"),
                "class": str(error.get("class") or "RuntimeError"),
                "backtrace": str(backtrace),
            }
        else:
            out["error"] = {"message": str(error), "class": "RuntimeError", "backtrace": ""}
    return out


def dumps_output(output: TaskOutput) -> bytes:
    """The exact bytes written for an output: compact UTF-8 JSON."""
    return json.dumps(output, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")


def _longest(fits: Callable[[int], bool], upper: int) -> int:
    """The largest n in [0, upper] with fits(n) true (fits is monotone, fits(0) assumed)."""
    lo, hi = 0, upper
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


def _fit_error(error: ErrorDict, max_bytes: int) -> bytes | None:
    """An error output within max_bytes: the message head and the backtrace tail that fit."""
    message, backtrace = error["message"], error["backtrace"]
    cut = "...(truncated)"

    def build(msg_len: int, bt_len: int) -> bytes:
        msg = message if msg_len >= len(message) else message[:msg_len] + cut
        bt = backtrace if bt_len >= len(backtrace) else (cut + "\n" + backtrace[-bt_len:] if bt_len else "")
        return dumps_output(error_output(msg, error["class"][:80], bt))

    if len(build(0, 0)) > max_bytes:
        return None
    msg_len = _longest(lambda n: len(build(n, 0)) <= max_bytes, len(message))
    # The innermost frames and the exception line are at the end of a backtrace: keep its tail.
    bt_len = _longest(lambda n: len(build(msg_len, n)) <= max_bytes, len(backtrace))
    return build(msg_len, bt_len)


def fit_output(output: TaskOutput, max_bytes: int | None = None) -> bytes:
    """Serialise `output`, replacing or trimming it so that it fits in `max_bytes`.

    A successful output that is too large becomes an error output (the task fails: digdag would
    have accepted it, but a termination message cannot carry it). An error output is trimmed
    (backtrace, then message). Store/export params are never truncated silently.
    """
    if max_bytes is not None and max_bytes < MIN_OUTPUT_BYTES:
        raise ValueError(f"max_bytes must be at least {MIN_OUTPUT_BYTES}")
    try:
        data = dumps_output(output)
    except (TypeError, ValueError) as e:
        output = error_output(f"task output is not serializable as JSON: {e}", "TypeError")
        data = dumps_output(output)
    if max_bytes is None or len(data) <= max_bytes:
        return data
    if output["error"] is None:
        too_large = error_output(
            f"Task result is too large ({len(data)} bytes > {max_bytes}): keep stored/exported "
            "params and generated subtasks small (pass large data through files or external storage)",
            "ResultTooLarge",
        )
        data = dumps_output(too_large)
        if len(data) <= max_bytes:
            return data
        output = too_large
    assert output["error"] is not None
    fitted = _fit_error(output["error"], max_bytes)
    if fitted is not None:
        return fitted
    return dumps_output(error_output("Task result is too large", "ResultTooLarge"))


def write_output(path: str | os.PathLike[str], output: TaskOutput, *, max_bytes: int | None = None) -> None:
    """Write `output` (see `fit_output`) to `path`."""
    data = fit_output(output, max_bytes)
    with open(path, "wb") as f:
        f.write(data)


class RunnerError(Exception):
    """A task failure the runner reports as an error output (no backtrace: it is not a bug)."""

    def __init__(self, message: str, error_class: str = "RuntimeError") -> None:
        super().__init__(message)
        self.message = message
        self.error_class = error_class


def merged_params(task_input: TaskInput, nested: str | None = None) -> dict[str, Any]:
    """The parameters an operator sees, as digdag's `request.getConfig().mergeDefault(nested)`.

    `params` (everything the task sees) with the task's own `config` on top; then, when `nested`
    names an operator key (`sh`, `py`, ...), that key's map supplies defaults for keys not set
    (so `_export: {py: {python: python3}}` sets `python`). The nested maps of `params` and
    `config` are merged one level deep, the config's entries winning.
    """
    merged: dict[str, Any] = dict(task_input["params"])
    for key, value in task_input["config"].items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    if nested is not None:
        defaults = merged.get(nested)
        if isinstance(defaults, dict):
            for key, value in defaults.items():
                merged.setdefault(key, value)
    return merged
