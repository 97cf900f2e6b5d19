"""Tests for kudig.expr: digdag's `${...}` evaluation (re-expressing ConfigEvalEngineTest).

Fixtures are our own; expected values follow digdag's documented and tested behaviour
(reference notes §2.2) and moment.js 2.21.0 output in each time zone.
"""

from __future__ import annotations

import json
import os
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kudig import expr
from kudig.errors import KudigError
from kudig.expr import NO_EVAL_KEYS, TemplateEngine, TemplateError, posix_tz

SESSION_TIME = "2016-01-02T03:04:05+00:00"


@pytest.fixture(scope="module")
def engine() -> TemplateEngine:
    return TemplateEngine()


def params(timezone: str = "UTC", **extra: Any) -> dict[str, Any]:
    return {"timezone": timezone, "session_time": SESSION_TIME, **extra}


# ---- eval_config: chained keys and scope ----------------------------------------------------------


def test_top_level_keys_see_earlier_evaluated_keys(engine: TemplateEngine) -> None:
    config = {"a": "${timezone}", "b": "${a}", "c": "${a}${b}"}
    got = engine.eval_config(config, params("Asia/Tokyo", **config), "Asia/Tokyo")
    assert got == {"a": "Asia/Tokyo", "b": "Asia/Tokyo", "c": "Asia/TokyoAsia/Tokyo"}


def test_top_level_key_does_not_see_later_keys_evaluated(engine: TemplateEngine) -> None:
    # `first` runs before `second` is evaluated, so it sees the raw template text from params.
    config = {"first": "${second}", "second": "${timezone}"}
    got = engine.eval_config(config, params(**config), "UTC")
    assert got == {"first": "${timezone}", "second": "UTC"}


def test_nested_object_sees_raw_params_not_evaluated_top_level(engine: TemplateEngine) -> None:
    # digdag #974/#678: a nested value referencing a templated top-level key gets its raw text.
    config = {"greeting": "hi ${timezone}", "nested": {"msg": "${greeting}", "again": "<${msg}>"}}
    got = engine.eval_config(config, params(greeting="hi ${timezone}"), "UTC")
    assert got == {
        "greeting": "hi UTC",
        "nested": {"msg": "hi ${timezone}", "again": "<hi ${timezone}>"},
    }


def test_nested_object_does_not_see_parent_keys_absent_from_params(engine: TemplateEngine) -> None:
    config = {"only_in_config": "x", "nested": {"v": "${only_in_config}"}}
    with pytest.raises(TemplateError, match="ReferenceError"):
        engine.eval_config(config, params(), "UTC")


def test_arrays_see_the_parent_levels_evaluated_keys(engine: TemplateEngine) -> None:
    config = {
        "a": "${timezone}",
        "list": ["${a}!", ["${a}?"], {"inner": "${timezone}"}, 3, None, True],
    }
    got = engine.eval_config(config, params(), "UTC")
    assert got["list"] == ["UTC!", ["UTC?"], {"inner": "UTC"}, 3, None, True]


def test_object_inside_array_gets_a_fresh_scope(engine: TemplateEngine) -> None:
    config = {"a": "x", "list": [{"v": "${a}"}]}
    with pytest.raises(TemplateError, match="a is not defined"):
        engine.eval_config(config, params(), "UTC")


@pytest.mark.parametrize("key", sorted(NO_EVAL_KEYS))
def test_control_keys_are_copied_untouched(engine: TemplateEngine, key: str) -> None:
    body = {"+t": {"echo>": "${no_such_var}"}, "x": "${also_missing}"}
    config = {"a": "${timezone}", key: body}
    got = engine.eval_config(config, params(), "UTC")
    assert got == {"a": "UTC", key: body}


def test_non_strings_and_dollarless_strings_pass_unchanged(engine: TemplateEngine) -> None:
    config = {"i": 1, "f": 1.5, "b": False, "n": None, "s": "plain", "m": {"k": [1, "two"]}}
    assert engine.eval_config(config, params(), "UTC") == config


def test_every_evaluated_value_is_a_string(engine: TemplateEngine) -> None:
    config = {"n": "${1 + 1}", "arr": "${[1, 2]}", "obj": "${{a: 1}}", "t": "${true}"}
    got = engine.eval_config(config, params(), "UTC")
    assert got == {"n": "2", "arr": "[1,2]", "obj": '{"a":1}', "t": "true"}


