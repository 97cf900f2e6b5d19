"""Probes shared by the differential tests of the JS time zone (test_expr_tz_*.py).

Each probe is a template that maps a list of time values (`us`, epoch milliseconds) to a list of
result lists, so one render covers many instants; the tests run it through the current engine and
through the oracle (expr_oracle, the TZ-based implementation) and compare the output text.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from kudig.timezones import parse_timezone

#: Zones compared: DST in both hemispheres, 30-minute DST (Lord_Howe), odd offsets (Kolkata,
#: Chatham +12:45), Ramadan DST (Casablanca), negative DST (Dublin), fixed offsets.
ZONES = [
    "America/Los_Angeles",
    "Europe/London",
    "Asia/Tokyo",
    "Australia/Lord_Howe",
    "Asia/Kolkata",
    "Pacific/Chatham",
    "America/Sao_Paulo",
    "Africa/Casablanca",
    "UTC",
    "+09:00",
    "-03:30",
    "Europe/Dublin",
    "Pacific/Apia",
]

#: Every moment 2.21 format token (slow: about 1.5 ms per call).
MOMENT_FORMAT = (
    "YYYY YY Y Q M MM MMM MMMM D DD Do DDD DDDD d do dd ddd dddd e E w ww wo W WW Wo "
    "gg gggg GG GGGG A a H HH h hh k kk m mm s ss S SS SSS SSSS Z ZZ z zz X x "
    "LT LTS L LL LLL LLLL l ll lll llll"
)
#: The tokens that read different fields (for sweeps over many instants).
MOMENT_FORMAT_CORE = "YYYY-MM-DD HH:mm:ss.SSS Z ZZ z dddd Do DDDD d E W GGGG Q A h k X x LLLL"

# Everything a Date shows in local time, for each instant.
DATE_PROBE = (
    "${us.map(function (u) { var d = new Date(u); return ["
    "d.getFullYear(), d.getYear(), d.getMonth(), d.getDate(), d.getDay(), d.getHours(),"
    " d.getMinutes(), d.getSeconds(), d.getMilliseconds(), d.getTimezoneOffset(),"
    " d.toString(), d.toDateString(), d.toTimeString(), d.toLocaleString(), d.toLocaleDateString(),"
    " d.toLocaleTimeString(), String(d), d + '', d.toUTCString(), d.valueOf(),"
    " Date.parse(d.toString()), Date.parse(d.toUTCString()), new Date(d.toString()).getTime()"
    "] })}"
)

# moment in local mode: formatting, arithmetic, start/end of units.
MOMENT_PROBE = (
    "${us.map(function (u) { var m = moment(u); return ["
    "m.format(fmt), m.format(), m.toString(), m.utcOffset(), m.isDST(), m.toDate().toString(),"
    " m.clone().add(1, 'days').format(), m.clone().subtract(1, 'days').format(),"
    " m.clone().add(1, 'months').format(), m.clone().subtract(1, 'years').format(),"
    " m.clone().add(3, 'hours').format(), m.clone().add(90, 'minutes').format(),"
    " m.clone().startOf('day').format(), m.clone().endOf('day').format('x Z'),"
    " m.clone().startOf('week').format(), m.clone().startOf('month').format(),"
    " m.clone().endOf('month').format(), m.clone().startOf('year').format(),"
    " m.clone().startOf('hour').format(), m.clone().utc().format(), m.clone().local().format(),"
    " m.diff(moment(0), 'days'), m.clone().day(3).format(), m.clone().date(31).format(),"
    " m.clone().hour(2).minute(30).format(), m.dayOfYear(), m.week(), m.isoWeek(),"
    " moment(m.format('YYYY-MM-DD HH:mm')).format(), moment(m.format('YYYY-MM-DDTHH:mm:ss.SSS')).format(),"
    " moment(m.format('YYYY-MM-DD')).format(), moment(m.format('YYYY-MM-DD HH:mm'), 'YYYY-MM-DD HH:mm').format(),"
    " moment(m.format()).format(), moment.utc(u).local().format('LLLL Z')"
    "] })}"
)

# Local date-times -> time values: the constructor with fields, parsing, setters.
LOCAL_PROBE = (
    "${us.map(function (u) {"
    " var d = new Date(u); var y = d.getFullYear(), mo = d.getMonth(), da = d.getDate(),"
    " h = d.getHours(), mi = d.getMinutes(), s = d.getSeconds(), ms = d.getMilliseconds();"
    " function p2(n) { return (n < 10 ? '0' : '') + n; }"
    " function p3(n) { return (n < 10 ? '00' : n < 100 ? '0' : '') + n; }"
    " var ys = y >= 0 && y <= 9999 ? ('000' + y).slice(-4) : (y < 0 ? '-' : '+') + ('00000' + Math.abs(y)).slice(-6);"
    " var day = ys + '-' + p2(mo + 1) + '-' + p2(da);"
    " var local = day + 'T' + p2(h) + ':' + p2(mi) + ':' + p2(s);"
    " function set(name, args) { var c = new Date(u); var r = c[name].apply(c, args); return [r, c.getTime()]; }"
    " var nan = new Date(NaN);"
    " return ["
    "  new Date(y, mo, da, h, mi, s, ms).getTime(), new Date(y, mo, da, h + 1).getTime(),"
    "  new Date(y, mo, da, h, mi + 30).getTime(), new Date(y, mo, da).getTime(), new Date(y, mo).getTime(),"
    "  Date.parse(local), Date.parse(local + '.' + p3(ms)), Date.parse(day + 'T' + p2(h) + ':' + p2(mi)),"
    "  Date.parse(day + 'T' + p2(h)), Date.parse(day), Date.parse(local + 'Z'), Date.parse(local + '+09:00'),"
    "  Date.parse(local + '-0330'), new Date(local).getTime(), new Date(local).toString(),"
    "  Date.parse(day + 'T' + p2(h + 1) + ':30:00'), Date.parse(day + 'T24:00:00'),"
    "  set('setHours', [h + 1]), set('setHours', [h - 1, 30]), set('setDate', [da + 1]),"
    "  set('setMonth', [mo + 1]), set('setFullYear', [y + 1]), set('setMinutes', [mi + 30]),"
    "  set('setSeconds', [s + 3600]), set('setMilliseconds', [ms + 86400000]),"
    "  set('setYear', [y - 1900]), set('setYear', [y + 1]), set('setYear', [NaN]), set('setYear', []),"
    "  [nan.setYear(99), nan.getTime()], [new Date(NaN).setFullYear(2016), new Date(NaN).getFullYear()],"
    "  new Date(NaN).toString(), new Date(NaN).getTimezoneOffset(), new Date(NaN).getHours()"
    " ]; })}"
)

PROBES = {"date": DATE_PROBE, "moment": MOMENT_PROBE, "local": LOCAL_PROBE}

#: Local date-time strings whose meaning depends on the zone (or explicitly does not).
PARSE_STRINGS = [
    "2016-03-13T02:30:00",
    "2016-03-13T03:00:00",
    "2016-03-13T01:59:59.999",
    "2016-11-06T01:30:00",
    "2016-03-27T01:30",
    "2016-10-30T01:30",
    "2016-04-03T02:30:00",
    "2016-10-02T02:00:00",
    "2016-03-13T03",
    "+002016-03-13T03:00:00",
    "-000001-01-01T00:00:00",
    "1900-01-01T00:00:00",
    "1901-12-13T20:45:51",
    "2038-01-19T03:14:08",
    "2100-03-01T00:00:00",
    "+275760-09-13T00:00:00",
    "+275760-09-13T05:00:00",
    "+275760-09-12T20:00:00",
    "-271821-04-20T00:00:00",
    "-271821-04-19T20:00:00",
    "-271821-04-20T05:00:00",
    "2016-13-45T25:61:61",
    "2016-03-13T02:30:00.5",
    "2016-03-13T02:30:00.123456",
    "2016-03-13",
    "2016-03",
    "2016",
    "2016-03-13T03:00:00Z",
    "2016-03-13T03:00:00+09:00",
    "2016-03-13T03:00:00-0330",
    "2016-03-13T03:00:00+09",
    "2016-03-13 03:00:00",
    "2016/03/13 03:00",
    "Sun Mar 13 2016 03:00:00",
    "Sun Mar 13 2016 03:00:00 GMT-0800",
    "Sun, 13 Mar 2016 10:00:00 GMT",
    "13 Mar 2016 03:00:00",
    "Mar 13 2016 03:00:00 UTC",
    "Jan 30 2024 10:00",
    "March 13, 2016",
    "",
    "T",
    "2016-03-13TZ",
    "2016-03-13T03:00:00ZZ",
    "not a date",
]

PARSE_PROBE = (
    "${strings.map(function (s) { return [Date.parse(s), new Date(s).getTime(), new Date(s).toString(),"
    " moment(s).isValid() ? moment(s).format() : 'invalid', new Date({ toString: function () { return s; } }).getTime(),"
    " new Date({ valueOf: function () { return s; } }).getTime()] })}"
)


def transitions(zone: str, first_year: int, last_year: int) -> list[int]:
    """UTC instants (epoch ms) where the zone's offset changes, found by scanning zoneinfo daily.

    Independent of kudig.expr's own tables; transitions less than a day apart may be missed.
    """
    tz = parse_timezone(zone)
    if not isinstance(tz, ZoneInfo):
        return []

    def offset(t: datetime) -> timedelta | None:
        return t.astimezone(tz).utcoffset()

    out = []
    t = datetime(first_year, 1, 1, tzinfo=UTC)
    end = datetime(last_year + 1, 1, 1, tzinfo=UTC)
    previous = offset(t)
    day = timedelta(days=1)
    while t < end:
        current = offset(t + day)
        if current != previous:
            lo, hi = t, t + day
            while hi - lo > timedelta(seconds=1):
                mid = lo + (hi - lo) / 2
                mid = mid.replace(microsecond=0)
                if offset(mid) == previous:
                    lo = mid
                else:
                    hi = mid
            out.append(int(hi.timestamp()) * 1000)
            previous = current
        t += day
    return out
