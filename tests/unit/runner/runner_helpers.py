"""Helpers for the runner tests: the runner runs as a real subprocess (`python -m kudig_runner`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

RUNNER_DIR = Path(__file__).resolve().parents[3] / "runner"
if str(RUNNER_DIR) not in sys.path:
    sys.path.insert(0, str(RUNNER_DIR))


def find_python(version: str) -> str | None:
    """A working interpreter for `version` (e.g. "3.8"), or None."""
    candidates = [f"python{version}"]
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    if pyenv.is_dir():
        candidates += [str(p / "bin" / f"python{version}") for p in sorted(pyenv.glob(f"{version}.*"))]
    for candidate in candidates:
        try:
            done = subprocess.run(
                [candidate, "-c", "import sys; print(sys.version)"], capture_output=True, timeout=30
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        if done.returncode == 0 and done.stdout.startswith(version.encode()):
            return candidate
    return None


@dataclass
class Result:
    rc: int
    output: dict[str, Any]
    stdout: str
    stderr: str
    raw: bytes

    @property
    def error(self) -> dict[str, Any] | None:
        return self.output["error"]  # type: ignore[no-any-return]

    @property
    def result(self) -> dict[str, Any]:
        """The task output as the controller sees it: read from the log when the file points there."""
        from kudig_runner.protocol import read_framed_result, result_pointer

        pointer = result_pointer(self.output)
        if pointer is None:
            return self.output
        return dict(read_framed_result(self.stdout, pointer))


def task(
    type_: str,
    command: Any = None,
    *,
    params: dict[str, Any] | None = None,
    config: dict[str, Any] | None = None,
    env: dict[str, Any] | None = None,
    secrets: dict[str, str] | None = None,
    workdir: str = "",
) -> dict[str, Any]:
    cfg = dict(config or {})
    if command is not None:
        cfg["_command"] = command
    return {
        "task_name": "+wf+t",
        "type": type_,
        "config": cfg,
        "params": params or {},
        "env": env or {},
        "secrets": secrets or {},
        "workdir": workdir,
    }


RunTask = Callable[..., Result]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    path = tmp_path / "project"
    path.mkdir()
    return path


@pytest.fixture
def run_task(tmp_path: Path, project: Path) -> RunTask:
    def run(
        task_input: dict[str, Any] | str,
        *,
        python: str = sys.executable,
        max_bytes: int | None = None,
        extra_env: dict[str, str] | None = None,
        cwd: Path | None = None,
        timeout: float = 60,
    ) -> Result:
        in_file = tmp_path / "in.json"
        out_file = tmp_path / "out.json"
        if out_file.exists():
            out_file.unlink()
        in_file.write_text(task_input if isinstance(task_input, str) else json.dumps(task_input))
        argv = [python, "-m", "kudig_runner", "--input", str(in_file), "--output", str(out_file)]
        if max_bytes is not None:
            argv += ["--max-output-bytes", str(max_bytes)]
        env = dict(os.environ)
        env["PYTHONPATH"] = str(RUNNER_DIR)
        env.update(extra_env or {})
        done = subprocess.run(argv, cwd=cwd or project, env=env, capture_output=True, timeout=timeout)
        raw = out_file.read_bytes()
        return Result(done.returncode, json.loads(raw), done.stdout.decode(), done.stderr.decode(), raw)

    return run
