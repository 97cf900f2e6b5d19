"""The session engine's decisions, driven without processes (see driver.py)."""

from __future__ import annotations

from pathlib import Path

from kudig.engine.core import Engine, KillRequested, RetryPolicy, StartTask, TaskSucceeded, parse_retry
from kudig.engine.state import SessionState

from .driver import drive


def test_sequential_order() -> None:
    run = drive("+a:\n  sh>: a\n+b:\n  sh>: b\n+c:\n  sh>: c\n")
    assert run.started == ["+wf+a", "+wf+b", "+wf+c"]
    assert run.state == "success"
    assert not run.violations


def test_parallel_limit_is_batching() -> None:
    run = drive("+p:\n  _parallel: {limit: 2}\n" + "".join(f"  +t{i}:\n    sh>: t{i}\n" for i in range(5)))
    tasks = {t.name: t for t in run.engine.state.tasks}
    up = {
        n.rsplit("+", 1)[1]: sorted(
            tasks[run.engine.state.tasks[u].name].name.rsplit("+", 1)[1] for u in t.upstreams
        )
        for n, t in tasks.items()
        if n.startswith("+wf+p+")
    }
    assert up == {"t0": [], "t1": [], "t2": ["t0", "t1"], "t3": ["t0", "t1"], "t4": ["t2", "t3"]}
    assert run.state == "success"


def test_loop_parallel_limit_generates_batches() -> None:
    run = drive("+l:\n  loop>: 5\n  _parallel: {limit: 2}\n  _do:\n    sh>: x\n")
    tasks = {t.name: t for t in run.engine.state.tasks}
    loop4 = tasks["+wf+l^sub+loop-4"]
    assert sorted(run.engine.state.tasks[u].name for u in loop4.upstreams) == [
        "+wf+l^sub+loop-2",
        "+wf+l^sub+loop-3",
    ]
    assert run.state == "success"


def test_background_task_runs_beside_and_next_waits() -> None:
    run = drive("+a:\n  sh>: a\n+bg:\n  _background: true\n  sh>: bg\n+b:\n  sh>: b\n+c:\n  sh>: c\n")
    tasks = {t.name: t for t in run.engine.state.tasks}
    assert list(tasks["+wf+bg"].upstreams) == []
    assert sorted(run.engine.state.tasks[u].name for u in tasks["+wf+b"].upstreams) == ["+wf+a", "+wf+bg"]
    assert run.started.index("+wf+bg") < run.started.index("+wf+b")
    assert run.state == "success"


def test_sequential_failure_blocks_later_siblings() -> None:
    run = drive("+a:\n  sh>: a\n+b:\n  sh>: fail\n+c:\n  sh>: c\n")
    assert run.started == ["+wf+a", "+wf+b"]
    states = run.states()
    assert states["+wf+c"] == "blocked"
    assert states["+wf+b"] == "error"
    assert run.state == "group_error"


def test_parallel_failure_lets_running_siblings_finish() -> None:
    run = drive(
        "+p:\n  _parallel: true\n  +a:\n    sh>: fail\n  +b:\n    sh>: b\n  +c:\n    sh>: c\n+after:\n  sh>: x\n"
    )
    assert set(run.started) == {"+wf+p+a", "+wf+p+b", "+wf+p+c"}
    assert run.states()["+wf+p+b"] == "success"
    assert run.states()["+wf+after"] == "blocked"
    assert run.state == "group_error"


def test_operator_retry_until_success_and_limit() -> None:
    run = drive("+t:\n  _retry: 2\n  sh>: fail:2\n")
    assert run.started.count("+wf+t") == 3
    assert run.state == "success"
    run = drive("+t:\n  _retry: 2\n  sh>: fail\n")
    assert run.started.count("+wf+t") == 3
    assert run.state == "group_error"