def test_eval_config_does_not_mutate_its_input(engine: TemplateEngine) -> None:
    config = {"a": "${timezone}", "n": {"b": "${timezone}"}, "l": ["${timezone}"]}
    before = repr(config)
    engine.eval_config(config, params(), "UTC")
    assert repr(config) == before


def test_eval_config_error_names_the_whole_string(engine: TemplateEngine) -> None:
    with pytest.raises(TemplateError) as info:
        engine.eval_config({"a": "x ${nope} y"}, params(), "UTC")
    assert (
        str(info.value) == "Failed to evaluate a variable x ${nope} y (ReferenceError: nope is not defined)"
    )


# ---- literals -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("${1}", "1"),
        ("${1.5}", "1.5"),
        ("${[1]}", "[1]"),
        ('${"x"}', "x"),
        ("${'single'}", "single"),
        ("${undefined}", ""),
        ("${null}", ""),
        ("${true}", "true"),
        ('${ {"a": 1, "b": [1, "x"]} }', '{"a":1,"b":[1,"x"]}'),
        ("${obj}", '{"a":1,"nested":{"b":null}}'),
        ("${list}", '[1,"two",null]'),
        ("${num}", "3"),
        ("${flt}", "2"),
        ("${nothing}", ""),
        ("${}", ""),
        ("a${1}b${2}c", "a1b2c"),
    ],
)
def test_literals_and_json_results(engine: TemplateEngine, text: str, expected: str) -> None:
    p = params(obj={"a": 1, "nested": {"b": None}}, list=[1, "two", None], num=3, flt=2.0, nothing=None)
    assert engine.render(text, p) == expected


# ---- the template syntax --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$", "$"),
        ("$$", "$"),
        ("cost: $$5", "cost: $5"),
        ("p$$s", "p$s"),
        ("$$$", "$$"),
        ("${", "${"),
        ("${v", "${v"),
        ("p${v", "p${v"),
        ("${1}${v", "1${v"),
        ("$${v", "$${v"),  # "${" is found first; the lone "$" before it stays
        ("}", "}"),
        ("p${1}m$$m${2}s", "p1m$m2s"),
        ("${secret:foo}", "${secret:foo}"),
        ("${secret:foo.bar} and ${timezone}", "${secret:foo.bar} and UTC"),
        ("${td:x}$$", "${td:x}$"),
        ("it's a \\ back\\slash\n${timezone}\r\n", "it's a \\ back\\slash\nUTC\r\n"),
        ("\u2028${timezone}\u2029", "\u2028UTC\u2029"),
    ],
)
def test_template_syntax(engine: TemplateEngine, text: str, expected: str) -> None:
    assert engine.render(text, params()) == expected


def test_double_dollar_does_not_escape_an_expression(engine: TemplateEngine) -> None:
    # digdag finds "${" first, so in "$${x}" only the leading "$" is literal.
    assert engine.render("$${timezone}", params()) == "$UTC"


def test_extended_syntax_allows_balanced_braces(engine: TemplateEngine) -> None:
    assert engine.render("${[1,2,3,4,5].map(function(x){return x*5})}", params()) == "[5,10,15,20,25]"
    assert engine.render("${(function(){ if (true) { return {k: 1}; } })()}", params()) == '{"k":1}'


def test_braces_inside_string_literals_are_counted(engine: TemplateEngine) -> None:
    # The scanner does not understand JS strings (like digdag's): "}" closes the expression early.
    with pytest.raises(TemplateError, match="SyntaxError"):
        engine.render("${'}'}", params())


def test_operator_template_prefix_needs_lowercase_word_and_colon(engine: TemplateEngine) -> None:
    # ${Secret:x} is not an operator template: it is evaluated (a JS label then an expression).
    assert engine.render("${a ? 'y:' : 'n'}", params(a=True)) == "y:"


def test_shell_variables_survive(engine: TemplateEngine) -> None:
    assert engine.render("echo $HOME $$ ${timezone}", params()) == "echo $HOME $ UTC"
    assert engine.render("echo $HOME $$", params(x=object())) == "echo $HOME $"


def test_dollar_free_text_is_not_evaluated_even_if_weird(engine: TemplateEngine) -> None:
    assert engine.render("{ } ' \\ {{", params()) == "{ } ' \\ {{"


