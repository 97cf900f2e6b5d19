"""`${...}` evaluation with digdag's exact semantics.

digdag evaluates every string of a task's config that contains `$` as an underscore-style JavaScript
template (its `digdag.js`) with moment.js 2.21.0 loaded and the JS local time zone set to the workflow's
`timezone`. Workflows depend on the details (`${1}` is the string `"1"`, objects come out as compact
JSON, `$$` is `$`, an unclosed `${v` stays literal, `${secret:...}` is left for the operator, nested
objects see raw parameters), so kudig runs the same algorithm in an embedded JavaScript engine
(QuickJS) instead of inventing its own expression language.

Why it is built the way it is:

* One QuickJS context per `TemplateEngine`, reused: a task start evaluates its whole config, and a
  fresh context (loading moment.js) costs milliseconds while a render in a warm one costs
  microseconds. digdag used a fresh context per evaluation, so we remove global variables an
  expression creates after each evaluation and rebuild the context after a time/memory limit hit.
* The workflow time zone lives on the JS side; the process's `TZ` is never touched. QuickJS reads
  local time from the C library (the process's TZ, which every thread shares and subprocesses
  inherit), so every Date method that depends on local time is replaced: the getters,
  getTimezoneOffset, the toString/toLocale*String family, `Date()`, the constructor with fields, the
  local setters and Date.parse of local ISO date-times. They compute local time from a table of the
  zone's UTC offsets built in Python from zoneinfo (the same TZif files the C library reads) and sent
  once per zone and context. A table rather than a Python callback because the binding refuses calls
  into Python while a time limit is set. The replacements reproduce what QuickJS printed and computed
  with TZ set, quirks included (tests/unit/test_expr_tz_differential.py compares them with the old
  TZ-based implementation). As before, the constructor with fields and the local setters convert
  local time to UTC with the ECMAScript rule that GraalJS follows, because QuickJS's is wrong near
  DST transitions and moment's parsing of local times and `add(1, 'days')` go through them;
  Date.parse and setYear keep QuickJS's rule, as they always had.
* QuickJS contexts are not thread-safe, so an engine serialises its evaluations with its own lock;
  engines share nothing, so threads that need to evaluate in parallel use one engine each.
* Values cross the Python/JS boundary only as JSON text (never spliced into JS source), so params
  cannot inject code and strings with lone surrogates survive the trip.
* digdag on Java 11+ (GraalJS, nashorn-compat) exposes `java.lang.String` methods on JS strings, and
  workflows use `"a-b".replaceAll("-", "_")` with Java's regex semantics; we install those methods.
"""

from __future__ import annotations

import calendar
import json
import logging
import os
import re
import struct
import threading
import zoneinfo
from collections.abc import Mapping
from datetime import date, datetime, timedelta, tzinfo
from functools import lru_cache
from pathlib import Path
from typing import Any

import quickjs

from kudig.errors import KudigError
from kudig.timezones import parse_timezone

__all__ = ["NO_EVAL_KEYS", "TemplateEngine", "TemplateError", "find_moment_js", "posix_tz"]

log = logging.getLogger(__name__)

#: Keys whose values are copied without evaluation at any level: the bodies of `if>` and
#: `for_each>`-style operators are evaluated later, per generated task, with their own params;
#: `_error` / `_check` run as separate tasks after this one.
NO_EVAL_KEYS = frozenset({"_do", "_else_do", "_error", "_check"})

#: The moment.js version digdag ships; others format some tokens differently.
MOMENT_VERSION = "2.21.0"

_PACKAGE_DIR = Path(__file__).resolve().parent
_REPO_ROOT = _PACKAGE_DIR.parent


class TemplateError(KudigError):
    """A `${...}` expression failed: JS error, time/memory limit, or unserialisable params.

    digdag fails the task without retry on these (TemplateException), so callers should too.
    """


# --------------------------------------------------------------------------------------------------
# moment.js and the runtime JS
# --------------------------------------------------------------------------------------------------


def find_moment_js() -> Path:
    """Locate moment.min.js: the packaged copy, else the npm checkout, else $KUDIG_MOMENT_JS.

    kudig/js/vendor/moment.min.js is committed (byte-identical to npm's moment 2.21.0, checked by
    hack/verify-moment) and shipped as package data, so checkouts, wheels and images all carry it.
    """
    candidates = [
        _PACKAGE_DIR / "js" / "vendor" / "moment.min.js",
        _REPO_ROOT / "node_modules" / "moment" / "min" / "moment.min.js",
    ]
    env = os.environ.get("KUDIG_MOMENT_JS")
    if env:
        candidates.append(Path(env))
    for path in candidates:
        if path.is_file():
            return path
    raise KudigError(
        "moment.js is missing (looked in "
        + ", ".join(str(p) for p in candidates)
        + "); it ships with kudig: reinstall it (in a checkout: `git restore kudig/js/vendor`, `make setup`)"
        + " or set KUDIG_MOMENT_JS to a moment.min.js 2.21.0"
    )


@lru_cache(maxsize=1)
def _moment_source() -> tuple[str, str]:
    path = find_moment_js()
    return str(path), path.read_text(encoding="utf-8")


