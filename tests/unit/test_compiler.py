"""Compilation to digdag's task table and its validation messages (reference §1.2-1.3, §5 items 4-7)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kudig.compiler import base_workdir, call_target, compile_workflow
from kudig.errors import ConfigError
from kudig.yamlload import load_dig_text


def compile_text(text: str) -> list:
    return compile_workflow("wf", load_dig_text(text, "wf.dig", Path(".")))


def table(text: str) -> dict[str, list[str]]:
    tasks = compile_text(text)
    return {t.name: [tasks[u].name for u in t.upstreams] for t in tasks}


def test_names_and_sequential_upstreams() -> None:
    assert table("+a:\n  sh>: x\n+g:\n  +b:\n    sh>: y\n  +c:\n    sh>: z\n") == {
        "+wf": [],
        "+wf+a": [],
        "+wf+g": ["+wf+a"],
        "+wf+g+b": [],
        "+wf+g+c": ["+wf+g+b"],
    }


def test_operator_sugar() -> None:
    tasks = compile_text("+a:\n  sh>: echo hi\n  _retry: 2\n")
    assert tasks[1].config == {"_type": "sh", "_command": "echo hi", "_retry": 2}
    # the operator key keeps its place among the task's keys (they are evaluated in order)
    tasks = compile_text("+a:\n  x: 1\n  echo>: hi\n  y: 2\n")
    assert list(tasks[1].config) == ["x", "_type", "_command", "y"]


def test_call_target_normalizes_inside_the_project() -> None:
    assert call_target("", "child") == "child.dig"
    assert call_target("jobs", "../lib/common") == "lib/common.dig"
    assert call_target("jobs", "../jobs/./leaf.dig") == "jobs/leaf.dig"
    assert call_target("a/b", "../../top") == "top.dig"
    for workdir, target in (("", "../x"), ("jobs", "../../x"), ("", "/etc/x"), ("jobs", "lib/../../../x")):
        with pytest.raises(ConfigError, match="File name must not be outside of project path: "):
            call_target(workdir, target)


def test_base_workdir_is_digdags_set_base_workdir() -> None:
    assert base_workdir("sub/x.dig", None) == "sub"
    assert base_workdir("sub/deeper/x.dig", "w") == "sub/deeper/w"
    assert base_workdir("x.dig", None) is None
    assert base_workdir("x.dig", "w") == "w"


def test_after_in_parallel_group() -> None:
    t = table(
        "+p:\n  _parallel: true\n  +a:\n    sh>: a\n  +b:\n    _after: +a\n    sh>: b\n  +c:\n    sh>: c\n"
    )
    assert t["+wf+p+b"] == ["+wf+p+a"]
    assert t["+wf+p+c"] == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("+a:\n  sh>: x\n  py>: y\n", "wf.dig:3: A task can't have more than one operator"),
        (
            "+g:\n  parallel: true\n  +a:\n    sh>: x\n",
            "wf.dig:2: Task +wf+g has unknown keys: 'parallel' (did you mean [_parallel]?)",
        ),
        (
            "invalid_schedule:\n  daily>: 07:00:00\n",
            "wf.dig:1: Workflow 'wf' includes unknown keys: 'invalid_schedule'",
        ),
        (
            "+g:\n  _parallel: ${x}\n  +a:\n    sh>: x\n",
            "wf.dig:2: Expected 'true' or 'false' for key '_parallel' but got '${x}'",
        ),
        (
            "+a:\n  sh>: x\n  _error:\n    sh>: a\n    py>: b\n",
            "wf.dig:5: A task can't have more than one operator",
        ),
        (
            "+p:\n  _parallel: true\n  +a:\n    _background: true\n    sh>: x\n",
            'wf.dig:4: Setting "_background: true" option is invalid (unnecessary) if its parent task has "_parallel: true" option',
        ),
        (
            "+a:\n  sh>: x\n+b:\n  _after: +a\n  sh>: y\n",
            'wf.dig:4: Setting "_after" option is invalid if its parent task doesn\'t have "_parallel: true" option',
        ),
        (
            "+p:\n  _parallel: true\n  +b:\n    _after: +zz\n    sh>: y\n",
            "wf.dig:4: Dependency task '+zz' does not exist",
        ),
        ("+a:\n  shh>: x\n", "wf.dig:2: Unknown operator type 'shh>' (did you mean [sh>"),
        ("+a:\n  sh>: x\n  _retry: often\n", "wf.dig:3: Invalid _retry format"),
        ("+a:\n  sh>: x\n  _retry: {limit: 1, interval_type: linear}\n", "wf.dig:3: Invalid _retry format"),
        ("+a:\n  sh>: x\n  +b:\n    sh>: y\n", "wf.dig:3: A task can't have subtasks"),
        ("+a(b):\n  sh>: x\n", "wf.dig:1: Invalid task name '+a(b)'"),
    ],
)
def test_validation_messages(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        compile_text(text)
    assert str(e.value).startswith(message), str(e.value)


def test_a_task_name_may_start_with_a_digit_after_the_plus() -> None:
    """digdag checks "must not start with a digit" on the whole name, `+` included: real digdag
    0.10.5.1 runs `+1st_step` and `+2nd: {+3rd: ...}`."""
    tasks = compile_text("+1st_step:\n  echo>: a\n+2nd:\n  +3rd:\n    echo>: b\n")
    assert [t.name for t in tasks[1:]] == ["+wf+1st_step", "+wf+2nd", "+wf+2nd+3rd"]


def test_disable_makes_a_noop_group() -> None:
    tasks = compile_text("+a:\n  _disable: true\n  sh>: x\n")
    assert tasks[1].is_group and tasks[1].config == {"_disable": True}


def test_too_many_tasks() -> None:
    text = "".join(f"+t{i}:\n  sh>: x\n" for i in range(5))
    with pytest.raises(ConfigError, match=r"Too many tasks\. Limit: 3"):
        compile_workflow("wf", load_dig_text(text, "wf.dig", Path(".")), max_tasks=3)
