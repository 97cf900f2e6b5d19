"""`schedule:` — digdag's schedule forms, session time versus run time, first/next/last slots, start/end.

Every form except `seconds_interval>` is a cron pattern plus a delay in seconds, exactly as in digdag
(`digdag-standards/.../scheduler/*SchedulerFactory.java`):

| form                       | cron pattern (session time)  | delay (run time = session time + delay) |
|----------------------------|------------------------------|-----------------------------------------|
| `hourly>: MM:SS`           | `0 * * * *`                  | MM*60+SS                                |
| `daily>: HH:MM:SS`         | `0 0 * * *`                  | HH*3600+MM*60+SS                        |
| `weekly>: DDD,HH:MM:SS`    | `0 0 * * DDD`                | HH*3600+MM*60+SS                        |
| `monthly>: D,HH:MM:SS`     | `0 0 D * *`                  | HH*3600+MM*60+SS                        |
| `minutes_interval>: M`     | `*/M * * * *`                | `delay:`                                |
| `cron>: '...'`             | the pattern                  | `delay:`                                |
| `seconds_interval>: N`     | every N s since the epoch    | `delay:`                                |

The delay is absolute seconds: with DST, `daily>: 10:00:00` on 2016-03-13 in America/Los_Angeles has session
time 00:00-08:00 and runs at 11:00-07:00.

Cron patterns are interpreted like cron4j's `SchedulingPattern`/`Predictor` (what digdag uses), not like
vixie cron or croniter: day-of-month AND day-of-week must both match; `a-b` ranges wrap around (`5-1`);
`a/n` steps over the values of `a` only (`5/15` is just 5); `L` is the last day of the month; `|` joins
several patterns; names `jan`..`dec` and `sun`..`sat` (case-insensitive); day-of-week 7 is Sunday.
Wall times are resolved like java.util.GregorianCalendar: a time in a DST gap runs after the gap (02:30 on a
spring-forward day is 03:30 DST), a time in a DST overlap runs once, at its standard-time occurrence.

`start:`/`end:` are strict `YYYY-MM-DD` dates at 00:00 in the workflow time zone, `end` inclusive (the
schedule ends at the next day's 00:00). When a next run time would be at or after the end, the next slot is
`SCHEDULE_END` (9999-01-01T00:00:00Z, both session and run time: the schedule is finished). When it would be
before the start, the slot is recomputed from the start.

Where kudig differs from digdag, or had to guess (digdag's source for it was not at hand):

* `SCHEDULE_END` is digdag's instant 9999-01-01T00:00:00Z, returned in the workflow time zone.
* `seconds_interval>`: `first_schedule_time` is the first slot whose *session* time is >= now (digdag
  ignores the delay there). kudig also applies `start`/`end` to it; digdag's seconds_interval factory
  does not seem to read them.
* After recomputing from `start`, kudig checks `end` again (digdag can return a slot past `end`).
* `last_schedule_time` always returns a real slot (digdag's interval estimate may not, for irregular
  patterns).
* Unknown keys are always an error (digdag only logs them when the scheduler merely loads a schedule).
  Allowed keys (guess, after the reference notes): the type key or `_type`/`_command`, `skip_on_overtime`,
  `skip_delayed_by`, `start`, `end`, and `delay` for cron, minutes_interval and seconds_interval only.
  "Did you mean" candidates are listed in a fixed order (digdag: HashSet order).
* Guessed messages: cron pattern errors (cron4j's InvalidPatternException wording with a `cron>: `
  prefix), `never matches any date` (digdag loops forever), non-integer or non-positive minutes_interval /
  seconds_interval / delay, non-boolean `skip_on_overtime`, bad `skip_delayed_by`, the text after
  `Invalid start: X`.
* `weekly>` also accepts full day names (`Sunday`); cron4j rejects them. `monthly>` day outside 1..31 gets
  the monthly format message (digdag fails inside cron4j).
* DST overlap (faithful to cron4j, surprising): a pattern firing inside the repeated hour fires at the
  standard-time occurrence only, so `*/15 * * * *` skips the first 01:00..01:45 on a fall-back day.
  "Standard time" is taken as the smaller UTC offset of the two.
* Instants before 1970 use floor division (Java truncates toward zero there).

Note for callers: Python compares and subtracts two datetimes of the *same* tzinfo by wall time, ignoring
the offset, so convert to UTC before comparing times around a DST change. `ScheduleTime.__eq__` does.
"""

