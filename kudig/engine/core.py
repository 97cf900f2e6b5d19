"""The session state machine: events in, actions out, no I/O.

Everything that decides what happens next lives here (DESIGN.md §2): readiness, retries with
backoff, group retry from the first child, `_error`/`_check` generation, control-operator
expansion, failure propagation, store-param merging. The local executor and the Kubernetes
controller only persist `SessionState` and carry out `StartTask` actions, so both behave the
same by construction.

Propagation is worklist-driven (a state change enqueues only the tasks it can affect) so a
10,000-task session is driven in linear time.
"""

from __future__ import annotations

import copy
import json
import os
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from kudig.compiler import DEFAULT_MAX_TASKS, TaskSpec, compile_subtree
from kudig.engine.state import (
    ACTIVE,
    DONE,
    FAILED,
    SessionState,
    Task,
    TaskState,
    compact_ids,
    downstream_ids,
    link,
)
from kudig.errors import ConfigError, KudigError
from kudig.ops import CONTROL_TYPES, SELF_RETRYING, OpContext, OpResult, TaskFailure, run_control
from kudig.params import ancestors, collect_error_params, collect_params, deep_merge
from kudig.sla import Sla
from kudig.timezones import parse_timezone
from kudig.yamlload import load_dig_text, plain

# --------------------------------------------------------------------------- events / actions


@dataclass(frozen=True, slots=True)
class TaskResult:
    store_params: Mapping[str, Any] = field(default_factory=dict)
    export_params: Mapping[str, Any] = field(default_factory=dict)
    subtask_config: Mapping[str, Any] | None = None
    reset_store_params: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TaskResult:
        return cls(
            store_params=data.get("store_params") or {},
            export_params=data.get("export_params") or {},
            subtask_config=data.get("subtask_config") or None,
            reset_store_params=tuple(data.get("reset_store_params") or ()),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "store_params": dict(self.store_params),
            "export_params": dict(self.export_params),
            "subtask_config": dict(self.subtask_config) if self.subtask_config else None,
            "reset_store_params": list(self.reset_store_params),
        }


@dataclass(frozen=True, slots=True)
class TaskSucceeded:
    task_id: int
    result: TaskResult = TaskResult()


@dataclass(frozen=True, slots=True)
class TaskFailed:
    task_id: int
    message: str
    retryable: bool = True
    error: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class KillRequested:
    pass


Event = TaskSucceeded | TaskFailed | KillRequested


@dataclass(frozen=True, slots=True)
class StartTask:
    """Run a work operator (sh>, py>, ...) with its fully evaluated config."""

    task_id: int
    name: str
    op_type: str
    config: dict[str, Any]
    retry_count: int


@dataclass(frozen=True, slots=True)
class TaskLog:
    task_id: int
    name: str
    text: str


@dataclass(frozen=True, slots=True)
class TaskFinished:
    """A task reached a final state (for logs, metrics and resume files)."""

    task_id: int
    name: str
    state: TaskState


@dataclass(frozen=True, slots=True)
class TaskNote:
    """What a task did without a process of its own, for the local log: a control operator
    started (`op_type>: command`), a dry run, a task skipped because it succeeded before."""

    task_id: int
    name: str
    text: str
    level: str = "INFO"


@dataclass(frozen=True, slots=True)
class TaskParams:
    """`kudig run --show-params` (digdag's `-E`): the evaluated parameters a task is given,
    before it runs (or, with `--dry-run`, instead of running)."""

    task_id: int
    name: str
    params: dict[str, Any]


Action = StartTask | TaskLog | TaskFinished | TaskNote | TaskParams


def command_text(op_type: str, config: Mapping[str, Any]) -> str:
    """`op>: command` as written (a command that is not a string as compact JSON)."""
    command = config.get("_command")
    if command is None:
        return f"{op_type}>:"
    text = command if isinstance(command, str) else json.dumps(command, default=str, ensure_ascii=False)
    return f"{op_type}>: {text.strip()}"


# --------------------------------------------------------------------------- context

