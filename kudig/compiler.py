"""Turn a .dig tree into digdag's flat task list.

digdag runs a workflow as a table of tasks, each with a parent and a list of upstream siblings;
everything the engine decides (what is ready, what blocks, what a group retry re-inserts) reads
that table. We compile to the same shape so naming (`+wf+group+task`, `^sub`, `^error`,
`^check`) and ordering (sequential, `_parallel`, `{limit: N}` batching, `_background`,
`_after`) match digdag exactly. The same function compiles the workflow at start and the subtrees
that operators generate at run time.
"""

from __future__ import annotations

import difflib
import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kudig_runner.dispatch import OPERATORS as RUNNER_OPERATORS

from kudig.errors import ConfigError
from kudig.refused_operators import REFUSED, refusal_message
from kudig.yamlload import YMap

GROUP_KEYS = frozenset(
    {
        "timezone",
        "schedule",
        "sla",
        "trigger",
        "_parallel",
        "_background",
        "_after",
        "_error",
        "_check",
        "_retry",
        "_export",
        "_secrets",
        "_disable",
    }
)
TOP_LEVEL_KEYS = frozenset(
    {"timezone", "_export", "schedule", "sla", "trigger", "_error", "_check", "_retry", "_parallel"}
)

CONTROL_OPERATORS = frozenset(
    {"call", "require", "loop", "for_each", "for_range", "if", "fail", "echo", "wait", "nop", "notify"}
)
# The work operators the runner implements: one table (kudig_runner.dispatch.OPERATORS) decides
# what `kudig check`, the controller's compile and the runner accept.
WORK_OPERATORS = frozenset(RUNNER_OPERATORS)
KNOWN_OPERATORS = CONTROL_OPERATORS | WORK_OPERATORS
# digdag's other operators: a workflow using one is rejected before any task runs, with what it
# would need (kudig/refused_operators.py).
DIGDAG_OPERATORS = KNOWN_OPERATORS | frozenset(REFUSED)


def unsupported_operator(op_type: str) -> str | None:
    """Why a workflow may not use `op_type>` (None: kudig runs it)."""
    if op_type in KNOWN_OPERATORS:
        return None
    refused = refusal_message(op_type)
    if refused is not None:
        return refused
    return f"Unknown operator type {suggest(op_type + '>', {k + '>' for k in KNOWN_OPERATORS})}"


_TASK_NAME = re.compile(r"^\+[^0-9^][^^]*$|^\+$")
_TASK_CHARS = re.compile(r"^[a-zA-Z_0-9\-=\[\]{}%&@`,.^]*$")
DEFAULT_MAX_TASKS = 1000


@dataclass(slots=True)
class TaskSpec:
    """One row of the compiled table: indexes refer to positions in the same list."""

    name: str
    parent: int | None
    upstreams: list[int]
    is_group: bool
    config: dict[str, Any]
    file: str | None = None
    line: int | None = None
    children: list[int] = field(default_factory=list)


def suggest(key: str, candidates: frozenset[str] | set[str]) -> str:
    close = difflib.get_close_matches(key, sorted(candidates), n=3, cutoff=0.6)
    return f"'{key}' (did you mean [{', '.join(close)}]?)" if close else f"'{key}'"


def operator_keys(config: Mapping[str, Any]) -> list[str]:
    return [k for k in config if isinstance(k, str) and k.endswith(">")]


def is_operator(config: Mapping[str, Any]) -> bool:
    return "_type" in config or bool(operator_keys(config))


def parse_bool(value: Any, key: str, where: YMap | None = None) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    msg = f"Expected 'true' or 'false' for key '{key}' but got {value!r}"
    raise where.error(msg, key) if where is not None else ConfigError(msg)


@dataclass(frozen=True, slots=True)
class Parallel:
    enabled: bool
    limit: int | None = None


def parse_parallel(value: Any, where: YMap | None = None) -> Parallel:
    if value is None:
        return Parallel(False)
    if isinstance(value, Mapping):
        limit = value.get("limit")
        try:
            n = int(limit) if limit is not None and not isinstance(limit, bool) else None
        except (TypeError, ValueError):
            n = None
        if n is None or n < 1:
            msg = f"_parallel: {{limit: N}} expects a positive integer, got {limit!r}"
            raise where.error(msg, "_parallel") if where is not None else ConfigError(msg)
        return Parallel(True, n)
    return Parallel(parse_bool(value, "_parallel", where))