def test_retry_intervals() -> None:
    assert parse_retry({"limit": 3, "interval": 10, "interval_type": "exponential"}) == RetryPolicy(
        3, 10.0, True
    )
    policy = RetryPolicy(5, 10.0, True, 25.0)
    assert [policy.delay(i) for i in range(4)] == [10, 20, 25, 25]
    assert parse_retry("3") == RetryPolicy(3)
    assert parse_retry({"limit": "3"}) == RetryPolicy(3)
    assert parse_retry({"interval": 1}) is None
    run = drive("+t:\n  _retry: {limit: 3, interval: 2, interval_type: exponential}\n  sh>: fail\n")
    assert run.started.count("+wf+t") == 4
    assert run.now == 2 + 4 + 8


def test_template_retry_value_on_operator_is_evaluated() -> None:
    run = drive("_export:\n  n: 2\n+t:\n  _retry: ${n}\n  sh>: fail\n")
    assert run.started.count("+wf+t") == 3


def test_group_retry_reruns_group_from_first_child() -> None:
    text = "+g:\n  _retry: 3\n  +a:\n    echo>: try1\n  +b:\n    echo>: try2\n  +c:\n    sh>: fail\n+d:\n  echo>: task4\n"
    run = drive(text)
    assert "".join(run.logs) == "try1try2" * 4
    assert "task4" not in run.logs
    assert run.state == "group_error"


def test_group_retry_with_template_is_invalid_and_not_retried() -> None:
    run = drive("+g:\n  _retry: ${n}\n  +c:\n    sh>: fail\n", params={"n": "3"})
    assert run.started.count("+wf+g+c") == 1


def test_error_task_gets_error_message_and_later_siblings_do_not_run() -> None:
    text = "+a:\n  sh>: fail\n  _error:\n    echo>: 'failed: ${error.message}'\n+b:\n  echo>: never\n"
    run = drive(text)
    assert run.logs == ["failed: fail (attempt 0)"]
    assert run.states()["+wf+a"] == "error"
    assert run.states()["+wf+a^error"] == "success"
    assert run.state == "group_error"


def test_group_error_task_and_top_level_error() -> None:
    text = "_error:\n  echo>: top ${error.message}\n+g:\n  _error:\n    echo>: group\n  +x:\n    sh>: fail\n"
    run = drive(text)
    assert run.logs == ["group", "top fail (attempt 0)"]
    assert run.state == "group_error"


def test_error_task_runs_after_retries_exhausted() -> None:
    run = drive("+a:\n  _retry: 1\n  sh>: fail\n  _error:\n    echo>: e\n")
    assert run.started.count("+wf+a") == 2
    assert run.logs == ["e"]


def test_check_runs_after_success_and_can_fail_the_task() -> None:
    run = drive("+a:\n  sh>: ok\n  _check:\n    echo>: checked\n+b:\n  echo>: next\n")
    assert run.logs == ["checked", "next"]
    run = drive("+a:\n  sh>: ok\n  _check:\n    fail>: bad\n+b:\n  echo>: next\n")
    assert run.logs == []
    assert run.state == "group_error"


def test_check_waits_for_generated_subtasks() -> None:
    run = drive("+l:\n  loop>: 2\n  _do:\n    echo>: ${i}\n  _check:\n    echo>: check\n")
    assert run.logs == ["0", "1", "check"]


def test_if_untaken_branch_is_not_evaluated() -> None:
    run = drive("+i:\n  if>: true\n  _do:\n    echo>: OK_do\n  _else_do:\n    echo>: ${undefined_var}\n")
    assert run.logs == ["OK_do"]
    assert run.state == "success"
    run = drive(
        "+i:\n  if>: false\n  _do:\n    echo>: ${undefined_var}\n  _else_do:\n    echo>: OK_else_do\n"
    )
    assert run.logs == ["OK_else_do"]


def test_undefined_variable_fails_without_retry() -> None:
    run = drive("+t:\n  _retry: 3\n  echo>: ${nope}\n")
    assert run.state == "group_error"
    task = next(t for t in run.engine.state.tasks if t.name == "+wf+t")
    assert task.retry_count == 0
    assert "nope" in (task.error or {})["message"]


