"""Built-in variables (`session_time`, `last_session_time`, ...) with digdag's exact formats.

digdag builds them in `RuntimeParams.buildRuntimeParams` and `AttemptBuilder.buildSessionParameters`:

* `timezone`: the zone id (`UTC`, `Asia/Tokyo`, `+09:00`);
* `<prefix>_time` `yyyy-MM-dd'T'HH:mm:ssxxx` (`2016-01-02T03:04:05+00:00`), `<prefix>_date` `yyyy-MM-dd`,
  `<prefix>_date_compact` `yyyyMMdd`, `<prefix>_local_time` `yyyy-MM-dd HH:mm:ss`, `<prefix>_tz_offset` `xx`
  (`+0000`, `-0800`), `<prefix>_unixtime` epoch seconds (an int), all in the workflow time zone, for the
  prefixes `session`, `last_session` and `next_session` (only when the workflow has a `schedule:`), and
  `last_executed_session` (always present; when there is no previous executed session every field is
  `""` except `_tz_offset`, which is the zone's offset at the epoch);
* `session_id`, `session_uuid`, `attempt_id`, `project_id`, `retry_attempt_name` (None when unnamed).

`task_name` is per task and added by the engine. `local_session_time` computes `kudig run --session`.

Not reproduced: some digdag versions also set `digdag.`-prefixed copies (`digdag.session_time`, ...);
the reference inventory does not list them, so kudig does not set them.
"""

from __future__ import annotations

import calendar
import re
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Any

from kudig.errors import ConfigError
from kudig.schedule import Schedule
from kudig.timezones import parse_timezone, timezone_id