# See Engine._work_inputs.
TEMPLATE_FILE_OPERATORS = frozenset({"pg", "mail", "td", "td_wait", "td_for_each", "td_load"})
# td_load>: only a `.yml`/`.yaml` command is a file (an Embulk config, parsed here as digdag's
# YamlLoader does: the runner has no YAML parser); any other names a saved bulk load session.
YAML_FILE_OPERATORS = frozenset({"td_load"})
LOCAL_KEY_OPERATORS = frozenset({"param_set", "param_get"})


class Evaluator(Protocol):
    """What the engine needs from `${...}` evaluation (kudig.expr.TemplateEngine provides it)."""

    def eval_config(
        self, config: Mapping[str, Any], params: Mapping[str, Any], timezone: str = ...
    ) -> dict[str, Any]: ...


@dataclass
class SessionContext:
    """Static inputs of a session: never persisted, rebuilt from the Workflow/CLI on restart."""

    workflow_name: str
    timezone: str
    session_params: Mapping[str, Any]  # built-ins except task_name
    attempt_params: Mapping[str, Any]  # -p/-P, lowest precedence
    evaluator: Evaluator
    project_dir: Path | None = None
    max_tasks: int = DEFAULT_MAX_TASKS
    # Local resume: results of tasks that succeeded in an earlier run, by full name.
    resume: Mapping[str, TaskResult] = field(default_factory=dict)
    # Decides per task: "skip" (succeed without running), "force" (ignore resume) or None.
    selector: Callable[[Task], str | None] | None = None
    dry_run: bool = False
    # `--show-params`: a TaskParams action before each task with an operator runs.
    show_params: bool = False
    # The workflow's `sla:`: its deadline counts from the attempt's first step.
    sla: Sla | None = None


# --------------------------------------------------------------------------- retry


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    limit: int
    interval: float = 0.0
    exponential: bool = False
    max_interval: float | None = None

    def delay(self, retry_count: int) -> float:
        value = self.interval * (2**retry_count) if self.exponential else self.interval
        if self.max_interval is not None:
            value = min(value, self.max_interval)
        return value


