"""rb> with Debian's Ruby (hack/ruby installs it): digdag's runner.rb calling convention through
`kudig run` and the runner's operator function directly."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from kudig_runner.dispatch import run_task
from kudig_runner.protocol import TaskInput

ROOT = Path(__file__).resolve().parents[3]
if str(ROOT) not in sys.path:  # tests/unit has no __init__.py: make `tests.peers` importable
    sys.path.insert(0, str(ROOT))

from tests import peers  # noqa: E402


def _ruby() -> str:
    ruby = shutil.which("ruby")
    if ruby is None:
        proc = subprocess.run([str(ROOT / "hack" / "ruby")], capture_output=True, text=True, timeout=900)
        if proc.returncode == 0:
            ruby = proc.stdout.strip().splitlines()[-1]
    if ruby is None:
        if os.environ.get("CI") == "true" or os.environ.get("KUDIG_E2E") == "1":
            raise AssertionError("Ruby is not available (hack/ruby failed)")
        pytest.skip("Ruby is not available (hack/ruby needs root and apt)")
    return ruby


@pytest.fixture(scope="module")
def ruby() -> str:
    return _ruby()


TASKS_RB = """
module Etl
  class Loader
    def initialize(table, prefix: 'p')
      @table = table
      @prefix = prefix
    end

    def load(rows, mode = 'append', **rest)
      Digdag.env.store(loaded: "#{@prefix}:#{@table}:#{rows}:#{mode}", seen: rest.keys.include?(:session_date))
    end

    def self.plan(count)
      count.times do |i|
        Digdag.env.add_subtask('Etl::Loader.step', { 'n' => i })
      end
      Digdag.env.add_subtask(Etl::Loader, :step, 'n' => 'last')
      Digdag.env.add_subtask('sh>' => 'echo sub-sh')
      Digdag.env.export('planned' => count)
    end

    def self.step(n, planned)
      puts "step #{n} of #{planned}"
    end
  end
end

def hello(name, greeting: 'hello')
  puts "#{greeting} #{name} from ruby #{RUBY_VERSION}"
  Digdag.env.store('greeted' => name, 'nested' => { 'a' => [1, 2] })
end

def fail_hard
  raise ArgumentError, 'bad input here'
end
"""

WORKFLOW = """
_export:
  rb:
    ruby: RUBY
    require: lib/tasks
  who: kudig

+hello:
  rb>: hello
  require: lib/tasks
  name: ${who}

+load:
  rb>: Etl::Loader.load
  table: orders
  rows: 3

+plan:
  rb>: Etl::Loader.plan
  count: 2

+use:
  sh>: echo "rb-ok greeted=${greeted} nested=${nested.a[1]} loaded=${loaded} seen=${seen}"