from __future__ import annotations

import bisect
import calendar
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Any

from kudig_runner.durations import duration_seconds

from kudig.errors import ConfigError, KudigError

__all__ = [
    "SCHEDULE_END",
    "Schedule",
    "ScheduleTime",
    "parse_duration",
    "parse_schedule",
]

#: digdag's "no more schedules" time (BaseScheduler.SCHEDULE_END): 9999-01-01 00:00:00 +0000.
SCHEDULE_END = datetime(9999, 1, 1, tzinfo=UTC)
_SCHEDULE_END_S = 253370764800

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = 1_000_000

_TYPES_WITH_DELAY = frozenset({"cron", "minutes_interval", "seconds_interval"})
_TYPES = frozenset({"hourly", "daily", "weekly", "monthly", "minutes_interval", "cron", "seconds_interval"})
_COMMON_KEYS = ("skip_on_overtime", "skip_delayed_by", "start", "end")


@dataclass(frozen=True, eq=False)
class ScheduleTime:
    """One slot: the session time (the `session_time` variable) and when it actually runs.

    Equality compares instants: Python's same-zone datetime comparison ignores `fold`, so two different
    instants of a DST overlap (01:30 PDT and 01:30 PST) would otherwise compare equal.
    """

    session_time: datetime
    run_time: datetime

    def _instants(self) -> tuple[datetime, datetime]:
        return self.session_time.astimezone(UTC), self.run_time.astimezone(UTC)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ScheduleTime):
            return NotImplemented
        return self._instants() == other._instants()

    def __hash__(self) -> int:
        return hash(self._instants())

    @property
    def finished(self) -> bool:
        """True when this is SCHEDULE_END: the schedule has no more slots (`end:` passed)."""
        return self.session_time >= SCHEDULE_END


