"""rb> in pods. The runner image has Debian's Ruby (its base is hack/cluster/images' python-ruby
image), so an rb> task runs in a pod with digdag's calling convention (`rb>: Mod::Class.method`
with `require:`, parameters mapped to arguments, `Digdag.env.store`), and what it stores reaches
the next tasks, in pods too. A task in a user's image without Ruby (`docker: image:`) fails at
once with a one-line message, and the workflow's later tasks do not run."""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import Kube
from .operator_fixtures import Operator, pod_log_of, push, start, task_pods, tasks_by_name, wait_session

pytestmark = pytest.mark.e2e

TASKS_RB = """\
module Etl
  class Loader
    def self.load(table, rows = 1, prefix: 'p')
      puts "ruby #{RUBY_VERSION} loading #{table} x#{rows} (#{prefix})"
      Digdag.env.store(loaded: "#{prefix}-#{table}", count: rows * 2, meta: { 'by' => 'ruby' })
      Digdag.env.add_subtask(:check, 'expected' => rows * 2)
    end
  end
end

def check(expected, count:, loaded:)
  raise "count #{count} != #{expected}" unless count == expected

  puts "ruby saw #{loaded} #{count}"
end
"""

RB_DIG = """\
_export:
  rb:
    require: lib/tasks
+load:
  rb>: Etl::Loader.load
  table: orders
  rows: 3
  prefix: kd
+use:
  sh>: echo "next task saw ${loaded} ${count} ${meta.by}"
"""


def test_rb_in_a_pod_with_digdags_calling_convention(
    kube: Kube, namespace: str, operator: Operator, tmp_path: Path
) -> None:
    root = tmp_path / "rbwf"
    (root / "lib").mkdir(parents=True)
    (root / "lib" / "tasks.rb").write_text(TASKS_RB)
    (root / "rb.dig").write_text(RB_DIG)
    push(kube, namespace, root, "rbwf")
    name = start(kube, namespace, "rb", "2024-01-30T00:00:00+00:00")
    obj = wait_session(kube, operator, namespace, name, timeout=300)
    assert obj["status"]["phase"] == "Succeeded", obj["status"].get("failedTasks")
    assert "ruby 3.1.2 loading orders x3 (kd)" in pod_log_of(kube, namespace, name, "+rb+load")
    # the subtask Digdag.env.add_subtask made: an rb> task of its own, in its own pod
    assert "ruby saw kd-orders 6" in pod_log_of(kube, namespace, name, "+rb+load^sub+subtask0")
    assert "next task saw kd-orders 6 ruby" in pod_log_of(kube, namespace, name, "+rb+use")
    tasks = tasks_by_name(obj, kube)
    assert tasks["+rb+load"]["store_params"] == {"loaded": "kd-orders", "count": 6, "meta": {"by": "ruby"}}
    assert tasks["+rb+load^sub+subtask0"]["state"] == "success", tasks["+rb+load^sub+subtask0"]


def test_rb_in_a_user_image_without_ruby_fails_in_one_line(
    kube: Kube, namespace: str, operator: Operator, tmp_path: Path
) -> None:
    root = tmp_path / "norb"
    root.mkdir()
    (root / "tasks.rb").write_text("def hello\n  puts 'hi'\nend\n")
    (root / "norb.dig").write_text(
        "+hello:\n  rb>: hello\n  require: tasks\n  docker:\n    image: localhost/kudig/python:3.11\n"
        "+never:\n  sh>: echo never-here\n"
    )
    push(kube, namespace, root, "norb")
    name = start(kube, namespace, "norb", "2024-01-30T00:00:00+00:00")
    obj = wait_session(kube, operator, namespace, name, timeout=300)
    assert obj["status"]["phase"] == "Failed", obj["status"]
    (failed,) = obj["status"]["failedTasks"]
    assert failed["name"] == "+norb+hello"
    assert failed["message"].startswith("rb> needs Ruby, and 'ruby' was not found here: install Ruby")
    assert "\n" not in failed["message"]
    assert tasks_by_name(obj, kube)["+norb+never"]["state"] != "success"
    assert not [
        p
        for p in task_pods(kube, namespace, name)
        if p.metadata.annotations.get("kudig.io/task") == "+norb+never"
    ]
