"""Workflows addressed by their digdag names (kudig.workflowref), the labels `kudig push` sets for
it, digdag's command aliases, `kudig show` (tree, DOT, SVG) of a local .dig, `kudig version` and
the `secrets --set` forms. No cluster: the cluster side is tests/e2e/test_cli_names.py."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from kudig.api import ANNOTATION_WORKFLOW_NAME, LABEL_PROJECT, LABEL_WORKFLOW_NAME
from kudig.cli import build_parser, cmd_check, cmd_init, cmd_run, cmd_secrets, secret_pairs
from kudig.cluster import cli as cluster_cli
from kudig.cluster.project import build_objects
from kudig.errors import KudigError
from kudig.workflowref import WorkflowRef, name_label, resolve, selector, workflow_ref

ROOT = Path(__file__).resolve().parents[2]
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def pushed(tmp_path: Path, project: str, *names: str) -> list[WorkflowRef]:
    root = tmp_path / project
    root.mkdir()
    for name in names:
        (root / f"{name}.dig").write_text("+a:\n  echo>: hi\n")
    objs = [o for o in build_objects(root, project, "ns") if o["kind"] == "Workflow"]
    # a metadata-only listing (what the CLI and the controller read) carries what resolving needs
    return [workflow_ref({"metadata": o["metadata"]}) for o in objs]


def matches(sel: str, ref_labels: dict[str, str]) -> bool:
    return all(ref_labels.get(k) == v for k, _, v in (t.partition("=") for t in sel.split(",")))


def test_push_labels_each_workflow_with_its_digdag_and_project_names(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    root.mkdir()
    for name in ("every_minute", "MyFlow", "plain"):
        (root / f"{name}.dig").write_text("+a:\n  echo>: hi\n")
    objs = {o["spec"]["name"]: o for o in build_objects(root, "My_Project", "ns") if o["kind"] == "Workflow"}
    assert objs["every_minute"]["metadata"]["name"].startswith("every-minute-")
    assert objs["MyFlow"]["metadata"]["name"].startswith("myflow-")
    for name, obj in objs.items():
        labels = obj["metadata"]["labels"]
        assert all(LABEL_VALUE.match(v) and len(v) <= 63 for v in labels.values()), labels
        assert labels[LABEL_WORKFLOW_NAME] == name, "a label-safe digdag name is the label itself"
        assert obj["metadata"]["annotations"][ANNOTATION_WORKFLOW_NAME] == name
        assert matches(selector(name, "My_Project"), labels)
        assert not matches(selector(name, "other"), labels)
    assert objs["plain"]["metadata"]["labels"][LABEL_PROJECT] != "My_Project"  # DNS form, as before


@pytest.mark.parametrize("name", ["日次_集計", "a" * 80, "with space", "_leading"])
def test_names_that_are_not_label_values_get_a_safe_distinct_label(name: str) -> None:
    label = name_label(name)
    assert LABEL_VALUE.match(label) and len(label) <= 63
    assert label != name_label(name + "x")


def test_resolve_by_digdag_name_object_name_and_project(tmp_path: Path) -> None:
    refs = pushed(tmp_path, "alpha", "every_minute", "MyFlow", "etl") + pushed(tmp_path, "beta", "etl")
    every = resolve("every_minute", refs)
    assert every is not None and every.object_name.startswith("every-minute-") and every.project == "alpha"
    assert resolve(every.object_name, refs) == every, "the object name still works"
    assert resolve("MyFlow", refs) is not None and resolve("myflow", refs) is None, "names are case-sensitive"
    assert resolve("every_minute", refs, "alpha") == every
    assert resolve("every_minute", refs, "beta") is None
    with pytest.raises(
        KudigError,
        match=r"Workflow 'etl' is in several projects in namespace ns: alpha, beta; name one: PROJECT etl",
    ):
        resolve("etl", refs, namespace="ns")
    beta = resolve("etl", refs, "beta")
    assert beta is not None and beta.project == "beta"
    assert resolve("nope", refs) is None


def test_resolve_reads_hand_written_workflows_by_spec_name() -> None:
    obj = {"metadata": {"name": "daily"}, "spec": {"name": "daily_report", "dig": ""}}
    ref = workflow_ref(obj)
    assert ref == WorkflowRef("daily", "daily_report", None)
    assert resolve("daily_report", [ref]) == ref and resolve("daily", [ref]) == ref


def test_workflow_arguments_are_workflow_or_project_and_workflow() -> None:
    assert cluster_cli.workflow_args(["every_minute"]) == (None, "every_minute")
    assert cluster_cli.workflow_args(["proj", "every_minute"]) == ("proj", "every_minute")
    with pytest.raises(KudigError, match="expected WORKFLOW or PROJECT WORKFLOW"):
        cluster_cli.workflow_args(["a", "b", "c"])
    parser = build_parser()
    args = parser.parse_args(["start", "proj", "every_minute", "--session", "now"])
    assert args.names == ["proj", "every_minute"] and args.func is cluster_cli.cmd_start
    for cmd in ("disable", "enable", "backfill", "reschedule"):
        extra = {"backfill": ["--from", "2024-01-01"], "reschedule": ["--skip", "1"]}.get(cmd, [])
        assert parser.parse_args([cmd, "Every_Minute", *extra]).names == ["Every_Minute"]


# digdag 0.10.5.1's Main.addCommands: (command, alias)
DIGDAG_ALIASES = [
    ("init", "new"),
    ("run", "r"),
    ("check", "c"),
    ("scheduler", "sched"),
    ("projects", "project"),
    ("workflows", "workflow"),
    ("log", "logs"),
    ("tasks", "task"),
    ("schedules", "schedule"),
    ("secrets", "secret"),
]


@pytest.mark.parametrize(("command", "alias"), DIGDAG_ALIASES)
def test_digdags_aliases(command: str, alias: str) -> None:
    parser = build_parser()
    needs = {"run": ["x.dig"], "log": ["s"], "tasks": ["s"]}.get(command, [])
    assert parser.parse_args([alias, *needs]).func is parser.parse_args([command, *needs]).func
    expected = {"run": cmd_run, "check": cmd_check, "init": cmd_init, "secrets": cmd_secrets}
    if command in expected:
        assert parser.parse_args([alias, *needs]).func is expected[command]


def test_run_alias_takes_a_task_anywhere(tmp_path: Path) -> None:
    (tmp_path / "wf.dig").write_text("+a:\n  echo>: A\n+b:\n  echo>: B\n")
    proc = subprocess.run(
        [sys.executable, "-m", "kudig.cli", "r", "wf.dig", "--no-save", "+b"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "B" in proc.stdout and "A\n" not in proc.stdout


DIG = """\
timezone: UTC
+prepare:
  sh>: echo prepare