# Our runtime, evaluated once per context after moment.js. It defines the globals __kudig_render
# (textJson, paramsJson, localJson) and __kudig_snapshot(); see the module docstring for why.
_RUNTIME_JS = r"""
(function (global) {
  'use strict';

  // Built-ins the runtime itself needs, captured so an expression that replaces them
  // (`JSON = 1`) breaks only its own evaluation, not the bookkeeping that undoes it.
  var toJson = JSON.stringify;
  var fromJson = JSON.parse;
  var toStr = String;
  var create = Object.create;
  var defineProperty = Object.defineProperty;
  var ownNames = Object.getOwnPropertyNames;
  var ownDescriptor = Object.getOwnPropertyDescriptor;
  var hasOwn = Object.prototype.hasOwnProperty;
  var objectToString = Object.prototype.toString;
  var apply = Reflect.apply;
  var NewFunction = Function;
  function callMethod(fn, self, arg) { return apply(fn, self, arg === undefined ? [] : [arg]); }

  // ---- the template compiler (digdag's digdag.js, extended syntax) ----

  var QUOTE = { "'": "\\'", '\\': '\\\\', '\r': '\\r', '\n': '\\n',
                '\u2028': '\\u2028', '\u2029': '\\u2029' };
  var NEEDS_QUOTING = /['\\\r\n\u2028\u2029]/g;
  var DOUBLE_DOLLAR = /\$\$/g;

  function quoteLiteral(text) {
    return text
      .replace(DOUBLE_DOLLAR, function () { return '$'; })
      .replace(NEEDS_QUOTING, function (c) { return QUOTE[c]; });
  }

  function isLowerAscii(c) { return c >= 'a' && c <= 'z'; }

  // Index of the next "${" that starts an expression: at least one character must follow, and
  // "${word:" (operator-defined templates such as ${secret:key}) is skipped.
  function nextOpening(input, from) {
    var n = input.length;
    for (var i = input.indexOf('${', from); i >= 0; i = input.indexOf('${', i + 1)) {
      if (i + 2 >= n) { return -1; }
      var j = i + 2;
      while (j < n && isLowerAscii(input.charAt(j))) { j++; }
      if (!(j > i + 2 && j < n && input.charAt(j) === ':')) { return i; }
    }
    return -1;
  }

  var EMIT_PREFIX = "'+\n((__t=(";
  var EMIT_SUFFIX = "))==null?'':(typeof __t==\"string\"?__t:JSON.stringify(__t)))+\n'";

  function compile(input) {
    var code = "__p+='";
    var pos = 0;
    var n = input.length;
    while (pos < n) {
      var open = nextOpening(input, pos);
      if (open < 0) { code += quoteLiteral(input.slice(pos)); break; }
      code += quoteLiteral(input.slice(pos, open));
      // The expression ends at the first '}' that closes no '{' opened inside it.
      var depth = 0;
      var close = -1;
      for (var k = open + 2; k < n; k++) {
        var c = input.charAt(k);
        if (c === '{') { depth++; }
        else if (c === '}') {
          if (depth === 0) { close = k; break; }
          depth--;
        }
      }
      if (close < 0) { code += quoteLiteral(input.slice(open)); break; }
      var expr = input.slice(open + 2, close);
      if (expr) { code += EMIT_PREFIX + expr + EMIT_SUFFIX; }
      pos = close + 1;
    }
    code += "';\n";
    var body = "var __t,__p='',__j=Array.prototype.join," +
      "print=function(){__p+=__j.call(arguments,'');};\n" + code + "return __p;\n";
    return new NewFunction('with(this){\n' + body + '}\n');
  }

  // Compiled templates by text: a task's strings recur at every attempt and loop iteration.
  // Bounded by total text size, because the cache lives inside the memory limit.
  var compiled = create(null);
  var compiledChars = 0;
  var COMPILED_MAX_CHARS = 262144;

  function compiledTemplate(text) {
    var fn = compiled[text];
    if (fn === undefined) {
      fn = compile(text);
      if (text.length <= COMPILED_MAX_CHARS / 16) {
        if (compiledChars + text.length > COMPILED_MAX_CHARS) { compiled = create(null); compiledChars = 0; }
        compiled[text] = fn;
        compiledChars += text.length;
      }
    }
    return fn;
  }

  // ---- isolation between evaluations ----
  // digdag evaluated each string in a fresh context. We reuse one, so after each evaluation we
  // delete globals the expression created and put back globals it replaced or deleted (for
  // example `moment = null`). Changes inside objects (prototypes, moment's settings) are not undone.

  var baselineNames = [];
  var baselineValues = create(null);
  var baselineDescriptors = create(null);

  function snapshotGlobals() {
    var names = ownNames(global);
    baselineNames = [];
    for (var i = 0; i < names.length; i++) {
      var d = ownDescriptor(global, names[i]);
      if (!d.configurable && !d.writable) { continue; }  // NaN, undefined, ...: cannot change
      baselineNames.push(names[i]);
      baselineValues[names[i]] = global[names[i]];
      baselineDescriptors[names[i]] = d;
    }
  }

  function restoreGlobals() {
    var i, name;
    for (i = 0; i < baselineNames.length; i++) {
      name = baselineNames[i];
      if (global[name] !== baselineValues[name] || !callMethod(hasOwn, global, name)) {
        try { defineProperty(global, name, baselineDescriptors[name]); } catch (e) { /* frozen */ }
      }
    }
    var names = ownNames(global);
    for (i = 0; i < names.length; i++) {
      name = names[i];
      if (!(name in baselineDescriptors) && !isFixed(name)) {
        try { delete global[name]; } catch (e) { /* non-configurable */ }
      }
    }
  }

  function isFixed(name) {
    var d = ownDescriptor(global, name);
    return d !== undefined && !d.configurable && !d.writable;
  }

  // ---- render ----

  var paramsText = '{}';

  // "Name: message" of anything thrown, as GraalJS reports it to digdag.
  function describe(e) {
    try {
      if (e instanceof Error) {
        var name = toStr(e.name);
        var message = toStr(e.message);
        return name ? (message ? name + ': ' + message : name) : message;
      }
      return toStr(e);
    } catch (inner) {
      return callMethod(objectToString, e);
    }
  }

  // Returns JSON text: a string (the rendered template) or {"error": "Name: message"}.
  // zone, zoneTableJson, resetZones: the workflow time zone (see useZone).
  function render(textJson, paramsJson, localJson, zone, zoneTableJson, resetZones) {
    useZone(zone, zoneTableJson, resetZones);
    if (paramsJson !== null) { paramsText = paramsJson; }
    var text = fromJson(textJson);
    try {
      var fn = compiledTemplate(text);
      var scope = fromJson(paramsText);
      if (localJson !== null) {
        var local = fromJson(localJson);
        for (var key in local) {
          defineProperty(scope, key,
            { value: local[key], writable: true, enumerable: true, configurable: true });
        }
      }
      return toJson(toStr(callMethod(fn, scope)));
    } catch (e) {
      return toJson({ error: describe(e) });
    } finally {
      restoreGlobals();
    }
  }

  function hide(obj, name, fn) {
    defineProperty(obj, name, { value: fn, writable: true, enumerable: false, configurable: true });
  }

  // ---- Date in the workflow time zone ----
  // QuickJS reads local time from the C library (localtime_r, i.e. the process's TZ). We never
  // change TZ, so every Date method that depends on local time is replaced here and computes it
  // from a table of the workflow zone's UTC offsets that Python sends (_zone_table_json).
  // The replacements reproduce QuickJS's own algorithms and output formats exactly (the differential
  // tests compare them with QuickJS running under TZ), including its quirks: offsets are whole
  // minutes truncated toward zero (LMT +05:53:28 is +05:53), the offset at a negative time value is
  // looked up at the time truncated toward zero to whole seconds, toLocaleTimeString shows 11 AM as
  // "-1:00:00 AM", and Date.parse / setYear convert local time to UTC with QuickJS's own rule
  // (below). Only the constructor with fields and the other local setters follow ECMAScript, as
  // before (see localToUtc).

  var NativeDate = Date;
  var DateProto = NativeDate.prototype;
  var callBind = NewFunction.prototype.bind.bind(NewFunction.prototype.call);
  var nativeUTC = NativeDate.UTC;
  var nativeParse = NativeDate.parse;
  var nativeNow = NativeDate.now;
  var timeOf = callBind(DateProto.getTime);  // throws TypeError "not a Date object" on non-dates
  var setTimeOf = callBind(DateProto.setTime);
  var utcYearOf = callBind(DateProto.getUTCFullYear);
  var utcMonthOf = callBind(DateProto.getUTCMonth);
  var utcDateOf = callBind(DateProto.getUTCDate);
  var utcHoursOf = callBind(DateProto.getUTCHours);
  var utcMinutesOf = callBind(DateProto.getUTCMinutes);
  var utcSecondsOf = callBind(DateProto.getUTCSeconds);
  var utcMsOf = callBind(DateProto.getUTCMilliseconds);
  var utcDayOf = callBind(DateProto.getUTCDay);
  var floor = Math.floor;
  var DAY_MS = 86400000;
  var MAX_TIME = 8.64e15;
  var CYCLE_MS = 146097 * DAY_MS;  // 400 Gregorian years: same dates, same weekdays

  // Zone tables by name (at most what Python's _JS_ZONES_MAX allows; Python says when to drop
  // them) and the zone of the current evaluation.
  var zones = create(null);
  var zoneName = null;
  var zone = null;
  var fieldsTime = NaN;  // localFields' one-entry cache: moment reads several fields of one date
  var fieldsValue = null;

  // name: the zone's name; tableJson: its table if this context does not have it yet, else null;
  // reset: drop the other tables first.
  function useZone(name, tableJson, reset) {
    if (reset) { zones = create(null); }
    if (tableJson !== null) {
      var table = fromJson(tableJson);
      // A zone without transitions (UTC, +09:00) needs no lookup.
      table.fixed = table.starts.length === 0 && table.window === null ? table.before : null;
      table.windowEnd = table.window === null ? Infinity : table.window + table.cycle;
      zones[name] = table;
      zoneName = null;
    }
    if (name !== zoneName) {
      zone = zones[name];
      // Cannot happen while TemplateEngine's bookkeeping is right; an error is better than NaNs.
      if (zone === undefined) { throw new Error('kudig: no table for the time zone ' + name); }
      zoneName = name;
      fieldsTime = NaN;
      fieldsValue = null;
    }
  }

  // Minutes east of UTC at integer time value u (any magnitude): what QuickJS computes (negated
  // getTimezoneOffset) from the C library with TZ set to the zone.
  function zoneMinutes(u) {
    var z = zone;
    if (z.fixed !== null) { return z.fixed; }
    if (u >= z.windowEnd) { u -= floor((u - z.window) / z.cycle) * z.cycle; }
    var starts = z.starts;
    var lo = 0;
    var hi = starts.length;
    while (lo < hi) {  // the number of starts <= u
      var mid = (lo + hi) >> 1;
      if (starts[mid] <= u) { lo = mid + 1; } else { hi = mid; }
    }
    return lo === 0 ? z.before : z.offsets[lo - 1];
  }

  var scratch = new NativeDate(0);

  // [year, month, date, hours, minutes, seconds, ms, weekday, offset minutes] of time value t
  // (finite) in the workflow zone: QuickJS's get_date_fields with is_local. Shared; do not modify.
  function localFields(t) {
    if (t === fieldsTime) { return fieldsValue; }
    var tz = zoneMinutes(t);
    var local = t + tz * 60000;
    var years = 0;
    // The local time value may lie just outside the range a Date can hold.
    if (local > MAX_TIME) { local -= CYCLE_MS; years = 400; }
    else if (local < -MAX_TIME) { local += CYCLE_MS; years = -400; }
    setTimeOf(scratch, local);
    var f = [utcYearOf(scratch) + years, utcMonthOf(scratch), utcDateOf(scratch), utcHoursOf(scratch),
             utcMinutesOf(scratch), utcSecondsOf(scratch), utcMsOf(scratch), utcDayOf(scratch), tz];
    fieldsTime = t;
    fieldsValue = f;
    return f;
  }

  function localGetter(n) {
    return function () {
      var t = timeOf(this);
      return t !== t ? NaN : localFields(t)[n];
    };
  }
  hide(DateProto, 'getFullYear', localGetter(0));
  hide(DateProto, 'getMonth', localGetter(1));
  hide(DateProto, 'getDate', localGetter(2));
  hide(DateProto, 'getHours', localGetter(3));
  hide(DateProto, 'getMinutes', localGetter(4));
  hide(DateProto, 'getSeconds', localGetter(5));
  hide(DateProto, 'getMilliseconds', localGetter(6));
  hide(DateProto, 'getDay', localGetter(7));
  hide(DateProto, 'getYear', function () {
    var t = timeOf(this);
    return t !== t ? NaN : localFields(t)[0] - 1900;
  });
  hide(DateProto, 'getTimezoneOffset', function () {
    var t = timeOf(this);
    return t !== t ? NaN : 0 - zoneMinutes(t);  // 0 - x: never -0
  });

  // ---- local time as text (QuickJS's get_date_string, formats 1 and 3) ----

  var DAY_NAMES = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'];
  var MONTH_NAMES = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];

  function pad2(n) { return n >= 0 && n < 10 ? '0' + n : '' + n; }  // printf %02d
  function padYear(y) {  // printf %0*d with width 4 + (y < 0)
    var s = '' + (y < 0 ? -y : y);
    while (s.length < 4) { s = '0' + s; }
    return y < 0 ? '-' + s : s;
  }

  // Fields f as toString (locale false) or toLocaleString (locale true) shows them; part: 1 date,
  // 2 time, 3 both.
  function formatLocal(f, locale, part) {
    var out = '';
    if (part & 1) {
      if (locale) {
        out = pad2(f[1] + 1) + '/' + pad2(f[2]) + '/' + padYear(f[0]) + (part === 3 ? ', ' : '');
      } else {
        out = DAY_NAMES[f[7]] + ' ' + MONTH_NAMES[f[1]] + ' ' + pad2(f[2]) + ' ' + padYear(f[0]) +
          (part === 3 ? ' ' : '');
      }
    }
    if (part & 2) {
      var h = f[3];
      if (locale) {
        out += pad2((h + 1) % 12 - 1) + ':' + pad2(f[4]) + ':' + pad2(f[5]) + (h < 12 ? ' AM' : ' PM');
      } else {
        var tz = f[8];
        var sign = tz < 0 ? '-' : '+';
        if (tz < 0) { tz = -tz; }
        out += pad2(h) + ':' + pad2(f[4]) + ':' + pad2(f[5]) + ' GMT' + sign +
          pad2(floor(tz / 60)) + pad2(tz % 60);
      }
    }
    return out;
  }

  function localString(locale, part) {
    return function () {
      var t = timeOf(this);
      return t !== t ? 'Invalid Date' : formatLocal(localFields(t), locale, part);
    };
  }
  hide(DateProto, 'toString', localString(false, 3));
  hide(DateProto, 'toDateString', localString(false, 1));
  hide(DateProto, 'toTimeString', localString(false, 2));
  hide(DateProto, 'toLocaleString', localString(true, 3));
  hide(DateProto, 'toLocaleDateString', localString(true, 1));
  hide(DateProto, 'toLocaleTimeString', localString(true, 2));

  // ---- local time -> UTC as ECMAScript (and GraalJS) define it ----
  // QuickJS converts a local date-time to UTC with the offset in effect at the wrong instant (the
  // local time read as UTC), which is off by up to the zone's offset around DST transitions: in
  // America/Los_Angeles `new Date(2016, 2, 13, 3, 0)` came out as 04:00 PDT. The spec (and GraalJS,
  // through java.time) uses the offset valid at that local time; in a gap or an overlap, the offset
  // from before the transition. The constructor with fields and the local setters (moment's parsing
  // of local times and `add(1, 'days')` go through them) follow the spec.

  // Milliseconds east of UTC at UTC instant u (NaN outside the Date range, like QuickJS on a Date).
  function offsetAt(u) {
    return u >= -MAX_TIME && u <= MAX_TIME ? zoneMinutes(u) * 60000 : NaN;
  }

  // The UTC time value of local time value t (ECMAScript's UTC(t)).
  function localToUtc(t) {
    if (t !== t || t === Infinity || t === -Infinity) { return NaN; }
    var before = offsetAt(t - DAY_MS);
    var after = offsetAt(t + DAY_MS);
    if (before === after || offsetAt(t - before) === before) { return t - before; }
    if (offsetAt(t - after) === after) { return t - after; }
    return t - before;  // in a gap: the offset from before the transition moves the time forward
  }

  // QuickJS's own conversion (set_date_fields with is_local), kept where the C library used to
  // apply it so that results stay as they were: the offset at the local time read as UTC.
  function quickJsLocalToUtc(t) {
    if (t !== t || t === Infinity || t === -Infinity) { return NaN; }
    var u = t - zoneMinutes(t) * 60000;
    return u >= -MAX_TIME && u <= MAX_TIME ? u - u % 1 + 0 : NaN;  // time_clip
  }

  // Local time value of fields [year, month, date, hours, minutes, seconds, ms], without Date.UTC's
  // mapping of years 0..99 to 1900..1999 (setFullYear(50) means the year 50).
  function localValue(f) {
    var d = new NativeDate(0);
    d.setUTCFullYear(f[0], f[1], f[2]);
    d.setUTCHours(f[3], f[4], f[5], f[6]);
    return timeOf(d);
  }

  function nowString() { return formatLocal(localFields(nativeNow()), false, 3); }

  function isDate(v) {
    try { timeOf(v); return true; } catch (e) { return false; }
  }

  // ECMAScript ToPrimitive(v, default) of an object, which new Date(v) applies before parsing.
  function toPrimitive(v) {
    var exotic = v[Symbol.toPrimitive];
    var r;
    if (exotic !== undefined && exotic !== null) {
      r = apply(exotic, v, ['default']);
      if (r === null || (typeof r !== 'object' && typeof r !== 'function')) { return r; }
      throw new TypeError('toPrimitive');
    }
    var order = ['valueOf', 'toString'];
    for (var i = 0; i < 2; i++) {
      var fn = v[order[i]];
      if (typeof fn === 'function') {
        r = apply(fn, v, []);
        if (r === null || (typeof r !== 'object' && typeof r !== 'function')) { return r; }
      }
    }
    throw new TypeError('toPrimitive');
  }

  // Date.parse in the workflow zone. QuickJS reads only two forms: ISO-like ("2016-03-13",
  // "2016-03-13T03:00:00.000", optionally ending in Z, +hh:mm or +hhmm; date-only is UTC) and
  // toString/toUTCString-like ("Tue Jan 30 2024 10:00:00 GMT+0900", always UTC unless an offset is
  // given). The only local form is ISO with a time and no offset; its fields are read by parsing the
  // text with "Z" appended, then converted with the workflow zone. Everything else is absolute and
  // left to QuickJS.
  function parseDate(s) {
    var c = s.charCodeAt(0);
    if (((c >= 48 && c <= 57) || c === 43 || c === 45) && s.indexOf('T') > 0) {
      var fields = nativeParse(s + 'Z');  // NaN unless s is a valid local ISO date-time
      if (fields === fields) { return quickJsLocalToUtc(fields); }
      fields = parseShifted(s);
      if (fields === fields) { return quickJsLocalToUtc(fields); }
    }
    return nativeParse(s);
  }

  // Near the ends of the Date range the fields as UTC may be out of range while the converted time
  // is not: parse with the year moved 400 years inward, then move the value back.
  function parseShifted(s) {
    var m = /^([+-]?)(\d+)(?=-)/.exec(s);
    if (m === null || m[2].length > 15) { return NaN; }
    var year = (m[1] === '-' ? -1 : 1) * +m[2];
    if (year < 270000 && year > -270000) { return NaN; }
    var shift = year > 0 ? -400 : 400;
    var y = year + shift;
    var shifted = (y < 0 ? '-' : '+') + (y < 0 ? -y : y) + s.slice(m[0].length) + 'Z';
    var v = nativeParse(shifted);
    return v === v ? v - shift / 400 * CYCLE_MS : NaN;
  }

  function parse(value) {
    if (typeof value === 'symbol') { return nativeParse(value); }  // the same TypeError
    return parseDate(toStr(value));
  }

  function KDate(year, month, date, hours, minutes, seconds, ms) {
    if (!(this instanceof KDate)) { return nowString(); }
    var n = arguments.length;
    if (n === 0) { return new NativeDate(); }
    if (n === 1) {
      var v = year;
      if (v !== null && (typeof v === 'object' || typeof v === 'function')) {
        if (isDate(v)) { return new NativeDate(v); }
        v = toPrimitive(v);
      }
      return new NativeDate(typeof v === 'string' ? parseDate(v) : v);
    }
    var t = nativeUTC(year, month, n > 2 ? date : 1, n > 3 ? hours : 0, n > 4 ? minutes : 0,
                      n > 5 ? seconds : 0, n > 6 ? ms : 0);
    return new NativeDate(localToUtc(t));
  }
  KDate.prototype = DateProto;
  KDate.UTC = nativeUTC;
  KDate.parse = parse;
  KDate.now = nativeNow;
  defineProperty(KDate, 'length', { value: 7 });
  defineProperty(KDate, 'name', { value: 'Date' });
  defineProperty(DateProto, 'constructor', { value: KDate, writable: true, enumerable: false, configurable: true });

  // A local setter that replaces fields first..first+maxArgs-1 ([year, month, date, hours, ...]).
  function localSetter(first, maxArgs, fromZeroIfInvalid) {
    return function () {
      var args = arguments;
      var values = [];
      var count = args.length < maxArgs ? args.length : maxArgs;
      for (var i = 0; i < count; i++) { values.push(+args[i]); }
      var now = timeOf(this);  // throws TypeError on non-dates
      var fields;
      if (now !== now) {
        if (!fromZeroIfInvalid) { return NaN; }
        fields = [1970, 0, 1, 0, 0, 0, 0];
      } else {
        var f = localFields(now);
        fields = [f[0], f[1], f[2], f[3], f[4], f[5], f[6]];
      }
      if (count === 0) { values.push(NaN); count = 1; }
      for (var k = 0; k < count; k++) { fields[first + k] = values[k]; }
      return setTimeOf(this, localToUtc(localValue(fields)));
    };
  }
  hide(DateProto, 'setFullYear', localSetter(0, 3, true));
  hide(DateProto, 'setMonth', localSetter(1, 2, false));
  hide(DateProto, 'setDate', localSetter(2, 1, false));
  hide(DateProto, 'setHours', localSetter(3, 4, false));
  hide(DateProto, 'setMinutes', localSetter(4, 3, false));
  hide(DateProto, 'setSeconds', localSetter(5, 2, false));
  hide(DateProto, 'setMilliseconds', localSetter(6, 1, false));

  // Annex B setYear, as QuickJS implements it (including its local -> UTC rule).
  hide(DateProto, 'setYear', function (year) {
    var now = timeOf(this);
    var y = +year;
    if (y !== y || y === Infinity || y === -Infinity) { return setTimeOf(this, NaN); }
    y = y < 0 ? -floor(-y) : floor(y);
    if (y >= 0 && y < 100) { y += 1900; }
    var f = now !== now ? [1970, 0, 1, 0, 0, 0, 0] : localFields(now);
    return setTimeOf(this, quickJsLocalToUtc(fieldsValueOf(y, f)));
  });

  var MONTH_DAYS = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
  function daysFromYear(y) {
    return 365 * (y - 1970) + floor((y - 1969) / 4) - floor((y - 1901) / 100) + floor((y - 1601) / 400);
  }
  // QuickJS's set_date_fields without time_clip, for year y and month..ms of f (in range).
  function fieldsValueOf(y, f) {
    var leap = (y % 4 === 0) - (y % 100 === 0) + (y % 400 === 0);
    var days = daysFromYear(y);
    for (var i = 0; i < f[1]; i++) { days += MONTH_DAYS[i] + (i === 1 ? leap : 0); }
    days += f[2] - 1;
    return days * DAY_MS + (f[3] * 3600000 + f[4] * 60000 + f[5] * 1000 + f[6]);
  }
  global.Date = KDate;

  // ---- java.lang.String methods (GraalJS nashorn-compat exposes them on JS strings) ----

  function javaError(name, message) {
    var e = new Error(message);
    e.name = name;
    return e;
  }

  // A Java regex as a JS RegExp: leading inline flags (?i) (?s) (?m) become JS flags; the rest of
  // the syntax common to both is passed through.
  function javaPattern(regex, global_) {
    var flags = global_ ? 'g' : '';
    if (regex instanceof RegExp) {
      return new RegExp(regex.source, flags + (regex.ignoreCase ? 'i' : '') + (regex.multiline ? 'm' : ''));
    }
    var src = String(regex);
    var m = /^\(\?([ism]+)\)/.exec(src);
    if (m) {
      src = src.slice(m[0].length);
      if (m[1].indexOf('i') >= 0) { flags += 'i'; }
      if (m[1].indexOf('s') >= 0) { flags += 's'; }
      if (m[1].indexOf('m') >= 0) { flags += 'm'; }
    }
    try {
      return new RegExp(src, flags);
    } catch (e) {
      throw javaError('java.util.regex.PatternSyntaxException', e.message + ' near index 0\n' + src);
    }
  }

  function groupCount(re) {
    return new RegExp(re.source + '|').exec('').length - 1;
  }

  // Java's Matcher.appendReplacement: \x is a literal x, $n / ${name} a group, any other $ an error.
  function javaSubstitute(replacement, args, groups) {
    var out = '';
    var n = replacement.length;
    var named = args[args.length - 1];
    for (var i = 0; i < n; i++) {
      var c = replacement.charAt(i);
      if (c === '\\') {
        i++;
        if (i >= n) { throw javaError('java.lang.IllegalArgumentException', 'character to be escaped is missing'); }
        out += replacement.charAt(i);
      } else if (c === '$') {
        i++;
        if (i >= n) { throw javaError('java.lang.IllegalArgumentException', 'Illegal group reference: group index is missing'); }
        c = replacement.charAt(i);
        if (c === '{') {
          var end = replacement.indexOf('}', i);
          var name = end < 0 ? '' : replacement.slice(i + 1, end);
          if (!name || typeof named !== 'object' || named === null || !(name in named)) {
            throw javaError('java.lang.IllegalArgumentException', 'No group with name {' + name + '}');
          }
          out += named[name] === undefined ? '' : named[name];
          i = end;
        } else if (c >= '0' && c <= '9') {
          var ref = c.charCodeAt(0) - 48;
          if (ref > groups) { throw javaError('java.lang.IndexOutOfBoundsException', 'No group ' + ref); }
          while (i + 1 < n) {
            var d = replacement.charAt(i + 1);
            if (d < '0' || d > '9') { break; }
            var next = ref * 10 + (d.charCodeAt(0) - 48);
            if (next > groups) { break; }
            ref = next;
            i++;
          }
          var value = args[ref];
          out += value === undefined ? '' : value;
        } else {
          throw javaError('java.lang.IllegalArgumentException', 'Illegal group reference');
        }
      } else {
        out += c;
      }
    }
    return out;
  }

  function javaReplace(str, regex, replacement, all) {
    var re = javaPattern(regex, all);
    var groups = groupCount(re);
    var rep = String(replacement);
    return str.replace(re, function () { return javaSubstitute(rep, arguments, groups); });
  }

  hide(String.prototype, 'replaceAll', function (regex, replacement) {
    return javaReplace(String(this), regex, replacement, true);
  });
  hide(String.prototype, 'replaceFirst', function (regex, replacement) {
    return javaReplace(String(this), regex, replacement, false);
  });
  hide(String.prototype, 'matches', function (regex) {
    var re = javaPattern(regex, false);
    return new RegExp('^(?:' + re.source + ')$', re.flags).test(String(this));
  });
  hide(String.prototype, 'contains', function (s) { return String(this).indexOf(String(s)) >= 0; });
  hide(String.prototype, 'isEmpty', function () { return String(this).length === 0; });
  hide(String.prototype, 'equals', function (s) { return typeof s === 'string' && String(this) === s; });
  function javaCompare(a, b) {
    var n = Math.min(a.length, b.length);
    for (var i = 0; i < n; i++) {
      if (a.charCodeAt(i) !== b.charCodeAt(i)) { return a.charCodeAt(i) - b.charCodeAt(i); }
    }
    return a.length - b.length;
  }
  hide(String.prototype, 'compareTo', function (s) { return javaCompare(String(this), String(s)); });
  hide(String.prototype, 'compareToIgnoreCase', function (s) {
    return javaCompare(String(this).toUpperCase().toLowerCase(), String(s).toUpperCase().toLowerCase());
  });
  hide(String.prototype, 'equalsIgnoreCase', function (s) {
    return s !== null && s !== undefined && String(this).toUpperCase() === String(s).toUpperCase();
  });

  global.__kudig_render = render;
  global.__kudig_snapshot = snapshotGlobals;
})(globalThis);
"""

