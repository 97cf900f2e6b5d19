"""The runner as a task pod's only container: input from the environment, workspace prepared first."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

RUNNER = Path(__file__).resolve().parents[3] / "runner"


def test_input_env_and_prepare_from(tmp_path: Path) -> None:
    mount = tmp_path / "project" / "0"
    mount.mkdir(parents=True)
    (mount / "data_.in.txt").write_text("from the project\n")  # data/in.txt
    (mount / "..data").mkdir()  # ConfigMap volume internals are skipped
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    task = {
        "task_name": "+wf+t",
        "type": "sh",
        "config": {"_command": "cat in.txt; echo changed > in.txt"},
        "params": {},
        "env": {},
        "secrets": {},
        "workdir": "data",
    }
    out = tmp_path / "out.json"
    env = dict(os.environ, PYTHONPATH=str(RUNNER), KUDIG_TASK_INPUT=json.dumps(task))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "kudig_runner",
            "--input-env",
            "KUDIG_TASK_INPUT",
            "--prepare-from",
            str(tmp_path / "project"),
            "--output",
            str(out),
            "--cwd",
            str(workspace),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc
    assert "from the project" in proc.stdout
    assert json.loads(out.read_text())["error"] is None
    assert (workspace / "data" / "in.txt").read_text() == "changed\n"
    assert (mount / "data_.in.txt").read_text() == "from the project\n"


def test_bad_input_env_is_an_error_output(tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    env = dict(os.environ, PYTHONPATH=str(RUNNER), KUDIG_TASK_INPUT="{not json")
    proc = subprocess.run(
        [sys.executable, "-m", "kudig_runner", "--input-env", "KUDIG_TASK_INPUT", "--output", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert json.loads(out.read_text())["error"]["message"].startswith("Invalid task input")
