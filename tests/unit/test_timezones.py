"""kudig.timezones: what Java's ZoneId.of accepts, and the id digdag shows in `timezone`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kudig.errors import KudigError
from kudig.timezones import parse_timezone, timezone_id


@pytest.mark.parametrize(
    ("name", "expected_id", "offset_hours"),
    [
        ("UTC", "UTC", 0),
        ("Z", "Z", 0),
        ("GMT", "GMT", 0),
        ("UT", "UT", 0),
        ("+09:00", "+09:00", 9),
        ("+0900", "+09:00", 9),
        ("+09", "+09:00", 9),
        ("+9", "+09:00", 9),
        ("-0800", "-08:00", -8),
        ("-08:00", "-08:00", -8),
        ("+05:30", "+05:30", 5.5),
        ("+00:00", "Z", 0),
        ("-00", "Z", 0),
        ("+18:00", "+18:00", 18),
        ("UTC+09:00", "UTC+09:00", 9),
        ("UTC+9", "UTC+09:00", 9),
        ("GMT+9", "GMT+09:00", 9),
        ("GMT-0330", "GMT-03:30", -3.5),
        ("UT+1", "UT+01:00", 1),
        ("UTC+0", "UTC", 0),
        ("UTC-00:00", "UTC", 0),
    ],
)
def test_fixed_zones(name: str, expected_id: str, offset_hours: float) -> None:
    tz = parse_timezone(name)
    assert timezone_id(name) == expected_id
    assert tz.utcoffset(datetime(2016, 7, 1)) == timedelta(hours=offset_hours)


def test_offset_with_seconds_keeps_them_in_the_id() -> None:
    assert timezone_id("+09:30:15") == "+09:30:15"
    assert timezone_id("+093015") == "+09:30:15"
    assert parse_timezone("+09:30:15").utcoffset(None) == timedelta(hours=9, minutes=30, seconds=15)


@pytest.mark.parametrize(
    "name", ["Asia/Tokyo", "America/Los_Angeles", "Europe/London", "Etc/GMT+9", "US/Pacific"]
)
def test_region_ids_are_kept_as_written(name: str) -> None:
    assert timezone_id(name) == name


def test_region_zone_has_dst() -> None:
    la = parse_timezone("America/Los_Angeles")
    assert datetime(2016, 1, 1, tzinfo=la).utcoffset() == timedelta(hours=-8)
    assert datetime(2016, 7, 1, tzinfo=la).utcoffset() == timedelta(hours=-7)
    tokyo = parse_timezone("Asia/Tokyo")
    assert datetime(2016, 7, 1, tzinfo=tokyo).utcoffset() == timedelta(hours=9)


def test_utc_is_the_stdlib_utc() -> None:
    assert parse_timezone("UTC") is UTC
    assert parse_timezone("Z") is UTC


@pytest.mark.parametrize(
    "name",
    [
        "",
        "J",
        "JST",  # an abbreviation, not a zone id
        "PST",
        "asia/tokyo",  # ids are case-sensitive
        "Asia/Tokio",
        "+19",
        "+18:01",
        "+09:60",
        "+9:00",
        "+09:0",
        "0900",
        "UTC+",
        "UTC+25",
        "GMT9",
        "Mars/Olympus",
        "../etc/passwd",
        " UTC",
    ],
)
def test_unknown_timezones(name: str) -> None:
    with pytest.raises(KudigError) as err:
        parse_timezone(name)
    assert err.value.message == f"Unknown timezone: {name}"
    with pytest.raises(KudigError):
        timezone_id(name)


def test_non_string_is_unknown() -> None:
    with pytest.raises(KudigError, match="Unknown timezone: 9"):
        parse_timezone(9)  # type: ignore[arg-type]


@given(
    sign=st.sampled_from("+-"),
    hours=st.integers(0, 17),
    minutes=st.integers(0, 59),
    form=st.sampled_from(["{s}{h:02d}:{m:02d}", "{s}{h:02d}{m:02d}"]),
)
def test_offset_ids_round_trip(sign: str, hours: int, minutes: int, form: str) -> None:
    name = form.format(s=sign, h=hours, m=minutes)
    seconds = (hours * 3600 + minutes * 60) * (-1 if sign == "-" else 1)
    normalised = timezone_id(name)
    assert parse_timezone(name).utcoffset(None) == timedelta(seconds=seconds)
    # the normalised id parses back to the same zone and is a fixed point
    assert timezone_id(normalised) == normalised
    assert parse_timezone(normalised).utcoffset(None) == timedelta(seconds=seconds)