# --------------------------------------------------------------------------------------------------
# Time zones
# --------------------------------------------------------------------------------------------------

# The workflow zone reaches JS as a table of its UTC offsets (_zone_table_json), sent once per zone
# and context. JS cannot ask Python while it runs: the binding refuses calls into Python while a
# time limit is set, and we need the time limit.
#
# The offsets are what QuickJS would compute from the C library with TZ set to the zone (checked
# against glibc by the differential tests): zoneinfo's offset at the time truncated toward zero to
# whole seconds, in minutes truncated toward zero. zoneinfo handles years 1..9999 and JS dates span
# about 275,000 years either way, so: before year 2 every zone has its first offset (its LMT), as
# before the first transition; after the last transition in the TZif file the zone follows its
# POSIX TZ rule, which repeats every 400 Gregorian years, so a later instant has the offset of the
# one 400*k years earlier.

_EPOCH = datetime(1970, 1, 1)
_FIRST_SECOND = int((datetime(2, 1, 1) - _EPOCH).total_seconds())
_LAST_SECOND = int((datetime(9998, 1, 1) - _EPOCH).total_seconds())
_CYCLE_SECONDS = 146097 * 86400
#: Zone tables a context keeps (JS side; TemplateEngine mirrors which ones it sent).
_JS_ZONES_MAX = 16


