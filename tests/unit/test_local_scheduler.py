"""`kudig scheduler` (kudig/local/scheduler.py): the loop driven by an injected clock, then the real
command end to end — sessions fire once per slot, SIGTERM/SIGINT leave no process behind."""

from __future__ import annotations

import contextlib
import io
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from kudig.local.scheduler import LocalScheduler, ScheduledSession
from kudig.workflow import Workflow, load_workflow_text

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2024, 1, 30, 10, 0, 30, tzinfo=UTC)


def at(hh_mm: str) -> datetime:
    hour, minute = map(int, hh_mm.split(":"))
    return datetime(2024, 1, 30, hour, minute, tzinfo=UTC)


def workflow(tmp_path: Path, text: str, name: str = "wf") -> Workflow:
    return load_workflow_text(name, text, tmp_path)


class FakeTime:
    """The scheduler's clock and wait: each wait moves the clock on by the time asked (plus
    `jumps`, a machine that slept), after the sessions that are due to end have ended."""

    def __init__(self, start: datetime, end: datetime) -> None:
        self.now = start
        self.end = end
        self.waits: list[float] = []
        self.jumps: dict[int, timedelta] = {}  # wait number -> extra time passing during it
        self.scheduler: LocalScheduler | None = None
        self.settle: Callable[[], None] = lambda: None  # called after each move of the clock

    def clock(self) -> datetime:
        return self.now

    def wait(self, seconds: float) -> None:
        assert self.scheduler is not None
        self.waits.append(seconds)
        self.now += timedelta(seconds=seconds) + self.jumps.get(len(self.waits), timedelta(0))
        self.settle()
        if self.now > self.end:
            self.scheduler.stop()
            self.settle()


def drive(sched: LocalScheduler, fake: FakeTime) -> None:
    fake.scheduler = sched
    runner = threading.Thread(target=sched.run)
    runner.start()
    runner.join(timeout=60)
    assert not runner.is_alive(), "the scheduler loop did not stop"
    sched.shutdown()


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def test_one_session_per_slot_with_the_local_executor(tmp_path: Path) -> None:
    wf = workflow(
        tmp_path,
        "schedule:\n  minutes_interval>: 1\n"
        "+show:\n  echo>: ran ${session_time} last=[${last_executed_session_time}] id=${session_id}\n",
    )
    out = io.StringIO()
    fake = FakeTime(T0, at("10:05") + timedelta(seconds=30))
    sched = LocalScheduler([wf], out=out, clock=fake.clock, wait=fake.wait)
    fake.settle = sched.join  # each session ends before the clock moves on
    drive(sched, fake)

    ran = re.findall(
        r"^ran (\S+) last=\[(\S*)\] id=(\d+)", out.getvalue(), re.M
    )  # the echo, not its INFO line
    assert ran == [
        ("2024-01-30T10:01:00+00:00", "", "1"),
        ("2024-01-30T10:02:00+00:00", "2024-01-30T10:01:00+00:00", "2"),
        ("2024-01-30T10:03:00+00:00", "2024-01-30T10:02:00+00:00", "3"),
        ("2024-01-30T10:04:00+00:00", "2024-01-30T10:03:00+00:00", "4"),
        ("2024-01-30T10:05:00+00:00", "2024-01-30T10:04:00+00:00", "5"),
    ], out.getvalue()
    # it slept exactly until each run time: never a tick too early, never a busy loop
    assert fake.waits == [30.0, 60.0, 60.0, 60.0, 60.0, 60.0]
    log = out.getvalue()
    assert (
        'Scheduling workflow wf (wf.dig, schedule: {"minutes_interval>": 1}): next session_time 2024-01-30T10:01:00+00:00'
        in log
    )
    assert log.count("(scheduler): Started session") == 5
    assert "Started session 2 of workflow wf at session_time 2024-01-30T10:02:00+00:00" in log
    assert log.count("succeeded") == 5
    # results saved as `kudig run` saves them, one directory per session
    status = sorted(p.name for p in (tmp_path / ".digdag/status").iterdir())
    assert status == [f"20240130T10{m:02d}00+0000" for m in range(1, 6)]


