"""kudig.schedule: every digdag schedule form, session vs run time, first/next/last slots, start/end.

The expectations follow digdag's scheduler semantics (cron4j patterns plus an absolute delay), checked in UTC,
Asia/Tokyo, a half-hour zone and DST zones, with the boundary where `now` is exactly on a run time.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from croniter import croniter
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from kudig.errors import KudigError
from kudig.schedule import SCHEDULE_END, Schedule, ScheduleTime, parse_duration, parse_schedule
from kudig.timezones import parse_timezone

LA = "America/Los_Angeles"
TOKYO = "Asia/Tokyo"


def at(text: str) -> datetime:
    """`2016-03-13 09:00:00 -0700` (optionally with `.ffffff` seconds)."""
    fmt = "%Y-%m-%d %H:%M:%S.%f %z" if "." in text else "%Y-%m-%d %H:%M:%S %z"
    return datetime.strptime(text, fmt)


def sched(config: Mapping[str, Any], tz: str = "UTC") -> Schedule:
    return parse_schedule(config, parse_timezone(tz))


def assert_slot(got: ScheduleTime, session: str, run: str | None = None) -> None:
    """Same instants and the same UTC offsets as written (datetimes in a DST overlap never compare equal
    to another zone's datetimes, so compare in UTC)."""
    expected = ScheduleTime(at(session), at(run if run is not None else session))
    assert got == expected
    assert got.session_time.utcoffset() == expected.session_time.utcoffset()
    assert got.run_time.utcoffset() == expected.run_time.utcoffset()


def assert_finished(got: ScheduleTime) -> None:
    assert got.finished
    assert got == ScheduleTime(SCHEDULE_END, SCHEDULE_END)


# ------------------------------------------------------------------------------------------------ daily>


@pytest.mark.parametrize(
    ("tz", "now", "session", "run"),
    [
        ("UTC", "2020-05-06 08:00:00 +0000", "2020-05-06 00:00:00 +0000", "2020-05-06 10:00:00 +0000"),
        # now exactly on the run time: that slot still counts
        ("UTC", "2020-05-06 10:00:00 +0000", "2020-05-06 00:00:00 +0000", "2020-05-06 10:00:00 +0000"),
        ("UTC", "2020-05-06 10:00:00.000001 +0000", "2020-05-07 00:00:00 +0000", "2020-05-07 10:00:00 +0000"),
        ("UTC", "2020-05-06 10:00:01 +0000", "2020-05-07 00:00:00 +0000", "2020-05-07 10:00:00 +0000"),
        ("UTC", "2020-12-31 23:00:00 +0000", "2021-01-01 00:00:00 +0000", "2021-01-01 10:00:00 +0000"),
        (TOKYO, "2020-05-06 09:59:59 +0900", "2020-05-06 00:00:00 +0900", "2020-05-06 10:00:00 +0900"),
        (TOKYO, "2020-05-06 10:00:00 +0900", "2020-05-06 00:00:00 +0900", "2020-05-06 10:00:00 +0900"),
        (TOKYO, "2020-05-06 10:00:01 +0900", "2020-05-07 00:00:00 +0900", "2020-05-07 10:00:00 +0900"),
        # the same instant seen from another offset changes nothing
        (TOKYO, "2020-05-06 01:00:01 +0000", "2020-05-07 00:00:00 +0900", "2020-05-07 10:00:00 +0900"),
        # DST starts 2016-03-13 02:00 in Los Angeles: the delay is absolute seconds after 00:00-08:00
        (LA, "2016-03-13 09:00:00 -0700", "2016-03-13 00:00:00 -0800", "2016-03-13 11:00:00 -0700"),
        (LA, "2016-03-13 01:30:00 -0800", "2016-03-13 00:00:00 -0800", "2016-03-13 11:00:00 -0700"),
        (LA, "2016-03-13 11:00:01 -0700", "2016-03-14 00:00:00 -0700", "2016-03-14 10:00:00 -0700"),
        # DST ends 2016-11-06 02:00: 00:00-07:00 plus 10 hours is 09:00-08:00
        (LA, "2016-11-06 08:30:00 -0800", "2016-11-06 00:00:00 -0700", "2016-11-06 09:00:00 -0800"),
    ],
)
def test_daily_first(tz: str, now: str, session: str, run: str) -> None:
    assert_slot(sched({"daily>": "10:00:00"}, tz).first_schedule_time(at(now)), session, run)


def test_daily_midnight_on_the_boundary() -> None:
    s = sched({"daily>": "00:00:00"})
    assert_slot(s.first_schedule_time(at("2021-07-01 00:00:00 +0000")), "2021-07-01 00:00:00 +0000")
    assert_slot(s.first_schedule_time(at("2021-07-01 00:00:01 +0000")), "2021-07-02 00:00:00 +0000")


@pytest.mark.parametrize(
    ("tz", "last", "session", "run"),
    [
        ("UTC", "2020-12-31 00:00:00 +0000", "2021-01-01 00:00:00 +0000", "2021-01-01 07:30:15 +0000"),
        ("UTC", "2021-02-28 00:00:00 +0000", "2021-03-01 00:00:00 +0000", "2021-03-01 07:30:15 +0000"),
        # a "last" that is not itself a slot
        ("UTC", "2021-02-28 13:14:15 +0000", "2021-03-01 00:00:00 +0000", "2021-03-01 07:30:15 +0000"),
        (TOKYO, "2021-02-28 00:00:00 +0900", "2021-03-01 00:00:00 +0900", "2021-03-01 07:30:15 +0900"),
        (LA, "2016-03-12 00:00:00 -0800", "2016-03-13 00:00:00 -0800", "2016-03-13 08:30:15 -0700"),
        (LA, "2016-03-13 00:00:00 -0800", "2016-03-14 00:00:00 -0700", "2016-03-14 07:30:15 -0700"),
    ],
)
def test_daily_next(tz: str, last: str, session: str, run: str) -> None:
    assert_slot(sched({"daily>": "07:30:15"}, tz).next_schedule_time(at(last)), session, run)


@pytest.mark.parametrize(
    ("tz", "current", "session", "run"),
    [
        ("UTC", "2021-03-01 00:00:00 +0000", "2021-02-28 00:00:00 +0000", "2021-02-28 07:30:15 +0000"),
        ("UTC", "2021-01-01 00:00:00 +0000", "2020-12-31 00:00:00 +0000", "2020-12-31 07:30:15 +0000"),
        # strictly before: a time later in the day gives that day's slot
        ("UTC", "2021-03-01 00:00:01 +0000", "2021-03-01 00:00:00 +0000", "2021-03-01 07:30:15 +0000"),
        (TOKYO, "2021-03-01 00:00:00 +0900", "2021-02-28 00:00:00 +0900", "2021-02-28 07:30:15 +0900"),
        (LA, "2016-03-14 00:00:00 -0700", "2016-03-13 00:00:00 -0800", "2016-03-13 08:30:15 -0700"),
        (LA, "2016-03-13 00:00:00 -0800", "2016-03-12 00:00:00 -0800", "2016-03-12 07:30:15 -0800"),
        (LA, "2016-09-20 17:45:00 -0700", "2016-09-20 00:00:00 -0700", "2016-09-20 07:30:15 -0700"),
    ],
)
def test_daily_last(tz: str, current: str, session: str, run: str) -> None:
    assert_slot(sched({"daily>": "07:30:15"}, tz).last_schedule_time(at(current)), session, run)


def test_daily_accepts_loose_numbers_like_integer_parse_int() -> None:
    # each part goes through Integer.parseInt: no padding needed, out-of-range values just add up
    assert sched({"daily>": "7:0:5"}).delay == 7 * 3600 + 5
    assert sched({"daily>": "25:00:00"}).delay == 25 * 3600


# ------------------------------------------------------------------------------------------------ start/end


def test_start_end_daily() -> None:
    s = sched({"daily>": "10:00:00", "start": "2021-06-10", "end": "2021-06-12"})
    # before the start: recomputed from the start
    assert_slot(
        s.first_schedule_time(at("2021-06-01 12:00:00 +0000")),
        "2021-06-10 00:00:00 +0000",
        "2021-06-10 10:00:00 +0000",
    )
    assert_slot(
        s.next_schedule_time(at("2021-05-01 00:00:00 +0000")),
        "2021-06-10 00:00:00 +0000",
        "2021-06-10 10:00:00 +0000",
    )
    assert_slot(
        s.next_schedule_time(at("2021-06-10 00:00:00 +0000")),
        "2021-06-11 00:00:00 +0000",
        "2021-06-11 10:00:00 +0000",
    )
    assert_slot(
        s.next_schedule_time(at("2021-06-11 00:00:00 +0000")),
        "2021-06-12 00:00:00 +0000",
        "2021-06-12 10:00:00 +0000",
    )
    # end is inclusive: the 12th runs, the 13th does not
    assert_slot(
        s.first_schedule_time(at("2021-06-12 10:00:00 +0000")),
        "2021-06-12 00:00:00 +0000",
        "2021-06-12 10:00:00 +0000",
    )
    assert_finished(s.first_schedule_time(at("2021-06-12 10:00:01 +0000")))
    assert_finished(s.next_schedule_time(at("2021-06-12 00:00:00 +0000")))
    assert_finished(s.next_schedule_time(at("2021-07-01 00:00:00 +0000")))
    # once finished it stays finished
    assert_finished(s.next_schedule_time(SCHEDULE_END))
    # last ignores start and end
    assert_slot(
        s.last_schedule_time(at("2021-06-10 00:00:00 +0000")),
        "2021-06-09 00:00:00 +0000",
        "2021-06-09 10:00:00 +0000",
    )
    assert_slot(
        s.last_schedule_time(at("2021-06-20 00:00:00 +0000")),
        "2021-06-19 00:00:00 +0000",
        "2021-06-19 10:00:00 +0000",
    )


def test_end_covers_the_whole_last_day() -> None:
    s = sched({"daily>": "23:59:59", "end": "2021-06-12"})
    assert_slot(
        s.next_schedule_time(at("2021-06-11 00:00:00 +0000")),
        "2021-06-12 00:00:00 +0000",
        "2021-06-12 23:59:59 +0000",
    )
    assert_finished(s.next_schedule_time(at("2021-06-12 00:00:00 +0000")))


def test_start_end_are_dates_in_the_workflow_zone() -> None:
    s = sched({"daily>": "10:00:00", "start": "2021-06-10", "end": "2021-06-12"}, TOKYO)
    assert s.start == at("2021-06-10 00:00:00 +0900")
    assert s.end == at("2021-06-13 00:00:00 +0900")
    assert_slot(
        s.next_schedule_time(at("2021-06-09 10:00:00 +0900")),
        "2021-06-10 00:00:00 +0900",
        "2021-06-10 10:00:00 +0900",
    )
    assert_slot(
        s.next_schedule_time(at("2021-06-11 10:00:00 +0900")),
        "2021-06-12 00:00:00 +0900",
        "2021-06-12 10:00:00 +0900",
    )
    finished = s.next_schedule_time(at("2021-06-12 10:00:00 +0900"))
    assert_finished(finished)
    # SCHEDULE_END is the instant 9999-01-01T00:00:00Z, shown in the workflow zone
    assert finished.session_time.isoformat() == "9999-01-01T09:00:00+09:00"


def test_start_only_and_end_only() -> None:
    s = sched({"hourly>": "05:00", "start": "2030-01-01"})
    assert_slot(
        s.first_schedule_time(at("2021-06-01 12:00:00 +0000")),
        "2030-01-01 00:00:00 +0000",
        "2030-01-01 00:05:00 +0000",
    )
    e = sched({"hourly>": "05:00", "end": "2021-06-01"})
    assert_slot(
        e.first_schedule_time(at("2021-06-01 23:05:00 +0000")),
        "2021-06-01 23:00:00 +0000",
        "2021-06-01 23:05:00 +0000",
    )
    assert_finished(e.first_schedule_time(at("2021-06-01 23:05:01 +0000")))


def test_start_recomputation_does_not_go_past_end() -> None:
    # no 15th between start and end: digdag would return March 15; kudig says the schedule is over
    s = sched({"monthly>": "15,00:00:00", "start": "2021-03-01", "end": "2021-03-10"})
    assert_finished(s.first_schedule_time(at("2021-02-20 00:00:00 +0000")))


def test_start_equal_to_end_is_one_day() -> None:
    s = sched({"daily>": "01:00:00", "start": "2021-06-10", "end": "2021-06-10"})
    assert_slot(
        s.first_schedule_time(at("2021-01-01 00:00:00 +0000")),
        "2021-06-10 00:00:00 +0000",
        "2021-06-10 01:00:00 +0000",
    )
    assert_finished(s.next_schedule_time(at("2021-06-10 00:00:00 +0000")))


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"start": "2021-06-11", "end": "2021-06-10"}, "The schedule of end is earlier than start"),
        ({"start": "2021-6-1"}, "Invalid start: 2021-6-1"),
        ({"start": "2021-02-29"}, "Invalid start: 2021-02-29"),
        ({"end": "2021-13-01"}, "Invalid end: 2021-13-01"),
        ({"end": "2021-06-01 00:00:00"}, "Invalid end: 2021-06-01 00:00:00"),
        ({"start": 20210601}, "Invalid start: 20210601"),
    ],
)
def test_start_end_errors(config: dict[str, Any], message: str) -> None:
    with pytest.raises(KudigError) as err:
        sched({"daily>": "01:00:00", **config})
    assert err.value.message.startswith(message)