def normalize_operator(config: dict[str, Any], where: YMap | None) -> dict[str, Any]:
    """`foo>: bar` becomes `_type: foo, _command: bar` (digdag's sugar), checking there is one."""
    keys = operator_keys(config)
    if len(keys) > 1:
        raise _err(where, "A task can't have more than one operator", keys[1])
    if keys and "_type" in config:
        raise _err(where, "A task can't have more than one operator", "_type")
    out: dict[str, Any] = {}
    for k, v in config.items():
        if k in keys:
            # in the operator key's place: digdag evaluates `${}` in key order (a key sees only the
            # task's keys written before it), and the operator key is one of them
            out["_type"] = k[:-1]
            out["_command"] = v
        else:
            out[k] = v
    return out


def _err(where: YMap | None, message: str, key: str | None = None) -> ConfigError:
    if where is not None:
        return where.error(message, key)
    return ConfigError(message)


class Compiler:
    """Compiles one (sub)tree; `tasks` grows as it walks."""

    def __init__(self, max_tasks: int = DEFAULT_MAX_TASKS) -> None:
        self.tasks: list[TaskSpec] = []
        self.max_tasks = max_tasks

    def compile(self, name: str, config: Mapping[str, Any], *, top_level: bool = False) -> list[TaskSpec]:
        where = config if isinstance(config, YMap) else None
        if top_level:
            unknown = [
                k
                for k in config
                if not (isinstance(k, str) and k.startswith("+")) and k not in TOP_LEVEL_KEYS
            ]
            if unknown:
                raise _err(
                    where,
                    f"Workflow '{name.lstrip('+')}' includes unknown keys: "
                    + ", ".join(suggest(k, TOP_LEVEL_KEYS) for k in unknown),
                    unknown[0],
                )
        self._collect(name, config, None, [])
        return self.tasks

    def _add(self, spec: TaskSpec) -> int:
        if len(self.tasks) >= self.max_tasks:
            raise ConfigError(f"Too many tasks. Limit: {self.max_tasks}", spec.file, spec.line)
        self.tasks.append(spec)
        index = len(self.tasks) - 1
        if spec.parent is not None:
            self.tasks[spec.parent].children.append(index)
        return index

    def _collect(
        self,
        name: str,
        config: Mapping[str, Any],
        parent: int | None,
        upstreams: list[int],
        key_line: int | None = None,
    ) -> int:
        where = config if isinstance(config, YMap) else None
        file = where.file if where is not None else None
        line = key_line or (where.line if where is not None else None)
        if not isinstance(config, Mapping):
            raise ConfigError(f"Task {name} must be a map of keys, got {type(config).__name__}", file, line)
        if _truthy(config.get("_disable")):
            return self._add(TaskSpec(name, parent, upstreams, True, {"_disable": True}, file, line))
        children = [(k, v) for k, v in config.items() if isinstance(k, str) and k.startswith("+")]
        local = {k: v for k, v in config.items() if not (isinstance(k, str) and k.startswith("+"))}
        for key in ("_error", "_check"):
            if key in local:
                self.validate_special(name, key, local[key], where)
        if is_operator(config):
            if children:
                raise _err(where, f"A task can't have subtasks: {name}", children[0][0])
            if "_parallel" in local and "_do" not in local:
                parse_parallel(local["_parallel"], where) if not _templated(local["_parallel"]) else None
            spec_config = normalize_operator(dict(local), where)
            op_type = spec_config.get("_type")
            if isinstance(op_type, str) and "$" not in op_type and op_type not in KNOWN_OPERATORS:
                raise _err(where, unsupported_operator(op_type) or "", (operator_keys(local) or ["_type"])[0])
            if "_retry" in spec_config:
                check_retry_syntax(spec_config["_retry"], where)
            return self._add(TaskSpec(name, parent, upstreams, False, spec_config, file, line))
        unknown = [k for k in local if k not in GROUP_KEYS]
        if unknown:
            raise _err(
                where,
                f"Task {name} has unknown keys: " + ", ".join(suggest(k, GROUP_KEYS) for k in unknown),
                unknown[0],
            )
        if "_retry" in local:
            check_retry_syntax(local["_retry"], where)
        parallel = parse_parallel(local.get("_parallel"), where)
        index = self._add(TaskSpec(name, parent, upstreams, True, dict(local), file, line))
        self._collect_children(name, children, index, parallel, where)
        return index

    def _collect_children(
        self,
        name: str,
        children: list[tuple[str, Any]],
        index: int,
        parallel: Parallel,
        where: YMap | None,
    ) -> None:
        previous: list[int] = []  # upstreams for the next sequential child
        background_since: list[int] = []
        chunk: list[int] = []
        last_chunk: list[int] = []
        by_name: dict[str, int] = {}
        for position, (key, child) in enumerate(children):
            self.validate_task_key(key, where)
            child_where = child if isinstance(child, YMap) else None
            background = isinstance(child, Mapping) and _truthy(child.get("_background"))
            after = child.get("_after") if isinstance(child, Mapping) else None
            if parallel.enabled:
                if background:
                    raise _err(
                        child_where,
                        'Setting "_background: true" option is invalid (unnecessary) if its parent task has "_parallel: true" option',
                        "_background",
                    )
                if parallel.limit is not None:
                    if position % parallel.limit == 0 and position > 0:
                        last_chunk, chunk = chunk, []
                    ups = last_chunk  # one list for the whole batch (copied below if it grows)
                else:
                    ups = []
                if after is not None:
                    ups = list(ups)
                    names = [after] if isinstance(after, str) else after
                    if not isinstance(names, list):
                        raise _err(
                            child_where, "_after must be a task name or a list of task names", "_after"
                        )
                    for dep in names:
                        if dep not in by_name:
                            raise _err(child_where, f"Dependency task '{dep}' does not exist", "_after")
                        if by_name[dep] not in ups:
                            ups.append(by_name[dep])
            else:
                if after is not None:
                    raise _err(
                        child_where,
                        'Setting "_after" option is invalid if its parent task doesn\'t have "_parallel: true" option',
                        "_after",
                    )
                ups = [] if background else previous + background_since
            child_config = child
            if isinstance(child, Mapping):
                child_config = _strip(child, ("_background", "_after"))
            key_line = where.line_of(key) if where is not None else None
            child_index = self._collect(name + key, child_config, index, ups, key_line)
            by_name[key] = child_index
            if parallel.limit is not None:
                chunk.append(child_index)
            if not parallel.enabled:
                if background:
                    background_since.append(child_index)
                else:
                    previous = [child_index]
                    background_since = []

    @staticmethod
    def validate_task_key(key: str, where: YMap | None) -> None:
        # digdag's ModelValidator checks "must not start with a digit" on the whole name, `+`
        # included, so it never fires for a task: `+1st_step` is a valid task (real digdag runs it).
        body = key[1:]
        if not body or "^" in body or len(key) > 255 or not _TASK_CHARS.match(body):
            raise _err(
                where,
                f"Invalid task name '{key}': must start with '+', not contain '^', "
                "and use only letters, digits and -=[]{}%&@`,.",
                key,
            )

    def validate_special(self, name: str, key: str, value: Any, where: YMap | None) -> None:
        """digdag compiles `_error`/`_check` up front so a broken one fails before the run."""
        if not isinstance(value, Mapping):
            raise _err(where, f"{key} must be a task definition (a map), got {type(value).__name__}", key)
        try:
            Compiler(self.max_tasks).compile(name + ("^error" if key == "_error" else "^check"), value)
        except ConfigError as e:
            raise e.at(where.file if where else None, where.line_of(key) if where else None) from None


