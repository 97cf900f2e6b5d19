"""Where the local commands' lines go: `-l/--log-level`, `-L/--log` and `-O/--task-log`.

Two kinds of lines, as in digdag:

* log lines, `2024-01-30 12:34:56.789 +0000 [INFO] (+wf+task): ...` (and `warning: ...` on
  standard error): shown when their level is at least `-l` (default info), written to the `-L`
  file instead of the terminal when one is given;
* task output (what a task's command prints, `echo>`'s text): always on standard output.

With a task log directory (`-O DIR`) each task's lines of both kinds also go to that task's file,
in digdag's local log server layout:

    DIR/<yyyy-MM-dd>/0.1<workflow>@<session yyyyMMdd'T'HHmmssZ>/<task full name>@<first log time as
        8+8 hex digits: seconds and nanoseconds>.<agent: pid@host>.log.gz

(the date is the UTC day the run started; `0.1` is digdag's site id 0 and project id 1). While a
run goes on a task's lines are appended to the same name without `.gz` (`tail -f` works); when
the run ends each file is gzipped, as digdag's are (`zcat` them). Every run of a task within one
`kudig run` (a retry too) goes into that task's one file.
"""

from __future__ import annotations

import os
import re
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from kudig.errors import ConfigError

LEVELS = {"error": 40, "warn": 30, "info": 20, "debug": 10, "trace": 5}
_LEVEL_OF_TAG = {"ERROR": 40, "WARN": 30, "WARNING": 30, "INFO": 20, "DEBUG": 10, "TRACE": 5}
_LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)? [+-]\d{4} \[([A-Z]+)\] \((.*?)\): ")


def stamp() -> str:
    """digdag's log time: `2024-01-30 12:34:56.789 +0000`."""
    now = time.time()
    local = time.localtime(now)
    return (
        time.strftime("%Y-%m-%d %H:%M:%S", local)
        + f".{int(now % 1 * 1000):03d} "
        + time.strftime("%z", local)
    )


def make_dir(path: Path, what: str) -> None:
    """`mkdir -p`, or a one-line error naming `what` (a file in the way: "Not a directory")."""
    for p in (path, *path.parents):
        if p.exists() and not p.is_dir():
            raise ConfigError(f"{what}: Not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"{what}: {e.strerror or e}") from None


def check_level(name: str) -> int:
    level = LEVELS.get(name.lower())
    if level is None:
        raise ConfigError(f"Unknown log level '{name}': expected error, warn, info, debug or trace")
    return level


class Console:
    """The level threshold and the `-L` file (None: the terminal). Not locked: callers serialize."""

    def __init__(
        self,
        level: str = "info",
        log_path: str | None = None,
        out: TextIO | None = None,
        err: TextIO | None = None,
    ) -> None:
        self.level = check_level(level)
        self.out = out if out is not None else sys.stdout
        self.err = err if err is not None else sys.stderr
        self._file: TextIO | None = None
        if log_path not in (None, "-"):
            assert log_path is not None
            path = Path(log_path)
            make_dir(path.parent, f"Cannot write the log file {log_path}")
            try:
                self._file = path.open("a", encoding="utf-8")
            except OSError as e:
                raise ConfigError(f"Cannot write the log file {log_path}: {e.strerror or e}") from None

    @property
    def verbose(self) -> bool:
        return self.level <= LEVELS["debug"]

    def enabled(self, level: str) -> bool:
        return _LEVEL_OF_TAG.get(level.upper(), 20) >= self.level

    def log_line(self, text: str, level: str = "INFO") -> bool:
        """A formatted log line: to the `-L` file or standard output. False when filtered out."""
        if not self.enabled(level):
            return False
        target = self._file or self.out
        target.write(text if text.endswith("\n") else text + "\n")
        target.flush()
        return True

    def log(self, level: str, message: str, who: str = "main") -> None:
        self.log_line(f"{stamp()} [{level}] ({who}): {message}", level)

    def warning(self, message: str) -> None:
        """A warning about the user's input: `warning: ...` on standard error (or the `-L` file)."""
        if not self.enabled("WARN"):
            return
        if self._file is not None:
            self.log_line(f"{stamp()} [WARN] (main): {message}", "WARN")
        else:
            print(f"warning: {message}", file=self.err, flush=True)

    def output(self, text: str) -> None:
        self.out.write(text if text.endswith("\n") else text + "\n")
        self.out.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class TaskLogDir:
    """One session's task log files (see the module docstring)."""

    def __init__(self, root: Path, workflow: str, session_dir: str, started: datetime | None = None) -> None:
        started = started or datetime.now(UTC)
        self.dir = root / started.astimezone(UTC).strftime("%Y-%m-%d") / f"0.1{workflow}@{session_dir}"
        import socket

        self.agent = f"{os.getpid()}@{socket.gethostname()}"
        self._files: dict[str, Path] = {}
        make_dir(self.dir, f"Cannot write task logs in {root}")

    def write(self, task: str, text: str) -> None:
        path = self._files.get(task)
        if path is None:
            now = time.time_ns()
            name = f"{task}@{now // 10**9:08x}{now % 10**9:08x}.{self.agent}.log"
            path = self._files[task] = self.dir / name.replace("/", "_")
        try:
            with path.open("a", encoding="utf-8") as f:
                f.write(text if text.endswith("\n") else text + "\n")
        except OSError:
            pass  # a full disk must not fail the task; the terminal still has the line

    def close(self) -> None:
        """gzip every file (digdag's `.log.gz`)."""
        import gzip
        import shutil

        for path in self._files.values():
            try:
                with path.open("rb") as src, gzip.open(path.with_name(path.name + ".gz"), "wb") as dst:
                    shutil.copyfileobj(src, dst)
                path.unlink()
            except OSError:
                continue  # keep the plain file
        self._files.clear()


class RunSink:
    """A `LocalRun`'s lines: `write(text, task)`, `task` set for a task's output lines."""

    def __init__(self, console: Console, task_logs: TaskLogDir | None = None) -> None:
        self.console = console
        self.task_logs = task_logs

    def write(self, text: str, task: str | None = None) -> None:
        if task is not None:  # task output: always shown
            self.console.output(text)
            if self.task_logs is not None:
                self.task_logs.write(task, text)
            return
        m = _LOG_LINE.match(text)
        level, who = (m.group(1), m.group(2)) if m else ("INFO", "")
        shown = self.console.log_line(text, level)
        if shown and self.task_logs is not None and who.startswith("+"):
            self.task_logs.write(who, text)

    def close(self) -> None:
        if self.task_logs is not None:
            self.task_logs.close()
