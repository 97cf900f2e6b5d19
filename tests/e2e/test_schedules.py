"""Sessions that start themselves: a `minutes_interval>: 1` Workflow on the cluster creates one
Session per minute — none missed and none twice through a whole suite's controller restarts and
hand-overs — and `kudig disable` / `enable` stop and resume one without a flood of the missed
minutes; `backfill`, `reschedule` and triggers."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from .conftest import Kube, wait_for
from .operator_fixtures import (
    GROUP,
    VERSION,
    Operator,
    ScheduleClock,
    kudig_cli,
    push,
    tasks_by_name,
    wait_session,
)

pytestmark = pytest.mark.e2e


def scheduled(kube: Kube, namespace: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = kube.custom.list_namespaced_custom_object(
        GROUP, VERSION, namespace, "sessions"
    )["items"]
    return sorted(
        (s for s in items if (s.get("spec") or {}).get("scheduled")), key=lambda s: s["spec"]["sessionTime"]
    )


def kudig(*args: str) -> str:
    return kudig_cli(*args, timeout=60).stdout


def test_one_session_per_minute_through_the_whole_suite(
    kube: Kube, operator: Operator, schedule_clock: ScheduleClock | None
) -> None:
    """`tick` has run once a minute since the suite started (operator_fixtures.schedule_clock),
    through every controller kill, restart and hand-over the other tests made: one Session per
    minute, none missed, none twice, each chained to the one before. Then, with the controller
    down across a minute boundary, that minute comes once when it is back, and a workflow enabled
    after the whole suite suspended starts from now, not with a flood of the missed minutes."""
    assert schedule_clock is not None, "the schedule_clock fixture starts with the suite"
    namespace = schedule_clock.namespace

    def of(workflow: str) -> list[dict[str, Any]]:
        return [s for s in scheduled(kube, namespace) if s["spec"]["workflow"] == workflow]

    def at(s: dict[str, Any]) -> datetime:
        return datetime.fromisoformat(s["spec"]["sessionTime"])

    wait_for(lambda: len(of("tick")) >= 2, 150, "two scheduled sessions of tick")
    assert of("tock") == [], "a suspended workflow started a session"

    enabled_at = datetime.now(UTC)
    kudig("enable", "tock", "-n", namespace)
    operator.kill()
    killed_at = datetime.now(UTC)
    boundary = killed_at.replace(second=0, microsecond=0) + timedelta(minutes=1)
    while datetime.now(UTC) < boundary + timedelta(seconds=5):
        time.sleep(0.5)
    operator.start()

    # tick: one session per minute from its first to the boundary, whoever ran the controller
    def contiguous() -> list[dict[str, Any]]:
        ticks = of("tick")
        return ticks if ticks and at(ticks[-1]) >= boundary else []

    ticks = wait_for(contiguous, 90, f"tick's session at {boundary}")
    times = [at(s) for s in ticks]
    first = times[0]
    assert first >= schedule_clock.pushed_at - timedelta(minutes=1), (first, schedule_clock.pushed_at)
    assert times == [first + timedelta(minutes=i) for i in range(len(times))], f"missed or twice: {times}"
    assert len(times) >= 3
    for earlier, later in itertools.pairwise(ticks):
        assert later["spec"].get("lastExecutedSessionTime") == earlier["spec"]["sessionTime"]
    for s in ticks:
        done = wait_session(kube, operator, namespace, s["metadata"]["name"])
        assert done["status"]["phase"] == "Succeeded", done["metadata"]["name"]
        expected = f"{s['spec']['sessionTime']} after '{s['spec'].get('lastExecutedSessionTime') or ''}'\n"
        assert tasks_by_name(done)["+tick+t"]["state_params"]["log"] == expected

    # tock: enabled just before the controller went down: the boundary's session, once, and none
    # of the minutes it spent suspended
    tocks = wait_for(lambda: of("tock"), 90, "a session of tock after enable")
    assert [at(s) for s in tocks] == [boundary], f"enable ran missed minutes ({enabled_at}): {tocks}"

    listed = json.loads(kudig("schedules", "-n", namespace, "-o", "json"))
    assert sorted(r["workflow"] for r in listed) == ["tick", "tock"]
    assert all(r["nextRunTime"] for r in listed)
    kudig("disable", "tock", "-n", namespace)
    assert [r["disabled"] for r in json.loads(kudig("schedules", "-n", namespace, "-o", "json"))] == [
        False,
        True,
    ]

    # reschedule: skip the next two sessions; a time already past is refused
    def status() -> dict[str, Any]:
        obj: dict[str, Any] = kube.custom.get_namespaced_custom_object(
            GROUP, VERSION, namespace, "workflows", "tick"
        )
        return dict(obj["status"])

    before = datetime.fromisoformat(status()["nextSessionTime"])
    out = kudig("reschedule", "tick", "--skip", "2", "-n", namespace)
    # "Rescheduled tick: next session <T>, runs at <T>" — T is two slots past the next session the
    # command saw (a minute boundary may pass between our read and its read: compare with its T)
    target = datetime.fromisoformat(out.split("next session ", 1)[1].split(",", 1)[0])
    assert target >= before + timedelta(minutes=2)

    def moved() -> datetime | None:
        now_next = datetime.fromisoformat(status()["nextSessionTime"])
        return now_next if now_next >= target else None

    assert wait_for(moved, 30, "the schedule to move") == target
    past = subprocess.run(
        [sys.executable, "-m", "kudig.cli", "reschedule", "tick", "--skip-to", "2024-01-01", "-n", namespace],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert past.returncode == 1 and "Specified time to skip schedules is already past" in past.stderr


def test_backfill_runs_chained_sessions_with_last_executed_times(
    kube: Kube, namespace: str, operator: Operator, tmp_path: Path
) -> None:
    root = tmp_path / "daily"
    root.mkdir()
    (root / "daily.dig").write_text(
        "schedule:\n  daily>: 07:00:00\n+t:\n  sh>: sleep 1\n+report:\n  echo>: ${session_date} after '${last_executed_session_date}'\n"
    )
    push(kube, namespace, root)
    wait_for(
        lambda: (
            kube.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "workflows", "daily").get(
                "status"
            )
            or {}
        ).get("nextSessionTime"),
        60,
        "the schedule's next session time",
    )
    out = kudig("backfill", "daily", "--from", "2024-01-01", "--count", "3", "-n", namespace)
    assert "Started 3 session(s)" in out
    names = ["daily-20240101t000000", "daily-20240102t000000", "daily-20240103t000000"]
    finished = [wait_session(kube, operator, namespace, n, timeout=240) for n in names]
    assert [o["status"]["phase"] for o in finished] == ["Succeeded"] * 3
    logs = [tasks_by_name(o)["+daily+report"]["state_params"]["log"] for o in finished]
    assert logs == [
        "2024-01-01 after ''\n",
        "2024-01-02 after '2024-01-01'\n",
        "2024-01-03 after '2024-01-02'\n",
    ]
    for earlier, later in itertools.pairwise(finished):
        assert later["status"]["startedAt"] >= earlier["status"]["finishedAt"], "chained: one after another"
    again = subprocess.run(
        [
            sys.executable,
            "-m",
            "kudig.cli",
            "backfill",
            "daily",
            "--from",
            "2024-01-02",
            "--count",
            "1",
            "-n",
            namespace,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert again.returncode == 1 and "already exist" in again.stderr


def test_a_trigger_starts_after_success_and_never_after_failure(
    kube: Kube, namespace: str, operator: Operator, tmp_path: Path
) -> None:
    root = tmp_path / "chain"
    root.mkdir()
    (root / "upstream.dig").write_text('+work:\n  sh>: test "$outcome" = good\n')
    (root / "downstream.dig").write_text(
        "trigger:\n  attempt>:\n  dependent_workflow_name: upstream\n+report:\n  echo>: downstream of ${session_date}\n"
    )
    push(kube, namespace, root)
    failed = kudig("start", "upstream", "--session", "2024-01-01", "-p", "outcome=bad", "-n", namespace)
    assert "Started a session" in failed
    assert wait_session(kube, operator, namespace, "upstream-20240101t000000")["status"]["phase"] == "Failed"
    kudig("start", "upstream", "--session", "2024-01-02", "-p", "outcome=good", "-n", namespace)
    assert (
        wait_session(kube, operator, namespace, "upstream-20240102t000000")["status"]["phase"] == "Succeeded"
    )
    down = wait_session(kube, operator, namespace, "downstream-20240102t000000")
    assert down["status"]["phase"] == "Succeeded"
    assert tasks_by_name(down)["+downstream+report"]["state_params"]["log"] == "downstream of 2024-01-02\n"
    names = [
        s["metadata"]["name"]
        for s in kube.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, "sessions")["items"]
    ]
    assert "downstream-20240101t000000" not in names, "no downstream session after a failure"