@dataclass(frozen=True)
class Schedule:
    """A parsed `schedule:`. Immutable; every method takes and returns tz-aware datetimes."""

    type: str
    """`hourly`, `daily`, `weekly`, `monthly`, `minutes_interval`, `cron` or `seconds_interval`."""
    command: str
    """The operator argument as written (`07:00:00`, `Mon,10:00:00`, `*/5 * * * *`, ...)."""
    timezone: tzinfo
    delay: int
    """Seconds from session time to run time (negative is allowed, as in digdag)."""
    skip_on_overtime: bool = False
    skip_delayed_by: timedelta | None = None
    start: datetime | None = None
    """First instant of `start:` (00:00 of that date in the workflow time zone), if set."""
    end: datetime | None = None
    """Exclusive end: 00:00 of the day after `end:` in the workflow time zone, if set."""
    _rule: _BoundCron | _SecondsInterval = field(kw_only=True, repr=False)

    # ----------------------------------------------------------------------------------- public API

    def first_schedule_time(self, now: datetime) -> ScheduleTime:
        """The first slot whose run time is at or after `now` (digdag `getFirstScheduleTime`).

        For `seconds_interval>` digdag picks the first slot whose *session* time is at or after `now`
        (the delay is ignored), and so does kudig.
        """
        now_us = _to_us(now)
        if isinstance(self._rule, _SecondsInterval):
            return self._next_with_start_end(now_us - 1)
        seconds, fraction = divmod(now_us, _US)
        if fraction == 0:
            # the slot exactly at `now` counts: step back one second because "next" is strictly after
            seconds -= 1
        return self._next_with_start_end((seconds - self.delay) * _US)

    def next_schedule_time(self, last_session_time: datetime) -> ScheduleTime:
        """The slot after a session time (digdag `nextScheduleTime`), with start/end applied."""
        return self._next_with_start_end(_to_us(last_session_time))

    def last_schedule_time(self, session_time: datetime) -> ScheduleTime:
        """The slot strictly before a session time, whether or not it ran; start/end are ignored (as digdag).

        digdag estimates the interval and can return a time that is not a slot at all for irregular cron
        patterns (e.g. `0 0 1,2 * *` on the 15th gives the 13th); kudig always returns a real slot.
        """
        slot = self._rule.last_slot(_to_us(session_time))
        return self._slot_time(slot)

    def should_skip_delayed(self, now: datetime, run_time: datetime) -> bool:
        """`skip_delayed_by`: true when `now` is more than the duration after the slot's run time."""
        return self.skip_delayed_by is not None and now > run_time + self.skip_delayed_by

    # ----------------------------------------------------------------------------------- internals

    def _next_with_start_end(self, last_us: int) -> ScheduleTime:
        if last_us >= _SCHEDULE_END_S * _US:
            return self._finished()
        slot = self._rule.next_slot(last_us)
        run = slot + self.delay
        if self.end is not None and run >= _to_us(self.end) // _US:
            return self._finished()
        if self.start is not None and run < _to_us(self.start) // _US:
            # before the start: recompute from the start (the first slot at or after it)
            slot = self._rule.next_slot(_to_us(self.start) - _US)
            # digdag does not check `end` again here; kudig does, so that no slot past `end` is returned
            if self.end is not None and slot + self.delay >= _to_us(self.end) // _US:
                return self._finished()
        return self._slot_time(slot)

    def _slot_time(self, slot: int) -> ScheduleTime:
        return ScheduleTime(
            session_time=_from_seconds(slot, self.timezone),
            run_time=_from_seconds(slot + self.delay, self.timezone),
        )

    def _finished(self) -> ScheduleTime:
        end = _from_seconds(_SCHEDULE_END_S, self.timezone)
        return ScheduleTime(session_time=end, run_time=end)


# --------------------------------------------------------------------------------------------- parsing


def parse_schedule(
    config: Mapping[str, Any], timezone: tzinfo, *, file: str | None = None, line: int | None = None
) -> Schedule:
    """Parse a `schedule:` map (either `xxx>: value` or `_type`/`_command`) in the workflow time zone.

    Errors are ConfigError with digdag's messages where digdag has one (`Unknown scheduler type: x`,
    `Parameter 'x' is not used at schedule.`, `hourly>: scheduler requires mm:ss format: ...`).
    digdag only logs unknown keys when the scheduler merely loads a schedule; kudig always rejects them.
    """
    try:
        return _parse_schedule(config, timezone)
    except KudigError as exc:
        raise exc.at(file, line) from None