"""


def _project(root: Path, ruby: str) -> Path:
    (root / "lib").mkdir(parents=True)
    (root / "lib" / "tasks.rb").write_text(TASKS_RB, encoding="utf-8")
    (root / "rb.dig").write_text(WORKFLOW.replace("RUBY", ruby), encoding="utf-8")
    (root / "fail.dig").write_text(
        "+f:\n  rb>: fail_hard\n  require: lib/tasks\n+never:\n  sh>: echo never-here\n", encoding="utf-8"
    )
    return root


def kudig_run(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return peers.kudig_run(project, *args)


def test_workflow_store_export_subtasks_require_class_methods(ruby: str, tmp_path: Path) -> None:
    root = _project(tmp_path / "p", ruby)
    proc = kudig_run(root, "rb.dig", "--session", "2024-01-30")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "hello kudig from ruby" in out
    # subtasks run in order, as +subtask0, +subtask1, ..., and see what their parent exported
    assert (
        out.index("step 0 of 2")
        < out.index("step 1 of 2")
        < out.index("step last of 2")
        < out.index("sub-sh")
    )
    assert "(+rb+plan^sub+subtask1): rb>: Etl::Loader.step" in out
    assert "rb-ok greeted=kudig nested=2 loaded=p:orders:3:append seen=true" in out


def test_error_fails_with_ruby_message_and_backtrace(ruby: str, tmp_path: Path) -> None:
    root = _project(tmp_path / "p", ruby)
    proc = kudig_run(root, "fail.dig", "--no-save")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "Ruby command failed with code 1" in out
    assert "Error messages from ruby: bad input here (ArgumentError)" in out
    assert "never-here" not in proc.stdout


def _input(
    command: Any, config: dict[str, Any] | None = None, params: dict[str, Any] | None = None
) -> TaskInput:
    return {
        "task_name": "+wf+rb",
        "type": "rb",
        "config": {"_command": command, **(config or {})},
        "params": params or {},
        "env": {},
        "secrets": {},
        "workdir": "",
    }


def test_calling_convention(ruby: str, tmp_path: Path) -> None:
    (tmp_path / "conv.rb").write_text(
        textwrap.dedent(
            """
            class Counter
              def self.count(a, b = 10, c = 20, *rest, k:, opt: 'o', **all)
                Digdag.env.store(r: [a, b, c, k, opt, all.keys.sort.map(&:to_s)])
              end

              def run
                Digdag.env.store(r: 'instance')
              end
            end

            def needs(x, y)
            end

            def quit
              exit 4
            end
            """
        ),
        encoding="utf-8",
    )
    config = {"require": "conv", "ruby": ruby}
    out = run_task(_input("Counter.count", config, {"a": 1, "c": 3, "k": "K"}), tmp_path)
    assert out["error"] is None, out["error"]
    # `c` is not taken: positional optionals stop at the first missing one (`b`)
    assert out["store_params"]["r"][:5] == [1, 10, 20, "K", "o"]
    assert "a" in out["store_params"]["r"][5] and "k" not in out["store_params"]["r"][5]  # k: took it
    out = run_task(_input("Counter.run", config), tmp_path)
    assert out["error"] is None and out["store_params"] == {"r": "instance"}
    out = run_task(_input("needs", config, {"x": 1}), tmp_path)
    assert out["error"] is not None
    assert "Method 'needs' requires parameter 'y' but not set" in out["error"]["message"]
    out = run_task(_input("quit", config), tmp_path)
    assert out["error"] is not None and "exited with status 4" in out["error"]["message"]
    out = run_task(_input("Nope::Missing.run", config), tmp_path)
    assert out["error"] is not None and out["error"]["class"] == "NameError"


def test_ruby_missing_is_a_clear_error(tmp_path: Path) -> None:
    out = run_task(_input("hello", {"ruby": "/nonexistent/ruby"}), tmp_path)
    assert out["error"] is not None
    message = out["error"]["message"]
    assert message.startswith("rb> needs Ruby, and '/nonexistent/ruby' was not found here: install Ruby")
    assert "\n" not in message and out["error"]["class"] == "ConfigError"


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"ruby": 3}, "rb> option 'ruby' must be a string or a list of strings"),
        ({"require": ["a"]}, "rb> option 'require' must be a string"),
    ],
)
def test_config_errors(config: dict[str, Any], message: str, tmp_path: Path) -> None:
    out = run_task(_input("hello", config), tmp_path)
    assert out["error"] is not None and message in out["error"]["message"]


@pytest.mark.parametrize(("language", "lower"), [("Python", "python"), ("Ruby", "ruby")])
def test_collect_output_is_shared_by_py_and_rb(language: str, lower: str) -> None:
    from kudig_runner.pyop import collect_output

    ok = json.dumps({"store_params": {"a": 1}, "error": None}).encode()
    assert collect_output(ok, 0, language)["store_params"] == {"a": 1}
    err = {"class": "KeyError", "message": "'x'", "backtrace": "trace"}
    failed = collect_output(json.dumps({"error": err}).encode(), 1, language)["error"]
    assert failed == {
        "class": "KeyError",
        "message": f"{language} command failed with code 1\nError messages from {lower}: 'x' (KeyError)",
        "backtrace": "trace",
    }
    no_output = collect_output(None, 3, language)["error"]
    assert no_output is not None and no_output["class"] == "CommandFailed"
    assert no_output["message"] == f"{language} command failed with code 3"
    assert collect_output(None, 0, language)["error"]["message"] == f"{language} command wrote no output file"
    bad = collect_output(b"{not json", 0, language)["error"]
    assert bad["class"] == "ProtocolError" and bad["message"].startswith(
        f"{language} output file is not valid JSON"
    )