def _strip(config: Mapping[str, Any], keys: tuple[str, ...]) -> Mapping[str, Any]:
    if not any(k in config for k in keys):
        return config
    out = YMap(config.file, config.line) if isinstance(config, YMap) else None
    if out is not None and isinstance(config, YMap):
        out.key_lines = dict(config.key_lines)
        for k, v in config.items():
            if k not in keys:
                out[k] = v
        return out
    return {k: v for k, v in config.items() if k not in keys}


def _truthy(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.lower() == "true")


def _templated(value: Any) -> bool:
    return isinstance(value, str) and "${" in value


def check_retry_syntax(value: Any, where: YMap | None) -> None:
    """Reject what can never be a `_retry` (digdag: `Invalid _retry format`); templates wait for run time."""
    if isinstance(value, bool):
        raise _err(where, f"Invalid _retry format: {value!r}", "_retry")
    if isinstance(value, int) or _templated(value):
        return
    if isinstance(value, str):
        if not value.strip().isdigit():
            raise _err(
                where,
                f"Invalid _retry format: {value!r} (expected an integer or {{limit, interval, interval_type}})",
                "_retry",
            )
        return
    if isinstance(value, Mapping):
        allowed = {"limit", "interval", "interval_type", "max_interval"}
        extra = [k for k in value if k not in allowed]
        if extra:
            raise _err(
                where, "Invalid _retry format: unknown key " + suggest(str(extra[0]), allowed), "_retry"
            )
        if "limit" not in value:
            raise _err(where, "Invalid _retry format: 'limit' is required", "_retry")
        itype = value.get("interval_type", "constant")
        if itype not in ("constant", "exponential") and not _templated(itype):
            raise _err(
                where,
                f"Invalid _retry format: interval_type must be constant or exponential, got {itype!r}",
                "_retry",
            )
        return
    raise _err(where, f"Invalid _retry format: {value!r}", "_retry")


