"""Workflow time zones, parsed the way digdag (Java's `ZoneId.of`) parses them.

digdag reads `timezone:` with `ZoneId.of`, so kudig accepts the same spellings:

* `Z` and fixed offsets `+h`, `+hh`, `+hhmm`, `+hh:mm`, `+hhmmss`, `+hh:mm:ss` (and `-`), at most 18 hours;
* `UTC`, `GMT`, `UT` alone or followed by such an offset (`UTC+09:00`, `GMT+9`, `UT-0530`);
* IANA region ids (`Asia/Tokyo`, `America/Los_Angeles`, `Etc/GMT+9`, ...), case-sensitive, from zoneinfo.

Anything else is `Unknown timezone: <name>`. Three-letter abbreviations such as `JST` or `PST` are not ids
(Java only accepts them through an explicit alias map, which digdag does not use).

`timezone_id` gives the normalised id that Java's `ZoneId.getId()` returns, which is what digdag shows in the
`timezone` built-in variable: region ids and `UTC` as written, offsets normalised (`+9` -> `+09:00`,
`-0800` -> `-08:00`, `+00:00` -> `Z`, `GMT+9` -> `GMT+09:00`, `UTC+0` -> `UTC`).
"""

from __future__ import annotations

import functools
import re
import zoneinfo
from datetime import UTC, timedelta, timezone, tzinfo

from kudig.errors import ConfigError

__all__ = ["parse_timezone", "timezone_id"]

_MAX_OFFSET_SECONDS = 18 * 3600
# Java's ZoneRegion id syntax (checked before looking the id up).
_REGION_ID = re.compile(r"[A-Za-z][A-Za-z0-9~/._+-]+", re.ASCII)


def parse_timezone(name: str) -> tzinfo:
    """The tzinfo for a digdag `timezone:` value; ConfigError `Unknown timezone: X` if Java would reject it."""
    return _resolve(name)[1]


def timezone_id(name: str) -> str:
    """The zone id as Java normalises it (`ZoneId.of(name).getId()`), e.g. `Asia/Tokyo`, `+09:00`, `UTC`, `Z`."""
    return _resolve(name)[0]


def _resolve(name: object) -> tuple[str, tzinfo]:
    if not isinstance(name, str):
        raise ConfigError(f"Unknown timezone: {name}")
    resolved = _resolve_cached(name)
    if resolved is None:
        raise ConfigError(f"Unknown timezone: {name}")
    return resolved


@functools.lru_cache(maxsize=256)
def _resolve_cached(name: str) -> tuple[str, tzinfo] | None:
    # Same dispatch order as java.time.ZoneId.of(String).
    if len(name) <= 1 or name.startswith(("+", "-")):
        seconds = _parse_offset(name)
        if seconds is None:
            return None
        return _offset_id(seconds), _fixed(seconds)
    if name.startswith(("UTC", "GMT")):
        return _resolve_prefixed(name, 3)
    if name.startswith("UT"):
        return _resolve_prefixed(name, 2)
    return _resolve_region(name)


def _resolve_prefixed(name: str, prefix_length: int) -> tuple[str, tzinfo] | None:
    prefix = name[:prefix_length]
    if len(name) == prefix_length:
        return prefix, UTC
    if name[prefix_length] not in "+-":
        return _resolve_region(name)
    seconds = _parse_offset(name[prefix_length:])
    if seconds is None:
        return None
    if seconds == 0:
        return prefix, UTC
    return prefix + _offset_id(seconds), _fixed(seconds)


def _resolve_region(name: str) -> tuple[str, tzinfo] | None:
    if not _REGION_ID.fullmatch(name) or name not in _available_regions():
        return None
    try:
        return name, zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        return None


@functools.lru_cache(maxsize=1)
def _available_regions() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def _parse_offset(text: str) -> int | None:
    """Seconds east of UTC for a java.time.ZoneOffset id, or None if ZoneOffset.of would throw."""
    if text == "Z":
        return 0
    if len(text) == 2:
        text = text[0] + "0" + text[1]
    sign = text[:1]
    body = text[1:]
    if sign not in ("+", "-"):
        return None
    # Lengths as in ZoneOffset.of: +hh, +hhmm, +hh:mm, +hhmmss, +hh:mm:ss
    patterns = {
        3: r"(\d\d)()()",
        5: r"(\d\d)(\d\d)()",
        6: r"(\d\d):(\d\d)()",
        7: r"(\d\d)(\d\d)(\d\d)",
        9: r"(\d\d):(\d\d):(\d\d)",
    }
    pattern = patterns.get(len(text))
    if pattern is None:
        return None
    m = re.fullmatch(pattern, body, re.ASCII)
    if m is None:
        return None
    hours = int(m.group(1))
    minutes = int(m.group(2) or 0)
    seconds = int(m.group(3) or 0)
    if hours > 18 or minutes > 59 or seconds > 59:
        return None
    total = hours * 3600 + minutes * 60 + seconds
    if total > _MAX_OFFSET_SECONDS:
        return None
    return -total if sign == "-" else total


def _offset_id(seconds: int) -> str:
    """java.time.ZoneOffset.getId(): `Z`, `+hh:mm` or `+hh:mm:ss`."""
    if seconds == 0:
        return "Z"
    sign = "-" if seconds < 0 else "+"
    total = abs(seconds)
    hh, rest = divmod(total, 3600)
    mm, ss = divmod(rest, 60)
    text = f"{sign}{hh:02d}:{mm:02d}"
    if ss:
        text += f":{ss:02d}"
    return text


def _fixed(seconds: int) -> tzinfo:
    if seconds == 0:
        return UTC
    return timezone(timedelta(seconds=seconds))