def parse_retry(value: Any) -> RetryPolicy | None:
    """digdag's RetryControl; None when absent or invalid (digdag logs and does not retry)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        if isinstance(value, int | str):
            return RetryPolicy(int(str(value).strip()))
        if isinstance(value, Mapping):
            limit = int(str(value["limit"]).strip())
            interval = float(str(value.get("interval", 0)).strip())
            itype = str(value.get("interval_type", "constant"))
            if itype not in ("constant", "exponential"):
                return None
            max_interval = value.get("max_interval")
            return RetryPolicy(
                limit,
                interval,
                itype == "exponential",
                float(str(max_interval)) if max_interval is not None else None,
            )
    except (KeyError, TypeError, ValueError):
        return None
    return None


# --------------------------------------------------------------------------- engine


class Engine:
    """Drives one session attempt. `step` is deterministic given state, events and `now`."""

    def __init__(self, ctx: SessionContext, state: SessionState) -> None:
        self.ctx = ctx
        self.state = state
        self._queue: deque[tuple[str, int]] = deque()
        self._done_queue: deque[int] = deque()
        self._actions: list[Action] = []
        self._now = 0.0
        self._waiting: set[int] = set()
        self._running: set[int] = set()
        self._scanned: dict[int, int] = {}  # blocked task -> upstreams before this index succeeded
        # the current (not superseded) tasks: how many, how many done, which failed (`progress`)
        self._current = 0
        self._done = 0
        self._failed: set[int] = set()
        for task in state.tasks:
            if task.superseded:
                continue
            self._current += 1
            self._done += task.state in DONE
            if task.state in FAILED:
                self._failed.add(task.id)
            if task.state in _WAITING:
                self._waiting.add(task.id)
            elif task.state == TaskState.RUNNING:
                self._running.add(task.id)
            elif task.state == TaskState.BLOCKED:
                self._queue.append(("promote", task.id))
            elif task.state == TaskState.PLANNED:
                self._done_queue.append(task.id)

    # ----- construction

    @classmethod
    def new(cls, ctx: SessionContext, specs: list[TaskSpec]) -> Engine:
        state = SessionState()
        engine = cls(ctx, state)
        engine._insert_specs(specs, parent=None, upstreams=[])
        return engine

    def _insert_specs(self, specs: list[TaskSpec], parent: int | None, upstreams: Sequence[int]) -> int:
        tasks = self.state.tasks
        if len(tasks) + len(specs) > self.ctx.max_tasks:
            raise TaskFailure(f"Too many tasks. Limit: {self.ctx.max_tasks}", retryable=False)
        offset = len(tasks)
        self._current += len(specs)
        top = compact_ids(upstreams)
        # The compiler gives the tasks of one `_parallel: {limit: N}` batch one upstream list:
        # shifted and compacted once, shared by their rows.
        shifted: dict[int, Sequence[int]] = {}
        blocks: dict[Sequence[int], list[int]] = {}
        for i, spec in enumerate(specs):
            if spec.parent is None:
                ups = top
            else:
                key = id(spec.upstreams)
                if key not in shifted:
                    shifted[key] = compact_ids(u + offset for u in spec.upstreams)
                ups = shifted[key]
            task = Task(
                id=offset + i,
                name=spec.name,
                parent=parent if spec.parent is None else spec.parent + offset,
                upstreams=ups,
                is_group=spec.is_group,
                config=spec.config,
                batch=offset,
                file=spec.file,
                line=spec.line,
            )
            tasks.append(task)
            if task.parent is not None:
                tasks[task.parent].children.append(task.id)
            link(tasks, task, blocks)
        return offset

    # ----- public API

    def step(self, events: Iterable[Event] = (), now: float = 0.0) -> list[Action]:
        self._now = now
        self._actions = []
        if not self.state.tasks:
            return []
        root = self.state.root
        if root.state == TaskState.BLOCKED and not self.state.done:
            self._enqueue("promote", root.id)
        for event in events:
            self._apply(event)
        self._check_sla()
        for tid in sorted(self._waiting):
            retry_at = self.state.tasks[tid].retry_at
            if retry_at is not None and retry_at <= now:
                self._enqueue("wake", tid)
        self._drain()
        return self._actions

    def next_wakeup(self) -> float | None:
        times = [r for r in (self.state.tasks[t].retry_at for t in self._waiting) if r is not None]
        if self._sla_pending() and self.state.sla_at is not None:
            times.append(self.state.sla_at)
        return min(times) if times else None

    # ----- sla

    def _sla_pending(self) -> bool:
        return self.ctx.sla is not None and not self.state.sla_fired and not self.state.done

    def _check_sla(self) -> None:
        """digdag's session monitor: at the deadline, a root still running gets the `sla:` tasks."""
        sla = self.ctx.sla
        if sla is None or not self._sla_pending() or self.state.killed:
            return
        if self.state.sla_at is None:
            self.state.sla_at = sla.deadline(self._now, parse_timezone(self.ctx.timezone))
        root = self.state.root
        if self._now < self.state.sla_at or root.state != TaskState.PLANNED:
            return
        self.state.sla_fired = True
        self._actions.append(TaskLog(root.id, root.name, f"SLA violated: {root.name} is not done in time"))
        for suffix, config in sla.subtrees():
            try:
                first = self._add_subtree(root, suffix, config, [])
            except KudigError as e:
                self._actions.append(TaskLog(root.id, root.name, f"Invalid sla: task: {e}"))
                continue
            self._enqueue("promote", first)

    def progress(self) -> tuple[int, int]:
        """(done, all) of the current tasks, kept as states change: no walk of the state."""
        return self._done, self._current

    def failed_tasks(self) -> list[Task]:
        """`failed_tasks(self.state)`, from the failed tasks the engine keeps track of."""
        return failed_tasks_of(self.state.tasks[i] for i in sorted(self._failed))

    def running(self) -> list[Task]:
        return [self.state.tasks[t] for t in sorted(self._running)]

    # ----- events

    def _apply(self, event: Event) -> None:
        if isinstance(event, KillRequested):
            self._kill()
            return
        task = self.state.tasks[event.task_id]
        if task.state != TaskState.RUNNING or task.superseded:
            return  # a duplicate or late report: already decided
        if task.cancel_requested:
            self._set_state(task, TaskState.CANCELED)
            return
        if isinstance(event, TaskSucceeded):
            self._succeed(task, event.result)
        else:
            error = dict(event.error) if event.error else {"message": event.message}
            error.setdefault("message", event.message)
            self._fail(task, error, event.retryable)

    def _kill(self) -> None:
        self.state.killed = True
        for task in self.state.tasks:
            if task.done or task.superseded:
                continue
            task.cancel_requested = True
            if task.state in (
                TaskState.BLOCKED,
                TaskState.READY,
                TaskState.RETRY_WAITING,
                TaskState.GROUP_RETRY_WAITING,
            ):
                self._set_state(task, TaskState.CANCELED)
        for task in self.state.tasks:
            if task.state == TaskState.PLANNED:
                self._enqueue("done?", task.id)

    # ----- worklist

    def _enqueue(self, kind: str, task_id: int) -> None:
        if kind == "done?":
            self._done_queue.append(task_id)
        else:
            self._queue.append((kind, task_id))

    def _drain(self) -> None:
        """Promotions and wake-ups first, then completion checks: when a group is checked, every
        child that could become ready already has, so "no active child" means done."""
        while self._queue or self._done_queue:
            if self._queue:
                kind, tid = self._queue.popleft()
                task = self.state.tasks[tid]
                if task.superseded:
                    continue
                if kind == "promote":
                    self._promote(task)
                elif kind == "wake":
                    self._wake(task)
            else:
                task = self.state.tasks[self._done_queue.popleft()]
                if not task.superseded:
                    self._check_done(task)

    def _set_state(self, task: Task, new: TaskState) -> None:
        old = task.state
        if old == new:
            return
        task.state = new
        if new == TaskState.READY:
            task.ready_at = self._now
        self._waiting.discard(task.id)
        self._running.discard(task.id)
        if not task.superseded:
            self._done += (new in DONE) - (old in DONE)
            if new in FAILED:
                self._failed.add(task.id)
            else:
                self._failed.discard(task.id)
        if new in _WAITING:
            self._waiting.add(task.id)
        elif new == TaskState.RUNNING:
            self._running.add(task.id)
        if task.parent is not None and not task.superseded:
            parent = self.state.tasks[task.parent]
            parent.active_children += (new in ACTIVE) - (old in ACTIVE)
            parent.failed_children += (new in FAILED) - (old in FAILED)
            if parent.state == TaskState.PLANNED and new not in ACTIVE:
                self._enqueue("done?", parent.id)
        if task.done:
            task.finished_at = self._now
            self._actions.append(TaskFinished(task.id, task.name, new))
            if new == TaskState.SUCCESS:
                for down in downstream_ids(task):
                    self._enqueue("promote", down)
        if new == TaskState.PLANNED:
            for child in task.children:
                self._enqueue("promote", child)
            self._enqueue("done?", task.id)

    # ----- readiness

    def _promote(self, task: Task) -> None:
        if task.state != TaskState.BLOCKED:
            return
        if task.parent is not None and self.state.tasks[task.parent].state != TaskState.PLANNED:
            return
        if not self._upstreams_succeeded(task):
            return
        if task.cancel_requested or self.state.killed:
            self._set_state(task, TaskState.CANCELED)
            return
        if task.is_group:
            self._set_state(task, TaskState.PLANNED)
        else:
            self._set_state(task, TaskState.READY)
            self._start(task)

    def _upstreams_succeeded(self, task: Task) -> bool:
        """Whether every upstream of `task` succeeded. A success is final within an attempt, so
        the scan resumes where the last one stopped: a task waiting for a batch of N upstreams
        (`_parallel: {limit: N}`) costs O(N) over all its checks, not O(N) per finished upstream."""
        tasks, ups = self.state.tasks, task.upstreams
        i = self._scanned.get(task.id, 0)
        while i < len(ups):
            if tasks[ups[i]].state != TaskState.SUCCESS:
                self._scanned[task.id] = i
                return False
            i += 1
        self._scanned.pop(task.id, None)
        return True

    def _selection(self, task: Task) -> str | None:
        selector = self.ctx.selector
        return selector(task) if selector is not None else None

    def _start(self, task: Task) -> None:
        selection = self._selection(task)
        if selection == "skip":
            task.skipped = True
            self._succeed(task, TaskResult(), run_check=False)
            return
        previous = self.ctx.resume.get(task.name)
        if previous is None and task.name in self.state.resume:
            previous = TaskResult.from_json(self.state.resume[task.name])
        if previous is not None and selection != "force":
            task.skipped = True
            self._actions.append(TaskNote(task.id, task.name, "Skipped", "WARN"))  # digdag run's words
            self._succeed(task, previous, run_check=False)
            return
        task.started_at = self._now
        try:
            config = self._work_inputs(task, self._evaluate(task))
        except KudigError as e:
            self._set_state(task, TaskState.RUNNING)
            self._fail(task, {"message": str(e)}, retryable=False)
            return
        op_type = config.get("_type")
        self._set_state(task, TaskState.RUNNING)
        if op_type is None or op_type == "":
            self._succeed(task, TaskResult())
            return
        op_type = str(op_type)
        task.state_params["_retry"] = config.get("_retry")
        if self.ctx.show_params:
            shown = {k: v for k, v in config.items() if k not in ("_command_text", "_local_keys")}
            self._actions.append(TaskParams(task.id, task.name, shown))
        if self.ctx.dry_run:
            self._actions.append(TaskNote(task.id, task.name, command_text(op_type, config) + "  (dry run)"))
            self._succeed(task, TaskResult())
        elif op_type in CONTROL_TYPES:
            self._actions.append(TaskNote(task.id, task.name, command_text(op_type, config)))
            self._run_control(task, op_type, config)
        else:
            self._actions.append(StartTask(task.id, task.name, op_type, config, task.retry_count))

    def _evaluate(self, task: Task) -> dict[str, Any]:
        params = collect_params(self.state, task, self.ctx.attempt_params)
        full = deep_merge(params, self.ctx.session_params)
        full["task_name"] = task.name
        full.pop("_env", None)  # only the task's own _env counts (digdag ignores _env in _export)
        local = {k: v for k, v in task.config.items() if k != "_export"}
        # digdag's OperatorManager.evalConfig: `${}` sees the params *before* the task's own keys
        # are merged in; a key of the task is visible only to the keys after it (ConfigEvalEngine
        # overlays the keys evaluated so far). So `${k}` written above `k:` does not see it.
        scope = dict(full)
        for key, value in local.items():
            if isinstance(full.get(key), dict) and isinstance(value, Mapping):
                full[key] = copy.deepcopy(full[key])  # deep_merge below must not change `scope`
        deep_merge(full, local)
        return self.ctx.evaluator.eval_config(full, scope, self.ctx.timezone)

    def _work_inputs(self, task: Task, config: dict[str, Any]) -> dict[str, Any]:
        """What some work operators need from the engine besides their evaluated config.

        * TEMPLATE_FILE_OPERATORS: a string `_command` names a project file that digdag reads and
          renders with `${...}` against the task's evaluated params (Workspace.templateCommand);
          the runner has no template engine, so the engine does it and passes the text as
          `_command_text`.
        * LOCAL_KEY_OPERATORS: the keys of the task's own config (digdag's getLocalConfig), as
          `_local_keys`: param_set>/param_get> act on those only.
        """
        op_type = config.get("_type")
        command = config.get("_command")
        if (
            op_type in TEMPLATE_FILE_OPERATORS
            and isinstance(command, str)
            and command
            and not self.ctx.dry_run
            and (op_type not in YAML_FILE_OPERATORS or command.endswith((".yml", ".yaml")))
        ):
            root = (self.ctx.project_dir or Path.cwd()).resolve()
            path = Path(os.path.normpath(root / str(config.get("_workdir") or "") / command))
            if path != root and root not in path.parents:
                raise ConfigError(f"File {command!r} is outside the project directory")
            try:
                text = path.read_text(encoding="utf-8")
            except FileNotFoundError:
                raise ConfigError(f"File not found: {command}") from None
            except (OSError, UnicodeDecodeError) as e:
                raise ConfigError(f"Cannot read {command}: {e}") from None
            rendered = self.ctx.evaluator.eval_config({"text": text}, config, self.ctx.timezone)
            config["_command_text"] = rendered["text"]
            if op_type in YAML_FILE_OPERATORS:
                config["_command_config"] = plain(load_dig_text(rendered["text"], command, root))
        if op_type in LOCAL_KEY_OPERATORS:
            config["_local_keys"] = [k for k in task.config if not str(k).startswith("_")]
        return config

    def _call_stack(self, task: Task) -> list[str]:
        return [
            str(t.state_params["called"])
            for t in ancestors(self.state, task)[:-1]
            if t.state_params.get("called") is not None
        ]

    def _run_control(self, task: Task, op_type: str, config: dict[str, Any]) -> None:
        op_ctx = OpContext(
            task_name=task.name,
            config=config,
            state_params=dict(task.state_params),
            now=self._now,
            project_dir=self.ctx.project_dir,
            max_tasks=self.ctx.max_tasks,
            call_stack=self._call_stack(task),
        )
        try:
            result: OpResult = run_control(op_type, op_ctx)
        except TaskFailure as e:
            retryable = e.retryable and op_type in SELF_RETRYING
            self._fail(task, {"message": e.message}, retryable)
            return
        for line in result.log:
            self._actions.append(TaskLog(task.id, task.name, line))
        task.state_params.update(result.state_params)
        if result.poll_after is not None:
            task.retry_at = self._now + result.poll_after
            self._set_state(task, TaskState.RETRY_WAITING)
            return
        self._succeed(
            task,
            TaskResult(
                result.store_params,
                result.export_params,
                result.subtask_config,
                tuple(result.reset_store_params),
            ),
        )

    # ----- results

    def _mark_stores(self, task: Task) -> None:
        node: Task | None = task
        while node is not None and not node.stores_below:
            node.stores_below = True
            node = self.state.tasks[node.parent] if node.parent is not None else None

    def _succeed(self, task: Task, result: TaskResult, run_check: bool = True) -> None:
        if task.state in (TaskState.READY, TaskState.BLOCKED):
            self._set_state(task, TaskState.RUNNING)
        task.store_params = copy.deepcopy(dict(result.store_params))
        task.reset_store_params = list(result.reset_store_params)
        task.export_params = copy.deepcopy(dict(result.export_params))
        task.subtask_config = copy.deepcopy(dict(result.subtask_config)) if result.subtask_config else None
        if task.store_params or task.reset_store_params:
            self._mark_stores(task)
        added = False
        sub_id: int | None = None
        try:
            if task.subtask_config:
                sub_id = self._add_subtree(task, "^sub", task.subtask_config, [])
                added = True
            check = task.config.get("_check")
            if run_check and isinstance(check, Mapping):
                self._add_subtree(task, "^check", check, [sub_id] if sub_id is not None else [])
                added = True
        except KudigError as e:
            self._fail(task, {"message": str(e)}, retryable=False)
            return
        self._set_state(task, TaskState.PLANNED if added else TaskState.SUCCESS)

    def _add_subtree(
        self,
        parent: Task,
        suffix: str,
        config: Mapping[str, Any],
        upstreams: list[int],
        export: Mapping[str, Any] | None = None,
    ) -> int:
        if export:
            config = dict(config)
            merged = dict(config.get("_export") or {})
            merged.update(export)
            config["_export"] = merged
        specs = compile_subtree(parent.name + suffix, config, self.ctx.max_tasks)
        return self._insert_specs(specs, parent=parent.id, upstreams=upstreams)

    def _retry_policy(self, task: Task) -> RetryPolicy | None:
        if task.is_group:
            raw = task.config.get("_retry")
            if isinstance(raw, str) and "$" in raw:
                return None  # groups are not evaluated: digdag treats a template here as invalid
            return parse_retry(raw)
        return parse_retry(task.state_params.get("_retry"))

    def _fail(self, task: Task, error: dict[str, Any], retryable: bool) -> None:
        task.error = error
        op_type = str(task.config.get("_type", ""))
        if retryable and not self.state.killed:
            policy = self._retry_policy(task)
            if policy is not None and task.retry_count < policy.limit and op_type in SELF_RETRYING:
                self._schedule_retry(task, policy)
                self._set_state(task, TaskState.RETRY_WAITING)
                return
        if isinstance(task.config.get("_error"), Mapping) and not self.state.killed:
            try:
                self._add_subtree(task, "^error", task.config["_error"], [], {"error": error})
            except KudigError:
                self._set_state(task, TaskState.ERROR)
                return
            task.delayed_error = True
            self._set_state(task, TaskState.PLANNED)
            return
        self._set_state(task, TaskState.ERROR)

    # ----- group completion

    def _check_done(self, task: Task) -> None:
        if task.state != TaskState.PLANNED or task.active_children > 0:
            return
        if task.delayed_error:
            self._set_state(task, TaskState.ERROR)
            return
        if task.delayed_group_error:
            self._set_state(task, TaskState.GROUP_ERROR)
            return
        if self.state.killed or task.cancel_requested:
            self._set_state(task, TaskState.CANCELED)
            return
        if task.failed_children == 0:
            self._set_state(task, TaskState.SUCCESS)
            return
        policy = self._retry_policy(task)
        if policy is not None and task.retry_count < policy.limit:
            self._schedule_retry(task, policy)
            self._set_state(task, TaskState.GROUP_RETRY_WAITING)
            return
        if isinstance(task.config.get("_error"), Mapping):
            error, stores = collect_error_params(self.state, task)
            task.error = error or {"message": "a child task failed"}
            export = dict(stores)
            export["error"] = error
            try:
                self._add_subtree(task, "^error", task.config["_error"], [], export)
            except KudigError:
                self._set_state(task, TaskState.GROUP_ERROR)
                return
            task.delayed_group_error = True
            self._enqueue("promote", task.children[-1])
            self._enqueue("done?", task.id)
            return
        self._set_state(task, TaskState.GROUP_ERROR)

    # ----- retries

    def _schedule_retry(self, task: Task, policy: RetryPolicy) -> None:
        delay = policy.delay(task.retry_count)
        task.retry_at = self._now + delay
        task.retry_count += 1
        self._actions.append(
            TaskNote(
                task.id, task.name, f"Retrying in {delay:g} s (retry {task.retry_count} of {policy.limit})"
            )
        )

    def _wake(self, task: Task) -> None:
        if task.retry_at is None or task.retry_at > self._now:
            return
        task.retry_at = None
        if task.state == TaskState.RETRY_WAITING:
            self._set_state(task, TaskState.READY)
            self._start(task)
        elif task.state == TaskState.GROUP_RETRY_WAITING:
            self._regenerate(task)

    def _supersede_children(self, task: Task) -> list[Task]:
        old = [self.state.tasks[c] for c in task.children]
        stack = list(old)
        while stack:
            t = stack.pop()
            if not t.superseded:
                self._current -= 1
                self._done -= t.state in DONE
                self._failed.discard(t.id)
            t.superseded = True
            self._waiting.discard(t.id)
            self._running.discard(t.id)
            stack.extend(self.state.tasks[c] for c in t.children)
        task.children = []
        task.active_children = 0
        task.failed_children = 0
        return old

    def _regenerate(self, task: Task) -> None:
        """Group retry: re-insert copies of the descendants inserted with the group (not the
        `^sub`/`^error`/`^check` subtrees generated under them later) and rerun."""
        old = self._supersede_children(task)
        if not task.is_group:
            self._set_state(task, TaskState.READY)
            self._start(task)
            return
        mapping: dict[int, int] = {}
        blocks: dict[Sequence[int], list[int]] = {}

        def copy_tree(src: Task, parent: Task) -> None:
            new = Task(
                id=len(self.state.tasks),
                name=src.name,
                parent=parent.id,
                upstreams=compact_ids(mapping[u] for u in src.upstreams if u in mapping),
                is_group=src.is_group,
                config=src.config,
                batch=src.batch,
                file=src.file,
                line=src.line,
            )
            mapping[src.id] = new.id
            self.state.tasks.append(new)
            self._current += 1
            parent.children.append(new.id)
            link(self.state.tasks, new, blocks)
            for child_id in src.children:
                child = self.state.tasks[child_id]
                if child.batch == src.batch:
                    copy_tree(child, new)

        for child in old:
            if child.batch == task.batch:
                copy_tree(child, task)
        self._set_state(task, TaskState.PLANNED)