# ---- undefined variables and errors -------------------------------------------------------------


def test_undefined_variable_is_a_reference_error(engine: TemplateEngine) -> None:
    with pytest.raises(TemplateError) as info:
        engine.render("${no_such_var}", params())
    assert str(info.value) == (
        "Failed to evaluate a variable ${no_such_var} (ReferenceError: no_such_var is not defined)"
    )
    assert isinstance(info.value, KudigError)


def test_missing_field_is_empty(engine: TemplateEngine) -> None:
    assert engine.render("${timezone.no_such_field}", params()) == ""


def test_access_below_missing_field_is_a_type_error(engine: TemplateEngine) -> None:
    with pytest.raises(TemplateError) as info:
        engine.render("${timezone.no_such_field.invalid_access}", params())
    assert str(info.value) == (
        "Failed to evaluate a variable ${timezone.no_such_field.invalid_access}"
        " (TypeError: Cannot read property 'invalid_access' of undefined)"
    )


def test_typeof_idiom_for_optional_variables(engine: TemplateEngine) -> None:
    text = "${typeof maybe == 'undefined' ? 'default' : maybe}"
    assert engine.render(text, params()) == "default"
    assert engine.render(text, params(maybe="given")) == "given"


def test_syntax_error(engine: TemplateEngine) -> None:
    with pytest.raises(TemplateError, match=r"^Failed to evaluate a variable \$\{\)\} \(SyntaxError"):
        engine.render("${)}", params())


@pytest.mark.parametrize(
    ("thrown", "message"),
    [
        ("new Error('boom')", "Error: boom"),
        ("new RangeError('two\\nlines')", "RangeError: two\nlines"),
        ("'plain'", "plain"),
        ("42", "42"),
        ("null", "null"),
        ("{toString: function(){ throw 1 }}", "[object Object]"),
    ],
)
def test_thrown_values(engine: TemplateEngine, thrown: str, message: str) -> None:
    text = "${(function(){ throw " + thrown + " })()}"
    with pytest.raises(TemplateError) as info:
        engine.render(text, params())
    assert str(info.value) == f"Failed to evaluate a variable {text} ({message})"


def test_unserialisable_params_are_a_clear_error(engine: TemplateEngine) -> None:
    with pytest.raises(TemplateError, match=r"Failed to serialize parameters to JSON.*object"):
        engine.render("${x}", params(x=object()))
    with pytest.raises(TemplateError, match="Failed to serialize parameters to JSON"):
        engine.render("${x}", params(x=float("nan")))
    with pytest.raises(TemplateError, match="Failed to serialize parameters to JSON"):
        engine.eval_config({"a": "${x}"}, params(x={1, 2}.__iter__()), "UTC")


def test_unserialisable_params_are_fine_when_nothing_is_evaluated(engine: TemplateEngine) -> None:
    assert engine.render("no dollar", params(x=object())) == "no dollar"


def test_mapping_and_tuple_params_are_converted(engine: TemplateEngine) -> None:
    from types import MappingProxyType

    p = params(m=MappingProxyType({"k": (1, 2)}))
    assert engine.render("${m.k[1]}", p) == "2"


# ---- moment.js and time zones ---------------------------------------------------------------------

MOMENT_TEMPLATES = {
    "sql": '${moment(session_time).format("YYYY-MM-DD HH:mm:ss Z")}',
    "tomorrow": "${moment(session_time).add(1,'days').format(\"YYYYMMDD\")}",
    "utc": "${moment(session_time).utc().format()}",
    "default": "${moment(session_time).format()}",
}