+load:
  _parallel: true
  +orders:
    echo>: orders
  +items:
    py>: tasks.load_items
+report:
  echo>: "done & <ok>"
"""


def run_show(tmp_path: Path, *args: str) -> str:
    (tmp_path / "my_flow.dig").write_text(DIG)
    proc = subprocess.run(
        [sys.executable, "-m", "kudig.cli", "show", "my_flow.dig", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "KUBECONFIG": "/nonexistent"},  # no cluster needed
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_show_a_local_dig_as_a_tree(tmp_path: Path) -> None:
    lines = run_show(tmp_path).splitlines()
    assert lines[0].startswith("+my_flow  (group)")
    assert "  +prepare  sh>: echo prepare" in lines
    assert "  +load  (group)  (after +prepare)" in lines
    assert "    +items  py>: tasks.load_items" in lines, "parallel children wait for nobody"
    assert "  +report  echo>: done & <ok>  (after +load)" in lines


def test_show_a_local_dig_as_dot(tmp_path: Path) -> None:
    out = run_show(tmp_path, "--format", "dot")
    assert out.startswith('digraph "my_flow" {') and out.rstrip().endswith("}")
    assert out.count("subgraph cluster_") == 2, "the workflow and +load are clusters"
    nodes = dict(re.findall(r"(t\d+) \[label=\"(\+\w+)", out))
    edges = re.findall(r"(t\d+) -> (t\d+)( \[[^]]*\])?;", out)
    named = {(nodes[a], nodes[b]) for a, b, _ in edges}
    assert named == {("+prepare", "+orders"), ("+items", "+report")}, named
    assert all("cluster_" in attrs for _, _, attrs in edges), "edges to and from +load end at its box"


def test_show_a_local_dig_as_svg(tmp_path: Path) -> None:
    out = run_show(tmp_path, "--format", "svg")
    svg = ET.fromstring(out)
    ns = "{http://www.w3.org/2000/svg}"
    assert svg.tag == f"{ns}svg"
    labels = [t.text or "" for t in svg.iter(f"{ns}text")]
    assert labels[0] == "my_flow"
    assert [lbl.split()[0] for lbl in labels[1:]] == [
        "+my_flow",
        "+prepare",
        "+load",
        "+orders",
        "+items",
        "+report",
    ]
    assert "done & <ok>" in labels[-1], "text is escaped, not broken"
    assert len(list(svg.iter(f"{ns}rect"))) == 6
    assert len(list(svg.iter(f"{ns}path"))) == 2 + 1, "two dependencies (+ the arrow head's)"


def test_show_a_broken_local_dig_is_one_error_line(tmp_path: Path) -> None:
    (tmp_path / "bad.dig").write_text("+a:\n  sh>: x\n  py>: y\n")
    proc = subprocess.run(
        [sys.executable, "-m", "kudig.cli", "show", "bad.dig"], cwd=tmp_path, capture_output=True, text=True
    )
    assert proc.returncode == 1
    assert (
        proc.stderr.strip().startswith("error: ")
        and "bad.dig:3" in proc.stderr
        and "Traceback" not in proc.stderr
    )


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    from kudig.cli import _version, main

    assert main(["version"]) == 0
    assert capsys.readouterr().out == f"Client version: {_version()}\n"
    assert main(["version", "-o", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"client": _version()}


def test_secret_set_forms(tmp_path: Path) -> None:
    (tmp_path / "pw.txt").write_text("from-file")
    (tmp_path / "many.json").write_text('{"a.b": "1", "c": "2"}')
    got = secret_pairs(
        ["k=v=w", f"f=@{tmp_path / 'pw.txt'}", f"@{tmp_path / 'many.json'}", "typed"], io.StringIO("secret\n")
    )
    assert got == {"k": "v=w", "f": "from-file", "a.b": "1", "c": "2", "typed": "secret"}
    with pytest.raises(KudigError, match="Duplicate --set secret key: 'k'"):
        secret_pairs(["k=1", "k=2"])
    with pytest.raises(KudigError, match="Can only read one secret value from standard input"):
        secret_pairs(["a", "b"], io.StringIO("1\n2\n"))


def test_secrets_needs_local_or_project(capsys: pytest.CaptureFixture[str]) -> None:
    from kudig.cli import main

    assert main(["secrets", "--set", "a=b"]) == 1
    err = capsys.readouterr().err
    assert "--project PROJECT" in err and "kudig-secrets" in err and "--local" in err
    assert main(["secrets", "--local", "--set", "a=b", "--delete", "a"]) == 1
    assert "Secret 'a' is both in --set and in --delete" in capsys.readouterr().err