def _parse_schedule(config: Mapping[str, Any], tz: tzinfo) -> Schedule:
    if not isinstance(config, Mapping):
        raise ConfigError(f"schedule: must be a map of 'type>: at' and options, got: {_show(config)}")
    keys = [str(k) for k in config]
    if "_type" in config:
        raw_type = config["_type"]
        if not isinstance(raw_type, str):
            raise ConfigError(f"Unknown scheduler type: {_show(raw_type)}")
        type_ = raw_type
        command = config.get("_command")
        type_keys = ["_type", "_command"]
    else:
        operator_keys = [k for k in keys if k.endswith(">")]
        if not operator_keys:
            raise ConfigError(f"Schedule config requires 'type>: at' parameter: {_show(config)}")
        type_key = operator_keys[0]
        type_ = type_key[:-1]
        command = config[type_key]
        type_keys = [type_key, "_type", "_command"]
    if type_ not in _TYPES:
        raise ConfigError(f"Unknown scheduler type: {type_}")

    allowed = [*type_keys, *_COMMON_KEYS]
    if type_ in _TYPES_WITH_DELAY:
        allowed.append("delay")
    unused = [k for k in keys if k not in allowed]
    if unused:
        raise ConfigError("\n".join(_unused_key_message(k, allowed) for k in unused))

    delay = _parse_delay(config.get("delay", 0)) if type_ in _TYPES_WITH_DELAY else 0
    text = _command_text(command)
    rule: _Cron4jPattern | _SecondsInterval
    if type_ == "hourly":
        rule, delay = _Cron4jPattern.compile("0 * * * *"), _parse_hourly_at(text)
    elif type_ == "daily":
        rule, delay = _Cron4jPattern.compile("0 0 * * *"), _parse_at("daily>", text)
    elif type_ == "weekly":
        rule, delay = _parse_weekly(text)
    elif type_ == "monthly":
        rule, delay = _parse_monthly(text)
    elif type_ == "minutes_interval":
        minutes = _parse_positive_int("minutes_interval>", command)
        rule = _Cron4jPattern.compile(f"*/{minutes} * * * *")
    elif type_ == "cron":
        if not isinstance(command, str):
            raise ConfigError(f"cron>: requires a cron pattern string: {_show(command)}")
        rule = _Cron4jPattern.compile(command, what="cron>")
    else:
        rule = _SecondsInterval(_parse_positive_int("seconds_interval>", command))

    start = _parse_start_end(config, "start", tz, plus_days=0)
    end = _parse_start_end(config, "end", tz, plus_days=1)
    if start is not None and end is not None and start >= end:
        raise ConfigError("The schedule of end is earlier than start")

    return Schedule(
        type=type_,
        command=text,
        timezone=tz,
        delay=delay,
        skip_on_overtime=_parse_bool(config, "skip_on_overtime"),
        skip_delayed_by=_parse_skip_delayed_by(config),
        start=start,
        end=end,
        _rule=rule.bind(tz) if isinstance(rule, _Cron4jPattern) else rule,
    )


def _show(value: object) -> str:
    try:
        return json.dumps(value, default=str, ensure_ascii=False)
    except (TypeError, ValueError):
        return repr(value)


def _unused_key_message(key: str, candidates: Sequence[str]) -> str:
    message = f"Parameter '{key}' is not used at schedule."
    suggestions = _suggest(key, candidates)
    if suggestions:
        message += f" > Did you mean '[{', '.join(suggestions)}]'?"
    return message