@pytest.mark.parametrize(
    ("timezone", "expected"),
    [
        (
            "UTC",
            {
                "sql": "2016-01-02 03:04:05 +00:00",
                "tomorrow": "20160103",
                "utc": "2016-01-02T03:04:05Z",
                "default": "2016-01-02T03:04:05+00:00",
            },
        ),
        (
            "Asia/Tokyo",
            {
                "sql": "2016-01-02 12:04:05 +09:00",
                "tomorrow": "20160103",
                "utc": "2016-01-02T03:04:05Z",
                "default": "2016-01-02T12:04:05+09:00",
            },
        ),
        (
            "America/Los_Angeles",
            {
                "sql": "2016-01-01 19:04:05 -08:00",
                "tomorrow": "20160102",
                "utc": "2016-01-02T03:04:05Z",
                "default": "2016-01-01T19:04:05-08:00",
            },
        ),
        (
            "+09:00",
            {
                "sql": "2016-01-02 12:04:05 +09:00",
                "tomorrow": "20160103",
                "utc": "2016-01-02T03:04:05Z",
                "default": "2016-01-02T12:04:05+09:00",
            },
        ),
        (
            "-03:30",
            {
                "sql": "2016-01-01 23:34:05 -03:30",
                "tomorrow": "20160102",
                "utc": "2016-01-02T03:04:05Z",
                "default": "2016-01-01T23:34:05-03:30",
            },
        ),
    ],
)
def test_moment_in_workflow_time_zone(
    engine: TemplateEngine, timezone: str, expected: dict[str, str]
) -> None:
    p = params(timezone)
    got = {name: engine.render(text, p, timezone) for name, text in MOMENT_TEMPLATES.items()}
    assert got == expected


def test_moment_across_los_angeles_dst_start(engine: TemplateEngine) -> None:
    # 2016-03-13 02:00 PST -> 03:00 PDT. Adding days keeps the wall clock; adding hours does not.
    tz = "America/Los_Angeles"
    p = params(tz, session_time="2016-03-13T10:00:00Z")
    cases = {
        "${moment(session_time).format()}": "2016-03-13T03:00:00-07:00",
        "${moment(session_time).add(1, 'days').format()}": "2016-03-14T03:00:00-07:00",
        "${moment(session_time).add(-1, 'days').format()}": "2016-03-12T03:00:00-08:00",
        "${moment(session_time).add(1, 'hours').format()}": "2016-03-13T04:00:00-07:00",
        "${moment(session_time).add(-1, 'hours').format()}": "2016-03-13T01:00:00-08:00",
        "${moment(session_time).utc().format()}": "2016-03-13T10:00:00Z",
        '${moment(session_time).format("YYYY-MM-DD HH:mm:ss Z")}': "2016-03-13 03:00:00 -07:00",
    }
    assert {t: engine.render(t, p, tz) for t in cases} == cases


def test_moment_across_los_angeles_dst_end(engine: TemplateEngine) -> None:
    tz = "America/Los_Angeles"
    p = params(tz, session_time="2016-11-06T08:30:00Z")  # 01:30 PDT, the first of two 01:30s
    assert engine.render("${moment(session_time).format()}", p, tz) == "2016-11-06T01:30:00-07:00"
    assert (
        engine.render("${moment(session_time).add(1,'hours').format()}", p, tz) == "2016-11-06T01:30:00-08:00"
    )
    assert (
        engine.render("${moment(session_time).add(1,'days').format()}", p, tz) == "2016-11-07T01:30:00-08:00"
    )


DST_ZONES = [
    "America/Los_Angeles",
    "America/New_York",
    "Europe/London",
    "Europe/Berlin",
    "Australia/Sydney",
    "Australia/Lord_Howe",  # 30-minute DST
    "America/St_Johns",  # -03:30 / -02:30
    "Asia/Tokyo",
    "Pacific/Apia",  # skipped a whole day in 2011
]


def _spec_utc_ms(zone: ZoneInfo, local: datetime) -> int:
    """ECMAScript's UTC(local): the offset valid at that wall time, or (gap/overlap) the earlier one.

    That is Python's fold=0 rule, so zoneinfo is the reference.
    """
    return (local.replace(tzinfo=zone, fold=0) - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(
        milliseconds=1
    )


def _wall_time(zone: ZoneInfo, ms: int) -> datetime:
    utc = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)
    return utc.astimezone(zone).replace(tzinfo=None)


def _transitions(zone: ZoneInfo, year: int) -> list[datetime]:
    out = []
    t = datetime(year, 1, 1, tzinfo=UTC)
    prev = t.astimezone(zone).utcoffset()
    while t.year == year:
        t += timedelta(minutes=30)
        off = t.astimezone(zone).utcoffset()
        if off != prev:
            out.append(t.astimezone(zone).replace(tzinfo=None))
            prev = off
    return out


