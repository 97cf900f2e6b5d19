"""py>: digdag's runner.py behaviour through `python -m kudig_runner` with real interpreters."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from runner_helpers import RunTask, find_python, task

TASKS = """
import os
import sys

import digdag


def add(a, b=2):
    digdag.env.store({"sum": a + b})


def with_kwargs(x, **kwargs):
    digdag.env.store(x=x, keys=sorted(kwargs))


def needs(required, optional=1):
    pass


def boom():
    helper_raise()


def helper_raise():
    raise ValueError("something bad happened")


def exits():
    sys.exit(3)


def export_and_store():
    digdag.env.export({"e1": 1}, e2="two")
    digdag.env.store({"s1": [1, 2]}, s2={"k": None})
    digdag.env.set_state(ignored=True)


def read_params():
    import digdag_env
    digdag.env.store(same=digdag_env.params is digdag.env.params, n=digdag.env.params["n"])


def show_env():
    digdag.env.store(
        from_env=os.environ.get("FROM_ENV"),
        param_as_env=os.environ.get("p"),
        secret_var=os.environ.get("KUDIG_SECRET_X"),
        cwd=os.getcwd(),
    )


def make_subtasks():
    digdag.env.add_subtask(step, n=1)
    digdag.env.add_subtask({"sh>": "echo hi", "_env": {"A": "b"}}, x=2)
    digdag.env.add_subtask(Workflow.step, y=3)
    digdag.env.add_subtask(echo_="plain")


def bad_subtask():
    digdag.env.add_subtask(step, value=object())


def unserializable_store():
    digdag.env.store(bad=object())


def big_store():
    digdag.env.store(blob="x" * 5000)


def step(n):
    pass


class Workflow(object):
    def __init__(self, base):
        self.base = base

    def step(self, y, z=10):
        digdag.env.store(total=self.base + y + z)

    @staticmethod
    def static(q):
        digdag.env.store(q=q)


class Runner(object):
    def run(self, greeting="hi"):
        digdag.env.store(ran=greeting)


class NoInit(object):
    def go(self):
        digdag.env.store(went=True)


class NeedsInit(object):
    def __init__(self, must):
        pass

    def go(self):
        pass
