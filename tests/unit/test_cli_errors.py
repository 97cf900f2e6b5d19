"""Bad input never gives a traceback: one line with file and line, exit status 1 (issue #2)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

CASES = {
    "malformed_yaml": ({"wf.dig": "+a:\n  sh>: [x\n"}, r"wf.dig:\d+: Invalid YAML"),
    "unknown_operator": (
        {"wf.dig": "+a:\n  shx>: x\n"},
        r"wf.dig:2: Unknown operator type 'shx>' \(did you mean \[sh>\]\?\)",
    ),
    "bad_retry": ({"wf.dig": "+a:\n  sh>: x\n  _retry: lots\n"}, r"wf.dig:3: Invalid _retry format"),
    "call_cycle": (
        {
            "wf.dig": "+a:\n  call>: c2\n",
            "c2.dig": "+b:\n  echo>: hi\n+c:\n  call>: sub/c3\n",
            "sub/c3.dig": "+d:\n  call>: ../wf\n",
        },
        r"sub/c3.dig:2: call> cycle: wf\.dig -> c2\.dig -> sub/c3\.dig -> wf\.dig$",
    ),
    "call_outside_project": (
        {"wf.dig": "+a:\n  call>: sub/c3\n", "sub/c3.dig": "+d:\n  call>: ../../wf\n"},
        r"sub/c3.dig:2: File name must not be outside of project path: \.\./\.\./wf$",
    ),
    "call_cycle_same_dir": (
        {"wf.dig": "+a:\n  call>: c2\n", "c2.dig": "+b:\n  echo>: hi\n+c:\n  call>: wf\n"},
        r"c2.dig:4: call> cycle: wf.dig -> c2.dig -> wf.dig",
    ),
    "missing_include": (
        {"wf.dig": "_export:\n  !include : missing.yml\n+a:\n  echo>: x\n"},
        r"wf.dig:2: Included file not found: missing.yml",
    ),
    "duplicate_key": ({"wf.dig": "+a:\n  echo>: 1\n+a:\n  echo>: 2\n"}, r"wf.dig:3: Duplicate key '\+a'"),
    "unknown_group_key": (
        {"wf.dig": "+g:\n  parallel: true\n  +a:\n    echo>: x\n"},
        r"wf.dig:2: .*did you mean \[_parallel\]",
    ),
    "bad_timezone": ({"wf.dig": "timezone: Mars/Olympus\n+a:\n  echo>: x\n"}, r"wf.dig:1: .*Mars/Olympus"),
    "bad_sla": (
        {"wf.dig": "sla:\n  time: 01:00\n  duration: 01:00\n+a:\n  echo>: x\n"},
        r"wf.dig:1: SLA must be specified using either the 'time' or 'duration' option",
    ),
    "not_utf8": ({"wf.dig": "+a:\n  echo>: ok\n+b:\n  echo>: caf\udcff\n"}, r"wf.dig:4: Not UTF-8 text"),
    "bad_schedule": ({"wf.dig": "schedule:\n  daily>: 7am\n+a:\n  echo>: x\n"}, r"wf.dig:\d+: .*daily"),
    "missing_file": ({}, r"File not found: wf.dig"),
    "not_a_map": ({"wf.dig": "- a\n- b\n"}, r"wf.dig:1: A workflow file must be a YAML map"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_gives_one_line(case: str, tmp_path: Path) -> None:
    files, pattern = CASES[case]
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text, errors="surrogateescape")
    for command in (["run", "wf.dig", "--no-save"], ["check", "wf.dig"]):
        proc = subprocess.run(
            [sys.executable, "-m", "kudig.cli", *command],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 1, proc
        assert "Traceback" not in proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1, proc.stderr
        assert lines[0].startswith("error: ")
        import re

        assert re.search(pattern, lines[0]), lines[0]


def test_require_in_local_mode_says_it_needs_the_cluster(tmp_path: Path) -> None:
    (tmp_path / "up.dig").write_text("+a:\n  echo>: up\n")
    (tmp_path / "wf.dig").write_text("+need:\n  require>: up\n+after:\n  echo>: never\n")
    proc = subprocess.run(
        [sys.executable, "-m", "kudig.cli", "run", "wf.dig", "--no-save"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert "require> runs on the cluster only" in proc.stdout + proc.stderr
    assert "never" not in proc.stdout


def _kudig(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kudig.cli", *args], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )


def test_run_takes_the_task_anywhere_and_unlimited_threads(tmp_path: Path) -> None:
    (tmp_path / "p.dig").write_text("+one:\n  echo>: first-task\n+two:\n  echo>: second-task\n")
    proc = _kudig(tmp_path, "run", "p.dig", "--no-save", "+two", "--max-task-threads", "0")
    assert proc.returncode == 0, proc.stderr
    assert "second-task" in proc.stdout and "first-task" not in proc.stdout


@pytest.mark.parametrize(
    ("setup", "args", "pattern"),
    [
        (
            "digdag_file",
            ["run", "p.dig"],
            r"^error: Cannot save task state in .*\.digdag/status/.*: Not a directory$",
        ),
        ("", ["run", "."], r"^error: \. is a directory: give a workflow file \(name\.dig\)$"),
        ("", ["run", "p.dig", "--max-task-threads", "-1"], r"^error: --max-task-threads must be 0"),
    ],
)
def test_more_bad_input_gives_one_line(tmp_path: Path, setup: str, args: list[str], pattern: str) -> None:
    (tmp_path / "p.dig").write_text("+one:\n  echo>: x\n")
    if setup == "digdag_file":
        (tmp_path / ".digdag").write_text("not a directory")
    proc = _kudig(tmp_path, *args)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert re.search(pattern, proc.stderr.strip(), re.M), proc.stderr


def test_session_last_is_this_workflows_not_one_whose_name_it_prefixes(tmp_path: Path) -> None:
    (tmp_path / "wf.dig").write_text("+t:\n  echo>: ran ${session_date}\n")
    (tmp_path / "wf2.dig").write_text("+t:\n  echo>: other ${session_date}\n")
    assert _kudig(tmp_path, "run", "wf.dig", "--session", "2024-01-01").returncode == 0
    assert _kudig(tmp_path, "run", "wf2.dig", "--session", "2024-03-03").returncode == 0
    proc = _kudig(tmp_path, "run", "wf.dig", "--session", "last", "--rerun")
    assert "ran 2024-01-01" in proc.stdout, proc.stdout


def test_unused_keys_warn_where_digdag_does_with_a_suggestion(tmp_path: Path) -> None:
    # real digdag 0.10.5.1: wait> reads only blocking/poll_interval; sh> exports every key (no
    # warning even for a typo), loop> reads its whole config
    (tmp_path / "u.dig").write_text(
        "+a:\n  wait>: 1s\n  poll_intervall: 1s\n+s:\n  sh>: echo ok\n  _retyr: 3\n  shel: bash\n"
        "+b:\n  loop>: 2\n  _do:\n    echo>: ${i}\n"
    )
    proc = _kudig(tmp_path, "check", "u.dig")
    assert proc.returncode == 0, proc.stderr  # a warning, as digdag's, never a failure
    assert (
        "u.dig:1: Parameter 'poll_intervall' is not used at task +u+a. (did you mean [poll_interval]?)"
        in proc.stderr
    )
    assert proc.stderr.count("is not used") == 1, proc.stderr


@pytest.mark.parametrize("kind", ["echo", "sh", "python"])
def test_init_creates_a_project_that_runs(tmp_path: Path, kind: str) -> None:
    assert _kudig(tmp_path, "init", "proj", "-t", kind).returncode == 0
    proc = _kudig(tmp_path / "proj", "run", "proj.dig", "--no-save")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    again = _kudig(tmp_path, "init", "proj")
    assert again.returncode == 1 and "already exists" in again.stderr


def test_check_of_the_whole_project_reports_every_broken_workflow(tmp_path: Path) -> None:
    (tmp_path / "a.dig").write_text("+t:\n  echo>: a\n")
    (tmp_path / "b.dig").write_text("+t:\n  shx>: b\n")
    (tmp_path / "c.dig").write_text("+t:\n  echo>: ${x}\n")
    proc = _kudig(tmp_path, "check", "-p", "x=1")
    assert proc.returncode == 1
    assert re.search(r"^error: b\.dig:2: Unknown operator type 'shx>'", proc.stderr, re.M), proc.stderr
    assert "2 of 3 workflows are valid." in proc.stdout
    assert 'params: {"x": "1"}' in proc.stdout


def test_docker_image_in_local_mode_warns_once_per_task(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No container engine (the one machine may have podman: KUDIG_CONTAINER_ENGINE=none says none;
    # tests/unit/test_local_docker.py runs such tasks in containers).
    monkeypatch.setenv("KUDIG_CONTAINER_ENGINE", "none")
    (tmp_path / "wf.dig").write_text(
        "+in_image:\n  _export:\n    docker:\n      image: busybox:1.35\n  sh>: echo ran\n+plain:\n  sh>: echo plain\n"
    )
    proc = _kudig(tmp_path, "run", "wf.dig", "--no-save")
    assert proc.returncode == 0
    warnings = [line for line in proc.stdout.splitlines() if "[WARN]" in line]
    assert len(warnings) == 1 and "(+wf+in_image): docker image busybox:1.35 requested" in warnings[0]
    assert "no container engine (docker or podman) was found: the task runs on this host" in warnings[0]