def test_skip_on_overtime_skips_slots_while_a_session_runs(tmp_path: Path) -> None:
    wf = workflow(tmp_path, "schedule:\n  minutes_interval>: 1\n  skip_on_overtime: true\n+t:\n  echo>: x\n")
    fake = FakeTime(T0, at("10:08") + timedelta(seconds=30))
    moved = threading.Condition()
    started: list[tuple[datetime, datetime | None]] = []
    duration = timedelta(seconds=150)  # each session runs 2.5 minutes

    def run_session(session: ScheduledSession) -> bool:
        started.append((session.session_time, session.last_executed))
        with moved:
            moved.wait_for(lambda: fake.now >= session.session_time + duration or sched.stopping)
        return True

    def settle() -> None:
        with moved:
            moved.notify_all()
        # the sessions due to end by now have ended (and the scheduler knows) before the next tick
        wait_until(
            lambda: all(t + duration > fake.now for _, t in sched.running()), "the sessions due to end"
        )

    out = io.StringIO()
    sched = LocalScheduler([wf], out=out, clock=fake.clock, wait=fake.wait, run_session=run_session)
    fake.settle = settle
    drive(sched, fake)

    assert started == [
        (at("10:01"), None),
        (at("10:04"), at("10:01")),  # skipped slots are not "executed"
        (at("10:07"), at("10:04")),
    ]
    skipped = re.findall(r"Skipped session_time (\S+) of workflow wf .*: (.*)", out.getvalue())
    assert [t for t, _ in skipped] == [f"2024-01-30T10:0{m}:00+00:00" for m in (2, 3, 5, 6, 8)]
    assert all("still running (skip_on_overtime)" in why for _, why in skipped)
    assert sched.running() == []


def test_missed_slots_are_caught_up_unless_too_late(tmp_path: Path) -> None:
    """The machine sleeps 10:01 -> 10:05:10: the slots missed while the scheduler ran are caught up,
    except those more than `skip_delayed_by` late."""
    wf = workflow(tmp_path, "schedule:\n  minutes_interval>: 1\n  skip_delayed_by: 90s\n+t:\n  echo>: x\n")
    fake = FakeTime(T0, at("10:05") + timedelta(seconds=30))
    fake.jumps[2] = timedelta(minutes=3, seconds=10)  # the second wait (from 10:01, 60 s) ends at 10:05:10
    fired: list[tuple[datetime, datetime | None]] = []

    def run_session(session: ScheduledSession) -> bool:
        fired.append((session.session_time, session.last_executed))
        return True

    out = io.StringIO()
    sched = LocalScheduler([wf], out=out, clock=fake.clock, wait=fake.wait, run_session=run_session)
    fake.settle = sched.join
    drive(sched, fake)

    assert fired == [(at("10:01"), None), (at("10:04"), at("10:01")), (at("10:05"), at("10:04"))]
    skipped = re.findall(r"Skipped session_time (\S+) of workflow wf .*: (.*)", out.getvalue())
    assert skipped == [
        ("2024-01-30T10:02:00+00:00", "it is more than 90s late (skip_delayed_by)"),
        ("2024-01-30T10:03:00+00:00", "it is more than 90s late (skip_delayed_by)"),
    ]


def test_a_failing_session_does_not_stop_the_scheduler(tmp_path: Path) -> None:
    broken = workflow(tmp_path, "schedule:\n  minutes_interval>: 1\n+t:\n  fail>: broken\n", name="broken")
    crash = workflow(tmp_path, "schedule:\n  minutes_interval>: 2\n+t:\n  echo>: x\n", name="crash")
    fake = FakeTime(T0, at("10:04") + timedelta(seconds=30))
    out = io.StringIO()
    calls: list[tuple[str, datetime]] = []

    def run_session(session: ScheduledSession) -> bool:
        calls.append((session.workflow.name, session.session_time))
        if session.workflow.name == "crash":
            raise RuntimeError("boom")
        return sched.run_local(session)  # the real executor: `fail>` fails the session

    sched = LocalScheduler(
        [broken, crash], out=out, clock=fake.clock, wait=fake.wait, run_session=run_session, status_dir=None
    )
    fake.settle = sched.join
    drive(sched, fake)

    assert sorted(calls) == [
        ("broken", at("10:01")),
        ("broken", at("10:02")),
        ("broken", at("10:03")),
        ("broken", at("10:04")),
        ("crash", at("10:02")),
        ("crash", at("10:04")),
    ]
    log = out.getvalue()
    assert log.count("[ERROR] (scheduler): The session") == 6
    assert "of workflow crash at session_time 2024-01-30T10:02:00+00:00 failed: RuntimeError: boom" in log
    assert "of workflow broken at session_time 2024-01-30T10:04:00+00:00 failed" in log
    assert not (tmp_path / ".digdag").exists()  # status_dir=None saves nothing