"""


@pytest.fixture
def py_project(project: Path) -> Path:
    (project / "tasks.py").write_text(TASKS)
    pkg = project / "pkg" / "sub"
    pkg.mkdir(parents=True)
    (project / "pkg" / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "mod.py").write_text(
        textwrap.dedent(
            """
            import digdag

            class Job:
                def method(self, v):
                    digdag.env.store(job=v)

            def func(v):
                digdag.env.store(func=v)
            """
        )
    )
    (project / "broken.py").write_text("import no_such_dependency_xyz\n\ndef f():\n    pass\n")
    return project


def py_task(command: str | None, **kwargs: Any) -> dict[str, Any]:
    result: dict[str, Any] = task("py", command, **kwargs)
    return result


def test_function_arguments_from_params(run_task: RunTask, py_project: Path) -> None:
    result = run_task(py_task("tasks.add", params={"a": 1, "unrelated": "x"}))
    assert result.rc == 0, result.stderr
    assert result.output == {
        "store_params": {"sum": 3},
        "export_params": {},
        "subtask_config": None,
        "reset_store_params": [],
        "error": None,
    }
    result = run_task(py_task("tasks.add", params={"a": 1, "b": 10}))
    assert result.output["store_params"] == {"sum": 11}


def test_kwargs_get_all_params(run_task: RunTask, py_project: Path) -> None:
    result = run_task(py_task("tasks.with_kwargs", params={"x": 1, "y": 2}, config={"z": 3}))
    assert result.rc == 0, result.stderr
    # digdag passes its whole config: _command and the task's own keys included
    assert result.output["store_params"] == {"x": 1, "keys": ["_command", "y", "z"]}


def test_class_method_with_init_args(run_task: RunTask, py_project: Path) -> None:
    result = run_task(py_task("tasks.Workflow.step", params={"base": 100, "y": 5}))
    assert result.rc == 0, result.stderr
    assert result.output["store_params"] == {"total": 115}


def test_static_method(run_task: RunTask, py_project: Path) -> None:
    result = run_task(py_task("tasks.Workflow.static", params={"base": 0, "q": "x"}))
    assert result.rc == 0, result.stderr
    assert result.output["store_params"] == {"q": "x"}


def test_class_name_runs_run(run_task: RunTask, py_project: Path) -> None:
    result = run_task(py_task("tasks.Runner"))
    assert result.output["store_params"] == {"ran": "hi"}
    result = run_task(py_task("tasks.Runner", params={"greeting": "yo"}))
    assert result.output["store_params"] == {"ran": "yo"}


def test_class_without_init(run_task: RunTask, py_project: Path) -> None:
    result = run_task(py_task("tasks.NoInit.go"))
    assert result.output["store_params"] == {"went": True}


def test_package_module_class_method(run_task: RunTask, py_project: Path) -> None:
    assert run_task(py_task("pkg.sub.mod.Job.method", params={"v": 1})).output["store_params"] == {"job": 1}
    assert run_task(py_task("pkg.sub.mod.func", params={"v": 2})).output["store_params"] == {"func": 2}


def test_missing_required_parameter(run_task: RunTask, py_project: Path) -> None:
    result = run_task(py_task("tasks.needs"))
    assert result.rc == 1
    error = result.error
    assert error is not None
    assert error["class"] == "TypeError"
    assert error["message"] == (
        "Python command failed with code 1\n"
        "Error messages from python: Method 'needs' requires parameter 'required' but not set (TypeError)"
    )

    init = run_task(py_task("tasks.NeedsInit.go")).error
    assert init is not None
    assert "Method 'NeedsInit.__init__' requires parameter 'must' but not set" in init["message"]

    method = run_task(py_task("tasks.Workflow.step", params={"base": 1})).error
    assert method is not None
    assert "Method 'Workflow.step' requires parameter 'y' but not set" in method["message"]


def test_exception_with_backtrace(run_task: RunTask, py_project: Path) -> None:
    result = run_task(py_task("tasks.boom"))
    assert result.rc == 1
    error = result.error
    assert error is not None
    assert error["class"] == "ValueError"
    assert error["message"] == (
        "Python command failed with code 1\nError messages from python: something bad happened (ValueError)"
    )
    backtrace = error["backtrace"]
    assert backtrace.startswith("Traceback (most recent call last):")
    assert "in helper_raise" in backtrace and "tasks.py" in backtrace
    assert backtrace.rstrip().endswith("ValueError: something bad happened")
    # the traceback is in the task log too
    assert "ValueError: something bad happened" in result.stdout


def test_system_exit(run_task: RunTask, py_project: Path) -> None:
    error = run_task(py_task("tasks.exits")).error
    assert error is not None
    assert error["class"] == "SystemExit"
    assert "Python command tasks.exits terminated with exit code 3" in error["message"]
    assert "module name conflicted with the standard library" in error["message"]


def test_module_shadowing_stdlib(run_task: RunTask, project: Path) -> None:
    # digdag's py/dup_module.dig: a project file named like a standard-library module
    (project / "tokenize.py").write_text("def main():\n    pass\n")
    # the runner already imported the standard tokenize, whose main() exits on our argv
    error = run_task(py_task("tokenize.main")).error
    assert error is not None and error["class"] == "SystemExit"
    assert "Python command tokenize.main terminated with exit code 2" in error["message"]
    assert "module name conflicted with the standard library" in error["message"]


def test_store_and_export(run_task: RunTask, py_project: Path) -> None:
    result = run_task(py_task("tasks.export_and_store"))
    assert result.rc == 0, result.stderr
    assert result.output["export_params"] == {"e1": 1, "e2": "two"}
    assert result.output["store_params"] == {"s1": [1, 2], "s2": {"k": None}}


def test_digdag_env_module(run_task: RunTask, py_project: Path) -> None:
    result = run_task(py_task("tasks.read_params", params={"n": 7}))
    assert result.output["store_params"] == {"same": True, "n": 7}


def test_add_subtask_forms_and_naming(run_task: RunTask, py_project: Path) -> None:
    result = run_task(py_task("tasks.make_subtasks"))
    assert result.rc == 0, result.stderr
    subtasks = result.output["subtask_config"]
    assert list(subtasks) == ["+subtask0", "+subtask1", "+subtask2", "+subtask3"]
    assert subtasks == {
        "+subtask0": {"n": 1, "py>": "tasks.step"},
        "+subtask1": {"sh>": "echo hi", "_env": {"A": "b"}, "x": 2},
        "+subtask2": {"y": 3, "py>": "tasks.Workflow.step"},
        "+subtask3": {"echo_": "plain"},
    }


def test_add_subtask_not_serializable(run_task: RunTask, py_project: Path) -> None:
    error = run_task(py_task("tasks.bad_subtask")).error
    assert error is not None and error["class"] == "TypeError"
    assert "Parameters must be serializable using JSON" in error["message"]


def test_store_not_serializable(run_task: RunTask, py_project: Path) -> None:
    error = run_task(py_task("tasks.unserializable_store")).error
    assert error is not None and "must be serializable using JSON" in error["message"]


def test_env_and_params(run_task: RunTask, py_project: Path) -> None:
    result = run_task(
        py_task(
            "tasks.show_env",
            params={"p": "not-an-env-var"},
            env={"FROM_ENV": "${secret:x}-env"},
            secrets={"x": "KUDIG_SECRET_X"},
        ),
        extra_env={"KUDIG_SECRET_X": "s3cret"},
    )
    assert result.rc == 0, result.stderr
    stored = result.output["store_params"]
    assert stored["from_env"] == "s3cret-env"
    assert stored["param_as_env"] is None
    assert stored["secret_var"] is None
    assert Path(stored["cwd"]).resolve() == py_project.resolve()


def test_import_errors(run_task: RunTask, py_project: Path) -> None:
    missing = run_task(py_task("no_such_module.func")).error
    assert missing is not None and missing["class"] == "ModuleNotFoundError"
    assert "No module named 'no_such_module'" in missing["message"]

    attr = run_task(py_task("tasks.no_such_function")).error
    assert attr is not None and "Module 'tasks' has no attribute 'no_such_function'" in attr["message"]

    # an ImportError inside the user's module is reported as is, not as a missing class
    inner = run_task(py_task("broken.f")).error
    assert inner is not None and "No module named 'no_such_dependency_xyz'" in inner["message"]

    bad = run_task(py_task("justaname")).error
    assert bad is not None and "expected module.function or module.Class.method" in bad["message"]


def test_script_in_workdir_imports_helper(run_task: RunTask, project: Path) -> None:
    scripts = project / "scripts"
    scripts.mkdir()
    (scripts / "helper.py").write_text("def double(x):\n    return 2 * x\n")
    (scripts / "job.py").write_text(
        "import digdag\nfrom helper import double\n\ndef main(n):\n    digdag.env.store(doubled=double(n))\n"
    )
    result = run_task(py_task("job.main", params={"n": 21}, workdir="scripts"))
    assert result.rc == 0, result.stderr
    assert result.output["store_params"] == {"doubled": 42}


def test_runner_modules_do_not_shadow_user_modules(run_task: RunTask, project: Path) -> None:
    # kudig_runner has protocol.py, shell.py, secrets.py...: user code must get its own / stdlib's
    (project / "shell.py").write_text(
        "import digdag\nimport secrets\n\ndef f():\n    digdag.env.store(tok=len(secrets.token_hex(4)), mine=True)\n"
    )
    result = run_task(py_task("shell.f"))
    assert result.rc == 0, result.stderr
    assert result.output["store_params"] == {"tok": 8, "mine": True}


def test_python_option(run_task: RunTask, py_project: Path) -> None:
    as_list = run_task(
        py_task("tasks.add", params={"a": 1, "py": {"python": [sys.executable, "-X", "utf8"]}})
    )
    assert as_list.rc == 0, as_list.stderr
    assert as_list.output["store_params"] == {"sum": 3}

    as_string = run_task(py_task("tasks.add", params={"a": 2}, config={"python": sys.executable}))
    assert as_string.output["store_params"] == {"sum": 4}

    missing = run_task(py_task("tasks.add", params={"a": 1}, config={"py": {"python": ["/no/such/python"]}}))
    assert missing.error is not None and "Cannot run python '/no/such/python'" in missing.error["message"]


@pytest.mark.parametrize("version", ["3.8", "3.9", "3.10", "3.12", "3.13"])
def test_py_runner_under_other_pythons(run_task: RunTask, py_project: Path, version: str) -> None:
    python = find_python(version)
    if python is None:
        pytest.skip(f"no python{version} here")
    result = run_task(py_task("tasks.make_subtasks", params={"py": {"python": [python]}}))
    assert result.rc == 0, result.stdout
    assert list(result.output["subtask_config"]) == ["+subtask0", "+subtask1", "+subtask2", "+subtask3"]
    error = run_task(py_task("tasks.needs", params={"py": {"python": [python]}})).error
    assert error is not None and "requires parameter 'required' but not set" in error["message"]


def test_whole_runner_under_python38(run_task: RunTask, py_project: Path) -> None:
    # the runner package itself is standard-library only and may run under an old image python
    python = find_python("3.8")
    if python is None:
        pytest.skip("no python3.8 here")
    result = run_task(py_task("tasks.Workflow.step", params={"base": 1, "y": 1}), python=python)
    assert result.rc == 0, result.stderr
    assert result.output["store_params"] == {"total": 12}
    assert run_task(task("sh", "echo $x", params={"x": {"a": True}}), python=python).stdout == '{"a":true}\n'


def test_output_larger_than_termination_message(run_task: RunTask, py_project: Path) -> None:
    # 5 KB of stored params do not fit a termination message: they go through the log
    result = run_task(py_task("tasks.big_store"), max_bytes=4096)
    assert result.rc == 0, result.stderr
    assert len(result.raw) <= 4096 and "result_in_log" in result.output
    assert result.result["store_params"] == {"blob": "x" * 5000}
    # without a limit (kudig run) the output file holds the result itself
    local = run_task(py_task("tasks.big_store"))
    assert local.rc == 0 and local.output["store_params"] == {"blob": "x" * 5000}


def test_script_form(run_task: RunTask, project: Path) -> None:
    script = textwrap.dedent(
        """
        import json, sys
        params = json.load(open(sys.argv[1]))["params"]
        with open(sys.argv[2], "w") as f:
            json.dump({"store_params": {"got": params["v"]}, "export_params": {}, "subtask_config": {}}, f)
        """
    )
    result = run_task(py_task(None, params={"v": 5}, config={"script": script}))
    assert result.rc == 0, result.stdout
    assert result.output["store_params"] == {"got": 5}


def test_no_command(run_task: RunTask, project: Path) -> None:
    error = run_task(py_task(None)).error
    assert error is not None and "py> requires a command" in error["message"]
