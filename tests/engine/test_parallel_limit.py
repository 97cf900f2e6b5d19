"""`_parallel: {limit: N}` is honoured exactly: never more than N tasks of the group run at once,
whatever order they finish in, and the group does run N at once (digdag's batching)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from kudig.compiler import compile_workflow
from kudig.engine.core import Engine, SessionContext, StartTask, TaskSucceeded
from kudig.yamlload import load_dig_text

from .driver import evaluator


def new_engine(dig: str, max_tasks: int) -> Engine:
    definition = load_dig_text(dig, "wf.dig", Path("."))
    ctx = SessionContext(
        workflow_name="wf",
        timezone="UTC",
        session_params={"session_time": "2024-01-30T00:00:00+00:00", "timezone": "UTC"},
        attempt_params={},
        evaluator=evaluator(),
        max_tasks=max_tasks,
    )
    return Engine.new(ctx, compile_workflow("wf", definition, max_tasks))


def peak_running(dig: str, *, max_tasks: int, seed: int) -> tuple[int, int, str]:
    """Run `dig` with tasks finishing in a random order (a random share of the running ones per
    step); returns (the most work tasks running at once, tasks run, the root's final state)."""
    rng = random.Random(seed)
    engine = new_engine(dig, max_tasks)
    running = {a.task_id for a in engine.step([], 0.0) if isinstance(a, StartTask)}
    peak, total = len(running), len(running)
    while running and not engine.state.done:
        done = rng.sample(sorted(running), max(1, int(len(running) * rng.random() * 0.3)))
        running.difference_update(done)
        started = [a for a in engine.step([TaskSucceeded(t) for t in done], 0.0) if isinstance(a, StartTask)]
        running.update(a.task_id for a in started)
        total += len(started)
        peak = max(peak, len(running))
    return peak, total, engine.state.root.state.value


def fan_out(tasks: int, limit: int) -> str:
    return (
        "+fan:\n  for_range>:\n"
        f"    from: 0\n    to: {tasks}\n    step: 1\n"
        f"  _parallel:\n    limit: {limit}\n  _do:\n    sh>: 'true'\n"
    )


def group(tasks: int, limit: int) -> str:
    return f"+g:\n  _parallel: {{limit: {limit}}}\n" + "".join(
        f"  +t{i}:\n    sh>: t{i}\n" for i in range(tasks)
    )


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_limit_of_7_over_50_tasks(seed: int) -> None:
    for dig in (group(50, 7), fan_out(50, 7)):
        peak, total, state = peak_running(dig, max_tasks=1000, seed=seed)
        assert state == "success"
        assert total == 50
        assert peak == 7, f"at most (and at best) 7 at once, saw {peak}"


def test_a_limit_of_1000_over_1200_generated_tasks() -> None:
    peak, total, state = peak_running(fan_out(1200, 1000), max_tasks=1300, seed=7)
    assert state == "success"
    assert total == 1200
    assert peak == 1000