def test_leap_day_start_is_valid() -> None:
    assert sched({"daily>": "01:00:00", "start": "2024-02-29"}).start == at("2024-02-29 00:00:00 +0000")


# ------------------------------------------------------------------------------------------------ hourly>


@pytest.mark.parametrize(
    ("tz", "now", "session", "run"),
    [
        ("UTC", "2021-06-01 10:29:59 +0000", "2021-06-01 10:00:00 +0000", "2021-06-01 10:30:00 +0000"),
        ("UTC", "2021-06-01 10:30:00 +0000", "2021-06-01 10:00:00 +0000", "2021-06-01 10:30:00 +0000"),
        ("UTC", "2021-06-01 10:30:01 +0000", "2021-06-01 11:00:00 +0000", "2021-06-01 11:30:00 +0000"),
        ("UTC", "2021-06-01 23:45:00 +0000", "2021-06-02 00:00:00 +0000", "2021-06-02 00:30:00 +0000"),
        (TOKYO, "2021-06-01 10:30:00 +0900", "2021-06-01 10:00:00 +0900", "2021-06-01 10:30:00 +0900"),
        # a half-hour zone: the session is the top of the *local* hour
        (
            "Asia/Kolkata",
            "2021-06-01 10:00:00 +0000",
            "2021-06-01 15:00:00 +0530",
            "2021-06-01 15:30:00 +0530",
        ),
    ],
)
def test_hourly_first(tz: str, now: str, session: str, run: str) -> None:
    assert_slot(sched({"hourly>": "30:00"}, tz).first_schedule_time(at(now)), session, run)


