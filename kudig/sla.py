"""`sla:` — digdag's per-attempt deadline, pure.

digdag (`SlaCalculator`, `SessionMonitorExecutor`, `WorkflowExecutor.addMonitorTask`): a workflow's
top-level `sla:` sets exactly one of `time: HH:MM[:SS]` (that time of day in the workflow's time
zone, counted from the attempt's start: today's, or tomorrow's if it already passed) or
`duration: HH:MM[:SS]` (after the attempt's start). When the deadline comes and the attempt's root
task is not done, the root gets these children, which run beside whatever still runs:

* `^sla^alert` — `notify>: SLA violation`, when `alert` is true (digdag's default: true);
* `^sla^fail` — `fail>: SLA violation`, when `fail` is true (default false): the attempt fails;
* `^sla` — the `+tasks` of the `sla:` map, when there are any.

The engine fires it (time is its input); the shells only compute nothing and wake up in time.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, tzinfo
from typing import Any

from kudig.errors import ConfigError
from kudig.yamlload import YMap

_HMS = re.compile(r"^(\d{1,2}):(\d{2})(?::(\d{2}))?$")
_OPTIONS = {"time", "duration", "alert", "fail"}
VIOLATION = "SLA violation"


@dataclass(frozen=True)
class Sla:
    kind: str  # "time" or "duration"
    seconds: int  # seconds after midnight (time) or after the attempt's start (duration)
    alert: bool = True
    fail: bool = False
    tasks: dict[str, Any] = field(default_factory=dict)  # the `+tasks` to run on a violation

    def deadline(self, started: float, tz: tzinfo) -> float:
        """When the attempt that started at `started` (epoch seconds) violates this SLA."""
        if self.kind == "duration":
            return started + self.seconds
        local = datetime.fromtimestamp(started, tz)
        day = local.replace(hour=0, minute=0, second=0, microsecond=0, tzinfo=None)
        at = (day + timedelta(seconds=self.seconds)).replace(tzinfo=tz)
        if at.timestamp() <= started:
            at = (day + timedelta(days=1, seconds=self.seconds)).replace(tzinfo=tz)
        return at.timestamp()

    def subtrees(self) -> list[tuple[str, dict[str, Any]]]:
        """The children the root gets on a violation, as (name suffix, task config)."""
        out: list[tuple[str, dict[str, Any]]] = []
        if self.alert:
            out.append(("^sla^alert", {"notify>": VIOLATION}))
        if self.fail:
            out.append(("^sla^fail", {"fail>": VIOLATION}))
        if self.tasks:
            out.append(("^sla", dict(self.tasks)))
        return out


def _hms(value: Any, what: str, file: str | None, line: int | None) -> int:
    m = _HMS.match(str(value).strip()) if isinstance(value, str | int) else None
    if m is None:
        raise ConfigError(f"sla: {what} must be HH:MM or HH:MM:SS, got {value!r}", file, line)
    hours, minutes, seconds = int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)
    if minutes > 59 or seconds > 59 or (what == "time" and hours > 23):
        raise ConfigError(f"sla: {what} is out of range: {value!r}", file, line)
    return (hours * 60 + minutes) * 60 + seconds


def _flag(config: Mapping[str, Any], key: str, default: bool, file: str | None, line: int | None) -> bool:
    value = config.get(key, default)
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ConfigError(f"sla: {key} must be true or false, got {value!r}", file, line)


def parse_sla(definition: YMap, file: str) -> Sla | None:
    """The workflow's `sla:`, or None; a ConfigError with the line for anything digdag refuses."""
    if "sla" not in definition:
        return None
    line = definition.line_of("sla")
    config = definition["sla"]
    if not isinstance(config, Mapping):
        raise ConfigError("sla must be a map like {time: 02:00, fail: true}", file, line)
    unknown = [k for k in config if k not in _OPTIONS and not (isinstance(k, str) and k.startswith("+"))]
    if unknown:
        raise ConfigError(f"Parameter '{unknown[0]}' is not used at sla.", file, line)
    if ("time" in config) == ("duration" in config):
        raise ConfigError("SLA must be specified using either the 'time' or 'duration' option", file, line)
    kind = "time" if "time" in config else "duration"
    tasks = {k: v for k, v in config.items() if isinstance(k, str) and k.startswith("+")}
    return Sla(
        kind=kind,
        seconds=_hms(config[kind], kind, file, line),
        alert=_flag(config, "alert", True, file, line),
        fail=_flag(config, "fail", False, file, line),
        tasks=tasks,
    )
