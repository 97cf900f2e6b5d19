"""kudig.session_vars: digdag's built-in variables and `kudig run --session` times."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kudig.errors import KudigError
from kudig.schedule import Schedule, parse_schedule
from kudig.session_vars import (
    format_session_time,
    format_time_vars,
    format_tz_offset,
    local_session_time,
    session_params,
)
from kudig.timezones import parse_timezone

LA = parse_timezone("America/Los_Angeles")
TOKYO = parse_timezone("Asia/Tokyo")


def params(
    session_time: datetime,
    *,
    timezone: str = "UTC",
    schedule: Schedule | None = None,
    last_executed: datetime | None = None,
    retry_attempt_name: str | None = None,
) -> dict[str, Any]:
    return session_params(
        session_time=session_time,
        timezone=timezone,
        session_id=1,
        attempt_id=1,
        session_uuid="5c8d5f3a-7a0e-4a8e-9a57-0b3f3c0c1e2d",
        project_id=1,
        retry_attempt_name=retry_attempt_name,
        schedule=schedule,
        last_executed_session_time=last_executed,
    )


def test_built_in_variables_of_a_daily_workflow() -> None:
    # digdag BuiltInVariablesIT: `daily>: 07:00:00`, `digdag run -t "2016-01-02 03:04:05"`, UTC
    schedule = parse_schedule({"daily>": "07:00:00"}, UTC)
    session = local_session_time(
        "2016-01-02 03:04:05", timezone=UTC, schedule=schedule, now=datetime.now(UTC)
    )
    got = params(session, schedule=schedule)
    assert got == {
        "timezone": "UTC",
        "session_uuid": "5c8d5f3a-7a0e-4a8e-9a57-0b3f3c0c1e2d",
        "session_id": 1,
        "session_time": "2016-01-02T03:04:05+00:00",
        "session_date": "2016-01-02",
        "session_date_compact": "20160102",
        "session_local_time": "2016-01-02 03:04:05",
        "session_tz_offset": "+0000",
        "session_unixtime": 1451703845,
        "last_session_time": "2016-01-02T00:00:00+00:00",
        "last_session_date": "2016-01-02",
        "last_session_date_compact": "20160102",
        "last_session_local_time": "2016-01-02 00:00:00",
        "last_session_tz_offset": "+0000",
        "last_session_unixtime": 1451692800,
        "next_session_time": "2016-01-03T00:00:00+00:00",
        "next_session_date": "2016-01-03",
        "next_session_date_compact": "20160103",
        "next_session_local_time": "2016-01-03 00:00:00",
        "next_session_tz_offset": "+0000",
        "next_session_unixtime": 1451779200,
        "last_executed_session_time": "",
        "last_executed_session_date": "",
        "last_executed_session_date_compact": "",
        "last_executed_session_local_time": "",
        "last_executed_session_tz_offset": "+0000",
        "last_executed_session_unixtime": "",
        "project_id": 1,
        "retry_attempt_name": None,
        "attempt_id": 1,
    }
    assert "task_name" not in got
    assert not any(key.endswith("local_time_compact") for key in got)


def test_without_schedule_there_is_no_last_or_next_session() -> None:
    got = params(datetime(2021, 6, 1, 12, tzinfo=UTC))
    assert not any(key.startswith(("last_session_", "next_session_")) for key in got)
    assert got["last_executed_session_time"] == ""


def test_last_executed_session_when_known() -> None:
    schedule = parse_schedule({"seconds_interval>": 2}, UTC)
    session = datetime(2021, 6, 1, 12, 0, 4, tzinfo=UTC)
    got = params(session, schedule=schedule, last_executed=datetime(2021, 6, 1, 12, 0, 0, tzinfo=UTC))
    assert got["last_session_unixtime"] == got["session_unixtime"] - 2
    assert got["next_session_unixtime"] == got["session_unixtime"] + 2
    assert got["last_executed_session_time"] == "2021-06-01T12:00:00+00:00"
    assert got["last_executed_session_unixtime"] == got["session_unixtime"] - 4
    assert got["last_executed_session_local_time"] == "2021-06-01 12:00:00"


@pytest.mark.parametrize(
    ("zone", "offset_at_epoch"),
    [
        ("UTC", "+0000"),
        ("Asia/Tokyo", "+0900"),
        ("America/Los_Angeles", "-0800"),
        # Britain kept +01:00 all year from 1968 to 1971: the offset *at the epoch*, not today's
        ("Europe/London", "+0100"),
        ("+05:30", "+0530"),
    ],
)
def test_missing_last_executed_session_keeps_the_epoch_offset(zone: str, offset_at_epoch: str) -> None:
    got = params(datetime(2021, 6, 1, tzinfo=UTC), timezone=zone)
    assert got["last_executed_session_tz_offset"] == offset_at_epoch
    for suffix in ("time", "date", "date_compact", "local_time", "unixtime"):
        assert got[f"last_executed_session_{suffix}"] == ""


def test_tokyo_session() -> None:
    schedule = parse_schedule({"daily>": "10:00:00"}, TOKYO)
    got = params(datetime(2021, 6, 1, 0, 0, tzinfo=TOKYO), timezone="Asia/Tokyo", schedule=schedule)
    assert got["timezone"] == "Asia/Tokyo"
    assert got["session_time"] == "2021-06-01T00:00:00+09:00"
    assert got["session_date"] == "2021-06-01"
    assert got["session_local_time"] == "2021-06-01 00:00:00"
    assert got["session_tz_offset"] == "+0900"
    assert got["session_unixtime"] == 1622473200
    assert got["last_session_time"] == "2021-05-31T00:00:00+09:00"
    assert got["next_session_time"] == "2021-06-02T00:00:00+09:00"


def test_session_time_is_shown_in_the_workflow_zone() -> None:
    # the same instant given in UTC is formatted in the workflow zone
    got = params(datetime(2021, 5, 31, 15, 0, tzinfo=UTC), timezone="Asia/Tokyo")
    assert got["session_time"] == "2021-06-01T00:00:00+09:00"
    assert got["session_date_compact"] == "20210601"


@pytest.mark.parametrize(
    ("written", "shown"), [("+9", "+09:00"), ("-0800", "-08:00"), ("Z", "Z"), ("GMT+9", "GMT+09:00")]
)
def test_timezone_variable_is_the_normalised_id(written: str, shown: str) -> None:
    got = params(datetime(2021, 6, 1, tzinfo=UTC), timezone=written)
    assert got["timezone"] == shown


def test_offset_zone_formats() -> None:
    got = params(datetime(2021, 6, 1, tzinfo=UTC), timezone="-0800")
    assert got["session_time"] == "2021-05-31T16:00:00-08:00"
    assert got["session_tz_offset"] == "-0800"
    # UTC is +00:00 / +0000, never Z
    assert (
        params(datetime(2021, 6, 1, tzinfo=UTC), timezone="Z")["session_time"] == "2021-06-01T00:00:00+00:00"
    )


def test_dst_offsets() -> None:
    winter = format_time_vars("session", datetime(2016, 1, 15, 12, tzinfo=UTC), LA)
    summer = format_time_vars("session", datetime(2016, 7, 15, 12, tzinfo=UTC), LA)
    assert winter["session_time"] == "2016-01-15T04:00:00-08:00"
    assert winter["session_tz_offset"] == "-0800"
    assert summer["session_time"] == "2016-07-15T05:00:00-07:00"
    assert summer["session_tz_offset"] == "-0700"
    # both 01:30 of the fall-back day, told apart by their offsets
    first = format_session_time(datetime(2016, 11, 6, 8, 30, tzinfo=UTC), LA)
    second = format_session_time(datetime(2016, 11, 6, 9, 30, tzinfo=UTC), LA)
    assert (first, second) == ("2016-11-06T01:30:00-07:00", "2016-11-06T01:30:00-08:00")


def test_next_session_after_the_end_is_9999() -> None:
    schedule = parse_schedule({"daily>": "10:00:00", "end": "2021-06-01"}, TOKYO)
    got = params(datetime(2021, 6, 1, tzinfo=TOKYO), timezone="Asia/Tokyo", schedule=schedule)
    assert got["next_session_time"] == "9999-01-01T09:00:00+09:00"
    assert got["next_session_unixtime"] == 253370764800


def test_retry_attempt_name_and_ids_pass_through() -> None:
    got = session_params(
        session_time=datetime(2021, 6, 1, tzinfo=UTC),
        timezone="UTC",
        session_id="s-7",
        attempt_id=12,
        session_uuid="u",
        project_id="p",
        retry_attempt_name="retry01",
        schedule=None,
        last_executed_session_time=None,
    )
    assert (got["session_id"], got["attempt_id"], got["project_id"]) == ("s-7", 12, "p")
    assert got["retry_attempt_name"] == "retry01"


def test_format_time_vars_keys() -> None:
    got = format_time_vars("x", datetime(999, 2, 3, 4, 5, 6, tzinfo=UTC), UTC)
    assert got == {
        "x_time": "0999-02-03T04:05:06+00:00",
        "x_date": "0999-02-03",
        "x_date_compact": "09990203",
        "x_local_time": "0999-02-03 04:05:06",
        "x_tz_offset": "+0000",
        "x_unixtime": (datetime(999, 2, 3, 4, 5, 6, tzinfo=UTC) - datetime(1970, 1, 1, tzinfo=UTC)).days
        * 86400
        + 4 * 3600
        + 5 * 60
        + 6,
    }


def test_unixtime_drops_fractions() -> None:
    got = format_time_vars("s", datetime(2021, 6, 1, 0, 0, 0, 999999, tzinfo=UTC), UTC)
    assert got["s_unixtime"] == 1622505600
    assert got["s_local_time"] == "2021-06-01 00:00:00"


def test_offset_seconds_are_not_shown() -> None:
    tz = parse_timezone("+09:30:15")
    t = datetime(2021, 6, 1, tzinfo=UTC)
    assert format_tz_offset(t, tz) == "+0930"
    assert format_session_time(t, tz) == "2021-06-01T09:30:15+09:30"


def test_naive_times_are_rejected() -> None:
    with pytest.raises(ValueError, match="time zone aware"):
        format_time_vars("session", datetime(2021, 6, 1), UTC)


@given(st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)))
def test_property_formats_agree(t: datetime) -> None:
    got = format_time_vars("s", t, LA)
    local = t.astimezone(LA)
    assert got["s_unixtime"] == int(t.timestamp() // 1)
    assert got["s_date"] == local.date().isoformat()
    assert got["s_date_compact"] == got["s_date"].replace("-", "")
    assert got["s_local_time"] == got["s_time"][:19].replace("T", " ")
    assert got["s_time"][19:].replace(":", "") == got["s_tz_offset"]
    assert datetime.fromisoformat(got["s_time"]) == t.replace(microsecond=0)


# ------------------------------------------------------------------------------------------------ --session


NOW = datetime(2021, 6, 1, 14, 35, 12, 345678, tzinfo=UTC)  # 23:35 in Tokyo


def test_session_daily_and_hourly_are_in_the_workflow_zone() -> None:
    assert local_session_time("daily", timezone=UTC, schedule=None, now=NOW) == datetime(
        2021, 6, 1, tzinfo=UTC
    )
    assert local_session_time("hourly", timezone=UTC, schedule=None, now=NOW) == datetime(
        2021, 6, 1, 14, tzinfo=UTC
    )
    daily = local_session_time("daily", timezone=TOKYO, schedule=None, now=NOW)
    assert daily.isoformat() == "2021-06-01T00:00:00+09:00"
    hourly = local_session_time("hourly", timezone=TOKYO, schedule=None, now=NOW)
    assert hourly.isoformat() == "2021-06-01T23:00:00+09:00"
    kolkata = parse_timezone("Asia/Kolkata")
    assert (
        local_session_time("hourly", timezone=kolkata, schedule=None, now=NOW).isoformat()
        == "2021-06-01T20:00:00+05:30"
    )


def test_session_daily_when_midnight_does_not_exist() -> None:
    # Sao Paulo started DST at 00:00 on 2018-11-04: the day began at 01:00
    sao_paulo = parse_timezone("America/Sao_Paulo")
    now = datetime(2018, 11, 4, 15, tzinfo=UTC)
    assert (
        local_session_time("daily", timezone=sao_paulo, schedule=None, now=now).isoformat()
        == "2018-11-04T01:00:00-02:00"
    )
    assert (
        local_session_time("2018-11-04", timezone=sao_paulo, schedule=None, now=now).isoformat()
        == "2018-11-04T01:00:00-02:00"
    )


def test_session_schedule_is_the_last_slot_before_now() -> None:
    schedule = parse_schedule({"daily>": "07:00:00"}, TOKYO)
    got = local_session_time("schedule", timezone=TOKYO, schedule=schedule, now=NOW)
    assert got.isoformat() == "2021-06-01T00:00:00+09:00"
    # strictly before now: exactly at a slot gives the previous one (digdag lastScheduleTime)
    on_slot = datetime(2021, 6, 1, tzinfo=TOKYO)
    assert (
        local_session_time("schedule", timezone=TOKYO, schedule=schedule, now=on_slot).isoformat()
        == "2021-05-31T00:00:00+09:00"
    )


def test_session_schedule_without_schedule() -> None:
    with pytest.raises(KudigError) as err:
        local_session_time("schedule", timezone=UTC, schedule=None, now=NOW)
    assert err.value.message == "--session schedule is set but schedule is not set to this workflow."


def test_session_last_fallback() -> None:
    hourly = parse_schedule({"hourly>": "10:00"}, UTC)
    assert local_session_time("last", timezone=UTC, schedule=hourly, now=NOW) == datetime(
        2021, 6, 1, 14, tzinfo=UTC
    )
    assert (
        local_session_time("last", timezone=TOKYO, schedule=None, now=NOW).isoformat()
        == "2021-06-01T00:00:00+09:00"
    )


@pytest.mark.parametrize(
    ("spec", "zone", "expected"),
    [
        ("2016-01-02", "UTC", "2016-01-02T00:00:00+00:00"),
        ("2016-01-02 03:04:05", "UTC", "2016-01-02T03:04:05+00:00"),
        ("2016-01-02 03:04:05", "Asia/Tokyo", "2016-01-02T03:04:05+09:00"),
        ("2016-07-02", "America/Los_Angeles", "2016-07-02T00:00:00-07:00"),
        # Java's SMART resolver: days past the month's end are clamped, 24:00:00 is the next day
        ("2021-02-30", "UTC", "2021-02-28T00:00:00+00:00"),
        ("2024-02-31 10:00:00", "UTC", "2024-02-29T10:00:00+00:00"),
        ("2021-12-31 24:00:00", "UTC", "2022-01-01T00:00:00+00:00"),
        # a wall time in the DST gap moves forward, an ambiguous one takes the earlier offset
        ("2016-03-13 02:30:00", "America/Los_Angeles", "2016-03-13T03:30:00-07:00"),
        ("2016-11-06 01:30:00", "America/Los_Angeles", "2016-11-06T01:30:00-07:00"),
    ],
)
def test_session_explicit_time(spec: str, zone: str, expected: str) -> None:
    got = local_session_time(spec, timezone=parse_timezone(zone), schedule=None, now=NOW)
    assert got.isoformat() == expected
    assert got.tzinfo is parse_timezone(zone)


@pytest.mark.parametrize(
    "spec",
    [
        "",
        "yesterday",
        "2021/01/01",
        "2021-1-1",
        "2021-13-01",
        "2021-00-10",
        "2021-01-32",
        "2021-01-00",
        "2021-01-01 25:00:00",
        "2021-01-01 24:00:01",
        "2021-01-01 10:60:00",
        "2021-01-01 10:00",
        "2021-01-01T10:00:00",
        " 2021-01-01",
    ],
)
def test_session_bad_values(spec: str) -> None:
    with pytest.raises(KudigError) as err:
        local_session_time(spec, timezone=UTC, schedule=None, now=NOW)
    assert err.value.message == (
        '--session must be hourly, daily, last, "yyyy-MM-dd", or "yyyy-MM-dd HH:mm:SS" format: ' + spec
    )


def test_session_now_must_be_aware() -> None:
    with pytest.raises(ValueError, match="time zone aware"):
        local_session_time("daily", timezone=UTC, schedule=None, now=datetime(2021, 6, 1))


@given(st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2090, 1, 1), timezones=st.just(UTC)))
def test_property_daily_hourly_truncate(now: datetime) -> None:
    for tz in (UTC, TOKYO, LA):
        daily = local_session_time("daily", timezone=tz, schedule=None, now=now)
        hourly = local_session_time("hourly", timezone=tz, schedule=None, now=now)
        assert daily <= hourly <= now
        assert now - hourly < timedelta(hours=1)
        assert (hourly.minute, hourly.second, hourly.microsecond) == (0, 0, 0)
        assert daily.date() == now.astimezone(tz).date()
