"""Sessions that start themselves: a `minutes_interval>: 1` Workflow on the cluster creates one
Session per minute — none missed and none twice across a controller restart — and `kudig
disable` / `enable` stop and resume it without a flood of the missed minutes."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from .conftest import Kube, wait_for
from .operator_fixtures import GROUP, VERSION, Operator, kudig_cli, push, tasks_by_name, wait_session

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


def test_one_session_per_minute_across_a_restart_and_disable_enable(
    kube: Kube, namespace: str, operator: Operator, tmp_path: Path
) -> None:
    root = tmp_path / "tick"
    root.mkdir()
    (root / "tick.dig").write_text(
        "schedule:\n  minutes_interval>: 1\n+t:\n  echo>: ${session_time} after '${last_executed_session_time}'\n"
    )
    push(kube, namespace, root)
    first = wait_for(lambda: scheduled(kube, namespace), 90, "the first scheduled session")[0]
    start = datetime.fromisoformat(first["spec"]["sessionTime"])
    # the controller is down across a slot: that minute's session comes when it is back, once
    wait_for(lambda: len(scheduled(kube, namespace)) >= 2, 90, "the second scheduled session")
    operator.kill()
    boundary = start + timedelta(minutes=2)
    while datetime.now(boundary.tzinfo) < boundary + timedelta(seconds=5):
        time.sleep(0.5)
    operator.start()
    sessions = wait_for(
        lambda: (s := scheduled(kube, namespace)) and len(s) >= 3 and s, 90, "the third session"
    )
    times = [datetime.fromisoformat(s["spec"]["sessionTime"]) for s in sessions]
    assert times[:3] == [start + timedelta(minutes=i) for i in range(3)], times
    for s in sessions[:3]:
        assert (
            wait_session(kube, operator, namespace, s["metadata"]["name"])["status"]["phase"] == "Succeeded"
        )
    third = sessions[2]
    assert third["spec"]["lastExecutedSessionTime"] == sessions[1]["spec"]["sessionTime"]

    listed = json.loads(kudig("schedules", "-n", namespace, "-o", "json"))
    assert [r["workflow"] for r in listed] == ["tick"] and listed[0]["nextRunTime"]
    kudig("disable", "tick", "-n", namespace)
    disabled_at = datetime.now(start.tzinfo)
    count = len(scheduled(kube, namespace))
    # a whole slot passes while disabled: nothing starts
    time.sleep(max(0.0, 65 - (datetime.now(start.tzinfo) - disabled_at).total_seconds()))
    assert len(scheduled(kube, namespace)) == count
    enabled_at = datetime.now(start.tzinfo)
    kudig("enable", "tick", "-n", namespace)
    after = wait_for(
        lambda: (s := scheduled(kube, namespace)) and len(s) > count and s, 90, "a session after enable"
    )
    new = [datetime.fromisoformat(s["spec"]["sessionTime"]) for s in after[count:]]
    assert all(t >= enabled_at - timedelta(seconds=1) for t in new), f"missed minutes were run: {new}"
    assert len(new) == 1

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