def _suggest(key: str, candidates: Sequence[str]) -> list[str]:
    """digdag's EditDistance.suggest(key, candidates, 0.50)."""
    return [c for c in dict.fromkeys(candidates) if _edit_distance(key, c) <= len(c) // 2]


def _edit_distance(a: str, b: str) -> int:
    if not b:
        return len(a)
    if not a:
        return len(b)
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        current = [i]
        for j, cb in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def _command_text(command: object) -> str:
    """The command as the String digdag's Config would give (scalars converted, like Jackson)."""
    if isinstance(command, bool):
        return "true" if command else "false"
    if isinstance(command, str | int | float):
        return str(command)
    if command is None:
        return ""
    return _show(command)


_JAVA_INT = re.compile(r"[+-]?[0-9]+", re.ASCII)


def _java_parse_int(text: str) -> int | None:
    """Integer.parseInt: optional sign, ASCII digits, 32-bit range; None if it would throw."""
    if not _JAVA_INT.fullmatch(text):
        return None
    value = int(text)
    if not -(2**31) <= value < 2**31:
        return None
    return value


def _java_split(text: str, sep: str) -> list[str]:
    """String.split(sep) with Java's dropping of trailing empty strings."""
    if text == "":
        return [""]
    parts = text.split(sep)
    while parts and parts[-1] == "":
        parts.pop()
    return parts


def _parse_hourly_at(at: str) -> int:
    fragments = _java_split(at, ":")
    values = [_java_parse_int(f) for f in fragments]
    if len(values) != 2 or values[0] is None or values[1] is None:
        raise ConfigError(f"hourly>: scheduler requires mm:ss format: {at}")
    return values[0] * 60 + values[1]


def _parse_at(kind: str, at: str) -> int:
    """DailySchedulerFactory.parseAt: `HH:MM:SS` -> seconds (each part any int, as Integer.parseInt)."""
    fragments = _java_split(at, ":")
    values = [_java_parse_int(f) for f in fragments]
    if len(values) != 3 or any(v is None for v in values):
        raise ConfigError(f"{kind} scheduler requires hh:mm:ss format: {at}")
    hours, minutes, seconds = (v or 0 for v in values)
    return hours * 3600 + minutes * 60 + seconds


_FULL_DAY_NAMES = {
    "sunday": "sun",
    "monday": "mon",
    "tuesday": "tue",
    "wednesday": "wed",
    "thursday": "thu",
    "friday": "fri",
    "saturday": "sat",
}


def _parse_weekly(desc: str) -> tuple[_Cron4jPattern, int]:
    fragments = desc.split(",", 1)
    if len(fragments) != 2:
        raise ConfigError(f"weekly>: scheduler requires day,hh:mm:ss format: {desc}")
    day = fragments[0].strip()
    time = fragments[1].strip()
    number = _java_parse_int(day)
    if number is not None and number < 0:
        raise ConfigError(f"weekly>: invalid day: {day}")
    delay = _parse_at("weekly>", time)
    # kudig extension: full day names (`Sunday`); cron4j (and so digdag) only knows `Sun`..`Sat` and 0-7.
    day = _FULL_DAY_NAMES.get(day.lower(), day)
    try:
        pattern = _Cron4jPattern.compile(f"0 0 * * {day}")
    except ConfigError:
        raise ConfigError(f"weekly>: scheduler requires day,hh:mm:ss format: {desc}") from None
    return pattern, delay


def _parse_monthly(desc: str) -> tuple[_Cron4jPattern, int]:
    fragments = desc.split(",", 1)
    day = _java_parse_int(fragments[0]) if len(fragments) == 2 else None
    if day is None:
        raise ConfigError(f"monthly>: scheduler requires day,hh:mm:ss format: {desc}")
    delay = _parse_at("monthly>", fragments[1])
    if not 1 <= day <= 31:
        # digdag fails later inside cron4j ("value out of range"); same input is rejected
        raise ConfigError(f"monthly>: scheduler requires day,hh:mm:ss format: {desc}")
    return _Cron4jPattern.compile(f"0 0 {day} * *"), delay


def _as_int(value: object) -> int | None:
    """A Jackson-ish int conversion: ints and integer strings; None otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        return _java_parse_int(value.strip())
    return None


def _parse_positive_int(kind: str, value: object) -> int:
    number = _as_int(value)
    if number is None or number < 1:
        raise ConfigError(f"{kind}: scheduler requires a positive integer: {_command_text(value)}")
    return number


def _parse_delay(value: object) -> int:
    number = _as_int(value)
    if number is None:
        raise ConfigError(f"Expected an integer (seconds) for key 'delay' but got {_show(value)}")
    return number


def _parse_bool(config: Mapping[str, Any], key: str) -> bool:
    value = config.get(key, False)
    if isinstance(value, bool):
        return value
    if value == "true" or value == "false":
        return bool(value == "true")
    raise ConfigError(f"Expected 'true' or 'false' for key '{key}' but got {_show(value)}")


def parse_duration(text: str) -> timedelta:
    """digdag's `Durations.parseDuration`: `1d 2h 3m 4s`, each part optional but at least one; ValueError if bad."""
    return timedelta(seconds=duration_seconds(text))


def _parse_skip_delayed_by(config: Mapping[str, Any]) -> timedelta | None:
    value = config.get("skip_delayed_by")
    if value is None:
        return None
    try:
        return parse_duration(_command_text(value))
    except ValueError:
        raise ConfigError(
            f"Invalid skip_delayed_by: {_command_text(value)} (expected a duration like '1d 2h 3m 4s')"
        ) from None


_YMD = re.compile(r"(\d{4})-(\d{2})-(\d{2})", re.ASCII)


def _parse_start_end(config: Mapping[str, Any], key: str, tz: tzinfo, *, plus_days: int) -> datetime | None:
    """ScheduleConfigHelper: strict `uuuu-MM-dd`, at 00:00 in the workflow time zone (+1 day for `end`)."""
    if key not in config or config[key] is None:
        return None
    text = _command_text(config[key])
    m = _YMD.fullmatch(text)
    day: date | None = None
    if m is not None:
        try:
            day = date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
        except ValueError:
            day = None
    if day is None:
        raise ConfigError(f"Invalid {key}: {text} (Text '{text}' could not be parsed as yyyy-MM-dd)")
    day += timedelta(days=plus_days)
    midnight = datetime(day.year, day.month, day.day)
    return _from_seconds(_resolve_wall(midnight, tz, prefer_standard=False), tz)


# --------------------------------------------------------------------------------------------- time helpers


def _to_us(t: datetime) -> int:
    if t.tzinfo is None or t.utcoffset() is None:
        raise ValueError(f"a time zone aware datetime is required, got {t!r}")
    return (t - _EPOCH) // timedelta(microseconds=1)


def _from_seconds(seconds: int, tz: tzinfo) -> datetime:
    return (_EPOCH + timedelta(seconds=seconds)).astimezone(tz)


def _local_fields(seconds: int, tz: tzinfo) -> datetime:
    """Naive wall-clock time of an instant in tz."""
    return _from_seconds(seconds, tz).replace(tzinfo=None)


def _resolve_wall(naive: datetime, tz: tzinfo, *, prefer_standard: bool) -> int:
    """Epoch seconds of a wall time.

    In a DST gap the earlier offset applies (the time moves forward by the gap, like Java). In an overlap
    `prefer_standard` picks the later instant (java.util.GregorianCalendar), otherwise the earlier one
    (java.time.ZonedDateTime).
    """
    off0 = naive.replace(tzinfo=tz, fold=0).utcoffset() or timedelta(0)
    off1 = naive.replace(tzinfo=tz, fold=1).utcoffset() or timedelta(0)
    wall = calendar.timegm(naive.timetuple())
    # In a gap (off0 < off1) fold=0 holds the offset before the transition; in an overlap (off0 > off1)
    # fold=0 is the first occurrence and fold=1 the second (standard time).
    offset = off1 if off0 > off1 and prefer_standard else off0
    return wall - int(offset.total_seconds())


# --------------------------------------------------------------------------------------------- seconds_interval


@dataclass(frozen=True)
class _SecondsInterval:
    """Slots every `interval` seconds since the epoch (time zone independent)."""

    interval: int

    def next_slot(self, t_us: int) -> int:
        """First slot strictly after t."""
        seconds = t_us // _US
        return seconds - seconds % self.interval + self.interval

    def last_slot(self, t_us: int) -> int:
        """Last slot strictly before t."""
        seconds = (t_us - 1) // _US
        return seconds - seconds % self.interval


# --------------------------------------------------------------------------------------------- cron4j patterns

_MONTH_NAMES = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DOW_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_LAST_DAY = 32  # cron4j's value for `L` in the day-of-month field
_MAX_YEAR = 9999


class _FieldError(Exception):
    pass


@dataclass(frozen=True)
class _FieldSpec:
    name: str
    minimum: int
    maximum: int
    aliases: tuple[str, ...] = ()
    alias_offset: int = 0

    def parse_value(self, text: str) -> int:
        """cron4j's value parsers: an int in range, else (months, days of week) a name, else `L` (days)."""
        if self.name == "days of month" and text.lower() == "l":
            return _LAST_DAY
        number = _java_parse_int(text)
        if number is not None and self.minimum <= number <= self.maximum:
            return number % 7 if self.name == "days of week" else number
        if self.aliases:
            # cron4j tries the name after any integer failure, so `13` as a month is an invalid alias
            if text.lower() in self.aliases:
                return self.aliases.index(text.lower()) + self.alias_offset
            raise _FieldError(f'invalid value "{text}", invalid alias "{text}"')
        if number is None:
            raise _FieldError(f'invalid value "{text}", invalid integer value')
        raise _FieldError(f'invalid value "{text}", value out of range')


_FIELDS = (
    _FieldSpec("minutes", 0, 59),
    _FieldSpec("hours", 0, 23),
    _FieldSpec("days of month", 1, 31),
    _FieldSpec("months", 1, 12, _MONTH_NAMES, 1),
    _FieldSpec("days of week", 0, 7, _DOW_NAMES, 0),
)


def _tokens(text: str, delimiters: str) -> list[str]:
    """java.util.StringTokenizer: split on any delimiter character, dropping empty tokens."""
    return [t for t in re.split("[" + re.escape(delimiters) + "]", text) if t]


def _parse_field(text: str, spec: _FieldSpec) -> frozenset[int] | None:
    """One field; None means `*` (always matches)."""
    if text == "*":
        return None
    values: list[int] = []
    elements = _tokens(text, ",")
    if not elements:
        raise _FieldError("invalid field")
    for element in elements:
        parts = _tokens(element, "/")
        if not 1 <= len(parts) <= 2:
            raise _FieldError("syntax error")
        span = _parse_range(parts[0], spec)
        if len(parts) == 2:
            step = _java_parse_int(parts[1])
            if step is None:
                raise _FieldError(f'invalid divisor "{parts[1]}"')
            if step < 1:
                raise _FieldError(f'non positive divisor "{step}"')
            span = span[::step]
        values.extend(span)
    return frozenset(values)


def _parse_range(text: str, spec: _FieldSpec) -> list[int]:
    if text == "*":
        return list(range(spec.minimum, spec.maximum + 1))
    bounds = _tokens(text, "-")
    if not 1 <= len(bounds) <= 2:
        raise _FieldError("syntax error")
    low = spec.parse_value(bounds[0])
    if len(bounds) == 1:
        return [low]
    high = spec.parse_value(bounds[1])
    if low < high:
        return list(range(low, high + 1))
    if low > high:  # wraps around: 5-1 is 5,6,..,max,min,..,1
        return list(range(low, spec.maximum + 1)) + list(range(spec.minimum, high + 1))
    return [low]


@dataclass(frozen=True)
class _CronFields:
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: frozenset[int] | None
    months: frozenset[int] | None
    weekdays: frozenset[int] | None  # 0 = Sunday

    def day_matches(self, year: int, month: int, day: int) -> bool:
        if self.months is not None and month not in self.months:
            return False
        if self.days is not None and day not in self.days:
            last = calendar.monthrange(year, month)[1]
            if not (_LAST_DAY in self.days and day == last):
                return False
        if self.weekdays is not None:
            weekday = (date(year, month, day).weekday() + 1) % 7
            if weekday not in self.weekdays:
                return False
        return True

    def matches(self, t: datetime) -> bool:
        return t.minute in self.minutes and t.hour in self.hours and self.day_matches(t.year, t.month, t.day)

    def next_wall(self, start: datetime) -> datetime | None:
        """The first matching naive minute at or after `start` (a naive minute), None past year 9999."""
        year, month, day = start.year, start.month, start.day
        hour_from, minute_from = start.hour, start.minute
        while year <= _MAX_YEAR:
            if self.months is not None and month not in self.months:
                later = [m for m in sorted(self.months) if m > month]
                if later:
                    month = later[0]
                else:
                    year, month = year + 1, min(self.months)
                day, hour_from, minute_from = 1, 0, 0
                continue
            if day > calendar.monthrange(year, month)[1]:
                year, month = (year + 1, 1) if month == 12 else (year, month + 1)
                day, hour_from, minute_from = 1, 0, 0
                continue
            if self.day_matches(year, month, day):
                i = bisect.bisect_left(self.hours, hour_from)
                while i < len(self.hours):
                    hour = self.hours[i]
                    first_minute = minute_from if hour == hour_from else 0
                    j = bisect.bisect_left(self.minutes, first_minute)
                    if j < len(self.minutes):
                        return datetime(year, month, day, hour, self.minutes[j])
                    i += 1
            day += 1
            hour_from, minute_from = 0, 0
        return None


def _matches_within(fields: _CronFields, start: datetime, before_year: int) -> bool:
    found = fields.next_wall(start)
    return found is not None and found.year < before_year


@dataclass(frozen=True)
class _Cron4jPattern:
    """A cron4j SchedulingPattern (one or more `|`-separated 5-field patterns) in a time zone."""

    text: str
    alternatives: tuple[_CronFields, ...]

    @classmethod
    def compile(cls, text: str, *, what: str = "cron>") -> _Cron4jPattern:
        alternatives: list[_CronFields] = []
        local_patterns = _tokens(text, "|")
        if not local_patterns:
            raise ConfigError(f'{what}: invalid pattern: "{text}"')
        for local in local_patterns:
            fields = _tokens(local, " \t")
            if len(fields) != 5:
                raise ConfigError(f'{what}: invalid pattern: "{local}"')
            parsed: list[frozenset[int] | None] = []
            for value, spec in zip(fields, _FIELDS, strict=True):
                try:
                    parsed.append(_parse_field(value, spec))
                except _FieldError as exc:
                    raise ConfigError(
                        f'{what}: invalid pattern "{local}". Error parsing {spec.name} field: {exc}.'
                    ) from None
            minutes, hours, days, months, weekdays = parsed
            alternatives.append(
                _CronFields(
                    minutes=tuple(sorted(minutes if minutes is not None else range(60))),
                    hours=tuple(sorted(hours if hours is not None else range(24))),
                    days=days,
                    months=months,
                    weekdays=weekdays,
                )
            )
        # cron4j would search forever for a pattern like `0 0 30 2 *`; 400 years cover every calendar.
        if not any(_matches_within(f, datetime(2000, 1, 1), 2400) for f in alternatives):
            raise ConfigError(f'{what}: pattern "{text}" never matches any date')
        return cls(text, tuple(alternatives))

    def bind(self, tz: tzinfo) -> _BoundCron:
        return _BoundCron(self, tz)


@dataclass(frozen=True)
class _BoundCron:
    pattern: _Cron4jPattern
    tz: tzinfo

    def next_slot(self, t_us: int) -> int:
        """cron4j Predictor.nextMatchingTime: the first matching minute after t (epoch seconds)."""
        time = (t_us // _US) // 60 * 60 + 60
        if time >= _SCHEDULE_END_S:
            return _SCHEDULE_END_S
        local = _local_fields(time, self.tz)
        if any(f.matches(local) for f in self.pattern.alternatives):
            return time
        best: int | None = None
        for fields in self.pattern.alternatives:
            wall = fields.next_wall(local)
            if wall is None:
                continue
            slot = _resolve_wall(wall, self.tz, prefer_standard=True) // 60 * 60
            if best is None or slot < best:
                best = slot
        if best is None:
            raise KudigError(f"schedule {self.pattern.text!r} has no time after {local.isoformat()}")
        return best

    def last_slot(self, t_us: int) -> int:
        """The last slot (a time `next_slot` can return) strictly before t."""
        seconds = -(-t_us // _US)  # ceil: slots are whole seconds
        first = self.next_slot(t_us)
        interval = max(self.next_slot(first * _US) - first, 60)
        step = 2 * interval
        while True:
            candidate = self.next_slot((seconds - step) * _US)
            if candidate * _US < t_us:
                break
            step *= 2
            if step > 500 * 366 * 86400:
                raise KudigError(f"schedule {self.pattern.text!r} has no time before {t_us // _US}")
        while True:
            following = self.next_slot(candidate * _US)
            if following * _US >= t_us:
                return candidate
            candidate = following