def test_hourly_next_and_last() -> None:
    s = sched({"hourly>": "00:15"})
    assert_slot(
        s.next_schedule_time(at("2021-06-01 10:00:00 +0000")),
        "2021-06-01 11:00:00 +0000",
        "2021-06-01 11:00:15 +0000",
    )
    assert_slot(
        s.next_schedule_time(at("2021-06-01 10:59:59 +0000")),
        "2021-06-01 11:00:00 +0000",
        "2021-06-01 11:00:15 +0000",
    )
    assert_slot(
        s.last_schedule_time(at("2021-06-01 10:00:00 +0000")),
        "2021-06-01 09:00:00 +0000",
        "2021-06-01 09:00:15 +0000",
    )
    assert_slot(
        s.last_schedule_time(at("2021-06-01 10:00:01 +0000")),
        "2021-06-01 10:00:00 +0000",
        "2021-06-01 10:00:15 +0000",
    )


def test_hourly_across_dst_start() -> None:
    s = sched({"hourly>": "00:00"}, LA)
    # 02:00 does not exist on 2016-03-13: after 01:00 PST comes 03:00 PDT
    assert_slot(s.next_schedule_time(at("2016-03-13 01:00:00 -0800")), "2016-03-13 03:00:00 -0700")
    assert_slot(s.next_schedule_time(at("2016-03-13 03:00:00 -0700")), "2016-03-13 04:00:00 -0700")
    assert_slot(s.last_schedule_time(at("2016-03-13 03:00:00 -0700")), "2016-03-13 01:00:00 -0800")


def test_hourly_across_dst_end_runs_the_repeated_hour_once() -> None:
    # cron4j resolves an ambiguous wall time to standard time, so 01:00 PDT is skipped (digdag behaviour)
    s = sched({"hourly>": "00:00"}, LA)
    assert_slot(s.next_schedule_time(at("2016-11-06 00:00:00 -0700")), "2016-11-06 01:00:00 -0800")
    assert_slot(s.next_schedule_time(at("2016-11-06 01:00:00 -0800")), "2016-11-06 02:00:00 -0800")


@pytest.mark.parametrize("at_", ["10:11:12", "10", "ab:cd", "", "10:xx", " 10:00"])
def test_hourly_format_errors(at_: str) -> None:
    with pytest.raises(KudigError) as err:
        sched({"hourly>": at_})
    assert err.value.message == f"hourly>: scheduler requires mm:ss format: {at_}"


# ------------------------------------------------------------------------------------------------ weekly>


