"""The scheduler's ticks with an injected clock: catch-up after downtime, skip_delayed_by,
skip_on_overtime, start/end, DST, month ends, leap days, enable without a flood, reschedule."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from kudig.schedule import Schedule, parse_schedule
from kudig.scheduler import ScheduleState, plan_schedule

UTC = ZoneInfo("UTC")
LA = ZoneInfo("America/Los_Angeles")


def sched(config: dict[str, object], tz: ZoneInfo = UTC) -> Schedule:
    return parse_schedule(config, tz, file="wf.dig", line=1)


def t(text: str, tz: ZoneInfo = UTC) -> datetime:
    return (
        datetime.fromisoformat(text).replace(tzinfo=tz)
        if "+" not in text[10:]
        else datetime.fromisoformat(text)
    )


def run(schedule: Schedule, times: list[datetime], **kw: object) -> tuple[list[str], ScheduleState]:
    """Tick at each time; the session times fired, in order."""
    state = ScheduleState()
    fired: list[str] = []
    for now in times:
        d = plan_schedule(schedule, state, now, schedule_key="k", **kw)  # type: ignore[arg-type]
        fired += [f.session_time.isoformat() for f in d.fire]
        state = d.state
    return fired, state


def test_a_new_schedule_starts_now_and_fires_each_slot_once() -> None:
    s = sched({"daily>": "07:00:00"})
    fired, state = run(
        s,
        [
            t("2024-01-30 06:00:00"),
            t("2024-01-30 07:00:00"),
            t("2024-01-30 07:00:05"),
            t("2024-01-31 07:00:00"),
        ],
    )
    assert fired == ["2024-01-30T00:00:00+00:00", "2024-01-31T00:00:00+00:00"]
    assert state.next_run_time == t("2024-02-01 07:00:00")
    assert state.last_session_time == t("2024-01-31 00:00:00")


def test_no_catch_up_of_slots_from_before_the_schedule_existed() -> None:
    s = sched({"hourly>": "10:00"})
    fired, _ = run(s, [t("2024-01-30 12:30:00")])
    assert fired == []


def test_downtime_fires_every_missed_slot_with_chained_last_executed() -> None:
    s = sched({"daily>": "01:00:00"})
    state = plan_schedule(
        s, ScheduleState(), t("2024-01-01 00:00:00"), schedule_key="k"
    ).state  # first: 01-01
    d = plan_schedule(s, state, t("2024-01-04 12:00:00"), schedule_key="k")
    assert [f.session_time.day for f in d.fire] == [1, 2, 3, 4]
    assert [f.last_executed.day if f.last_executed else None for f in d.fire] == [None, 1, 2, 3]
    assert d.wakeup == t("2024-01-05 01:00:00")


def test_skip_delayed_by_limits_the_catch_up() -> None:
    s = sched({"hourly>": "00:00", "skip_delayed_by": "90m"})
    state = plan_schedule(s, ScheduleState(), t("2023-12-31 23:59:59"), schedule_key="k").state
    d = plan_schedule(s, state, t("2024-01-01 05:30:00"), schedule_key="k")
    assert [f.session_time.hour for f in d.fire] == [4, 5]
    assert [k.session_time.hour for k in d.skipped] == [0, 1, 2, 3]
    assert {k.reason for k in d.skipped} == {"delayed"}


def test_skip_on_overtime_skips_while_an_attempt_runs() -> None:
    s = sched({"minutes_interval>": 10, "skip_on_overtime": True})
    state = plan_schedule(s, ScheduleState(), t("2024-01-01 00:00:01"), schedule_key="k").state
    d = plan_schedule(s, state, t("2024-01-01 00:10:00"), schedule_key="k", active_attempt=True)
    assert d.fire == [] and [k.reason for k in d.skipped] == ["overtime"]
    d = plan_schedule(s, d.state, t("2024-01-01 00:30:00"), schedule_key="k")
    assert [f.session_time.minute for f in d.fire] == [20]
    assert [k.session_time.minute for k in d.skipped] == [30], "one session at a time even in a catch-up"


def test_start_and_end_bound_the_slots() -> None:
    s = sched({"daily>": "00:00:00", "start": "2024-02-03", "end": "2024-02-05"})
    fired, state = run(s, [t("2024-02-01 00:00:00"), t("2024-02-10 00:00:00")])
    assert fired == [f"2024-02-0{d}T00:00:00+00:00" for d in (3, 4, 5)]
    d = plan_schedule(s, state, t("2024-03-01 00:00:00"), schedule_key="k")
    assert d.fire == [] and d.wakeup is None


def test_dst_days_in_the_workflow_time_zone() -> None:
    s = sched({"daily>": "10:00:00"}, LA)
    state = plan_schedule(s, ScheduleState(), datetime(2016, 3, 11, tzinfo=LA), schedule_key="k").state
    d = plan_schedule(s, state, datetime(2016, 3, 15, tzinfo=LA), schedule_key="k")
    assert [(f.session_time.isoformat(), f.run_time.isoformat()) for f in d.fire] == [
        ("2016-03-11T00:00:00-08:00", "2016-03-11T10:00:00-08:00"),
        ("2016-03-12T00:00:00-08:00", "2016-03-12T10:00:00-08:00"),
        # digdag: the delay is absolute seconds after midnight, so the DST day runs at 11:00 PDT
        ("2016-03-13T00:00:00-08:00", "2016-03-13T11:00:00-07:00"),
        ("2016-03-14T00:00:00-07:00", "2016-03-14T10:00:00-07:00"),
    ]


def test_month_ends_and_leap_days() -> None:
    s = sched({"monthly>": "31,00:00:00"})
    fired, _ = run(s, [t("2024-01-01 00:00:00"), t("2024-12-31 12:00:00")])
    assert [f[:10] for f in fired] == [
        "2024-01-31",
        "2024-03-31",
        "2024-05-31",
        "2024-07-31",
        "2024-08-31",
        "2024-10-31",
        "2024-12-31",
    ]
    leap = sched({"cron>": "0 0 29 2 *"})
    fired, _ = run(leap, [t("2023-01-01 00:00:00"), t("2029-01-01 00:00:00")])
    assert [f[:10] for f in fired] == ["2024-02-29", "2028-02-29"]


def test_suspended_fires_nothing_and_enable_does_not_flood() -> None:
    s = sched({"hourly>": "00:00"})
    state = plan_schedule(s, ScheduleState(), t("2023-12-31 23:59:59"), schedule_key="k").state
    d = plan_schedule(s, state, t("2024-01-01 05:30:00"), schedule_key="k", suspended=True)
    assert d.fire == [] and d.wakeup is None
    assert d.state.next_session_time == t("2024-01-01 00:00:00")
    # enable: restart from now (the CLI passes the time it was enabled)
    now = t("2024-01-01 05:30:00")
    d = plan_schedule(s, d.state, now, schedule_key="k", from_time=now, from_key="enable-1")
    assert d.fire == [] and d.state.next_session_time == t("2024-01-01 06:00:00")
    # the same request seen again changes nothing
    d2 = plan_schedule(
        s, d.state, t("2024-01-01 06:00:00"), schedule_key="k", from_time=now, from_key="enable-1"
    )
    assert [f.session_time.hour for f in d2.fire] == [6]
    # enable --catch-up: no from_time, the pointer stayed: every missed slot fires
    d3 = plan_schedule(s, state, t("2024-01-01 05:30:00"), schedule_key="k")
    assert [f.session_time.hour for f in d3.fire] == [0, 1, 2, 3, 4, 5]


def test_reschedule_skip_to_and_a_changed_schedule_restart_the_pointer() -> None:
    s = sched({"daily>": "00:00:00"})
    state = plan_schedule(s, ScheduleState(), t("2024-01-01 00:00:00"), schedule_key="k").state
    d = plan_schedule(
        s, state, t("2024-01-02 00:00:00"), schedule_key="k", from_time=t("2024-01-10 00:00:00"), from_key="x"
    )
    assert d.fire == [] and d.state.next_session_time == t("2024-01-10 00:00:00")
    changed = sched({"daily>": "12:00:00"})
    d = plan_schedule(changed, d.state, t("2024-01-02 06:00:00"), schedule_key="k2", from_key="x")
    assert d.state.next_run_time == t("2024-01-02 12:00:00")


@settings(max_examples=60, deadline=None)
@given(
    minutes=st.sampled_from([1, 5, 15, 60]),
    ticks=st.lists(st.integers(min_value=1, max_value=400), min_size=1, max_size=30),
)
def test_every_slot_fires_exactly_once_however_the_clock_ticks(minutes: int, ticks: list[int]) -> None:
    """Ticks at arbitrary moments (missed ones included) fire each slot once, in order, none early."""
    s = sched({"minutes_interval>": minutes})
    start = t("2024-03-30 22:00:00")
    now = start
    state = ScheduleState()
    fired: list[datetime] = []
    for step in ticks:
        now += timedelta(minutes=step)
        d = plan_schedule(s, state, now, schedule_key="k")
        assert all(f.run_time <= now for f in d.fire)
        fired += [f.session_time for f in d.fire]
        state = d.state
        while d.wakeup is not None and d.wakeup <= now:  # more were due than one tick fires
            d = plan_schedule(s, state, now, schedule_key="k")
            fired += [f.session_time for f in d.fire]
            state = d.state
    first = s.first_schedule_time(
        start + timedelta(minutes=ticks[0])
    ).session_time  # created at the first tick
    expected = []
    slot = first
    while slot <= now:
        expected.append(slot)
        slot = s.next_schedule_time(slot).session_time
    assert fired == expected
