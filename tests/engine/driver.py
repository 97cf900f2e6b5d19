"""Drive the engine with no processes: work tasks finish as a script says, time is simulated.

A `sh>` command here is not run; its text decides the outcome: `fail` fails the task, `fail:N`
fails its first N tries, anything else succeeds. This keeps engine tests pure and fast while
exercising every decision the engine makes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kudig.compiler import compile_workflow
from kudig.engine.core import Engine, Event, SessionContext, StartTask, TaskFailed, TaskLog, TaskSucceeded
from kudig.engine.state import TaskState
from kudig.expr import TemplateEngine
from kudig.sla import parse_sla
from kudig.yamlload import load_dig_text

_EVALUATOR: TemplateEngine | None = None


def evaluator() -> TemplateEngine:
    global _EVALUATOR
    if _EVALUATOR is None:
        _EVALUATOR = TemplateEngine()
    return _EVALUATOR


@dataclass
class Run:
    engine: Engine
    started: list[str] = field(default_factory=list)
    logs: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    steps: int = 0
    now: float = 0.0

    @property
    def state(self) -> str:
        return self.engine.state.root.state.value

    def states(self) -> dict[str, str]:
        return {t.name: t.state.value for t in self.engine.state.tasks if not t.superseded}


Outcome = Callable[[StartTask, int], Event]


def scripted(action: StartTask, attempt: int) -> Event:
    command = str(action.config.get("_command", ""))
    if command.startswith("fail"):
        limit = int(command.split(":", 1)[1]) if ":" in command else None
        if limit is None or attempt < limit:
            return TaskFailed(action.task_id, f"{command} (attempt {attempt})")
    store = action.config.get("store")
    from kudig.engine.core import TaskResult

    return TaskSucceeded(action.task_id, TaskResult(store_params=store if isinstance(store, dict) else {}))


def drive(
    text: str,
    *,
    name: str = "wf",
    params: dict[str, Any] | None = None,
    outcome: Outcome = scripted,
    max_steps: int = 10_000,
    project_dir: Path | None = None,
    max_tasks: int = 1000,
    batch: bool = False,
    start: float = 0.0,
    resume: dict[str, Any] | None = None,
) -> Run:
    definition = load_dig_text(text, f"{name}.dig", project_dir or Path("."))
    specs = compile_workflow(name, definition, max_tasks)
    ctx = SessionContext(
        workflow_name=name,
        timezone="UTC",
        session_params={"session_time": "2024-01-30T00:00:00+00:00", "timezone": "UTC"},
        attempt_params=params or {},
        evaluator=evaluator(),
        project_dir=project_dir,
        max_tasks=max_tasks,
        sla=parse_sla(definition, f"{name}.dig"),
    )
    engine = Engine.new(ctx, specs)
    engine.state.resume = dict(resume or {})
    run = Run(engine, now=start)
    attempts: dict[str, int] = {}
    queue: list[StartTask] = []
    events: list[Event] = []
    while run.steps < max_steps:
        run.steps += 1
        for action in engine.step(events, run.now):
            if isinstance(action, StartTask):
                task = engine.state.tasks[action.task_id]
                for up in task.upstreams:
                    if engine.state.tasks[up].state != TaskState.SUCCESS:
                        run.violations.append(f"{task.name} started before {engine.state.tasks[up].name}")
                run.started.append(action.name)
                queue.append(action)
            elif isinstance(action, TaskLog):
                run.logs.append(action.text)
        events = []
        if engine.state.done:
            break
        if queue:
            # finish one task per step (or all, in batch mode) to exercise interleavings
            todo, queue = (queue, []) if batch else (queue[:1], queue[1:])
            for action in todo:
                n = attempts.get(action.name, 0)
                attempts[action.name] = n + 1
                events.append(outcome(action, n))
            continue
        wake = engine.next_wakeup()
        if wake is None:
            break
        run.now = max(run.now, wake)
    return run
