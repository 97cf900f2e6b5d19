"""`sla:` (digdag's SlaCalculator and session monitor): deadlines and what fires, time simulated."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from kudig.engine.state import SessionState
from kudig.errors import ConfigError
from kudig.sla import Sla, parse_sla
from kudig.yamlload import load_dig_text

from .driver import drive

SLOW = "+slow:\n  wait>: 2h\n+after:\n  sh>: done\n"


def _at(text: str, tz: str = "UTC") -> float:
    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(tz)).timestamp()


def test_duration_fail_fails_the_attempt_and_the_rest_still_runs() -> None:
    run = drive("sla:\n  duration: 01:00\n  fail: true\n" + SLOW)
    states = run.states()
    assert states["+wf^sla^alert"] == "success"  # alert defaults to true (digdag's code)
    assert states["+wf^sla^fail"] == "error"
    assert states["+wf+slow"] == "success" and states["+wf+after"] == "success"
    assert run.state == "group_error"
    assert run.engine.state.sla_at == 3600.0
    assert any("SLA violated" in line for line in run.logs)
    # notify> runs in the task runner (it sends through the notifier): the engine starts it
    assert "+wf^sla^alert" in run.started


def test_no_violation_when_done_in_time() -> None:
    run = drive("sla:\n  duration: 03:00\n  fail: true\n" + SLOW)
    assert run.state == "success"
    assert not any("^sla" in name for name in run.states())
    assert run.engine.next_wakeup() is None


def test_fail_default_is_false_and_alert_can_be_disabled() -> None:
    run = drive("sla:\n  duration: 00:30\n" + SLOW)
    assert run.state == "success"
    assert run.states()["+wf^sla^alert"] == "success"
    run = drive("sla:\n  duration: 00:30\n  alert: false\n" + SLOW)
    assert run.state == "success"
    assert not any("^sla" in name for name in run.states())


def test_custom_tasks_run_under_sla() -> None:
    run = drive("sla:\n  duration: 00:30\n  alert: false\n  +notify:\n    sh>: page the team\n" + SLOW)
    assert "+wf^sla+notify" in run.started
    assert run.states()["+wf^sla"] == "success"
    assert run.state == "success"


def test_time_counts_from_the_attempt_start_in_the_workflow_time_zone() -> None:
    sla = Sla("time", 9 * 3600)
    tokyo = ZoneInfo("Asia/Tokyo")
    # started before 09:00 Tokyo: today's 09:00; after: tomorrow's
    assert sla.deadline(_at("2024-01-30T08:00:00", "Asia/Tokyo"), tokyo) == _at(
        "2024-01-30T09:00:00", "Asia/Tokyo"
    )
    assert sla.deadline(_at("2024-01-30T09:00:00", "Asia/Tokyo"), tokyo) == _at(
        "2024-01-31T09:00:00", "Asia/Tokyo"
    )
    assert sla.deadline(_at("2024-01-30T10:00:00", "Asia/Tokyo"), tokyo) == _at(
        "2024-01-31T09:00:00", "Asia/Tokyo"
    )
    # a DST day: 09:00 local is still 09:00 local
    ny = ZoneInfo("America/New_York")
    assert sla.deadline(_at("2024-03-10T01:00:00", "America/New_York"), ny) == _at(
        "2024-03-10T09:00:00", "America/New_York"
    )
    assert Sla("duration", 90).deadline(1000.0, ny) == 1090.0


def test_time_sla_fires_in_the_engine() -> None:
    start = _at("2024-01-30T10:00:00")
    run = drive("sla:\n  time: '10:30'\n  fail: true\n" + SLOW, start=start)
    assert run.engine.state.sla_at == _at("2024-01-30T10:30:00")
    assert run.state == "group_error"


def test_deadline_and_firing_survive_a_restart() -> None:
    run = drive("sla:\n  duration: 01:00\n" + SLOW)
    state = SessionState.from_json(run.engine.state.to_json())
    assert state.sla_at == 3600.0 and state.sla_fired


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("sla:\n  time: 01:00\n  duration: 01:00\n", "either the 'time' or 'duration' option"),
        ("sla:\n  fail: true\n", "either the 'time' or 'duration' option"),
        ("sla:\n  time: 25:00\n", "out of range"),
        ("sla:\n  duration: 1h\n", "HH:MM or HH:MM:SS"),
        ("sla:\n  time: 01:00\n  fial: true\n", "Parameter 'fial' is not used at sla."),
        ("sla:\n  time: 01:00\n  fail: maybe\n", "fail must be true or false"),
        ("sla: 01:00\n", "sla must be a map"),
    ],
)
def test_bad_sla_is_a_config_error_with_the_line(body: str, message: str) -> None:
    definition = load_dig_text("timezone: UTC\n" + body + "+t:\n  sh>: x\n", "wf.dig", Path("."))
    with pytest.raises(ConfigError) as info:
        parse_sla(definition, "wf.dig")
    assert message in str(info.value)
    assert "wf.dig:2" in str(info.value)