@pytest.mark.parametrize(
    ("day", "now", "session"),
    [
        # 2021-06-07 is a Monday
        ("Mon", "2021-06-07 08:59:59 +0000", "2021-06-07 00:00:00 +0000"),
        ("Mon", "2021-06-07 09:00:00 +0000", "2021-06-07 00:00:00 +0000"),
        ("Mon", "2021-06-07 09:00:01 +0000", "2021-06-14 00:00:00 +0000"),
        ("mon", "2021-06-08 00:00:00 +0000", "2021-06-14 00:00:00 +0000"),
        ("MON", "2021-06-08 00:00:00 +0000", "2021-06-14 00:00:00 +0000"),
        ("1", "2021-06-08 00:00:00 +0000", "2021-06-14 00:00:00 +0000"),
        ("Monday", "2021-06-08 00:00:00 +0000", "2021-06-14 00:00:00 +0000"),  # kudig extension
        ("Sun", "2021-06-07 10:00:00 +0000", "2021-06-13 00:00:00 +0000"),
        ("0", "2021-06-07 10:00:00 +0000", "2021-06-13 00:00:00 +0000"),
        ("7", "2021-06-07 10:00:00 +0000", "2021-06-13 00:00:00 +0000"),
        ("sunday", "2021-06-07 10:00:00 +0000", "2021-06-13 00:00:00 +0000"),
        ("Sat", "2021-06-07 10:00:00 +0000", "2021-06-12 00:00:00 +0000"),
        # any cron4j day-of-week field works
        ("Mon-Fri", "2021-06-11 09:00:01 +0000", "2021-06-14 00:00:00 +0000"),
        ("*", "2021-06-11 09:00:01 +0000", "2021-06-12 00:00:00 +0000"),
    ],
)
def test_weekly_first(day: str, now: str, session: str) -> None:
    got = sched({"weekly>": f"{day},09:00:00"}).first_schedule_time(at(now))
    assert got.session_time == at(session)
    assert got.run_time == at(session) + timedelta(hours=9)


def test_weekly_tokyo_and_dst() -> None:
    tokyo = sched({"weekly>": "Fri,23:30:00"}, TOKYO)
    assert_slot(
        tokyo.first_schedule_time(at("2021-06-11 23:30:00 +0900")),
        "2021-06-11 00:00:00 +0900",
        "2021-06-11 23:30:00 +0900",
    )
    assert_slot(
        tokyo.next_schedule_time(at("2021-06-11 00:00:00 +0900")),
        "2021-06-18 00:00:00 +0900",
        "2021-06-18 23:30:00 +0900",
    )
    assert_slot(
        tokyo.last_schedule_time(at("2021-06-11 00:00:00 +0900")),
        "2021-06-04 00:00:00 +0900",
        "2021-06-04 23:30:00 +0900",
    )
    # 2016-03-13 is the Sunday DST starts in Los Angeles
    la = sched({"weekly>": "Sun,15:00:00"}, LA)
    assert_slot(
        la.first_schedule_time(at("2016-03-13 01:59:00 -0800")),
        "2016-03-13 00:00:00 -0800",
        "2016-03-13 16:00:00 -0700",
    )
    assert_slot(
        la.next_schedule_time(at("2016-03-13 00:00:00 -0800")),
        "2016-03-20 00:00:00 -0700",
        "2016-03-20 15:00:00 -0700",
    )
    assert_slot(
        la.last_schedule_time(at("2016-03-20 00:00:00 -0700")),
        "2016-03-13 00:00:00 -0800",
        "2016-03-13 16:00:00 -0700",
    )


@pytest.mark.parametrize(
    ("desc", "message"),
    [
        ("-1,09:00:00", "weekly>: invalid day: -1"),
        ("Funday,09:00:00", "weekly>: scheduler requires day,hh:mm:ss format: Funday,09:00:00"),
        ("8,09:00:00", "weekly>: scheduler requires day,hh:mm:ss format: 8,09:00:00"),
        ("Mon", "weekly>: scheduler requires day,hh:mm:ss format: Mon"),
        ("Mon,9:00", "weekly> scheduler requires hh:mm:ss format: 9:00"),
    ],
)
def test_weekly_errors(desc: str, message: str) -> None:
    with pytest.raises(KudigError) as err:
        sched({"weekly>": desc})
    assert err.value.message == message


# ------------------------------------------------------------------------------------------------ monthly>


def test_monthly() -> None:
    s = sched({"monthly>": "1,09:00:00"})
    assert_slot(
        s.first_schedule_time(at("2021-06-01 09:00:00 +0000")),
        "2021-06-01 00:00:00 +0000",
        "2021-06-01 09:00:00 +0000",
    )
    assert_slot(
        s.first_schedule_time(at("2021-06-01 09:00:01 +0000")),
        "2021-07-01 00:00:00 +0000",
        "2021-07-01 09:00:00 +0000",
    )
    assert_slot(
        s.next_schedule_time(at("2021-12-01 00:00:00 +0000")),
        "2022-01-01 00:00:00 +0000",
        "2022-01-01 09:00:00 +0000",
    )
    assert_slot(
        s.last_schedule_time(at("2021-06-15 00:00:00 +0000")),
        "2021-06-01 00:00:00 +0000",
        "2021-06-01 09:00:00 +0000",
    )
    assert_slot(
        s.last_schedule_time(at("2021-01-01 00:00:00 +0000")),
        "2020-12-01 00:00:00 +0000",
        "2020-12-01 09:00:00 +0000",
    )


def test_monthly_31st_skips_short_months() -> None:
    s = sched({"monthly>": "31,00:00:00"}, TOKYO)
    assert_slot(s.next_schedule_time(at("2021-03-31 00:00:00 +0900")), "2021-05-31 00:00:00 +0900")
    assert_slot(s.last_schedule_time(at("2021-05-31 00:00:00 +0900")), "2021-03-31 00:00:00 +0900")


def test_monthly_dst() -> None:
    s = sched({"monthly>": "13,10:00:00"}, LA)
    assert_slot(
        s.first_schedule_time(at("2016-03-13 09:00:00 -0700")),
        "2016-03-13 00:00:00 -0800",
        "2016-03-13 11:00:00 -0700",
    )


@pytest.mark.parametrize(
    ("desc", "message"),
    [
        ("0,09:00:00", "monthly>: scheduler requires day,hh:mm:ss format: 0,09:00:00"),
        ("32,09:00:00", "monthly>: scheduler requires day,hh:mm:ss format: 32,09:00:00"),
        ("x,09:00:00", "monthly>: scheduler requires day,hh:mm:ss format: x,09:00:00"),
        ("1", "monthly>: scheduler requires day,hh:mm:ss format: 1"),
        ("1, 09:00:00", "monthly> scheduler requires hh:mm:ss format:  09:00:00"),
    ],
)
def test_monthly_errors(desc: str, message: str) -> None:
    with pytest.raises(KudigError) as err:
        sched({"monthly>": desc})
    assert err.value.message == message