@pytest.mark.parametrize("tz", DST_ZONES)
def test_local_time_to_utc_follows_ecmascript_around_transitions(engine: TemplateEngine, tz: str) -> None:
    zone = ZoneInfo(tz)
    years = [2011, 2016] if tz == "Pacific/Apia" else [2016]
    cases: list[datetime] = []
    for year in years:
        for tr in _transitions(zone, year) or [datetime(year, 3, 27, 2, 0)]:
            start = tr - timedelta(hours=4)
            cases += [start + timedelta(minutes=15 * i) for i in range(8 * 4 + 1)]
    fields = [[c.year, c.month - 1, c.day, c.hour, c.minute] for c in cases]
    text = "${cases.map(function (c) { return new Date(c[0], c[1], c[2], c[3], c[4]).getTime() })}"
    got = json.loads(engine.render(text, {"cases": fields}, tz))
    expected = [_spec_utc_ms(zone, c) for c in cases]
    assert got == expected

    # Local setters (moment's add(1, 'days') uses setDate) resolve the new wall time the same way.
    text = (
        "${starts.map(function (u) { var d = new Date(u); d.setDate(d.getDate() + 1); return d.getTime() })}"
    )
    got = json.loads(engine.render(text, {"starts": expected}, tz))
    tomorrow = [_spec_utc_ms(zone, _wall_time(zone, u) + timedelta(days=1)) for u in expected]
    assert got == tomorrow


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    tz=st.sampled_from(DST_ZONES),
    local=st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2037, 12, 31)),
    field=st.integers(0, 6),
    value=st.integers(-40, 40),
)
def test_local_setters_match_the_spec(
    engine: TemplateEngine, tz: str, local: datetime, field: int, value: int
) -> None:
    zone = ZoneInfo(tz)
    local = local.replace(microsecond=local.microsecond // 1000 * 1000)
    start = _spec_utc_ms(zone, local)
    setter = ["setFullYear", "setMonth", "setDate", "setHours", "setMinutes", "setSeconds", "setMilliseconds"]
    arg = value + 2000 if field == 0 else value
    text = "${(function () { var d = new Date(start); d." + setter[field] + "(arg); return d.getTime() })()}"
    got = int(engine.render(text, {"start": start, "arg": arg}, tz))
    # The instant's real wall time, with one field replaced; out-of-range fields carry over.
    real = _wall_time(zone, start)
    parts = [
        real.year,
        real.month - 1,
        real.day,
        real.hour,
        real.minute,
        real.second,
        real.microsecond // 1000,
    ]
    parts[field] = arg
    naive = datetime(parts[0] + parts[1] // 12, parts[1] % 12 + 1, 1) + timedelta(
        days=parts[2] - 1, hours=parts[3], minutes=parts[4], seconds=parts[5], milliseconds=parts[6]
    )
    assert got == _spec_utc_ms(zone, naive)


def test_date_constructor_stays_a_date(engine: TemplateEngine) -> None:
    text = (
        "${[new Date(0) instanceof Date, Object.prototype.toString.call(new Date(2016, 0)),"
        " typeof Date(), Date.length, new Date(2016, 0).constructor === Date, new Date(50, 0).getFullYear()]}"
    )
    assert engine.render(text, params()) == '[true,"[object Date]","string",7,true,1950]'


def test_moment_parses_local_times_in_gaps_and_overlaps(engine: TemplateEngine) -> None:
    la = "America/Los_Angeles"
    cases = {
        '${moment("2016-03-13 02:30").format()}': "2016-03-13T03:30:00-07:00",  # gap: moved forward
        '${moment("2016-03-13 03:00").format()}': "2016-03-13T03:00:00-07:00",
        '${moment("2016-03-13 05:00").subtract(1, "minutes").format()}': "2016-03-13T04:59:00-07:00",
        '${moment("2016-11-06 01:30").format()}': "2016-11-06T01:30:00-07:00",  # overlap: the first
        '${moment("2016-11-06 00:30").add(2, "hours").format()}': "2016-11-06T01:30:00-08:00",
    }
    assert {t: engine.render(t, params(la), la) for t in cases} == cases
    london = "Europe/London"
    assert engine.render('${moment("2016-03-27 01:30").format()}', params(london), london) == (
        "2016-03-27T02:30:00+01:00"
    )
    assert engine.render('${moment("2016-10-30 01:30").format()}', params(london), london) == (
        "2016-10-30T01:30:00+01:00"
    )


def test_js_date_uses_the_workflow_zone(engine: TemplateEngine) -> None:
    text = "${new Date(0).getHours()} ${new Date(0).getTimezoneOffset()}"
    assert engine.render(text, params(), "Asia/Tokyo") == "9 -540"
    assert engine.render(text, params(), "UTC") == "0 0"


def test_moment_now_is_not_empty(engine: TemplateEngine) -> None:
    out = engine.render("${moment().format()}", params())
    assert out.startswith(("20", "21")) and out.endswith("+00:00")


def test_moment_version_is_digdags(engine: TemplateEngine) -> None:
    assert engine.render("${moment.version}", params()) == "2.21.0"


def test_process_time_zone_is_restored(engine: TemplateEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "UTC0")
    time.tzset()
    engine.render("${timezone}", params(), "Asia/Tokyo")
    assert os.environ["TZ"] == "UTC0"
    assert time.localtime(0).tm_hour == 0
    monkeypatch.delenv("TZ")
    engine.render("${timezone}", params(), "Asia/Tokyo")
    assert "TZ" not in os.environ
    time.tzset()


@pytest.mark.parametrize(
    ("tz", "expected"),
    [
        ("UTC", "UTC0"),
        ("+00:00", "UTC0"),
        ("+09:00", "<+0900>-09:00"),
        ("-08:00", "<-0800>+08:00"),
        ("+0530", "<+0530>-05:30"),
        ("UTC+01:00", "<+0100>-01:00"),
        ("+9", "<+0900>-09:00"),
        ("GMT-9", "<-0900>+09:00"),
        ("+05:30:15", "<+053015>-05:30:15"),
        ("Z", "UTC0"),
    ],
)
def test_posix_tz_for_offsets(tz: str, expected: str) -> None:
    assert posix_tz(tz) == expected


def test_posix_tz_for_names() -> None:
    assert posix_tz("Asia/Tokyo").startswith(":/")
    assert posix_tz("Asia/Tokyo").endswith("Asia/Tokyo")


@pytest.mark.parametrize("tz", ["No/Such_Zone", "../../etc/passwd", "+25:00", "", "Asia/Tokyo; rm", "JST"])
def test_unknown_time_zone_is_an_error(engine: TemplateEngine, tz: str) -> None:
    with pytest.raises(TemplateError, match="Unknown timezone"):
        engine.render("${1}", params(), tz)


# ---- Java String interop ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('${"aaa".replaceAll("a","A")}', "AAA"),
        ('${"a.b.c".replaceAll(".", "_")}', "_____"),  # Java: the first argument is a regex
        ('${"a.b.c".replaceAll("\\\\.", "_")}', "a_b_c"),
        ('${"2016-01-02".replaceAll("(\\\\d+)-(\\\\d+)-(\\\\d+)", "$3/$2/$1")}', "02/01/2016"),
        ('${"cost".replaceAll("cost", "\\\\$5")}', "$5"),
        ('${"aXbX".replaceFirst("X", "-")}', "a-bX"),
        ('${"Hello".replaceAll("(?i)h", "J")}', "Jello"),
        ('${"abc".contains("b")}', "true"),
        ('${"abc".matches("a.c")}', "true"),
        ('${"abcd".matches("a.c")}', "false"),
        ('${"".isEmpty()}', "true"),
        ('${"ABC".equalsIgnoreCase("abc")}', "true"),
        ('${"abc".equals("abc")} ${"abc".equals("abd")}', "true false"),
        ('${"apple".compareTo("banana")} ${"b".compareTo("b")} ${"ab".compareTo("a")}', "-1 0 1"),
        ('${"ABC".compareToIgnoreCase("abd")}', "-1"),
        ("${session_time.replaceAll('-', '').substring(0, 8)}", "20160102"),
    ],
)
def test_java_string_methods(engine: TemplateEngine, text: str, expected: str) -> None:
    assert engine.render(text, params()) == expected


