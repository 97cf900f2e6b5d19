"""Evaluation never touches the process's time zone, and the JS zone tables are right for every zone.

The workflow zone used to be installed with TZ + tzset() around each evaluation, which every other
thread (and every subprocess started meanwhile) saw. Now JS gets a table of the zone's offsets
from Python (kudig.expr._zone_table_json); the tables are checked against zoneinfo for every zone
in tzdata, and zoneinfo against the C library (which is what QuickJS read before).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import time
import zoneinfo
from pathlib import Path

import expr_oracle
import pytest
from expr_oracle_cases import MOMENT_FORMAT_CORE, PARSE_PROBE, PARSE_STRINGS, PROBES, transitions

from kudig import expr
from kudig.expr import TemplateEngine, TemplateError

HERE = Path(__file__).resolve().parent
MAX_TIME = 8_640_000_000_000_000
ALL_ZONES = sorted(zoneinfo.available_timezones())


# ---- no process state -----------------------------------------------------------------------------


def test_rendering_neither_sets_tz_nor_calls_tzset(monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden() -> None:
        raise AssertionError("time.tzset() called")

    monkeypatch.setattr(time, "tzset", forbidden)
    monkeypatch.setenv("TZ", "Europe/Berlin")
    environ_before = dict(os.environ)
    eng = TemplateEngine()
    text = "${moment(session_time).format('YYYY-MM-DD HH:mm Z')} ${new Date(0).toString()}"
    got = eng.render(text, {"session_time": "2024-01-30T00:00:00Z"}, "Asia/Tokyo")
    assert got == "2024-01-30 09:00 +09:00 Thu Jan 01 1970 09:00:00 GMT+0900"
    assert eng.eval_config({"a": "${new Date(0).getHours()}"}, {}, "America/Los_Angeles") == {"a": "16"}
    assert dict(os.environ) == environ_before


def test_other_threads_never_see_the_workflow_zone() -> None:
    # The process zone is whatever it is (UTC in the operator's container); check it stays put while
    # another thread evaluates templates in Asia/Tokyo as fast as it can.
    eng = TemplateEngine()
    text = "${moment(session_time).add(1, 'days').format('YYYY-MM-DD HH:mm Z')} ${new Date(0).getHours()}"
    params = {"session_time": "2024-01-30T00:00:00Z"}
    stop = threading.Event()
    rendered = 0
    errors: list[str] = []

    def evaluate() -> None:
        nonlocal rendered
        try:
            while not stop.is_set():
                got = eng.render(text, params, "Asia/Tokyo")
                if got != "2024-01-31 09:00 +09:00 9":
                    errors.append(got)
                rendered += 1
        except Exception as e:  # pragma: no cover - reported below
            errors.append(repr(e))

    expected = (os.environ.get("TZ"), time.timezone, time.altzone, time.tzname, time.localtime(0))
    worker = threading.Thread(target=evaluate)
    worker.start()
    observed = set()
    deadline = time.monotonic() + 1.5
    try:
        while time.monotonic() < deadline:
            observed.add((os.environ.get("TZ"), time.timezone, time.altzone, time.tzname, time.localtime(0)))
    finally:
        stop.set()
        worker.join()
    assert errors == []
    assert rendered > 100
    assert observed == {expected}


def test_engines_do_not_share_a_lock() -> None:
    # Each engine serialises its own evaluations; a busy engine does not block another one.
    busy, free = TemplateEngine(), TemplateEngine()
    free.render("${1}", {})  # load moment.js outside the measurement
    with busy._lock:
        done = threading.Event()
        threading.Thread(
            target=lambda: (free.render("${new Date(0).getHours()}", {}, "Asia/Tokyo"), done.set())
        ).start()
        assert done.wait(10)


@pytest.mark.parametrize("process_tz", ["Pacific/Chatham", "XST+03:17:30XDT,J60/1:23,J300/4:56", "UTC0"])
def test_output_does_not_depend_on_the_process_zone(process_tz: str) -> None:
    # A subprocess started with an exotic TZ renders the probes; the oracle renders them here.
    cases = {
        "America/Los_Angeles": transitions("America/Los_Angeles", 2015, 2017),
        "Australia/Lord_Howe": transitions("Australia/Lord_Howe", 2015, 2017),
        "Asia/Kolkata": [-1_900_000_000_000, -2_000_000_000_000],
        "+09:00": [0],
    }
    jobs = []
    for zone, found in cases.items():
        us = [t + d for t in found for d in (-1, 0)] + [0, -1, MAX_TIME, -MAX_TIME, 1_706_572_800_000]
        for probe in PROBES.values():
            jobs.append((probe, zone, {"us": us, "fmt": MOMENT_FORMAT_CORE}))
        jobs.append((PARSE_PROBE, zone, {"strings": PARSE_STRINGS}))
    script = (
        "import json, sys\n"
        "from kudig.expr import TemplateEngine\n"
        "eng = TemplateEngine(time_limit_s=60)\n"
        "print(json.dumps([eng.render(t, p, z) for t, z, p in json.load(sys.stdin)]))\n"
    )
    env = {**os.environ, "TZ": process_tz}
    run = subprocess.run(
        [sys.executable, "-c", script],
        input=json.dumps(jobs),
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=300,
    )
    got = json.loads(run.stdout)
    old = expr_oracle.TemplateEngine(time_limit_s=60)
    want = [old.render(t, p, z) for t, z, p in jobs]
    for (_, zone, _), g, w in zip(jobs, got, want, strict=True):
        assert json.loads(g) == json.loads(w), zone


# ---- the zone tables ------------------------------------------------------------------------------


def test_zone_tables_match_zoneinfo_for_every_zone() -> None:
    # JS's offsets (through getTimezoneOffset) against zoneinfo directly, for all of tzdata: a
    # second either side of each transition and random instants over the whole Date range.
    eng = TemplateEngine(time_limit_s=60)
    rnd = random.Random(20240130)
    text = "${us.map(function (u) { return new Date(u).getTimezoneOffset() })}"
    checked = 0
    for zone in ALL_ZONES:
        _, found, _ = expr._zone_transitions(zone)
        us = [1000 * t + d for t, _ in found[::3] for d in (-1000, -1, 0)]
        us += [rnd.randint(-5_000_000_000_000, 20_000_000_000_000) for _ in range(40)]
        us += [rnd.randint(-MAX_TIME, MAX_TIME) for _ in range(10)]
        got = json.loads(eng.render(text, {"us": us}, zone))
        want = [0 - expr._offset_minutes(zone, u) for u in us]
        assert got == want, zone
        checked += len(us)
    assert checked > 100_000


def test_zoneinfo_agrees_with_the_c_library() -> None:
    # What the tables are built from (zoneinfo) against what QuickJS used to read (localtime_r
    # with TZ set), for every zone, in a subprocess so that this process's TZ stays put.
    script = (
        "import json, os, random, sys, time\n"
        "from kudig import expr\n"
        "rnd = random.Random(7)\n"
        "bad = []\n"
        "for zone in json.load(sys.stdin):\n"
        "    os.environ['TZ'] = expr.posix_tz(zone)\n"
        "    time.tzset()\n"
        "    _, found, _ = expr._zone_transitions(zone)\n"
        "    seconds = [t + d for t, _ in found for d in (-1, 0)]\n"
        "    seconds += [rnd.randint(-8_640_000_000_000, 8_640_000_000_000) for _ in range(100)]\n"
        "    for s in seconds:\n"
        "        gmtoff = time.localtime(s).tm_gmtoff\n"
        "        want = gmtoff // 60 if gmtoff >= 0 else -(-gmtoff // 60)\n"
        "        if expr._offset_minutes(zone, s * 1000) != want:\n"
        "            bad.append((zone, s))\n"
        "print(json.dumps(bad[:20]))\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", script],
        input=json.dumps(ALL_ZONES),
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    assert json.loads(run.stdout) == []


@pytest.mark.parametrize(
    "zone", ["America/Los_Angeles", "Europe/Dublin", "Australia/Lord_Howe", "Asia/Gaza", "America/Nuuk"]
)
def test_tz_rules_match_sampling_zoneinfo(zone: str) -> None:
    # The POSIX TZ rule interpreter against the slow fallback, over 30 years after the TZif data.
    _, found, window = expr._zone_transitions(zone)
    assert window is not None
    tz = expr._zone(zone)
    after = max(t for t, _ in found if t < window)
    until = window + 30 * 365 * 86400
    assert [x for x in found if after < x[0] < until] == expr._sampled_transitions(tz, after, until)


def test_zone_table_shapes() -> None:
    fixed = json.loads(expr._zone_table_json("+05:30:15"))
    assert fixed["before"] == 330 and fixed["starts"] == [] and fixed["window"] is None
    assert json.loads(expr._zone_table_json("UTC"))["before"] == 0
    tokyo = json.loads(expr._zone_table_json("Asia/Tokyo"))
    assert tokyo["window"] is None  # no DST rule: the last offset holds
    assert tokyo["offsets"][-1] == 540
    la = json.loads(expr._zone_table_json("America/Los_Angeles"))
    assert la["before"] == -472  # LMT -7:52:58, truncated
    assert la["window"] is not None and la["cycle"] == 146097 * 86_400_000
    # A transition at second s <= 0 applies from 1000*s - 999 ms (QuickJS truncates toward zero).
    first = expr._zone_transitions("America/Los_Angeles")[1][0][0]
    assert first < 0 and la["starts"][0] == 1000 * first - 999


def test_far_future_instants_follow_the_rule() -> None:
    eng = TemplateEngine()
    text = "${[new Date(Date.UTC(y, 6, 1)).getTimezoneOffset(), new Date(Date.UTC(y, 0, 1)).getTimezoneOffset()]}"
    for year in (2100, 3000, 9999, 10000, 123456, 275759):
        assert eng.render(text, {"y": year}, "America/New_York") == "[240,300]"
        assert eng.render(text, {"y": year}, "Australia/Sydney") == "[-600,-660]"


# ---- the tables a context holds -------------------------------------------------------------------


def test_many_zones_in_turn(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(expr, "_JS_ZONES_MAX", 3)
    eng = TemplateEngine()
    zones = ["Asia/Tokyo", "America/Los_Angeles", "Europe/London", "+05:30", "UTC", "Asia/Kolkata"]
    text = "${new Date(Date.UTC(2016, 6, 1)).getTimezoneOffset()}"
    expected = {"Asia/Tokyo": "-540", "America/Los_Angeles": "420", "Europe/London": "-60",
                "+05:30": "-330", "UTC": "0", "Asia/Kolkata": "-330"}  # fmt: skip
    for _ in range(3):
        for zone in zones + zones[::-1]:
            assert eng.render(text, {}, zone) == expected[zone]
            assert len(eng._zones_sent) <= 3


def test_zones_survive_errors_and_limits() -> None:
    eng = TemplateEngine(time_limit_s=0.2)
    text = "${new Date(0).getHours()}"
    assert eng.render(text, {}, "Asia/Tokyo") == "9"
    with pytest.raises(TemplateError, match="stack overflow"):
        eng.render("${(function f(){ return f() })()}", {}, "America/Los_Angeles")
    assert eng.render(text, {}, "America/Los_Angeles") == "16"
    assert eng.render(text, {}, "Asia/Tokyo") == "9"
    with pytest.raises(TemplateError, match="time limit"):
        eng.render("${(function(){while(true){}})()}", {}, "Europe/London")
    assert eng.render(text, {}, "Europe/London") == "1"  # 1970: British Standard Time, +01:00
    assert eng.render(text, {}, "Asia/Tokyo") == "9"
    with pytest.raises(TemplateError, match="Unknown timezone"):
        eng.render(text, {}, "Asia/Nowhere")
    with pytest.raises(TemplateError, match="Unknown timezone"):
        eng.eval_config({"a": text}, {}, "Asia/Nowhere")


def test_user_code_cannot_reach_the_tables() -> None:
    eng = TemplateEngine()
    text = "${[typeof __kudig_zone_offset, typeof zones, typeof useZone, Object.keys(globalThis).length > 0]}"
    assert eng.render(text, {}, "Asia/Tokyo") == '["undefined","undefined","undefined",true]'
    # Replacing Date methods lasts for one evaluation only where they are globals, but the runtime
    # keeps its own references: breaking Date.prototype.getUTCFullYear does not break local time.
    eng.render("${(Date.prototype.getUTCFullYear = null, Function.prototype.call = null, 1)}", {}, "UTC")
    assert eng.render("${new Date(0).getFullYear()} ${new Date(0).toString()}", {}, "Asia/Tokyo") == (
        "1970 Thu Jan 01 1970 09:00:00 GMT+0900"
    )