@lru_cache(maxsize=256)
def _zone(timezone: str) -> tzinfo:
    try:
        return parse_timezone(timezone)
    except KudigError as e:
        raise TemplateError(e.message) from None


def _whole_minutes(seconds: int) -> int:
    # QuickJS: -tm_gmtoff / 60 in C, i.e. truncated toward zero.
    return seconds // 60 if seconds >= 0 else -(-seconds // 60)


def _offset_seconds(tz: tzinfo, seconds: int) -> int:
    """The zone's UTC offset at `seconds` after the epoch, for any number of seconds."""
    if seconds < _FIRST_SECOND:
        seconds = _FIRST_SECOND
    elif seconds >= _LAST_SECOND:
        seconds -= ((seconds - _LAST_SECOND) // _CYCLE_SECONDS + 1) * _CYCLE_SECONDS
    offset = tz.fromutc((_EPOCH + timedelta(seconds=seconds)).replace(tzinfo=tz)).utcoffset()
    return int(offset.total_seconds()) if offset is not None else 0


def _offset_minutes(timezone: str, ms: int) -> int:
    """The offset in minutes that the JS runtime uses at time value `ms` (the reference for tests)."""
    seconds = ms // 1000 if ms >= 0 else -(-ms // 1000)
    return _whole_minutes(_offset_seconds(_zone(timezone), seconds))


def _tzif_data(path: Path) -> tuple[list[int], str]:
    """Transition times (seconds after the epoch) and the POSIX TZ footer of a TZif file (RFC 8536)."""
    data = path.read_bytes()

    def counts(at: int) -> tuple[int, ...]:
        return struct.unpack(">6l", data[at + 20 : at + 44])

    isut, isstd, leap, times, types, chars = counts(0)
    if data[4:5] < b"2":
        return list(struct.unpack(f">{times}l", data[44 : 44 + 4 * times])), ""
    at = 44 + 5 * times + 6 * types + chars + 8 * leap + isstd + isut
    isut, isstd, leap, times, types, chars = counts(at)
    transitions = list(struct.unpack(f">{times}q", data[at + 44 : at + 44 + 8 * times]))
    end = at + 44 + 9 * times + 6 * types + chars + 12 * leap + isstd + isut
    return transitions, data[end:].strip(b"\n").decode("ascii", "replace")


_POSIX_NAME = r"(?:<[+\-0-9A-Za-z]+>|[A-Za-z]{3,})"
_POSIX_OFFSET = r"[+-]?\d{1,3}(?::\d{1,2}){0,2}"
_POSIX_TZ = re.compile(
    rf"{_POSIX_NAME}(?P<std>{_POSIX_OFFSET})"
    rf"(?:{_POSIX_NAME}(?P<dst>{_POSIX_OFFSET})?"
    rf",(?P<start>[^,/]+)(?:/(?P<start_time>{_POSIX_OFFSET}))?"
    rf",(?P<end>[^,/]+)(?:/(?P<end_time>{_POSIX_OFFSET}))?)?",
    re.ASCII,
)


def _posix_seconds(text: str) -> int:
    sign = -1 if text.startswith("-") else 1
    parts = [int(p) for p in text.lstrip("+-").split(":")]
    return sign * sum(p * f for p, f in zip(parts, (3600, 60, 1), strict=False))


def _posix_day(rule: str, year: int) -> int:
    """Days after the epoch of a POSIX TZ date rule (Jn, n or Mm.w.d) in `year`."""
    jan1 = (date(year, 1, 1) - _EPOCH.date()).days
    if rule.startswith("M"):
        month, week, weekday = (int(p) for p in rule[1:].split("."))
        first = date(year, month, 1)
        day = 1 + (weekday - (first.weekday() + 1) % 7) % 7 + (week - 1) * 7
        while day > calendar.monthrange(year, month)[1]:
            day -= 7
        return (first - _EPOCH.date()).days + day - 1
    if rule.startswith("J"):
        n = int(rule[1:])
        return jan1 + n - 1 + (1 if calendar.isleap(year) and n >= 60 else 0)
    return jan1 + int(rule)


def _rule_transitions(footer: str, after: int, until: int) -> list[tuple[int, int]] | None:
    """(time, offset after) of the footer's DST rule in (after, until); None if it has no rule."""
    m = _POSIX_TZ.fullmatch(footer)
    if m is None or m["start"] is None:
        return None
    std = -_posix_seconds(m["std"])
    dst = -_posix_seconds(m["dst"]) if m["dst"] else std + 3600
    start_time = _posix_seconds(m["start_time"] or "2")
    end_time = _posix_seconds(m["end_time"] or "2")
    first_year = (_EPOCH + timedelta(seconds=after)).year
    last_year = (_EPOCH + timedelta(seconds=until)).year
    out = []
    for year in range(first_year, last_year + 1):
        out.append((_posix_day(m["start"], year) * 86400 + start_time - std, dst))
        out.append((_posix_day(m["end"], year) * 86400 + end_time - dst, std))
    return sorted(x for x in out if after < x[0] < until)


def _sampled_transitions(tz: tzinfo, after: int, until: int) -> list[tuple[int, int]]:
    """Transitions in (after, until) found by sampling zoneinfo daily (fallback for odd rules)."""
    out = []
    t, offset = after, _offset_seconds(tz, after)
    while t < until:
        step = min(86400, until - t)
        new = _offset_seconds(tz, t + step)
        if new != offset:
            lo, hi = t, t + step  # offset(lo) == offset, offset(hi) == new
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if _offset_seconds(tz, mid) == offset:
                    lo = mid
                else:
                    hi = mid
            out.append((hi, _offset_seconds(tz, hi)))
            offset = out[-1][1]
            t = hi
        else:
            t += step
    return out


def _zone_transitions(timezone: str) -> tuple[int, list[tuple[int, int]], int | None]:
    """(offset before the first transition, [(time, offset after)], start of the repeating window).

    Times in seconds after the epoch, offsets in seconds. Instants at or after window + 400 years
    have the offset of the same instant 400*k years earlier; no window means the last offset holds.
    """
    tz = _zone(timezone)
    before = _offset_seconds(tz, _FIRST_SECOND)
    if not isinstance(tz, zoneinfo.ZoneInfo):
        return before, [], None
    path = _zoneinfo_file(tz.key)
    if path is None:  # pragma: no cover - zoneinfo found it, so one of the roots has it
        raise TemplateError(f"Unknown timezone: {timezone} (no TZif file)")
    times, footer = _tzif_data(path)
    explicit = sorted({t for t in times if _FIRST_SECOND < t < _LAST_SECOND})
    table = [(t, _offset_seconds(tz, t)) for t in explicit]
    last = explicit[-1] if explicit else _FIRST_SECOND
    window = int((datetime((_EPOCH + timedelta(seconds=last)).year + 1, 1, 1) - _EPOCH).total_seconds())
    until = window + _CYCLE_SECONDS
    rule = _rule_transitions(footer, last, until)
    if rule is None:
        return before, table, None
    # The rule is ours to interpret; keep it only if zoneinfo agrees at and between its transitions.
    previous, checked = (table[-1][1] if table else before), True
    for i, (t, offset) in enumerate(rule):
        following = rule[i + 1][0] if i + 1 < len(rule) else until
        if (
            _offset_seconds(tz, t - 1) != previous
            or _offset_seconds(tz, t) != offset
            or _offset_seconds(tz, (t + following) // 2) != offset
        ):
            checked = False
            break
        previous = offset
    if not checked:  # pragma: no cover - no zone in tzdata 2024-2025 needs it (tested separately)
        log.warning("time zone %s: the TZ rule %r disagrees with zoneinfo; sampling", timezone, footer)
        rule = _sampled_transitions(tz, last, until)
    return before, table + rule, window


@lru_cache(maxsize=64)
def _zone_table_json(timezone: str) -> str:
    """The JS runtime's table for a zone: offsets in (truncated) minutes from the time values where
    they start to apply (QuickJS truncates a time value toward zero to seconds, so a transition at
    second s <= 0 applies from 1000*s - 999 ms), plus the repeating window in ms."""
    before, transitions, window = _zone_transitions(timezone)
    starts: list[int] = []
    offsets: list[int] = []
    current = _whole_minutes(before)
    for t, offset in transitions:
        minutes = _whole_minutes(offset)
        if minutes != current:
            starts.append(1000 * t if t > 0 else 1000 * t - 999)
            offsets.append(minutes)
            current = minutes
    table = {
        "before": _whole_minutes(before),
        "starts": starts,
        "offsets": offsets,
        "window": None if window is None else 1000 * window,
        "cycle": 1000 * _CYCLE_SECONDS,
    }
    return json.dumps(table, separators=(",", ":"))


def _zoneinfo_file(name: str) -> Path | None:
    """The compiled TZif file for an IANA name: the system's, else the `tzdata` wheel's.

    Pods built from slim images may lack /usr/share/zoneinfo; the tzdata package is a dependency.
    """
    roots = [Path(p) for p in zoneinfo.TZPATH]
    try:
        import tzdata  # type: ignore[import-untyped,unused-ignore]

        roots.append(Path(tzdata.__file__).resolve().parent / "zoneinfo")
    except ImportError:  # pragma: no cover - tzdata is a declared dependency
        pass
    for root in roots:
        path = root / name
        if path.is_file():
            with path.open("rb") as f:
                if f.read(4) == b"TZif":
                    return path
    return None


@lru_cache(maxsize=256)
def posix_tz(timezone: str) -> str:
    """The `TZ` value that makes the C library's local time the workflow time zone.

    Not used for evaluation any more (the JS runtime gets the zone from Python, see the module
    docstring); for callers that want to start a subprocess in the workflow zone with an explicit env.
    Accepts what digdag accepts (kudig.timezones, i.e. Java's ZoneId.of). "UTC" -> "UTC0";
    "+09:00" -> "<+0900>-09:00" (POSIX offsets count west of Greenwich, hence the inverted sign);
    region ids ("Asia/Tokyo") -> ":<path of the TZif file>".
    """
    tz = _zone(timezone)
    if isinstance(tz, zoneinfo.ZoneInfo):
        path = _zoneinfo_file(tz.key)
        if path is None:  # pragma: no cover - zoneinfo found it, so one of the roots has it
            raise TemplateError(f"Unknown timezone: {timezone} (no TZif file for the C library)")
        return f":{path}"
    offset = tz.utcoffset(None)
    seconds = int(offset.total_seconds()) if offset is not None else 0
    if seconds == 0:
        return "UTC0"
    sign = "+" if seconds > 0 else "-"
    hh, rest = divmod(abs(seconds), 3600)
    mm, ss = divmod(rest, 60)
    label = f"{sign}{hh:02d}{mm:02d}" + (f"{ss:02d}" if ss else "")
    posix_sign = "-" if seconds > 0 else "+"
    return f"<{label}>{posix_sign}{hh:02d}:{mm:02d}" + (f":{ss:02d}" if ss else "")


# --------------------------------------------------------------------------------------------------
# The engine
# --------------------------------------------------------------------------------------------------


def _json_default(obj: object) -> object:
    if isinstance(obj, Mapping):
        return dict(obj)
    if isinstance(obj, (set, frozenset)):
        return list(obj)
    raise TypeError(f"a value of type {type(obj).__name__} is not JSON ({obj!r:.80})")


def _to_json(value: object) -> str:
    # ASCII-only so that lone surrogates reach JS as \uXXXX escapes instead of failing to encode.
    return json.dumps(value, ensure_ascii=True, allow_nan=False, separators=(",", ":"), default=_json_default)


def _params_json(params: Mapping[str, Any]) -> str:
    try:
        return _to_json(params)
    except (TypeError, ValueError, RecursionError) as e:
        raise TemplateError(f"Failed to serialize parameters to JSON: {e}") from None


def _literal(text: str) -> str:
    """What the template makes of text with no `${`: only `$$` -> `$` applies.

    Shortcut for strings like `echo $HOME` in `sh>` commands; identical to the JS path (tested).
    """
    return text.replace("$$", "$")


_QUOTED_REFERENCE_RE = re.compile(r"^ReferenceError: '(.*)' is not defined$", re.DOTALL)
_LOWERCASE_TYPE_ERROR_RE = re.compile(r"^TypeError: cannot ")


def _graal_wording(message: str) -> str:
    """Reword QuickJS messages that have a well-known GraalJS form (users grep logs for these)."""
    message = _QUOTED_REFERENCE_RE.sub(r"ReferenceError: \1 is not defined", message)
    return _LOWERCASE_TYPE_ERROR_RE.sub("TypeError: Cannot ", message)


class TemplateEngine:
    """Evaluates digdag templates; one QuickJS context per engine, reused across calls.

    Thread-safe: QuickJS contexts are not, so evaluations in one engine are serialised by the
    engine's lock; engines share no state (and never touch the process's TZ), so separate engines
    evaluate in parallel. `time_limit_s` bounds one evaluation and `memory_limit_bytes` the
    context's heap, so a runaway expression fails its task instead of hanging the executor. The
    binding measures the limit in process CPU time (`clock()`), so other busy threads shorten it, and
    QuickJS's regex engine never checks it: a catastrophically backtracking regex runs until it
    finishes (the task's own timeout is the backstop there). The GIL is released while JS runs.
    """

    def __init__(self, *, time_limit_s: float = 2.0, memory_limit_bytes: int = 64 << 20) -> None:
        if time_limit_s <= 0:
            raise ValueError("time_limit_s must be positive")
        if memory_limit_bytes <= 0:
            raise ValueError("memory_limit_bytes must be positive")
        self._time_limit_s = time_limit_s
        self._memory_limit_bytes = memory_limit_bytes
        self._ctx: Any = None
        self._render_fn: Any = None
        self._lock = threading.RLock()
        # Zone tables the context has (mirrors the JS side); reset them there at the next call.
        self._zones_sent: set[str] = set()
        self._zones_reset = False

    # ---- context lifecycle ----

    def _ensure_context(self) -> Any:
        if self._render_fn is None:
            path, source = _moment_source()
            ctx = quickjs.Context()
            try:
                ctx.eval(source)
                version = ctx.eval("typeof moment === 'function' ? String(moment.version) : ''")
                if not version:
                    raise KudigError(f"{path} did not define moment")
                if version != MOMENT_VERSION:
                    log.warning("moment.js %s loaded from %s; digdag uses %s", version, path, MOMENT_VERSION)
                ctx.eval(_RUNTIME_JS)
                ctx.eval("__kudig_snapshot()")
            except quickjs.JSException as e:
                first = str(e).split("\n", 1)[0]
                raise KudigError(f"Failed to load the template runtime ({path}): {first}") from None
            # Limits apply from here on: library loading is ours, not the user's, to pay for.
            ctx.set_memory_limit(self._memory_limit_bytes)
            ctx.set_time_limit(self._time_limit_s)
            self._ctx = ctx
            self._render_fn = ctx.get("__kudig_render")
        return self._render_fn

    def _discard_context(self) -> None:
        self._ctx = None
        self._render_fn = None
        self._zones_sent.clear()
        self._zones_reset = False

    def _zone_arguments(self, timezone: str) -> tuple[str | None, bool]:
        """(the zone's table unless the context has it, whether JS drops its other tables first)."""
        if timezone in self._zones_sent and not self._zones_reset:
            return None, False
        table = _zone_table_json(timezone)
        reset = self._zones_reset or len(self._zones_sent) >= _JS_ZONES_MAX
        if reset:
            self._zones_sent.clear()
            self._zones_reset = False
        self._zones_sent.add(timezone)
        return table, reset

    def _call(self, text: str, params_json: str | None, local_json: str | None, timezone: str = "UTC") -> str:
        """Evaluate `text` in the current context with the JS local time zone `timezone` (valid).

        The caller holds the lock.
        """
        render = self._ensure_context()
        table, reset = self._zone_arguments(timezone)
        try:
            result = render(_to_json(text), params_json, local_json, timezone, table, reset)
        except quickjs.JSException as e:
            # Only what JS cannot catch lands here: the time-limit interrupt, or a failure while
            # reporting an error (out of memory, stack overflow). JS may not have stored the zone.
            self._zones_reset = True
            message = str(e).split("\n", 1)[0].rstrip()
        else:
            value = json.loads(result)
            if isinstance(value, str):
                return value
            message = str(value["error"])
        if message.startswith("InternalError: interrupted"):
            self._discard_context()
            message = f"evaluation exceeded the time limit of {self._time_limit_s:g} s"
        elif message.startswith("InternalError: out of memory"):
            self._discard_context()
            message = f"evaluation exceeded the memory limit of {self._memory_limit_bytes} bytes"
        raise TemplateError(f"Failed to evaluate a variable {text} ({_graal_wording(message)})")

    # ---- public API ----

    def render(self, text: str, params: Mapping[str, Any], timezone: str = "UTC") -> str:
        """digdag's `template(content, params)`: the text with every `${expr}` evaluated.

        Text without `$` is returned as is without touching JS (digdag's isInvokeTemplateRequired).
        """
        if "$" not in text:
            return text
        if "${" not in text:
            return _literal(text)
        params_json = _params_json(params)
        _zone(timezone)  # Unknown timezone
        with self._lock:
            return self._call(text, params_json, None, timezone)

    def eval_config(
        self, config: Mapping[str, Any], params: Mapping[str, Any], timezone: str = "UTC"
    ) -> dict[str, Any]:
        """digdag's ConfigEvalEngine.eval: evaluate every string of a config, keeping its shape.

        Scope rules (deliberately reproducing digdag's, quirks included):
        top-level strings see `params` overlaid with the already evaluated earlier top-level keys;
        a nested object's strings see `params` plus that object's own earlier keys only; strings in
        arrays see the keys evaluated so far at the level holding the array. Keys in NO_EVAL_KEYS
        are copied untouched. Non-string scalars pass unchanged.
        """
        params_json = _params_json(params)
        _zone(timezone)  # Unknown timezone
        with self._lock:
            return _ConfigEvaluation(self, params_json, timezone).object(config)


class _ConfigEvaluation:
    """One eval_config call: the raw params JSON is sent to JS once, then reused per string."""

    def __init__(self, engine: TemplateEngine, params_json: str, timezone: str) -> None:
        self._engine = engine
        self._params_json: str | None = params_json
        self._timezone = timezone
        self._sent_to: Any = None

    def object(self, local: Mapping[str, Any]) -> dict[str, Any]:
        built: dict[str, Any] = {}
        for key, value in local.items():
            if key in NO_EVAL_KEYS:
                built[key] = value
            elif isinstance(value, Mapping):
                built[key] = self.object(value)
            elif isinstance(value, (list, tuple)):
                built[key] = self.array(built, value)
            elif isinstance(value, str):
                built[key] = self.string(built, value)
            else:
                built[key] = value
        return built

    def array(self, local: dict[str, Any], values: list[Any] | tuple[Any, ...]) -> list[Any]:
        out: list[Any] = []
        for value in values:
            if isinstance(value, Mapping):
                out.append(self.object(value))
            elif isinstance(value, (list, tuple)):
                out.append(self.array(local, value))
            elif isinstance(value, str):
                out.append(self.string(local, value))
            else:
                out.append(value)
        return out

    def string(self, local: dict[str, Any], code: str) -> str:
        if "$" not in code:
            return code
        if "${" not in code:
            return _literal(code)
        try:
            local_json = _to_json(local) if local else None
        except (TypeError, ValueError, RecursionError) as e:
            raise TemplateError(f"Failed to serialize parameters to JSON: {e}") from None
        engine = self._engine
        # The JS side keeps the last params text it was given; resend only if the context changed
        # (first call, or rebuilt after a limit was hit).
        ctx = engine._ensure_context()
        params_json = self._params_json if self._sent_to is not ctx else None
        result = engine._call(code, params_json, local_json, self._timezone)
        self._sent_to = ctx
        return result