def compile_workflow(
    name: str, config: Mapping[str, Any], max_tasks: int = DEFAULT_MAX_TASKS
) -> list[TaskSpec]:
    """Compile a workflow file's top level; the root task is `+name`."""
    root_config = {k: v for k, v in config.items() if k not in ("timezone", "schedule", "sla", "trigger")}
    if isinstance(config, YMap):
        ymap = YMap(config.file, config.line)
        ymap.key_lines = dict(config.key_lines)
        ymap.update(root_config)
        root_config = ymap
    unknown_check = Compiler(max_tasks)
    if any(not (isinstance(k, str) and k.startswith("+")) and k not in TOP_LEVEL_KEYS for k in config):
        unknown_check.compile("+" + name, config, top_level=True)
    return Compiler(max_tasks).compile("+" + name, root_config, top_level=True)


def compile_subtree(
    name: str, config: Mapping[str, Any], max_tasks: int = DEFAULT_MAX_TASKS
) -> list[TaskSpec]:
    """Compile an operator-generated subtree (`^sub`, `^error`, `^check`) rooted at `name`."""
    return Compiler(max_tasks).compile(name, config)


def call_target(workdir: str, target: str) -> str:
    """The project path of a `call>` target, as digdag's Workspace.getPath finds it.

    The name (`.dig` appended when missing) is resolved against the calling task's `_workdir` and
    normalized; a `../` is fine while the result stays inside the project (`call>: ../lib/x` from
    a workflow in `sub/`), anything leaving it is refused.
    """
    name = target if target.endswith(".dig") else target + ".dig"
    normal = posixpath.normpath(posixpath.join(workdir, name))
    if posixpath.isabs(normal) or normal == ".." or normal.startswith("../"):
        raise ConfigError(f"File name must not be outside of project path: {target}")
    return normal


def base_workdir(resource: str, own: Any) -> str | None:
    """The `_workdir` digdag gives a workflow file loaded from `resource` (a project path).

    WorkflowFile.setBaseWorkdir: a file in a sub-directory gets that directory, with its own
    top-level `_export: {_workdir: w}` appended (`sub/w`); a file at the project root keeps its own
    `_workdir` or none at all — its tasks then inherit the caller's (`call>` of `../x.dig` from
    `sub/` still runs in `sub/`). None means "not set".
    """
    base = posixpath.dirname(posixpath.normpath(resource))
    if base in ("", "."):
        return None if own is None else str(own)
    return base if own is None else f"{base}/{own}"
