"""Run a child process with its output streamed live to ours.

stderr is merged into stdout and copied to our stdout chunk by chunk as it arrives (in a pod the
container log, under `kudig run` the task log). SIGTERM/SIGINT received while the child runs are
forwarded to it, so deleting a pod or killing `kudig run` stops the user's command too rather than
leaving it to the final SIGKILL; a second signal kills the command's group at once. The child
runs in its own process group (session) and signals go to that whole group, because a shell
defers a signal until its foreground command ends.
Stop the runner with SIGTERM/SIGINT: a SIGKILL of the runner alone would leave the command
running.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from types import FrameType
from typing import Any


class Host:
    """A process running tasks in its own threads (`kudig run`), not one runner per task: each
    thread says where its command's output goes, and the host can signal every command group it
    started (the runner's own signal forwarding only works in a main thread)."""

    def __init__(self) -> None:
        self._groups: set[int] = set()
        self._lock = threading.Lock()
        self._signalled: int | None = None  # once signalled, a command starting later gets it too

    def signal(self, signum: int) -> None:
        with self._lock:
            self._signalled = signum
            groups = list(self._groups)
        for pgid in groups:
            with contextlib.suppress(OSError):
                os.killpg(pgid, signum)

    def _add(self, pgid: int) -> int | None:
        """Track a new command group; the signal it missed while starting, if any."""
        with self._lock:
            self._groups.add(pgid)
            return self._signalled

    def _remove(self, pgid: int) -> None:
        with self._lock:
            self._groups.discard(pgid)


_local = threading.local()


@contextlib.contextmanager
def hosted(host: Host, sink: Callable[[bytes], None]) -> Iterator[None]:
    """In this thread, commands report to `host` and write their output to `sink`."""
    _local.host, _local.sink = host, sink
    try:
        yield
    finally:
        _local.host = _local.sink = None


def _sink() -> Callable[[bytes], None]:
    sink: Callable[[bytes], None] | None = getattr(_local, "sink", None)
    if sink is not None:
        return sink
    buffer = getattr(sys.stdout, "buffer", None)
    if buffer is None:
        raise RuntimeError("stdout has no binary buffer")

    def write(chunk: bytes) -> None:
        buffer.write(chunk)
        buffer.flush()

    return write


class TimedOut(Exception):
    """The command ran longer than its timeout and was stopped (its whole process group)."""


def run_streaming(
    argv: Sequence[str], cwd: str | os.PathLike[str], env: Mapping[str, str], timeout: float | None = None
) -> int:
    """Run `argv` in `cwd` with exactly `env`; stream its stdout+stderr to ours; return the exit code.

    A child killed by a signal returns 128 + signal number (the shell convention).
    With `timeout` (seconds), the child's group gets SIGTERM when it expires, SIGKILL 5 s later,
    and TimedOut is raised. Raises OSError if the program cannot be started.
    """
    sys.stdout.flush()
    proc = subprocess.Popen(
        list(argv),
        cwd=cwd,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    previous: dict[int, Any] = {}

    forwarded: list[int] = []

    def forward(signum: int, frame: FrameType | None) -> None:
        # To the whole group: a shell defers a signal until its foreground command ends. A second
        # signal means "now": the group is killed.
        forwarded.append(signum)
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signum if len(forwarded) == 1 else signal.SIGKILL)

    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.signal(signum, forward)
    expired = threading.Event()

    def expire() -> None:
        expired.set()
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGTERM)
        if proc.poll() is None:
            time.sleep(5)
            with contextlib.suppress(OSError):
                os.killpg(proc.pid, signal.SIGKILL)

    timer = threading.Timer(timeout, expire) if timeout is not None else None
    if timer is not None:
        timer.daemon = True
        timer.start()
    host: Host | None = getattr(_local, "host", None)
    if host is not None:
        missed = host._add(proc.pid)
        if missed is not None:  # the host was stopped while this command was starting
            with contextlib.suppress(OSError):
                os.killpg(proc.pid, missed)
    try:
        out = _sink()
        assert proc.stdout is not None
        while True:
            chunk = proc.stdout.read1(65536)  # type: ignore[attr-defined]
            if not chunk:
                break
            out(chunk)
        code = proc.wait()
    finally:
        if host is not None:
            host._remove(proc.pid)
        if timer is not None:
            timer.cancel()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if proc.poll() is None:
            with contextlib.suppress(OSError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    if expired.is_set():
        # whatever the group left behind (a background job holding no pipe) goes too
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGKILL)
        raise TimedOut()
    return 128 - code if code < 0 else code


def task_timeout(task_input: Mapping[str, Any]) -> float | None:
    """The task's `timeout:` in seconds (None: none); a bad value fails the task with its reason."""
    from .durations import timeout_seconds
    from .protocol import RunnerError

    try:
        return timeout_seconds(task_input["config"].get("timeout"))
    except ValueError as e:
        raise RunnerError(str(e), "ConfigError") from None