# ------------------------------------------------------------------------------------------------ minutes_interval>


def test_minutes_interval() -> None:
    s = sched({"minutes_interval>": 15})
    assert s.delay == 0
    assert_slot(s.first_schedule_time(at("2021-06-01 10:07:00 +0000")), "2021-06-01 10:15:00 +0000")
    assert_slot(s.first_schedule_time(at("2021-06-01 10:15:00 +0000")), "2021-06-01 10:15:00 +0000")
    assert_slot(s.next_schedule_time(at("2021-06-01 10:15:00 +0000")), "2021-06-01 10:30:00 +0000")
    assert_slot(s.next_schedule_time(at("2021-06-01 10:45:00 +0000")), "2021-06-01 11:00:00 +0000")
    assert_slot(s.last_schedule_time(at("2021-06-01 10:15:00 +0000")), "2021-06-01 10:00:00 +0000")


def test_minutes_interval_with_delay() -> None:
    s = sched({"minutes_interval>": "15", "delay": 60})
    assert_slot(
        s.first_schedule_time(at("2021-06-01 10:15:30 +0000")),
        "2021-06-01 10:15:00 +0000",
        "2021-06-01 10:16:00 +0000",
    )
    assert_slot(
        s.first_schedule_time(at("2021-06-01 10:16:01 +0000")),
        "2021-06-01 10:30:00 +0000",
        "2021-06-01 10:31:00 +0000",
    )


def test_minutes_interval_restarts_every_hour_like_cron() -> None:
    # `*/7` is minutes 0, 7, ..., 56 of each hour
    s = sched({"minutes_interval>": 7})
    assert_slot(s.next_schedule_time(at("2021-06-01 10:56:00 +0000")), "2021-06-01 11:00:00 +0000")
    # minutes are local: 10:00Z is 15:45 in Kathmandu (+05:45), the next half hour is local 16:00
    nepal = sched({"minutes_interval>": 30}, "Asia/Kathmandu")
    assert_slot(nepal.next_schedule_time(at("2021-06-01 10:00:00 +0000")), "2021-06-01 16:00:00 +0545")


@pytest.mark.parametrize("value", [0, -5, "x", 1.5, True, None])
def test_minutes_interval_errors(value: object) -> None:
    with pytest.raises(KudigError, match=r"^minutes_interval>: "):
        sched({"minutes_interval>": value})


# ------------------------------------------------------------------------------------------------ cron>


@pytest.mark.parametrize(
    ("pattern", "tz", "last", "session"),
    [
        ("00 10 * * *", "UTC", "2021-06-01 10:00:00 +0000", "2021-06-02 10:00:00 +0000"),
        ("00 10 * * *", TOKYO, "2021-06-01 00:00:00 +0900", "2021-06-01 10:00:00 +0900"),
        ("00 10 * * *", LA, "2016-03-12 10:00:00 -0800", "2016-03-13 10:00:00 -0700"),
        ("0 */6 * * 1-5", "UTC", "2021-06-11 18:00:00 +0000", "2021-06-14 00:00:00 +0000"),
        # day-of-month AND day-of-week (cron4j), not OR: the next Friday the 13th
        ("0 0 13 * 5", "UTC", "2021-01-01 00:00:00 +0000", "2021-08-13 00:00:00 +0000"),
        # L is the last day of the month
        ("0 0 L * *", "UTC", "2021-02-01 00:00:00 +0000", "2021-02-28 00:00:00 +0000"),
        ("0 0 L * *", "UTC", "2024-02-01 00:00:00 +0000", "2024-02-29 00:00:00 +0000"),
        ("0 0 28-L 2 *", "UTC", "2021-02-28 00:00:00 +0000", "2022-02-28 00:00:00 +0000"),
        # ranges wrap around: Fri, Sat, Sun, Mon
        ("0 0 * * 5-1", "UTC", "2021-06-07 00:00:00 +0000", "2021-06-11 00:00:00 +0000"),
        ("0 0 * * fri-mon", "UTC", "2021-06-11 00:00:00 +0000", "2021-06-12 00:00:00 +0000"),
        ("0 22-2 * * *", "UTC", "2021-06-11 23:00:00 +0000", "2021-06-12 00:00:00 +0000"),
        # a/n steps over the values of a only: 5/15 is just minute 5
        ("5/15 * * * *", "UTC", "2021-06-11 10:05:00 +0000", "2021-06-11 11:05:00 +0000"),
        ("10-40/15 * * * *", "UTC", "2021-06-11 10:25:00 +0000", "2021-06-11 10:40:00 +0000"),
        ("0 0 1 jan,JUL *", "UTC", "2021-02-01 00:00:00 +0000", "2021-07-01 00:00:00 +0000"),
        ("0 0 * * 7", "UTC", "2021-06-07 00:00:00 +0000", "2021-06-13 00:00:00 +0000"),
        # `|` joins patterns
        ("0 9 * * *|30 17 * * *", "UTC", "2021-06-07 09:00:00 +0000", "2021-06-07 17:30:00 +0000"),
        ("0 9 * * *|30 17 * * *", "UTC", "2021-06-07 17:30:00 +0000", "2021-06-08 09:00:00 +0000"),
        # a wall time in the DST gap runs after the gap, once
        ("30 2 * * *", LA, "2016-03-12 02:30:00 -0800", "2016-03-13 03:30:00 -0700"),
        ("30 2 * * *", LA, "2016-03-13 03:30:00 -0700", "2016-03-14 02:30:00 -0700"),
        # a wall time in the DST overlap runs once, at standard time
        ("30 1 * * *", LA, "2016-11-05 01:30:00 -0700", "2016-11-06 01:30:00 -0800"),
        ("30 1 * * *", LA, "2016-11-06 01:30:00 -0800", "2016-11-07 01:30:00 -0800"),
    ],
)
def test_cron_next(pattern: str, tz: str, last: str, session: str) -> None:
    assert_slot(sched({"cron>": pattern}, tz).next_schedule_time(at(last)), session)


