"""`kudig run` under SIGINT and SIGTERM (issue #11): the running task process trees stop, what
finished stays saved, the exit status is 128 + the signal, and nothing is left behind; a second
signal kills a task that ignores the first."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from pathlib import Path

import pytest
from test_local_scheduler import kudig, marked_processes, marker, wait_until

__all__ = ["marker"]  # the fixture, imported for pytest

PARALLEL = """
+first:
  sh>: echo first-done
+par:
  _parallel: true
  +a:
    sh>: sleep 300
  +b:
    sh>: sleep 301
+never:
  sh>: echo never
"""


def _start(tmp_path: Path, marker: str, text: str) -> tuple[subprocess.Popen[str], Path]:
    (tmp_path / "wf.dig").write_text(text)
    env = {**os.environ, "KUDIG_TEST_MARKER": marker}
    proc = kudig("run", str(tmp_path / "wf.dig"), "--session", "2024-01-30", cwd=tmp_path, env=env)
    return proc, tmp_path / ".digdag" / "status" / "20240130T000000+0000"


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_stops_every_task_and_keeps_what_finished(
    tmp_path: Path, marker: str, sig: signal.Signals, code: int
) -> None:
    proc, status = _start(tmp_path, marker, PARALLEL)
    try:
        wait_until(
            lambda: sum("sleep 30" in p for p in marked_processes(marker)) == 2 or proc.poll() is not None,
            "both sleeps to run",
        )
        proc.send_signal(sig)
        output, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == code, output
    assert f"Interrupted ({sig.name}): stopping the running tasks" in output
    assert "never" not in output.replace("+never", "")
    assert "Traceback" not in output
    assert (status / "+wf+first.yml").exists(), "what finished is saved: a rerun resumes after it"
    assert not (status / "+wf+par+a.yml").exists()
    wait_until(lambda: not marked_processes(marker), "no process left", timeout=10)


def test_a_second_signal_kills_a_task_that_ignores_the_first(tmp_path: Path, marker: str) -> None:
    proc, _ = _start(tmp_path, marker, "+stubborn:\n  sh>: trap '' TERM INT; sleep 302\n")
    try:
        wait_until(lambda: any("sleep 302" in p for p in marked_processes(marker)), "the task to run")
        proc.send_signal(signal.SIGTERM)
        guard = threading.Timer(30, lambda: os.killpg(proc.pid, signal.SIGKILL))
        guard.start()
        seen = []
        assert proc.stdout is not None
        for line in proc.stdout:  # until kudig says it got the first signal
            seen.append(line)
            if "stopping the running tasks" in line:
                break
        guard.cancel()
        assert any("sleep 302" in p for p in marked_processes(marker)), "the task ignores SIGTERM"
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    output = "".join(seen) + output
    assert proc.returncode == 143, output
    assert "Interrupted again: killing the running tasks now" in output
    wait_until(lambda: not marked_processes(marker), "no process left", timeout=10)
