"""`kudig scheduler`: digdag's local scheduler — a project's scheduled workflows run on this machine.

Every `.dig` at the top level of the project directory is loaded at start-up (one that does not
load is an error, as digdag refuses the project); each one with a `schedule:` gets its sessions
started at their run times, for as long as the command runs. What is due is decided by the pure
core `kudig/scheduler.py` (`plan_schedule`), the same one the Kubernetes controller calls, so both
fire the same sessions with the same `last_executed_session_time`: this module is only the shell
that keeps one `ScheduleState` per workflow in memory, asks the core at each run time, and runs
each fired session with the local executor (`LocalRun`, as `kudig run` does) in its own thread.
Sessions of different workflows, and of one workflow without `skip_on_overtime`, run at once;
`skip_on_overtime` sees an active attempt while a session of that workflow still runs.

State lives in memory only, like digdag's scheduler with its default in-memory database: a
restart starts every schedule from its first slot at or after now — slots that passed while the
scheduler was not running are not caught up (missed slots *while* it runs, e.g. after the machine
slept, are, as digdag does, unless `skip_delayed_by` says they are too late). Each session is a
fresh attempt; its task results are saved under `.digdag/status/<session>/` as `kudig run` saves
them, so `kudig run wf.dig --session "<session time>"` can resume a failed one.

A failed session is logged and scheduling goes on. `stop()` (SIGINT/SIGTERM in `serve`) stops
scheduling; `shutdown()` then kills the running sessions' tasks (their runners forward SIGTERM to
the commands' process groups) and waits for them. Time is injectable (`clock`, `wait`) for tests.
"""

from __future__ import annotations

import copy
import json
import sys
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from kudig.errors import ConfigError
from kudig.local.console import Console, RunSink, TaskLogDir
from kudig.local.executor import LocalRun
from kudig.local.signals import until_signalled
from kudig.schedule import ScheduleTime
from kudig.scheduler import Fire, ScheduleState, Skip, plan_schedule
from kudig.session_vars import format_session_time
from kudig.workflow import Workflow, load_workflow, session_dir_name

#: The longest the loop sleeps without looking at the clock (a wall clock that jumps is noticed).
MAX_SLEEP_SECONDS = 60.0


@dataclass(frozen=True)
class ScheduledSession:
    """A session the scheduler fired: what a session runner needs to run it."""

    workflow: Workflow
    session_time: datetime  # in the workflow's time zone
    run_time: datetime
    last_executed: datetime | None  # its `last_executed_session_time`
    session_id: int  # 1, 2, ... in the order this scheduler fired them


@dataclass
class _Entry:
    workflow: Workflow
    key: str
    state: ScheduleState = field(default_factory=ScheduleState)
    running: set[datetime] = field(default_factory=set)  # session times of its sessions still running
    ended: bool = False


def _utc_now() -> datetime:
    return datetime.now(UTC)


def load_project(project_dir: Path) -> list[Workflow]:
    """The scheduled workflows of a project: every `*.dig` at its top level is loaded (a broken
    one raises its `KudigError` with file:line); those with a `schedule:` are returned."""
    project = project_dir.resolve()
    if not project.is_dir():
        raise ConfigError(f"Project directory not found: {project_dir}")
    workflows = [load_workflow(path, project) for path in sorted(project.glob("*.dig")) if path.is_file()]
    scheduled = [wf for wf in workflows if wf.schedule is not None]
    if not scheduled:
        raise ConfigError(
            f"No workflow with a schedule: in {project_dir} (looked at its top-level *.dig files)"
        )
    return scheduled