__all__ = [
    "format_session_time",
    "format_time_vars",
    "format_tz_offset",
    "local_session_time",
    "session_params",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _require_aware(t: datetime) -> None:
    if t.tzinfo is None or t.utcoffset() is None:
        raise ValueError(f"a time zone aware datetime is required, got {t!r}")


def _offset_parts(local: datetime) -> tuple[str, int, int]:
    offset = local.utcoffset() or timedelta(0)
    total = int(offset.total_seconds())
    sign = "-" if total < 0 else "+"
    hours, rest = divmod(abs(total), 3600)
    return sign, hours, rest // 60  # Java's xx / xxx print hours and minutes only


def format_tz_offset(t: datetime, tz: tzinfo) -> str:
    """Java `xx`: `+0900`, `-0800`, `+0000`."""
    _require_aware(t)
    sign, hours, minutes = _offset_parts(t.astimezone(tz))
    return f"{sign}{hours:02d}{minutes:02d}"


def format_session_time(t: datetime, tz: tzinfo) -> str:
    """Java `yyyy-MM-dd'T'HH:mm:ssxxx`: `2016-01-02T03:04:05+00:00` (never `Z`)."""
    _require_aware(t)
    local = t.astimezone(tz)
    sign, hours, minutes = _offset_parts(local)
    return f"{_ymd(local, '-')}T{local:%H:%M:%S}{sign}{hours:02d}:{minutes:02d}"


def _ymd(local: datetime, sep: str) -> str:
    # %Y does not zero-pad years before 1000 on every platform; Java's yyyy does.
    return f"{local.year:04d}{sep}{local.month:02d}{sep}{local.day:02d}"


def format_time_vars(prefix: str, t: datetime | None, tz: tzinfo) -> dict[str, Any]:
    """`<prefix>_time`, `_date`, `_date_compact`, `_local_time`, `_tz_offset`, `_unixtime` for one instant.

    With `t=None` (digdag's "not set", used for `last_executed_session`) every value is `""` except
    `_tz_offset`, which is the offset of `tz` at the epoch.
    """
    if t is None:
        return {
            f"{prefix}_time": "",
            f"{prefix}_date": "",
            f"{prefix}_date_compact": "",
            f"{prefix}_local_time": "",
            f"{prefix}_tz_offset": format_tz_offset(_EPOCH, tz),
            f"{prefix}_unixtime": "",
        }
    _require_aware(t)
    local = t.astimezone(tz)
    return {
        f"{prefix}_time": format_session_time(local, tz),
        f"{prefix}_date": _ymd(local, "-"),
        f"{prefix}_date_compact": _ymd(local, ""),
        f"{prefix}_local_time": f"{_ymd(local, '-')} {local:%H:%M:%S}",
        f"{prefix}_tz_offset": format_tz_offset(local, tz),
        f"{prefix}_unixtime": (t - _EPOCH) // timedelta(seconds=1),
    }


def session_params(
    *,
    session_time: datetime,
    timezone: str,
    session_id: int | str,
    attempt_id: int | str,
    session_uuid: str,
    project_id: int | str,
    retry_attempt_name: str | None,
    schedule: Schedule | None,
    last_executed_session_time: datetime | None,
) -> dict[str, Any]:
    """Every built-in variable of an attempt except `task_name` (added per task by the engine).

    `timezone` is the workflow's `timezone:` text (default `UTC`); its Java-normalised id is the `timezone`
    variable. `last_session_*`/`next_session_*` are present only when `schedule` is given: the slot strictly
    before and the slot after the session time (so `next_session_time` is 9999-01-01T00:00:00Z once the
    schedule's `end:` is passed, as in digdag).
    """
    tz = parse_timezone(timezone)
    params: dict[str, Any] = {
        "timezone": timezone_id(timezone),
        "session_uuid": session_uuid,
        "session_id": session_id,
    }
    params.update(format_time_vars("session", session_time, tz))
    if schedule is not None:
        last = schedule.last_schedule_time(session_time).session_time
        following = schedule.next_schedule_time(session_time).session_time
        params.update(format_time_vars("last_session", last, tz))
        params.update(format_time_vars("next_session", following, tz))
    params.update(format_time_vars("last_executed_session", last_executed_session_time, tz))
    params["project_id"] = project_id
    params["retry_attempt_name"] = retry_attempt_name
    params["attempt_id"] = attempt_id
    return params


_SESSION_ARG = re.compile(r"(\d{4})-(\d{2})-(\d{2})(?: (\d{2}):(\d{2}):(\d{2}))?", re.ASCII)
_SESSION_ARG_ERROR = '--session must be hourly, daily, last, "yyyy-MM-dd", or "yyyy-MM-dd HH:mm:SS" format: '


def local_session_time(spec: str, *, timezone: tzinfo, schedule: Schedule | None, now: datetime) -> datetime:
    """The session time for `kudig run --session SPEC` (digdag `Run.parseSessionTime`), in `timezone`.

    * `hourly` / `daily`: now truncated to the hour / to 00:00 in the workflow time zone;
    * `schedule`: the last schedule time strictly before now (error without a schedule);
    * `last`: the caller first looks for the newest `.digdag/status` session; this is the fallback:
      the last schedule time if there is a schedule, otherwise today 00:00;
    * `yyyy-MM-dd` or `yyyy-MM-dd HH:mm:ss`: that wall time in the workflow time zone (a day of 29-31
      past the month's end is clamped to its last day, and `24:00:00` is the next day's 00:00, as Java's
      SMART resolver does; a wall time in a DST gap moves forward by the gap, an ambiguous one takes the
      earlier offset).
    """
    _require_aware(now)
    local_now = now.astimezone(timezone)
    if spec == "hourly":
        return _normalize(local_now.replace(minute=0, second=0, microsecond=0), timezone)
    if spec == "daily":
        return _normalize(local_now.replace(hour=0, minute=0, second=0, microsecond=0), timezone)
    if spec == "schedule":
        if schedule is None:
            raise ConfigError("--session schedule is set but schedule is not set to this workflow.")
        return schedule.last_schedule_time(now).session_time.astimezone(timezone)
    if spec == "last":
        if schedule is not None:
            return schedule.last_schedule_time(now).session_time.astimezone(timezone)
        return _normalize(local_now.replace(hour=0, minute=0, second=0, microsecond=0), timezone)
    return _parse_session_arg(spec, timezone)


def _normalize(t: datetime, tz: tzinfo) -> datetime:
    """Round-trip through UTC so that a wall time inside a DST gap becomes the real wall time."""
    return t.astimezone(UTC).astimezone(tz)


def _parse_session_arg(spec: str, tz: tzinfo) -> datetime:
    m = _SESSION_ARG.fullmatch(spec)
    if m is None:
        raise ConfigError(_SESSION_ARG_ERROR + spec)
    year, month, day = int(m.group(1)), int(m.group(2)), int(m.group(3))
    if not 1 <= month <= 12 or not 1 <= day <= 31:
        raise ConfigError(_SESSION_ARG_ERROR + spec)
    the_day = date(year, month, min(day, calendar.monthrange(year, month)[1]))
    extra_day = 0
    hour = minute = second = 0
    if m.group(4) is not None:
        hour, minute, second = int(m.group(4)), int(m.group(5)), int(m.group(6))
        if hour == 24 and minute == 0 and second == 0:
            hour, extra_day = 0, 1
        elif hour > 23 or minute > 59 or second > 59:
            raise ConfigError(_SESSION_ARG_ERROR + spec)
    wall = datetime(the_day.year, the_day.month, the_day.day, hour, minute, second) + timedelta(
        days=extra_day
    )
    # fold=0: gap -> moved forward by the gap, overlap -> earlier offset (java.time.ZonedDateTime.of)
    return _normalize(wall.replace(tzinfo=tz, fold=0), tz)