def test_cron_first_and_last() -> None:
    s = sched({"cron>": "0 10 * * *"}, TOKYO)
    assert_slot(s.first_schedule_time(at("2021-06-01 09:59:59 +0900")), "2021-06-01 10:00:00 +0900")
    assert_slot(s.first_schedule_time(at("2021-06-01 10:00:00 +0900")), "2021-06-01 10:00:00 +0900")
    assert_slot(s.first_schedule_time(at("2021-06-01 10:00:01 +0900")), "2021-06-02 10:00:00 +0900")
    assert_slot(s.last_schedule_time(at("2021-06-01 10:00:00 +0900")), "2021-05-31 10:00:00 +0900")
    la = sched({"cron>": "0 10 * * *"}, LA)
    assert_slot(la.first_schedule_time(at("2016-03-13 01:59:59 -0800")), "2016-03-13 10:00:00 -0700")
    assert_slot(la.last_schedule_time(at("2016-03-13 10:00:00 -0700")), "2016-03-12 10:00:00 -0800")


def test_cron_last_with_irregular_pattern_is_a_real_slot() -> None:
    s = sched({"cron>": "0 0 1,2 * *"})
    assert_slot(s.last_schedule_time(at("2021-06-15 00:00:00 +0000")), "2021-06-02 00:00:00 +0000")
    assert_slot(s.last_schedule_time(at("2021-06-02 00:00:00 +0000")), "2021-06-01 00:00:00 +0000")
    yearly = sched({"cron>": "0 0 29 2 *"})
    assert_slot(yearly.last_schedule_time(at("2023-06-01 00:00:00 +0000")), "2020-02-29 00:00:00 +0000")
    assert_slot(yearly.next_schedule_time(at("2020-02-29 00:00:00 +0000")), "2024-02-29 00:00:00 +0000")


def test_cron_delay() -> None:
    s = sched({"cron>": "0 10 * * *", "delay": 3600})
    assert_slot(
        s.first_schedule_time(at("2021-06-01 10:30:00 +0000")),
        "2021-06-01 10:00:00 +0000",
        "2021-06-01 11:00:00 +0000",
    )
    assert_slot(
        s.first_schedule_time(at("2021-06-01 11:00:01 +0000")),
        "2021-06-02 10:00:00 +0000",
        "2021-06-02 11:00:00 +0000",
    )
    negative = sched({"cron>": "0 10 * * *", "delay": -600})
    assert_slot(
        negative.first_schedule_time(at("2021-06-01 09:50:00 +0000")),
        "2021-06-01 10:00:00 +0000",
        "2021-06-01 09:50:00 +0000",
    )


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("0 0 * *", 'cron>: invalid pattern: "0 0 * *"'),
        ("0 0 * * * *", 'cron>: invalid pattern: "0 0 * * * *"'),
        (
            "61 * * * *",
            'cron>: invalid pattern "61 * * * *". Error parsing minutes field: invalid value "61", value out of range.',
        ),
        (
            "0 24 * * *",
            'cron>: invalid pattern "0 24 * * *". Error parsing hours field: invalid value "24", value out of range.',
        ),
        ("0 0 0 * *", 'cron>: invalid pattern "0 0 0 * *". Error parsing days of month field'),
        ("0 0 * foo *", 'cron>: invalid pattern "0 0 * foo *". Error parsing months field'),
        (
            "0 0 * * 8",
            'cron>: invalid pattern "0 0 * * 8". Error parsing days of week field: invalid value "8", invalid alias "8".',
        ),
        (
            "0 0 1 13 *",
            'cron>: invalid pattern "0 0 1 13 *". Error parsing months field: invalid value "13", invalid alias "13".',
        ),
        (
            "x 0 * * *",
            'cron>: invalid pattern "x 0 * * *". Error parsing minutes field: invalid value "x", invalid integer value.',
        ),
        (
            "0 0 1-2-3 * *",
            'cron>: invalid pattern "0 0 1-2-3 * *". Error parsing days of month field: syntax error.',
        ),
        (
            "*/0 * * * *",
            'cron>: invalid pattern "*/0 * * * *". Error parsing minutes field: non positive divisor "0".',
        ),
        ("0 0 30 2 *", 'cron>: pattern "0 0 30 2 *" never matches any date'),
        ("", 'cron>: invalid pattern: ""'),
    ],
)
def test_cron_errors(pattern: str, message: str) -> None:
    with pytest.raises(KudigError) as err:
        sched({"cron>": pattern})
    assert err.value.message.startswith(message)


def test_cron_requires_a_string() -> None:
    with pytest.raises(KudigError, match="cron>: requires a cron pattern string"):
        sched({"cron>": 5})


# ------------------------------------------------------------------------------------------------ seconds_interval>


def epoch(seconds: float) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=seconds)


def test_seconds_interval() -> None:
    s = sched({"seconds_interval>": 10, "delay": 4})

    def pair(t: ScheduleTime) -> tuple[float, float]:
        return t.session_time.timestamp(), t.run_time.timestamp()

    # digdag: the first *session* time at or after now (the delay does not move it)
    assert pair(s.first_schedule_time(epoch(20))) == (20, 24)
    assert pair(s.first_schedule_time(epoch(20.5))) == (30, 34)
    assert pair(s.first_schedule_time(epoch(21))) == (30, 34)
    assert pair(s.next_schedule_time(epoch(20))) == (30, 34)
    assert pair(s.next_schedule_time(epoch(29.999))) == (30, 34)
    assert pair(s.last_schedule_time(epoch(20))) == (10, 14)
    assert pair(s.last_schedule_time(epoch(20.001))) == (20, 24)


def test_seconds_interval_is_epoch_aligned_in_any_zone() -> None:
    s = sched({"seconds_interval>": 7200}, "Asia/Kolkata")
    got = s.next_schedule_time(at("2021-06-01 15:00:00 +0530"))
    assert got.session_time == at("2021-06-01 10:00:00 +0000")
    assert got.session_time.utcoffset() == timedelta(hours=5, minutes=30)