def test_java_replacement_errors(engine: TemplateEngine) -> None:
    with pytest.raises(TemplateError, match="IllegalArgumentException"):
        engine.render('${"a".replaceAll("a", "$")}', params())
    with pytest.raises(TemplateError, match="No group 2"):
        engine.render('${"a".replaceAll("(a)", "$2")}', params())


def test_java_string_methods_are_not_enumerable(engine: TemplateEngine) -> None:
    text = "${(function(){var k=[]; for (var x in 'ab') k.push(x); return k})()}"
    assert engine.render(text, params()) == '["0","1"]'


# ---- limits and isolation -----------------------------------------------------------------------


def test_infinite_loop_hits_the_time_limit_and_engine_recovers() -> None:
    eng = TemplateEngine(time_limit_s=0.2)
    start = time.monotonic()
    with pytest.raises(TemplateError, match="time limit"):
        eng.render("${(function(){while(true){}})()}", params())
    assert time.monotonic() - start < 5
    assert eng.render("${timezone}", params()) == "UTC"
    with pytest.raises(TemplateError, match="time limit"):
        eng.eval_config({"a": "${timezone}", "b": "${(function(){for(;;){}})()}"}, params(), "UTC")
    assert eng.eval_config({"a": "${timezone}", "b": "${a}"}, params(), "UTC") == {"a": "UTC", "b": "UTC"}


