"""The JS time zone gives exactly what QuickJS gave when it read the zone from TZ (the oracle).

kudig.expr used to set the process's TZ around every evaluation; it now sends the zone's offsets to
JS and replaces the Date methods that read local time. expr_oracle is a frozen copy of the TZ-based
implementation; these tests require byte-identical output from both over many zones and instants:
every transition between 1900 and 2100, instants a millisecond to a second either side of them,
random instants (hypothesis), the ends of the Date range, and local date-time strings.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import expr_oracle
import pytest
from expr_oracle_cases import (
    LOCAL_PROBE,
    MOMENT_FORMAT,
    MOMENT_FORMAT_CORE,
    MOMENT_PROBE,
    PARSE_PROBE,
    PARSE_STRINGS,
    PROBES,
    ZONES,
    transitions,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kudig.expr import TemplateEngine

MS_1900 = int(datetime(1900, 1, 1, tzinfo=UTC).timestamp()) * 1000
MS_2100 = int(datetime(2101, 1, 1, tzinfo=UTC).timestamp()) * 1000
MAX_TIME = 8_640_000_000_000_000

#: The ends of the Date range (local time may lie outside it), the 32-bit time_t limits, year 0.
EXTREMES = [
    0,
    -1,
    1,
    -999,
    -1000,
    -1001,
    MAX_TIME,
    -MAX_TIME,
    MAX_TIME - 3_600_000,
    -MAX_TIME + 3_600_000,
    MAX_TIME - 86_400_000,
    -MAX_TIME + 86_400_000,
    -62_198_755_200_000,  # 0000-01-01
    -62_167_219_200_001,
    253_402_300_800_000,  # 10000-01-01
    2_147_483_647_000,
    2_147_483_648_000,
    -2_147_483_648_000,
    -2_147_483_649_000,
    4_102_444_800_000,  # 2100-01-01
    32_503_680_000_000,  # 3000-01-01
]

#: Offsets from each transition: truncation to seconds toward zero matters before 1970.
NEAR = (-1001, -1000, -999, -1, 0, 1)


@pytest.fixture(scope="module")
def new() -> TemplateEngine:
    return TemplateEngine(time_limit_s=60)


@pytest.fixture(scope="module")
def old() -> expr_oracle.TemplateEngine:
    return expr_oracle.TemplateEngine(time_limit_s=60)


def compare(
    new: TemplateEngine,
    old: expr_oracle.TemplateEngine,
    template: str,
    zone: str,
    params: dict[str, Any],
    keys: list[Any],
) -> int:
    """Render with both engines; fail on the first differing result (per key). Returns the count."""
    want = json.loads(old.render(template, params, zone))
    got = json.loads(new.render(template, params, zone))
    assert len(got) == len(want) == len(keys)
    for key, g, w in zip(keys, got, want, strict=True):
        if g != w:
            diffs = [(i, x, y) for i, (x, y) in enumerate(zip(g, w, strict=True)) if x != y]
            pytest.fail(f"{zone} at {key!r}: (index, new, old) {diffs[:5]}")
    return len(keys)


def transition_instants(zone: str) -> list[int]:
    return [t + d for t in transitions(zone, 1900, 2100) for d in NEAR]


@pytest.mark.parametrize("zone", ZONES)
def test_dates_and_local_times_around_every_transition(
    new: TemplateEngine, old: expr_oracle.TemplateEngine, zone: str
) -> None:
    us = transition_instants(zone) + EXTREMES
    if zone not in ("UTC", "+09:00", "-03:30"):
        assert len(us) >= len(EXTREMES) + 4 * len(NEAR)  # the zone has transitions to test
    for name in ("date", "local"):
        compare(new, old, PROBES[name], zone, {"us": us}, us)


@pytest.mark.parametrize("zone", ZONES)
def test_moment_around_transitions(new: TemplateEngine, old: expr_oracle.TemplateEngine, zone: str) -> None:
    # moment is slow (milliseconds per instant): 24 transitions spread over the two centuries.
    found = transitions(zone, 1900, 2100)
    picked = found[:: max(1, len(found) // 24)]
    us = [t + d for t in picked for d in (-1, 0)] + EXTREMES
    compare(new, old, MOMENT_PROBE, zone, {"us": us, "fmt": MOMENT_FORMAT_CORE}, us)


def test_every_moment_format_token(new: TemplateEngine, old: expr_oracle.TemplateEngine) -> None:
    us = [MS_1900, 0, 1_457_863_199_999, 1_457_863_200_000, 1_478_421_000_000, MS_2100 - 1, MAX_TIME]
    for zone in ZONES:
        compare(new, old, "${us.map(function (u) { return [moment(u).format(fmt)] })}", zone,
                {"us": us, "fmt": MOMENT_FORMAT}, us)  # fmt: skip


@pytest.mark.parametrize("zone", ZONES)
def test_parsing_local_and_absolute_strings(
    new: TemplateEngine, old: expr_oracle.TemplateEngine, zone: str
) -> None:
    compare(new, old, PARSE_PROBE, zone, {"strings": PARSE_STRINGS}, PARSE_STRINGS)


def test_parsed_local_strings_depend_on_the_zone(new: TemplateEngine) -> None:
    # Guards the test above against comparing zone-independent results.
    text = "${Date.parse('2016-03-13T03:00:00')} ${Date.parse('2016-03-13')}"
    assert new.render(text, {}, "Asia/Tokyo") == "1457805600000 1457827200000"
    # QuickJS's rule (kept): the offset at the local time read as UTC, so 03:00 is 04:00 PDT.
    assert new.render(text, {}, "America/Los_Angeles") == "1457866800000 1457827200000"


@pytest.mark.parametrize(
    ("zone", "text", "expected"),
    [
        # The fields are past the end of the Date range but the local time is not.
        ("Asia/Tokyo", "+275760-09-13T05:00:00", 8_639_999_985_600_000),
        ("+09:00", "+275760-09-13T08:59:59.999", 8_639_999_999_999_999),
        ("America/Los_Angeles", "-271821-04-19T20:00:00", -8_639_999_986_080_000),
        ("Asia/Tokyo", "+275760-09-13T09:00:01", None),
    ],
)
def test_parsing_at_the_ends_of_the_date_range(
    new: TemplateEngine, old: expr_oracle.TemplateEngine, zone: str, text: str, expected: int | None
) -> None:
    template = "${[Date.parse(s)]}"
    assert json.loads(new.render(template, {"s": text}, zone)) == [expected]
    assert json.loads(old.render(template, {"s": text}, zone)) == [expected]


INSTANTS = st.integers(MS_1900, MS_2100 - 1)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(zone=st.sampled_from(ZONES), us=st.lists(INSTANTS, min_size=1, max_size=6))
def test_random_instants(
    new: TemplateEngine, old: expr_oracle.TemplateEngine, zone: str, us: list[int]
) -> None:
    for name, probe in PROBES.items():
        fmt = MOMENT_FORMAT if name == "moment" else ""
        compare(new, old, probe, zone, {"us": us, "fmt": fmt}, us)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    zone=st.sampled_from(ZONES),
    us=st.lists(st.integers(-MAX_TIME, MAX_TIME), min_size=1, max_size=30),
)
def test_random_instants_over_the_whole_date_range(
    new: TemplateEngine, old: expr_oracle.TemplateEngine, zone: str, us: list[int]
) -> None:
    for name in ("date", "local"):
        compare(new, old, PROBES[name], zone, {"us": us}, us)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    zone=st.sampled_from(ZONES),
    fields=st.lists(
        st.tuples(
            st.integers(1899, 2101),
            st.integers(-13, 24),
            st.integers(-31, 62),
            st.integers(-25, 49),
            st.integers(-61, 121),
        ),
        min_size=1,
        max_size=10,
    ),
)
def test_local_fields_and_strings(
    new: TemplateEngine,
    old: expr_oracle.TemplateEngine,
    zone: str,
    fields: list[tuple[int, int, int, int, int]],
) -> None:
    # Out-of-range fields carry over; the strings QuickJS reads as local time do the same.
    template = (
        "${fields.map(function (f) { function p(n, w) { var s = '' + n; while (s.length < w) s = '0' + s;"
        " return s; } var iso = p(f[0], 4) + '-' + p(Math.abs(f[1]) % 100, 2) + '-' + p(Math.abs(f[2]) % 100, 2)"
        " + 'T' + p(Math.abs(f[3]) % 100, 2) + ':' + p(Math.abs(f[4]) % 100, 2);"
        " var d = new Date(f[0], f[1], f[2], f[3], f[4]);"
        " return [d.getTime(), d.toString(), Date.parse(iso), new Date(iso).toLocaleString(),"
        " moment(iso).isValid() ? moment(iso).format() : 'invalid',"
        " moment({y: f[0], M: f[1], d: f[2], h: f[3], m: f[4]}).format(),"
        " moment(d).add(f[4], 'minutes').startOf('hour').format()] })}"
    )
    compare(new, old, template, zone, {"fields": fields}, fields)


def test_date_called_as_a_function(new: TemplateEngine) -> None:
    text = "${[Date(), new Date().toString(), Date(0, 0), typeof Date()]}"
    for zone, offset in [("Asia/Tokyo", "GMT+0900"), ("UTC", "GMT+0000"), ("-03:30", "GMT-0330")]:
        now, string, ignored_args, kind = json.loads(new.render(text, {}, zone))
        assert kind == "string"
        assert now.endswith(offset) and string.endswith(offset) and ignored_args.endswith(offset)
        assert len(now) == len(string) == len("Tue Jan 30 2024 10:00:00 GMT+0900")


def test_date_methods_still_reject_non_dates(new: TemplateEngine, old: expr_oracle.TemplateEngine) -> None:
    names = [
        "getFullYear", "getYear", "getMonth", "getDate", "getDay", "getHours", "getMinutes",
        "getSeconds", "getMilliseconds", "getTimezoneOffset", "toString", "toDateString",
        "toTimeString", "toLocaleString", "toLocaleDateString", "toLocaleTimeString", "setYear",
        "setFullYear", "setHours",
    ]  # fmt: skip
    text = (
        "${names.map(function (n) { try { Date.prototype[n].call({}); return 'no error' }"
        " catch (e) { return String(e) } })}"
    )
    got = json.loads(new.render(text, {"names": names}, "Asia/Tokyo"))
    assert got == json.loads(old.render(text, {"names": names}, "Asia/Tokyo"))
    assert set(got) == {"TypeError: not a Date object"}


def test_new_date_of_objects_and_other_values(new: TemplateEngine, old: expr_oracle.TemplateEngine) -> None:
    text = (
        "${[new Date(new Date(5)).getTime(), new Date(null).getTime(), new Date(undefined).getTime(),"
        " new Date(true).getTime(), new Date('2016-03-13T02:30').getTime(),"
        " new Date({ valueOf: function () { return 7 } }).getTime(),"
        " new Date({ toString: function () { return '2016-03-13T02:30' }, valueOf: null }).getTime(),"
        " new Date(Object('2016-03-13T02:30')).getTime(), Date.parse(), Date.parse(20160313),"
        " Date.parse({ toString: function () { return '2016-03-13T02:30' } }), Date.UTC(2016, 2, 13),"
        " (function () { try { return Date.parse(Symbol()) } catch (e) { return e.name } })(),"
        " (function () { try { return new Date({ valueOf: null, toString: null }) } catch (e) { return e.name } })()]}"
    )
    for zone in ("America/Los_Angeles", "Asia/Tokyo", "UTC"):
        assert new.render(text, {}, zone) == old.render(text, {}, zone)


def test_probes_are_not_trivial(new: TemplateEngine) -> None:
    # The differential tests would pass if every result were NaN or "Invalid Date".
    u = 1_457_863_200_000  # 2016-03-13T10:00:00Z, 03:00 PDT
    got = json.loads(new.render(PROBES["date"], {"us": [u]}, "America/Los_Angeles"))[0]
    assert got[:10] == [2016, 116, 2, 13, 0, 3, 0, 0, 0, 420]
    assert got[10] == "Sun Mar 13 2016 03:00:00 GMT-0700"
    got = json.loads(new.render(MOMENT_PROBE, {"us": [u], "fmt": "LLLL Z"}, "America/Los_Angeles"))[0]
    assert got[0] == "Sunday, March 13, 2016 3:00 AM -07:00"
    got = json.loads(new.render(LOCAL_PROBE, {"us": [u]}, "America/Los_Angeles"))[0]
    assert got[0] == u
