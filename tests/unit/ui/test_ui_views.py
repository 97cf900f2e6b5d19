"""kudig.ui.views: scrubbing, the sessions list's paging, the Gantt step gap, the calendar."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kudig import sessionread
from kudig.schedule import parse_schedule
from kudig.ui import views
from tests import ui_fixtures as fx


def test_scrub_hides_secret_looking_values_but_keeps_references() -> None:
    params = {
        "db": {"password": "hunter2", "host": "db", "api_key": 42},
        "_env": {"TOKEN": "abc", "PW": "${secret:db.password}", "HOME": "/x"},
        "list": [{"secret": "s"}],
        "client_secret": "${secret:oauth.secret}",
    }
    assert views.scrub(params) == {
        "db": {"password": "***", "host": "db", "api_key": "***"},
        "_env": {"TOKEN": "***", "PW": "${secret:db.password}", "HOME": "/x"},
        "list": [{"secret": "***"}],
        "client_secret": "${secret:oauth.secret}",
    }


def summaries(times: list[str], ns: str = "a") -> list[sessionread.SessionSummary]:
    return [sessionread.summary(fx.session(ns, f"s-{i}", "wf", t, [])) for i, t in enumerate(times)]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(0, 30), min_size=1, max_size=40),
    st.lists(st.integers(0, 30), max_size=10),
    st.integers(1, 7),
)
def test_paging_is_stable_while_sessions_are_added(days: list[int], added: list[int], limit: int) -> None:
    """Walking the pages sees every Session that existed when the walk began, once, in order,
    whatever Sessions are added meanwhile (they have other names)."""
    times = [f"2024-01-{d + 1:02d}T00:00:00+00:00" for d in days]
    before = summaries(times)
    later = before + [
        sessionread.summary(fx.session("a", f"new-{i}", "wf", f"2024-01-{d + 1:02d}T00:00:00+09:00", []))
        for i, d in enumerate(added)
    ]
    seen: list[str] = []
    cursor = None
    for step in range(100):
        query = {"limit": str(limit), **({"cursor": cursor} if cursor else {})}
        items, cursor = views.page(later if step else before, views.parse_filters(query))
        seen.extend(s.name for s in items)
        if cursor is None:
            break
    old = [s for s in seen if s.startswith("s-")]
    assert sorted(old) == sorted(s.name for s in before) and len(old) == len(set(old))
    keys = [views._sort_key(s) for s in later if s.name in seen]
    assert sorted(keys) == [views._sort_key(next(s for s in later if s.name == n)) for n in seen]


def test_filters_are_checked() -> None:
    with pytest.raises(views.BadRequest, match="from: expected an ISO time"):
        views.parse_filters({"from": "yesterday"})
    with pytest.raises(views.BadRequest, match="limit: expected 1 to 500"):
        views.parse_filters({"limit": "0"})
    f = views.parse_filters({"phase": "Failed,Killed", "workflow": "etl"})
    items, _ = views.page(
        [
            sessionread.summary(fx.session("a", "x", "etl", "2024-01-01T00:00:00Z", [], phase="Failed")),
            sessionread.summary(fx.session("a", "y", "etl", "2024-01-02T00:00:00Z", [], phase="Succeeded")),
            sessionread.summary(fx.session("a", "z", "other", "2024-01-03T00:00:00Z", [], phase="Killed")),
        ],
        f,
    )
    assert [s.name for s in items] == ["x"]


def test_gantt_gap_runs_to_the_next_step_through_groups() -> None:
    # +wf: +a -> +g (+g+x, +g+y in sequence) -> +b
    rows = [
        fx.task(0, "+wf", None, group=True, started_at=0.0),
        fx.task(1, "+wf+a", 0, started_at=0.0, running_at=1.0, finished_at=5.0),
        fx.task(2, "+wf+g", 0, [1], group=True, started_at=6.0, finished_at=30.0),
        fx.task(3, "+wf+g+x", 2, started_at=6.5, running_at=8.0, finished_at=10.0),
        fx.task(4, "+wf+g+y", 2, [3], started_at=11.0, running_at=13.5, finished_at=20.0),
        fx.task(5, "+wf+b", 0, [2], started_at=21.0, finished_at=25.0),  # no running_at: its start
    ]
    out = views.gantt(sessionread.task_rows(fx.session("a", "s", "wf", "2024-01-01T00:00:00Z", rows)), 1)
    gap = {r["name"]: r["gapAfter"] for r in out["rows"]}
    assert gap["+wf+a"] == 3.0  # to +g+x's container start (the group's first child)
    assert gap["+wf+g+x"] == 3.5
    assert gap["+wf+g+y"] == 1.0  # the last of +g: to +b
    assert gap["+wf+b"] is None and gap["+wf"] is None
    assert (out["start"], out["end"]) == (0.0, 30.0)


def test_calendar_next_slots_and_skipped_ones() -> None:
    tz = ZoneInfo("Asia/Tokyo")
    schedule = parse_schedule({"daily>": "07:00:00"}, tz)
    sessions = [
        (sessionread.summary(fx.session("a", f"d{d}", "wf", f"2024-01-{d:02d}T00:00:00+09:00", [])), flags)
        for d, flags in [(1, {"scheduled": True}), (2, {"scheduled": True, "backfill": True}), (4, {})]
    ]
    now = datetime(2024, 1, 5, 8, 0, tzinfo=tz)
    cal = views.calendar(schedule, tz, sessions, now.astimezone(UTC), count=3)
    assert cal["next"] == [f"2024-01-{d:02d}T00:00:00+09:00" for d in (6, 7, 8)]
    assert [(p["sessionTime"][:10], p["skipped"], p["backfill"]) for p in cal["past"]] == [
        ("2024-01-05", True, False),  # its run time 07:00 has passed: no Session
        ("2024-01-04", False, False),
        ("2024-01-03", True, False),
        ("2024-01-02", False, True),
        ("2024-01-01", False, False),
    ]
    assert views.calendar(None, tz, [], now)["next"] == []
