"""Control operators: pure functions from a task's evaluated config to a result.

digdag runs call/loop/for_each/for_range/if/fail/echo/wait in its own process; they only
generate subtasks or decide, so they need no container. Keeping them pure (the only I/O is
reading a called `.dig` from the project directory) lets the engine run them inline, in the
controller and in `kudig run` alike, with no pod and no round-trip.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote

from kudig.compiler import TOP_LEVEL_KEYS, base_workdir, call_target, parse_parallel, suggest
from kudig.errors import KudigError
from kudig.yamlload import YMap, load_dig, plain

# `notify>` is not one: it sends through the configured notifier (mail, HTTP), so it runs in the
# task runner (kudig_runner/notify_op.py), never in the controller.
CONTROL_TYPES = frozenset({"call", "loop", "for_each", "for_range", "if", "fail", "echo", "wait", "nop"})
# digdag's BaseOperator subclasses honour `_retry` on their own failure; the rest never retry.
SELF_RETRYING = frozenset(
    {"sh", "py", "rb", "call", "require", "http", "http_call", "mail", "pg", "td", "param_get", "param_set"}
    | {"td_run", "td_wait", "td_wait_table", "td_for_each"}
    | {"td_load", "td_table_export", "td_result_export", "td_partial_delete"}
)


class TaskFailure(KudigError):
    """The task failed; `retryable` is False for errors `_retry` must not repeat (digdag's ConfigException)."""

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


@dataclass(slots=True)
class OpResult:
    subtask_config: dict[str, Any] | None = None
    store_params: dict[str, Any] = field(default_factory=dict)
    export_params: dict[str, Any] = field(default_factory=dict)
    reset_store_params: list[str] = field(default_factory=list)
    poll_after: float | None = None
    state_params: dict[str, Any] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)


@dataclass(slots=True)
class OpContext:
    task_name: str
    config: dict[str, Any]
    state_params: dict[str, Any]
    now: float
    project_dir: Path | None
    max_tasks: int
    call_stack: list[str]


def run_control(op_type: str, ctx: OpContext) -> OpResult:
    handler = _HANDLERS.get(op_type)
    if handler is None:
        raise TaskFailure(f"Unknown operator type: {op_type}", retryable=False)
    return handler(ctx)


def _command(ctx: OpContext, alias: str | None = None) -> Any:
    if "_command" in ctx.config:
        return ctx.config["_command"]
    if alias is not None and alias in ctx.config:
        return ctx.config[alias]
    return None


def _as_int(value: Any, what: str) -> int:
    if isinstance(value, bool):
        raise TaskFailure(f"Expected an integer for {what} but got {value!r}", retryable=False)
    try:
        return int(str(value).strip())
    except ValueError:
        raise TaskFailure(f"Expected an integer for {what} but got {value!r}", retryable=False) from None