# ----------------------------------------------------------------------------- the real command


def kudig(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "kudig.cli", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own group: the test can clean up whatever a failure leaves
    )


def marked_processes(marker: str) -> list[str]:
    """The command lines of the live processes whose environment holds `marker` (a /proc scan)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue  # gone, or not ours
        if marker.encode() in environ:
            command = cmdline.replace(b"\0", b" ").decode(errors="replace")
            found.append(f"{entry.name}: {command}")
    return found


@pytest.fixture
def marker() -> Iterator[str]:
    value = f"kudig-sched-test-{uuid.uuid4().hex}"
    yield value
    for line in marked_processes(value):  # a failed test must not leave `sleep 300` behind
        with contextlib.suppress(OSError):
            os.kill(int(line.split(":")[0]), signal.SIGKILL)


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_kudig_scheduler_runs_sessions_and_leaves_nothing_behind(
    tmp_path: Path, marker: str, sig: signal.Signals, code: int
) -> None:
    (tmp_path / "every.dig").write_text(
        "schedule:\n  seconds_interval>: 1\n"
        "+append:\n  sh>: echo ${session_time} >> times.txt\n"
        "+hold:\n  sh>: sleep 300\n"
    )
    (tmp_path / "helper.dig").write_text("+x:\n  echo>: not scheduled\n")
    env = {**os.environ, "KUDIG_TEST_MARKER": marker}
    proc = kudig("scheduler", "--project", str(tmp_path), cwd=ROOT, env=env)
    try:
        times = tmp_path / "times.txt"

        def two_sessions() -> bool:
            return times.exists() and len(set(times.read_text().split())) >= 2

        wait_until(lambda: two_sessions() or proc.poll() is not None, "two sessions", timeout=60)
        assert proc.poll() is None, proc.communicate()[0]
        wait_until(lambda: any("sleep 300" in p for p in marked_processes(marker)), "a running `sleep 300`")
        proc.send_signal(sig)
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == code, output
    lines = times.read_text().split()
    assert len(lines) == len(set(lines)) >= 2  # one run per session time
    for line in lines:
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", line)
    assert output.count("(scheduler): Started session") >= 2
    assert "Started session 2 of workflow every at session_time" in output
    assert "Traceback" not in output
    # every process of the run — kudig, the task runners, `sh`, `sleep 300` — has ended
    wait_until(lambda: not marked_processes(marker), "no process left", timeout=10)


@pytest.mark.parametrize(
    ("files", "pattern"),
    [
        (
            {
                "ok.dig": "schedule:\n  daily>: 07:00:00\n+a:\n  echo>: x\n",
                "wf.dig": "schedule:\n  daily>: 7am\n+a:\n  echo>: x\n",
            },
            r"^error: wf\.dig:1: daily> scheduler requires hh:mm:ss format: 7am$",
        ),
        (
            {"wf.dig": "schedule:\n  hourly>: 00:00\n  skip_on_over_time: true\n+a:\n  echo>: x\n"},
            r"^error: wf\.dig:\d+: .*skip_on_overtime",
        ),
        (
            {"wf.dig": "schedule:\n  daily>: 07:00:00\n+a:\n  echo>: x\n", "other.dig": "+a:\n  shx>: x\n"},
            r"^error: other\.dig:2: Unknown operator type",
        ),
        ({"wf.dig": "+a:\n  echo>: x\n"}, r"^error: No workflow with a schedule: in "),
    ],
    ids=["bad_schedule", "schedule_typo", "broken_unscheduled_file", "nothing_scheduled"],
)
def test_an_invalid_project_gives_one_line_and_exit_1(
    tmp_path: Path, files: dict[str, str], pattern: str
) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    proc = kudig("sched", cwd=tmp_path)  # the alias, in the project directory
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1, output
    assert len(output.strip().splitlines()) == 1, output
    assert re.search(pattern, output.strip()), output