def test_catching_the_interrupt_is_impossible() -> None:
    eng = TemplateEngine(time_limit_s=0.2)
    with pytest.raises(TemplateError, match="time limit"):
        eng.render("${(function(){ try { while(true){} } catch (e) { return 'caught' } })()}", params())


def test_memory_limit_and_engine_recovers() -> None:
    eng = TemplateEngine(memory_limit_bytes=16 << 20)
    with pytest.raises(TemplateError, match="memory limit"):
        eng.render("${'x'.repeat(1 << 26).length}", params())
    assert eng.render("${'x'.repeat(1000).length}", params()) == "1000"


def test_large_templates_fit_the_memory_limit() -> None:
    # Operators render whole script files; many distinct large ones must not pile up in memory.
    eng = TemplateEngine(memory_limit_bytes=16 << 20)
    for i in range(30):
        text = f"-- {i}\n" + "select 1;\n" * 20000 + "-- ${timezone}"
        assert eng.render(text, params()).endswith("-- UTC")


def test_stack_overflow_is_a_template_error(engine: TemplateEngine) -> None:
    with pytest.raises(TemplateError, match="stack overflow"):
        engine.render("${(function f(){ return f() })()}", params())
    assert engine.render("${1}", params()) == "1"


def test_implicit_globals_do_not_leak_between_evaluations(engine: TemplateEngine) -> None:
    assert engine.render("${leaked = 5}", params()) == "5"
    assert engine.render("${typeof leaked}", params()) == "undefined"


def test_replaced_globals_are_restored(engine: TemplateEngine) -> None:
    assert engine.render("${(moment = null, JSON = 1, 'x')}", params()) == "x"
    assert engine.render("${(delete Math, 'y')}", params()) == "y"
    text = "${(Object.defineProperty = Object.getOwnPropertyNames = Reflect = String = null, 'z')}"
    assert engine.render(text, params()) == "z"
    with pytest.raises(TemplateError, match="TypeError"):
        engine.render("${(JSON = 1, 5)}", params())  # the template itself needs JSON.stringify
    text = "${typeof moment} ${typeof JSON.parse} ${Math.max(1, 2)} ${typeof Reflect} ${String(1)}"
    assert engine.render(text, params()) == "function function 2 object 1"


def test_param_mutation_does_not_leak_between_evaluations(engine: TemplateEngine) -> None:
    p = params(items=[1])
    assert engine.render("${items.push(2), items}", p) == "[1,2]"
    assert engine.render("${items}", p) == "[1]"
    got = engine.eval_config({"a": "${items.push(3), items}", "b": "${items}"}, p, "UTC")
    assert got == {"a": "[1,3]", "b": "[1]"}


def test_params_can_shadow_globals(engine: TemplateEngine) -> None:
    assert engine.render("${moment}", params(moment="mine")) == "mine"
    assert engine.render("${typeof moment}", params()) == "function"


def test_params_are_not_code(engine: TemplateEngine) -> None:
    evil = "'); throw new Error('injected'); ('"
    assert engine.render("${v}", params(v=evil)) == evil
    assert engine.render("${k}", {"k": '"}) + 1 + ({"'}) == '"}) + 1 + ({"'