def test_for_each_names_and_cartesian_order() -> None:
    run = drive("+f:\n  for_each>:\n    a: [1, 2]\n    b: ['x y', 'z']\n  _do:\n    echo>: ${a}${b}\n")
    names = [t.name.split("^sub")[1] for t in run.engine.state.tasks if "^sub+" in t.name]
    assert names == [
        "+for-0=a=0=1&1=b=0=x%20y",
        "+for-0=a=0=1&1=b=1=z",
        "+for-0=a=1=2&1=b=0=x%20y",
        "+for-0=a=1=2&1=b=1=z",
    ]
    assert run.logs == ["1x y", "1z", "2x y", "2z"]


def test_for_range_slices() -> None:
    run = drive(
        "+r:\n  for_range>:\n    from: 1\n    to: 8\n    slices: 3\n  _do:\n    echo>: ${range.from}-${range.to}-${range.index}\n"
    )
    assert run.logs == ["1-4-0", "4-7-1", "7-8-2"]


def test_store_params_fork_and_join() -> None:
    text = """
+prepare:
  sh>: ok
  store: {v: prepare}
+fork:
  _parallel: true
  +a:
    sh>: ok
    store: {v: a}
  +b:
    sh>: ok
    store: {v: b}
  +c:
    echo>: c sees ${v}
+join:
  echo>: join sees ${v}
"""
    run = drive(text)
    assert "c sees prepare" in run.logs
    assert "join sees b" in run.logs


def test_export_beats_params_and_store_beats_parent_export() -> None:
    text = "_export:\n  x: exported\n+a:\n  echo>: ${x}\n"
    assert drive(text, params={"x": "cli"}).logs == ["exported"]
    text = "_export:\n  x: exported\n+s:\n  sh>: ok\n  store: {x: stored}\n+a:\n  echo>: ${x}\n"
    assert drive(text).logs == ["stored"]


def test_builtins_cannot_be_overridden() -> None:
    run = drive("+a:\n  echo>: ${session_time}\n", params={"session_time": "nope"})
    assert run.logs == ["2024-01-30T00:00:00+00:00"]


def test_loop_bomb_hits_task_limit() -> None:
    run = drive("+l:\n  loop>: 20\n  _do:\n    echo>: x\n", max_tasks=10)
    task = next(t for t in run.engine.state.tasks if t.name == "+wf+l")
    assert "Too many loop subtasks. Limit: 10" in (task.error or {})["message"]
    run = drive("+l:\n  loop>: 3\n  _do:\n    loop>: 3\n    _do:\n      echo>: x\n", max_tasks=10)
    assert run.state == "group_error"
    assert any(
        "Too many tasks. Limit: 10" in (t.error or {}).get("message", "") for t in run.engine.state.tasks
    )


def test_call_cycle_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "a.dig").write_text("+x:\n  call>: b\n")
    (tmp_path / "b.dig").write_text("+y:\n  call>: a\n")
    run = drive("+x:\n  call>: a\n", project_dir=tmp_path)
    assert run.state == "group_error"
    messages = [(t.error or {}).get("message", "") for t in run.engine.state.tasks]
    assert any("Recursive call> detected: a.dig -> b.dig -> a.dig" in m for m in messages)


def test_call_subdirectory_sets_workdir(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "child.dig").write_text("+c:\n  echo>: wd=${_workdir}\n")
    run = drive("+x:\n  call>: sub/child\n", project_dir=tmp_path)
    assert run.logs == ["wd=sub"]


def test_call_with_dotdot_inside_the_project_and_workdir_rules(tmp_path: Path) -> None:
    # Workspace.getPath: the name is normalized against _workdir and may use ../ inside the
    # project; WorkflowFile.setBaseWorkdir: a called file in a directory runs there (its own
    # `_workdir` appended), one at the root keeps the caller's _workdir
    for d in ("jobs", "lib"):
        (tmp_path / d).mkdir()
    (tmp_path / "jobs" / "run.dig").write_text(
        "+lib:\n  call>: ../lib/common\n+root:\n  call>: ../helper\n+out:\n  call>: ../../x\n"
    )
    (tmp_path / "lib" / "common.dig").write_text(
        "_export:\n  _workdir: deeper\n+c:\n  echo>: common=${_workdir}\n"
    )
    (tmp_path / "helper.dig").write_text("+h:\n  echo>: helper=${_workdir}\n")
    run = drive("+x:\n  call>: jobs/run\n", project_dir=tmp_path)
    assert run.logs == ["common=lib/deeper", "helper=jobs"]
    failed = {t.name: (t.error or {}).get("message") for t in run.engine.state.tasks if t.error}
    assert failed["+wf+x^sub+out"] == "File name must not be outside of project path: ../../x"


