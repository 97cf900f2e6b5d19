"""The task cap is a setting (digdag's `executor.task_max_run`, `KUDIG_TASK_MAX_RUN`): digdag's
default and message, raised or lowered for the Workflow as compiled and for tasks generated at run
time."""

from __future__ import annotations

from pathlib import Path

import pytest
from kudig_operator.controller import Controller
from kudig_operator.plan.settings import task_max_run
from test_controller import NS, Harness

from kudig.api import WORKFLOWS


def capped(h: Harness, cap: int | None) -> None:
    kwargs = {} if cap is None else {"task_max_run": cap}
    h.ctl = Controller(
        h.kube, runner_image="runner:test", cache_dir=h.tmp / "cache", clock=lambda: h.now, **kwargs
    )


def chain(n: int) -> str:
    return "".join(f"+t{i}:\n  sh>: echo {i}\n" for i in range(n))


def compiled(h: Harness) -> dict[str, str]:
    status = h.kube.objects[(WORKFLOWS, NS, "wf")]["status"]
    return {c["type"]: c["message"] for c in status["conditions"] if c["status"] == "False"}


def test_digdags_default_cap_and_message(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    capped(h, None)
    h.workflow(chain(1001))
    assert "Too many tasks. Limit: 1000" in compiled(h)["Compiled"]


def test_a_raised_cap_runs_a_larger_session(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    capped(h, 2000)
    h.workflow(chain(1500))
    assert compiled(h) == {}
    h.session()
    assert h.status()["phase"] == "Running" and h.status()["progress"] == "0/1501"
    assert [h.task_of(p) for p in h.pods()] == ["+wf+t0"]


def test_a_lowered_cap_stops_generated_tasks(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    capped(h, 5)
    h.workflow("+loop:\n  loop>: 10\n  _do:\n    sh>: echo ${i}\n")
    h.session()
    assert h.status()["phase"] == "Failed"
    assert "Too many loop subtasks" in h.status()["failedTasks"][0]["message"]
    assert "Limit: 5" in h.status()["failedTasks"][0]["message"]


@pytest.mark.parametrize(("text", "value"), [(None, 1000), ("", 1000), (" 20000 ", 20000)])
def test_the_setting_is_read(text: str | None, value: int) -> None:
    assert task_max_run(text) == value


@pytest.mark.parametrize("text", ["0", "-3", "many", "1.5"])
def test_a_bad_setting_says_what_is_expected(text: str) -> None:
    with pytest.raises(
        ValueError, match=f"KUDIG_TASK_MAX_RUN must be a whole number of 1 or more, got '{text}'"
    ):
        task_max_run(text)