def test_proto_key_in_params(engine: TemplateEngine) -> None:
    assert engine.render("${__proto__}", {"__proto__": {"a": 1}}) == '{"a":1}'
    got = engine.eval_config({"__proto__": "x", "b": "${__proto__}"}, {}, "UTC")
    assert got == {"__proto__": "x", "b": "x"}


def test_concurrent_renders_in_different_zones() -> None:
    eng = TemplateEngine()
    errors: list[str] = []

    def work(tz: str, expected: str) -> None:
        for _ in range(50):
            got = eng.render('${moment(session_time).format("Z")}', params(tz), tz)
            if got != expected:
                errors.append(f"{tz}: {got}")

    threads = [
        threading.Thread(target=work, args=("Asia/Tokyo", "+09:00")),
        threading.Thread(target=work, args=("America/Los_Angeles", "-08:00")),
        threading.Thread(target=work, args=("UTC", "+00:00")),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


# ---- locating moment.js -------------------------------------------------------------------------


def test_missing_moment_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(expr, "_PACKAGE_DIR", tmp_path / "pkg")
    monkeypatch.setattr(expr, "_REPO_ROOT", tmp_path / "repo")
    monkeypatch.delenv("KUDIG_MOMENT_JS", raising=False)
    with pytest.raises(KudigError, match="make setup"):
        expr.find_moment_js()


def test_moment_search_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(expr, "_PACKAGE_DIR", tmp_path / "pkg")
    monkeypatch.setattr(expr, "_REPO_ROOT", tmp_path / "repo")
    env_file = tmp_path / "env.js"
    env_file.write_text("// env")
    monkeypatch.setenv("KUDIG_MOMENT_JS", str(env_file))
    assert expr.find_moment_js() == env_file
    npm = tmp_path / "repo" / "node_modules" / "moment" / "min" / "moment.min.js"
    npm.parent.mkdir(parents=True)
    npm.write_text("// npm")
    assert expr.find_moment_js() == npm
    vendored = tmp_path / "pkg" / "js" / "vendor" / "moment.min.js"
    vendored.parent.mkdir(parents=True)
    vendored.write_text("// vendored")
    assert expr.find_moment_js() == vendored


def test_invalid_limits() -> None:
    with pytest.raises(ValueError):
        TemplateEngine(time_limit_s=0)
    with pytest.raises(ValueError):
        TemplateEngine(memory_limit_bytes=0)


# ---- properties ---------------------------------------------------------------------------------

ANY_TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=60)
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FAST
@given(text=ANY_TEXT.filter(lambda s: "$" not in s))
def test_text_without_dollar_is_unchanged(engine: TemplateEngine, text: str) -> None:
    assert engine.render(text, params()) == text


@FAST
@given(text=ANY_TEXT)
def test_escaped_text_renders_to_the_original(engine: TemplateEngine, text: str) -> None:
    # Doubling every "$" turns any text into a literal, unless "${" appears, which digdag
    # evaluates even after "$$"; make sure "{" never follows a "$" by spacing them.
    safe = text.replace("${", "$ {")
    assert engine.render(safe.replace("$", "$$"), params()) == safe


@FAST
@given(text=st.text(st.sampled_from("$${}ab'\\\n"), max_size=20).filter(lambda s: "${" not in s))
def test_dollar_shortcut_matches_the_js_path(engine: TemplateEngine, text: str) -> None:
    with engine._lock:
        via_js = engine._call(text, "{}", None)
    assert engine.render(text, params()) == via_js


@FAST
@given(
    text=st.lists(
        st.one_of(
            st.sampled_from(["$", "${", "}", "{", "$$", "secret:", "'", "\\", "\n", "(", ")", "timezone"]),
            st.characters(codec=None, exclude_categories=()),
        ),
        max_size=30,
    ).map("".join)
)
def test_render_raises_only_template_errors(engine: TemplateEngine, text: str) -> None:
    try:
        out = engine.render(text, params())
    except TemplateError:
        return
    assert isinstance(out, str)


@FAST
@given(
    value=st.recursive(
        st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=10),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
        max_leaves=10,
    )
)
def test_string_params_round_trip(engine: TemplateEngine, value: Any) -> None:
    if isinstance(value, str):
        assert engine.render("${v}", params(v=value)) == value
    elif value is None:
        assert engine.render("${v}", params(v=value)) == ""
    else:
        import json

        rendered = engine.render("${v}", params(v=value))
        assert json.loads(rendered) == value