@pytest.mark.parametrize("value", [0, -1, "two"])
def test_seconds_interval_errors(value: object) -> None:
    with pytest.raises(KudigError, match=r"^seconds_interval>: "):
        sched({"seconds_interval>": value})


# ------------------------------------------------------------------------------------------------ config forms and keys


def test_type_command_form_is_equivalent() -> None:
    now = at("2021-06-01 12:00:00 +0000")
    for op, command in [("daily", "07:00:00"), ("cron", "*/5 * * * *"), ("weekly", "Tue,01:02:03")]:
        a = sched({f"{op}>": command})
        b = sched({"_type": op, "_command": command})
        assert a.type == b.type == op
        assert a.command == b.command == command
        assert a.first_schedule_time(now) == b.first_schedule_time(now)


def test_options_are_parsed() -> None:
    s = sched({"daily>": "07:00:00", "skip_on_overtime": True, "skip_delayed_by": "1d 2h 3m 4s"})
    assert s.skip_on_overtime is True
    assert s.skip_delayed_by == timedelta(days=1, hours=2, minutes=3, seconds=4)
    plain = sched({"daily>": "07:00:00"})
    assert plain.skip_on_overtime is False
    assert plain.skip_delayed_by is None
    assert sched({"daily>": "07:00:00", "skip_on_overtime": "true"}).skip_on_overtime is True


def test_should_skip_delayed() -> None:
    s = sched({"daily>": "07:00:00", "skip_delayed_by": "30m"})
    run = at("2021-06-01 07:00:00 +0000")
    assert not s.should_skip_delayed(run + timedelta(minutes=30), run)
    assert s.should_skip_delayed(run + timedelta(minutes=30, seconds=1), run)
    assert not sched({"daily>": "07:00:00"}).should_skip_delayed(run + timedelta(days=9), run)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1d 2h 3m 4s", timedelta(days=1, hours=2, minutes=3, seconds=4)),
        ("1d2h3m4s", timedelta(days=1, hours=2, minutes=3, seconds=4)),
        ("30m", timedelta(minutes=30)),
        ("1H", timedelta(hours=1)),
        (" 2 d  5 s ", timedelta(days=2, seconds=5)),
        ("0s", timedelta(0)),
    ],
)
def test_parse_duration(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "5", "1x", "1s 1m", "-1s", "1.5h"])
def test_parse_duration_errors(text: str) -> None:
    with pytest.raises(ValueError, match="Invalid duration"):
        parse_duration(text)


def test_bad_options() -> None:
    with pytest.raises(KudigError, match="Expected 'true' or 'false' for key 'skip_on_overtime'"):
        sched({"daily>": "07:00:00", "skip_on_overtime": "yes"})
    with pytest.raises(KudigError, match="Invalid skip_delayed_by: 10"):
        sched({"daily>": "07:00:00", "skip_delayed_by": 10})
    with pytest.raises(KudigError, match="for key 'delay'"):
        sched({"cron>": "0 0 * * *", "delay": "soon"})


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (
            {"daily>": "07:00:00", "skip_on_over_time": True},
            "Parameter 'skip_on_over_time' is not used at schedule. > Did you mean '[skip_on_overtime]'?",
        ),
        ({"daily>": "07:00:00", "wrong>": 1}, "Parameter 'wrong>' is not used at schedule."),
        (
            {"cron>": "0 0 * * *", "dalay": 5},
            "Parameter 'dalay' is not used at schedule. > Did you mean '[delay]'?",
        ),
        # delay only exists for cron, minutes_interval and seconds_interval
        ({"daily>": "07:00:00", "delay": 5}, "Parameter 'delay' is not used at schedule."),
        ({"no_such_scheduler>": 1}, "Unknown scheduler type: no_such_scheduler"),
        ({"_type": "yearly", "_command": "x"}, "Unknown scheduler type: yearly"),
        (
            {"skip_on_overtime": True},
            "Schedule config requires 'type>: at' parameter: {\"skip_on_overtime\": true}",
        ),
    ],
)
def test_config_errors(config: dict[str, Any], message: str) -> None:
    with pytest.raises(KudigError) as err:
        sched(config)
    assert err.value.message == message


def test_several_unknown_keys_are_all_reported() -> None:
    with pytest.raises(KudigError) as err:
        sched({"hourly>": "00:00", "foo": 1, "bar": 2})
    assert err.value.message.splitlines() == [
        "Parameter 'foo' is not used at schedule.",
        "Parameter 'bar' is not used at schedule.",
    ]


def test_errors_carry_file_and_line() -> None:
    with pytest.raises(KudigError) as err:
        parse_schedule({"x>": 1}, UTC, file="wf.dig", line=3)
    assert str(err.value) == "wf.dig:3: Unknown scheduler type: x"


def test_schedule_must_be_a_map() -> None:
    with pytest.raises(KudigError, match="schedule: must be a map"):
        parse_schedule("daily>: 07:00:00", UTC)  # type: ignore[arg-type]


def test_naive_datetimes_are_rejected() -> None:
    with pytest.raises(ValueError, match="time zone aware"):
        sched({"daily>": "07:00:00"}).first_schedule_time(datetime(2021, 1, 1))


def test_results_are_in_the_workflow_zone() -> None:
    tokyo = parse_timezone(TOKYO)
    got = sched({"daily>": "07:00:00"}, TOKYO).first_schedule_time(at("2021-06-01 00:00:00 +0000"))
    assert got.session_time.tzinfo is tokyo
    assert got.run_time.tzinfo is tokyo


# ------------------------------------------------------------------------------------------------ properties

