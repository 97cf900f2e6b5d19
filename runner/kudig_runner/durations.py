"""Durations as digdag writes them (`1d 2h 3m 4s`, each part optional but at least one), and the
per-task `timeout:` built on them. Standard library only: the runner enforces timeouts itself, and
the core (`kudig.schedule`'s `skip_delayed_by`) parses durations with this same code."""

from __future__ import annotations

import re

_DURATION = re.compile(
    r"\s*(?:(?P<days>\d+)\s*d)?\s*(?:(?P<hours>\d+)\s*h)?\s*(?:(?P<minutes>\d+)\s*m)?\s*(?:(?P<seconds>\d+)\s*s)?\s*",
    re.ASCII | re.IGNORECASE,
)
_SECONDS = {"days": 86400, "hours": 3600, "minutes": 60, "seconds": 1}


def duration_seconds(text: str) -> int:
    """digdag's `Durations.parseDuration` in seconds; ValueError `Invalid duration: ...` if bad."""
    m = _DURATION.fullmatch(text)
    if m is None or not any(m.groupdict().values()):
        raise ValueError(f"Invalid duration: {text}")
    return sum(int(v) * _SECONDS[k] for k, v in m.groupdict().items() if v is not None)


def timeout_seconds(value: object) -> float | None:
    """A task's `timeout:` (a number of seconds, or a duration like `30s`, `10m`, `1h 30m`) in
    seconds; None when not set. ValueError with a clear message when it is not one of those."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(
            f"Invalid timeout: {value!r} (expected seconds, or a duration like 30s, 10m, 1h 30m)"
        )
    if isinstance(value, (int, float)) or (
        isinstance(value, str) and value.strip().replace(".", "", 1).isdigit()
    ):
        seconds = float(value)
    elif isinstance(value, str):
        try:
            seconds = float(duration_seconds(value))
        except ValueError:
            raise ValueError(
                f"Invalid timeout: {value!r} (expected seconds, or a duration like 30s, 10m, 1h 30m)"
            ) from None
    else:
        raise ValueError(
            f"Invalid timeout: {value!r} (expected seconds, or a duration like 30s, 10m, 1h 30m)"
        )
    if seconds <= 0:
        raise ValueError(f"Invalid timeout: {value!r} (must be more than 0 seconds)")
    return seconds


def show_seconds(seconds: float) -> str:
    """`90` -> `1m 30s`: a duration as a user would write it."""
    whole = int(seconds)
    if whole != seconds or whole == 0:
        return f"{seconds:g}s"
    parts = []
    for name, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if whole >= size:
            parts.append(f"{whole // size}{name}")
            whole %= size
    return " ".join(parts)