def _parse_json_maybe(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _do_block(ctx: OpContext, key: str = "_do") -> dict[str, Any] | None:
    block = ctx.config.get(key)
    if block is None:
        return None
    if not isinstance(block, Mapping):
        raise TaskFailure(f"{key} must be a task definition (a map)", retryable=False)
    result: dict[str, Any] = copy.deepcopy(plain(block))
    return result


def _with_export(block: dict[str, Any], export: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(block)
    merged = dict(out.get("_export") or {})
    merged.update(export)
    out["_export"] = merged
    return out


def _parallel_keys(ctx: OpContext) -> dict[str, Any]:
    if "_parallel" not in ctx.config:
        return {}
    value = ctx.config["_parallel"]
    try:
        parse_parallel(value)
    except KudigError as e:
        raise TaskFailure(e.message, retryable=False) from None
    return {"_parallel": value}


def _op_echo(ctx: OpContext) -> OpResult:
    message = _command(ctx, "message")
    text = "" if message is None else message if isinstance(message, str) else json.dumps(message)
    return OpResult(log=[text])


def _op_nop(ctx: OpContext) -> OpResult:
    return OpResult()


def _op_fail(ctx: OpContext) -> OpResult:
    message = _command(ctx, "message")
    raise TaskFailure("" if message is None else str(message), retryable=False)


def _op_if(ctx: OpContext) -> OpResult:
    cond = _command(ctx)
    if "_do" not in ctx.config and "_else_do" not in ctx.config:
        raise TaskFailure("Both _do and _else_do are not specified.", retryable=False)
    if isinstance(cond, str) and cond.strip().lower() in ("true", "false"):
        value = cond.strip().lower() == "true"
    elif isinstance(cond, bool):
        value = cond
    else:
        raise TaskFailure(f"Expected 'true' or 'false' for if> but got {cond!r}", retryable=False)
    block = _do_block(ctx, "_do" if value else "_else_do")
    return OpResult(subtask_config=block)


def _generator(ctx: OpContext, op: str, count: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Shared by loop/for_each/for_range: the task limit, the `_do` block, `_parallel` copied."""
    if count > ctx.max_tasks:
        # digdag's words: for_range names the count, loop and for_each do not
        size = f" ({count})" if op == "for_range" else ""
        raise TaskFailure(f"Too many {op} subtasks{size}. Limit: {ctx.max_tasks}", retryable=False)
    block = _do_block(ctx)
    if block is None:
        raise TaskFailure(f"{op}> requires _do", retryable=False)
    return block, _parallel_keys(ctx)


def _op_loop(ctx: OpContext) -> OpResult:
    count = _as_int(_command(ctx, "count"), "loop> count")
    block, config = _generator(ctx, "loop", count)
    for i in range(count):
        config[f"+loop-{i}"] = _with_export(block, {"i": i})
    return OpResult(subtask_config=config)


def _for_each_name_part(text: str) -> str:
    """Java's URLEncoder (`*` kept, `~` encoded) with %20 for spaces, on the first 8 characters."""
    return quote(text[:8], safe="*").replace("~", "%7E")


def _op_for_each(ctx: OpContext) -> OpResult:
    spec = _parse_json_maybe(_command(ctx))
    if not isinstance(spec, Mapping):
        raise TaskFailure(f"for_each> expects a map of key: [values], got {spec!r}", retryable=False)
    keys = list(spec.keys())
    values: list[list[Any]] = []
    for key in keys:
        v = _parse_json_maybe(spec[key])
        if not isinstance(v, list):
            raise TaskFailure(f"for_each> values of '{key}' must be an array, got {v!r}", retryable=False)
        values.append(v)
    total = math.prod(len(v) for v in values) if values else 0
    block, config = _generator(ctx, "for_each", total)
    for combo in itertools.product(*[list(enumerate(v)) for v in values]):
        parts = []
        export: dict[str, Any] = {}
        for key_index, (key, (value_index, value)) in enumerate(zip(keys, combo, strict=True)):
            text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
            parts.append(
                f"{key_index}={_for_each_name_part(str(key))}={value_index}={_for_each_name_part(text)}"
            )
            export[str(key)] = value
        config["+for-" + "&".join(parts)] = _with_export(block, export)
    return OpResult(subtask_config=config)


def _op_for_range(ctx: OpContext) -> OpResult:
    spec = _parse_json_maybe(_command(ctx))
    if not isinstance(spec, Mapping):
        raise TaskFailure("for_range> expects {from, to, step | slices}", retryable=False)
    start = _as_int(spec.get("from"), "for_range> from")
    end = _as_int(spec.get("to"), "for_range> to")
    has_step, has_slices = spec.get("step") is not None, spec.get("slices") is not None
    # digdag's own words (ForRangeOperatorFactory)
    if has_step and has_slices:
        raise TaskFailure("Setting both step and slices options to for_range is invalid", retryable=False)
    if not has_step and not has_slices:
        raise TaskFailure("step or slices option is required for for_range", retryable=False)
    if has_step:
        step = _as_int(spec["step"], "for_range> step")
        if step < 1:
            raise TaskFailure(f"step option must be same or greater than 1 but got {step}", retryable=False)
    else:
        slices = _as_int(spec["slices"], "for_range> slices")
        if slices < 1:
            raise TaskFailure(
                f"slices option must be same or greater than 1 but got {slices}", retryable=False
            )
        step = max(1, math.ceil((end - start) / slices))
    bounds = list(range(start, end, step))
    block, config = _generator(ctx, "for_range", len(bounds))
    for index, lo in enumerate(bounds):
        hi = min(lo + step, end)
        config[f"+range-from={lo}&to={hi}"] = _with_export(
            block, {"range": {"from": lo, "to": hi, "index": index}}
        )
    return OpResult(subtask_config=config)


def _op_call(ctx: OpContext) -> OpResult:
    target = _command(ctx)
    if not isinstance(target, str) or not target:
        raise TaskFailure("call> expects a workflow file name", retryable=False)
    if ctx.project_dir is None:
        raise TaskFailure("call> needs the project files", retryable=False)
    try:
        key = call_target(str(ctx.config.get("_workdir") or ""), target)
    except KudigError as e:
        raise TaskFailure(e.message, retryable=False) from None
    if key in ctx.call_stack:
        chain = " -> ".join([*ctx.call_stack, key])
        raise TaskFailure(f"Recursive call> detected: {chain}", retryable=False)
    path = ctx.project_dir / key
    if not path.is_file():
        raise TaskFailure(f"call> workflow file not found: {key}", retryable=False)
    try:
        definition = load_dig(path, ctx.project_dir)
    except KudigError as e:
        raise TaskFailure(str(e), retryable=False) from None
    unknown = [k for k in definition if not k.startswith("+") and k not in TOP_LEVEL_KEYS]
    if unknown:
        raise TaskFailure(
            f"{key}: Workflow '{PurePosixPath(key).stem}' includes unknown keys: "
            + ", ".join(suggest(k, TOP_LEVEL_KEYS) for k in unknown),
            retryable=False,
        )
    config = YMap(definition.file, definition.line)
    config.key_lines = dict(definition.key_lines)
    for k, v in definition.items():
        if k not in ("timezone", "schedule", "sla"):
            config[k] = v
    own = config.get("_export")
    workdir = base_workdir(key, own.get("_workdir") if isinstance(own, Mapping) else None)
    if workdir is not None:
        export = dict(own) if isinstance(own, Mapping) else {}
        export["_workdir"] = workdir
        config["_export"] = export
    return OpResult(subtask_config=config, state_params={"called": key})


_DURATION = re.compile(r"^\s*(?:(\d+)\s*d)?\s*(?:(\d+)\s*h)?\s*(?:(\d+)\s*m)?\s*(?:(\d+)\s*s)?\s*$")


def parse_duration(text: Any) -> float:
    """digdag's DurationParam: `30s`, `10m`, `1h 30m`, `1d`, or plain seconds."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        return float(text)
    s = str(text).strip()
    if s.isdigit():
        return float(s)
    m = _DURATION.match(s)
    if not s or m is None or not any(m.groups()):
        raise TaskFailure(f"Invalid duration: {text!r} (expected e.g. 30s, 10m, 1h 30m, 1d)", retryable=False)
    d, h, mi, se = (int(g) if g else 0 for g in m.groups())
    return float(((d * 24 + h) * 60 + mi) * 60 + se)


def _op_wait(ctx: OpContext) -> OpResult:
    duration = parse_duration(_command(ctx))
    blocking = ctx.config.get("blocking", False)
    if "poll_interval" in ctx.config and str(blocking).lower() == "true":
        raise TaskFailure("wait> cannot set both blocking and poll_interval", retryable=False)
    interval = parse_duration(ctx.config["poll_interval"]) if "poll_interval" in ctx.config else None
    start = ctx.state_params.get("wait_start")
    if start is None:
        start = ctx.now
    remaining = float(start) + duration - ctx.now
    if remaining <= 0:
        return OpResult()
    return OpResult(
        poll_after=min(remaining, interval) if interval else remaining, state_params={"wait_start": start}
    )


_HANDLERS = {
    "echo": _op_echo,
    "nop": _op_nop,
    "fail": _op_fail,
    "if": _op_if,
    "loop": _op_loop,
    "for_each": _op_for_each,
    "for_range": _op_for_range,
    "call": _op_call,
    "wait": _op_wait,
}