SCHEDULES: list[dict[str, Any]] = [
    {"daily>": "10:00:00"},
    {"hourly>": "30:15"},
    {"weekly>": "Mon,09:00:00"},
    {"monthly>": "31,23:59:59"},
    {"minutes_interval>": 7, "delay": 30},
    {"cron>": "0 9 * * 1-5"},
    {"cron>": "*/20 2 * * *|0 0 L * *"},
    {"cron>": "0 0 13 * 5", "delay": 86400},
    {"cron>": "30 1,2 * * *"},
    {"seconds_interval>": 90, "delay": 5},
    {"seconds_interval>": 1},
]
ZONES = ["UTC", TOKYO, LA, "Asia/Kolkata", "Australia/Lord_Howe", "Europe/London", "+05:45"]
FIXED_ZONES = ["UTC", TOKYO, "Asia/Kolkata", "+05:45"]

_instants = st.datetimes(
    min_value=datetime(1990, 1, 1), max_value=datetime(2090, 1, 1), timezones=st.just(UTC)
)
instants = st.one_of(
    _instants,
    _instants.map(lambda t: t.replace(microsecond=0)),
    _instants.map(lambda t: t.replace(second=0, microsecond=0)),
)


def utc(t: datetime) -> datetime:
    """Python compares and subtracts datetimes of the *same* zone by wall time; go through UTC."""
    return t.astimezone(UTC)


def delay_of(got: ScheduleTime) -> timedelta:
    return utc(got.run_time) - utc(got.session_time)


def _schedule(index: int, zone: str) -> Schedule:
    return sched(SCHEDULES[index], zone)


schedule_indexes = st.integers(0, len(SCHEDULES) - 1)


@settings(max_examples=300, deadline=None)
@given(index=schedule_indexes, zone=st.sampled_from(ZONES), t=instants)
def test_property_last_before_next_after(index: int, zone: str, t: datetime) -> None:
    s = _schedule(index, zone)
    last = s.last_schedule_time(t)
    following = s.next_schedule_time(t)
    assert last.session_time < t < following.session_time
    # the slot after the last one is not before t: no slot is skipped between them
    assert s.next_schedule_time(last.session_time).session_time >= t
    for got in (last, following):
        assert delay_of(got) == timedelta(seconds=s.delay)
        assert got.session_time.utcoffset() == got.session_time.tzinfo.utcoffset(got.session_time)  # type: ignore[union-attr]
        assert got.session_time.tzinfo is s.timezone


@settings(max_examples=200, deadline=None)
@given(index=schedule_indexes, zone=st.sampled_from(FIXED_ZONES), t=instants)
def test_property_first_is_the_first_run_at_or_after_now(index: int, zone: str, t: datetime) -> None:
    s = _schedule(index, zone)
    first = s.first_schedule_time(t)
    previous = s.last_schedule_time(first.session_time)
    if "seconds_interval>" in SCHEDULES[index]:
        # digdag's seconds_interval compares session times with now
        assert previous.session_time < t <= first.session_time
    else:
        assert previous.run_time < t <= first.run_time
    # without DST, next and last are inverse on slots
    assert s.last_schedule_time(s.next_schedule_time(first.session_time).session_time) == first
    assert s.next_schedule_time(previous.session_time) == first


@settings(max_examples=100, deadline=None)
@given(index=schedule_indexes, zone=st.sampled_from(ZONES), t=instants)
def test_property_next_is_strictly_monotonic(index: int, zone: str, t: datetime) -> None:
    s = _schedule(index, zone)
    current = s.first_schedule_time(t)
    for _ in range(30):
        following = s.next_schedule_time(current.session_time)
        assert utc(following.session_time) > utc(current.session_time)
        assert delay_of(following) == timedelta(seconds=s.delay)
        current = following


@settings(max_examples=150, deadline=None)
@given(
    index=schedule_indexes,
    zone=st.sampled_from(ZONES),
    t=instants,
    start_day=st.integers(0, 40),
    days=st.integers(0, 40),
)
def test_property_start_end_bound_run_times(
    index: int, zone: str, t: datetime, start_day: int, days: int
) -> None:
    start = (t + timedelta(days=start_day - 20)).date()
    end = start + timedelta(days=days)
    s = sched({**SCHEDULES[index], "start": start.isoformat(), "end": end.isoformat()}, zone)
    assert s.start is not None
    assert s.end is not None
    current = s.first_schedule_time(t)
    for _ in range(5):
        if current.finished:
            assert current.session_time == current.run_time == SCHEDULE_END
            break
        assert utc(s.start) <= utc(current.run_time) < utc(s.end)
        assert utc(current.run_time) >= t or utc(current.session_time) >= utc(s.start)
        current = s.next_schedule_time(current.session_time)


# cron4j and vixie cron (croniter) agree when the day-of-month or the day-of-week field is `*`, there are no
# wrapping ranges and steps are only used on `*`: compare with croniter in UTC.
_minute = st.one_of(
    st.just("*"),
    st.integers(0, 59).map(str),
    st.integers(1, 30).map(lambda n: f"*/{n}"),
    st.lists(st.integers(0, 59), min_size=1, max_size=3, unique=True).map(lambda v: ",".join(map(str, v))),
)
_hour = st.one_of(
    st.just("*"),
    st.integers(0, 23).map(str),
    st.tuples(st.integers(0, 22), st.integers(1, 23))
    .filter(lambda r: r[0] < r[1])
    .map(lambda r: f"{r[0]}-{r[1]}"),
    st.integers(1, 12).map(lambda n: f"*/{n}"),
)
_dom = st.one_of(st.just("*"), st.integers(1, 28).map(str), st.just("1,15"))
_month = st.one_of(st.just("*"), st.integers(1, 12).map(str), st.just("3-9"))
_dow = st.one_of(st.just("*"), st.integers(0, 6).map(str), st.just("1-5"))


@settings(max_examples=300, deadline=None)
@given(minute=_minute, hour=_hour, dom=_dom, month=_month, dow=_dow, t=instants)
def test_property_cron_agrees_with_croniter(
    minute: str, hour: str, dom: str, month: str, dow: str, t: datetime
) -> None:
    assume(dom == "*" or dow == "*")
    pattern = f"{minute} {hour} {dom} {month} {dow}"
    ours = sched({"cron>": pattern}).next_schedule_time(t).session_time
    theirs = croniter(pattern, t).get_next(datetime)
    assert ours == theirs