class LocalScheduler:
    """The scheduler loop for a set of scheduled workflows (see the module docstring).

    `clock` returns an aware datetime; `wait(seconds)` sleeps until the next tick (default: until
    `stop()`); `run_session` runs one session and returns whether it succeeded (default: the local
    executor). Tests drive time through `clock` and `wait`.
    """

    def __init__(
        self,
        workflows: Sequence[Workflow],
        *,
        params: Mapping[str, Any] | None = None,
        max_task_threads: int = 8,
        secrets: Mapping[str, str] | None = None,
        status_dir: str | None = ".digdag/status",
        out: TextIO | None = None,
        clock: Callable[[], datetime] = _utc_now,
        wait: Callable[[float], object] | None = None,
        run_session: Callable[[ScheduledSession], bool] | None = None,
        console: Console | None = None,
        task_log_root: Path | None = None,
    ) -> None:
        self._entries = [
            _Entry(wf, f"{wf.timezone_name}|{json.dumps(wf.schedule_config)}")
            for wf in workflows
            if wf.schedule is not None
        ]
        self.params = dict(params or {})
        self.max_task_threads = max_task_threads
        self.secrets = dict(secrets or {})
        self.status_dir = status_dir
        self.out = out if out is not None else sys.stdout
        self.console = console  # -l/-L: what is shown, and where (None: every line to `out`)
        self.task_log_root = task_log_root  # -O: each session's task logs under it
        self.clock = clock
        self._stop = threading.Event()
        self._wait = wait if wait is not None else self._stop.wait
        self._run_session = run_session if run_session is not None else self.run_local
        self._lock = threading.Lock()  # guards the fields below and every write to `out`
        self._threads: list[threading.Thread] = []
        self._runs: list[LocalRun] = []
        self._last_id = 0

    # ------------------------------------------------------------------ the loop

    def run(self) -> None:
        """Tick at each run time until `stop()`."""
        while not self._stop.is_set():
            wakeup = self.tick()
            if self._stop.is_set():
                break
            delay = MAX_SLEEP_SECONDS if wakeup is None else (wakeup - self.clock()).total_seconds()
            self._wait(min(max(delay, 0.0), MAX_SLEEP_SECONDS))

    def tick(self) -> datetime | None:
        """Start what is due now; returns the earliest next run time (None: every schedule ended)."""
        now = self.clock()
        wakeups: list[datetime] = []
        for entry in self._entries:
            if self._stop.is_set():
                break
            wf = entry.workflow
            assert wf.schedule is not None
            fresh = entry.state.schedule_key != entry.key
            with self._lock:
                active = bool(entry.running)
            decision = plan_schedule(
                wf.schedule, entry.state, now, schedule_key=entry.key, active_attempt=active
            )
            entry.state = decision.state
            for skip in decision.skipped:
                self._log_skip(entry, skip)
            for fire in decision.fire:
                self._start(entry, fire)
            nxt, run = entry.state.next_session_time, entry.state.next_run_time
            if decision.wakeup is None or nxt is None or run is None or ScheduleTime(nxt, run).finished:
                if not entry.ended:
                    entry.ended = True
                    self.log("INFO", f"The schedule of workflow {wf.name} has ended: no more sessions")
                continue
            if fresh:
                self.log(
                    "INFO",
                    f"Scheduling workflow {wf.name} ({wf.file}, schedule: {json.dumps(wf.schedule_config)}): "
                    f"next session_time {self._show(wf, nxt)}, runs at {self._show(wf, run)}",
                )
            wakeups.append(decision.wakeup)
        return min(wakeups, key=lambda t: t.timestamp()) if wakeups else None

    def stop(self) -> None:
        """Stop scheduling (no session starts after this). Safe from any thread."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def shutdown(self) -> None:
        """Stop scheduling, kill the running sessions' tasks and wait until they have ended."""
        self.stop()
        with self._lock:
            runs = list(self._runs)
            threads = list(self._threads)
        if runs:
            self.log("INFO", f"Stopping: killing the tasks of {len(runs)} running session(s)")
        for run in runs:
            run.stop()
        for thread in threads:
            thread.join()

    def kill_now(self) -> None:
        """A second signal: kill the running sessions' task process trees at once."""
        with self._lock:
            runs = list(self._runs)
        for run in runs:
            run.stop(hard=True)

    def running(self) -> list[tuple[str, datetime]]:
        """(workflow, session time) of the sessions still running."""
        with self._lock:
            return sorted((e.workflow.name, t) for e in self._entries for t in e.running)

    def join(self) -> None:
        """Wait for the sessions started so far to end (tests)."""
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join()

    # ------------------------------------------------------------------ sessions

    def _start(self, entry: _Entry, fire: Fire) -> None:
        wf = entry.workflow
        session_time = fire.session_time.astimezone(wf.tz)
        last = fire.last_executed.astimezone(wf.tz) if fire.last_executed is not None else None
        with self._lock:
            if self._stop.is_set():
                return  # shutdown() has taken its list of threads: start nothing it would not wait for
            self._last_id += 1
            session = ScheduledSession(wf, session_time, fire.run_time.astimezone(wf.tz), last, self._last_id)
            entry.running.add(session_time)
            self._threads = [t for t in self._threads if t.is_alive()]
            thread = threading.Thread(
                target=self._session_main,
                args=(entry, session),
                name=f"kudig-session-{wf.name}-{session_dir_name(session_time)}",
                daemon=True,
            )
            self._threads.append(thread)
            last_text = self._show(wf, last) if last is not None else "(none)"
            self._write(  # before its tasks' first line
                "INFO",
                f"Started session {session.session_id} of workflow {wf.name} at session_time "
                f"{self._show(wf, session_time)} (last_executed_session_time {last_text})",
            )
            thread.start()

    def _session_main(self, entry: _Entry, session: ScheduledSession) -> None:
        wf = session.workflow
        what = f"session {session.session_id} of workflow {wf.name} at session_time {self._show(wf, session.session_time)}"
        try:
            ok = self._run_session(session)
        except Exception as e:  # a bug or a broken session must not stop the scheduler
            self.log("ERROR", f"The {what} failed: {type(e).__name__}: {e}")
        else:
            if ok:
                self.log("INFO", f"The {what} succeeded")
            elif self._stop.is_set():
                self.log("INFO", f"The {what} was killed")
            else:
                self.log("ERROR", f"The {what} failed")
        finally:
            with self._lock:
                entry.running.discard(session.session_time)

    def run_local(self, session: ScheduledSession) -> bool:
        """Run one session with the local executor, as `kudig run` runs one."""
        from kudig.engine.core import Engine, SessionContext
        from kudig.expr import TemplateEngine
        from kudig.session_vars import session_params

        wf = session.workflow
        builtins = session_params(
            session_time=session.session_time,
            timezone=wf.timezone_name,
            session_id=session.session_id,
            attempt_id=session.session_id,
            session_uuid=str(
                uuid.uuid5(uuid.NAMESPACE_URL, f"kudig:{wf.name}:{session.session_time.isoformat()}")
            ),
            project_id=1,
            retry_attempt_name=None,
            schedule=wf.schedule,
            last_executed_session_time=session.last_executed,
        )
        ctx = SessionContext(
            workflow_name=wf.name,
            timezone=wf.timezone_name,
            session_params=builtins,
            attempt_params=copy.deepcopy(self.params),
            evaluator=TemplateEngine(),
            project_dir=wf.project_dir,
            sla=wf.sla,
        )
        engine = Engine.new(ctx, wf.tasks)
        status = (
            wf.project_dir / self.status_dir / session_dir_name(session.session_time)
            if self.status_dir
            else None
        )
        sink = None
        if self.console is not None or self.task_log_root is not None:
            task_logs = (
                TaskLogDir(self.task_log_root, wf.name, session_dir_name(session.session_time))
                if self.task_log_root is not None
                else None
            )
            sink = RunSink(self.console or Console(out=self.out), task_logs)
        run = LocalRun(
            engine,
            status,
            out=self.out,
            max_workers=self.max_task_threads,
            secrets=self.secrets,
            sink=sink,
            _lock=self._lock,  # one lock for every line written to `out`: lines never interleave
        )
        with self._lock:
            self._runs.append(run)
        if self._stop.is_set():
            run.stop()  # shutdown() may have missed it
        try:
            return run.run()
        finally:
            with self._lock:
                self._runs.remove(run)
                if sink is not None:
                    sink.close()

    # ------------------------------------------------------------------ log

    def log(self, level: str, message: str) -> None:
        with self._lock:
            self._write(level, message)

    def _write(self, level: str, message: str) -> None:
        """A log line, in the format of `kudig run`'s; the caller holds the lock."""
        stamp = self.clock().astimezone().strftime("%Y-%m-%d %H:%M:%S %z")
        if self.console is not None:
            self.console.log_line(f"{stamp} [{level}] (scheduler): {message}", level)
            return
        self.out.write(f"{stamp} [{level}] (scheduler): {message}\n")
        self.out.flush()

    def _log_skip(self, entry: _Entry, skip: Skip) -> None:
        wf = entry.workflow
        assert wf.schedule is not None
        if skip.reason == "overtime":
            why = "a session of the workflow is still running (skip_on_overtime)"
        else:
            late = wf.schedule_config.get("skip_delayed_by") if isinstance(wf.schedule_config, dict) else None
            why = f"it is more than {late} late (skip_delayed_by)"
        self.log(
            "INFO",
            f"Skipped session_time {self._show(wf, skip.session_time)} of workflow {wf.name} "
            f"(run time {self._show(wf, skip.run_time)}): {why}",
        )

    @staticmethod
    def _show(wf: Workflow, t: datetime) -> str:
        return format_session_time(t, wf.tz)


def serve(scheduler: LocalScheduler) -> int:
    """Run `scheduler` until SIGINT or SIGTERM, then kill its running sessions and wait for them.

    Returns the exit status: 128 + the signal (130, 143); see `kudig.local.signals`.
    """

    def on_signal(signum: int, count: int) -> None:
        scheduler.stop()
        if count > 1:
            scheduler.kill_now()

    def work() -> None:
        try:
            scheduler.run()
        finally:
            scheduler.shutdown()

    _, signum = until_signalled(work, on_signal, "kudig-scheduler")
    return 128 + signum if signum is not None else 0