def test_task_keys_are_evaluated_in_order() -> None:
    # OperatorManager.evalConfig + ConfigEvalEngine: a task's new key is visible only to the keys
    # after it; a key it also inherits keeps the inherited place, before every new key
    run = drive(
        "_export:\n  g: exported\n"
        "+a:\n  b: \"${typeof c == 'undefined' ? 'none' : c}\"\n  c: own-c\n  d: ${b}/${c}\n  echo>: ${d}\n"
        "+b:\n  echo>: g=${g}\n  g: own\n"
    )
    assert run.logs == ["none/own-c", "g=own"]


def test_kill_cancels_blocked_and_running() -> None:
    text = "+a:\n  sh>: a\n+b:\n  sh>: b\n"
    from kudig.compiler import compile_workflow
    from kudig.engine.core import SessionContext
    from kudig.yamlload import load_dig_text
    from tests.engine.driver import evaluator

    specs = compile_workflow("wf", load_dig_text(text, "wf.dig", Path(".")))
    ctx = SessionContext("wf", "UTC", {}, {}, evaluator())
    engine = Engine.new(ctx, specs)
    actions = engine.step([], 0)
    start = [a for a in actions if isinstance(a, StartTask)]
    assert [a.name for a in start] == ["+wf+a"]
    engine.step([KillRequested()], 1)
    engine.step([TaskSucceeded(start[0].task_id)], 2)
    assert engine.state.done
    assert {t.name: t.state.value for t in engine.state.tasks} == {
        "+wf": "canceled",
        "+wf+a": "canceled",
        "+wf+b": "canceled",
    }


def test_state_round_trips_through_json_mid_session() -> None:
    text = "+a:\n  sh>: a\n+p:\n  _parallel: true\n  +x:\n    sh>: x\n  +y:\n    sh>: y\n+z:\n  echo>: done\n"
    from kudig.compiler import compile_workflow
    from kudig.engine.core import SessionContext
    from kudig.yamlload import load_dig_text
    from tests.engine.driver import evaluator

    specs = compile_workflow("wf", load_dig_text(text, "wf.dig", Path(".")))
    ctx = SessionContext("wf", "UTC", {}, {}, evaluator())
    engine = Engine.new(ctx, specs)
    pending = [a for a in engine.step([], 0) if isinstance(a, StartTask)]
    seen = [a.name for a in pending]
    while not engine.state.done:
        import json

        engine = Engine(ctx, SessionState.from_json(json.loads(json.dumps(engine.state.to_json()))))
        events = [TaskSucceeded(a.task_id) for a in pending]
        pending = [a for a in engine.step(events, 1) if isinstance(a, StartTask)]
        seen += [a.name for a in pending]
    assert engine.state.success
    assert seen == ["+wf+a", "+wf+p+x", "+wf+p+y"]


def test_ready_at_is_when_the_task_last_became_ready() -> None:
    run = drive("+t:\n  _retry: {limit: 1, interval: 5}\n  sh>: fail:1\n+u:\n  sh>: u\n")
    tasks = {t.name: t for t in run.engine.state.tasks}
    assert tasks["+wf+t"].ready_at == 5.0  # its retry became ready when the interval passed
    assert tasks["+wf+u"].ready_at == 5.0
    assert tasks["+wf"].ready_at is None  # a group is planned, never ready
    state = run.engine.state
    assert SessionState.from_json(state.to_json()).to_json() == state.to_json()