_WAITING = frozenset({TaskState.RETRY_WAITING, TaskState.GROUP_RETRY_WAITING})


def failed_tasks(state: SessionState) -> list[Task]:
    """Operator tasks (and groups with their own message) that failed, for the CLI's summary."""
    return failed_tasks_of(state.tasks)


def failed_tasks_of(tasks: Iterable[Task]) -> list[Task]:
    return [
        t
        for t in tasks
        if not t.superseded and t.state in FAILED and t.error and (not t.is_group or t.failed_children == 0)
    ]


def resumable_results(state: SessionState) -> dict[str, dict[str, Any]]:
    """What a `retry --resume` attempt keeps: every task (not the root) that succeeded, by name."""
    out: dict[str, dict[str, Any]] = dict(state.resume)
    for task in state.tasks[1:]:
        if task.superseded or task.state != TaskState.SUCCESS:
            continue
        out[task.name] = _result_json(task)
    return out


def _result_json(task: Task) -> dict[str, Any]:
    return TaskResult(
        task.store_params, task.export_params, task.subtask_config, tuple(task.reset_store_params)
    ).to_json()


def resume_from(state: SessionState, pattern: str) -> dict[str, dict[str, Any]]:
    """What a `retry --resume-from +task` attempt keeps (digdag's `from` mode): the tasks before
    the one `pattern` names — the upstream siblings of it and of each of its ancestors, with
    everything below them — by name. The task and everything after it run again. `pattern`
    matches the end of a full name and must match exactly one task; every kept task must have
    succeeded."""
    current = [t for t in state.tasks[1:] if not t.superseded]
    matches = [t for t in current if t.name.endswith(pattern)]
    if not matches:
        raise KudigError(f"No task matches '{pattern}'")
    if len(matches) > 1:
        names = ", ".join(t.name for t in matches[:5])
        raise KudigError(f"'{pattern}' matches {len(matches)} tasks ({names}): name exactly one")
    by_id = {t.id: t for t in state.tasks}
    before: list[Task] = []
    node: Task | None = matches[0]
    while node is not None and node.parent is not None:
        seen: set[int] = set()
        stack = list(node.upstreams)
        while stack:
            up = stack.pop()
            if up in seen:
                continue
            seen.add(up)
            stack.extend(by_id[up].upstreams)
        subtree = [by_id[i] for i in sorted(seen)]
        while subtree:
            task = subtree.pop()
            before.append(task)
            subtree.extend(by_id[c] for c in task.children)
        node = by_id[node.parent]
    out: dict[str, dict[str, Any]] = {}
    for task in before:
        if task.superseded:
            continue
        if task.state != TaskState.SUCCESS:
            raise KudigError(
                f"Cannot resume from '{pattern}': {task.name} before it did not succeed ({task.state.value})"
            )
        out[task.name] = _result_json(task)
    return out
