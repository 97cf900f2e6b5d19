"""Frozen copy of kudig/expr.py from before the workflow zone moved into JS: a test-only oracle.

That implementation installed the workflow time zone through the process-wide TZ variable and
time.tzset() around every evaluation, so QuickJS read it from the C library. The differential tests
(tests/unit/test_expr_tz_*.py) require the current engine to produce the same output; do not change
this file except to keep it loadable.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
import zoneinfo
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

import quickjs

import kudig
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

# The process-wide time zone (TZ + tzset) is shared state, and QuickJS contexts are not
# thread-safe; every JS evaluation happens under this lock.
_LOCK = threading.RLock()

# Changed for the copy: moment.js is found relative to the kudig package, not this file.
_PACKAGE_DIR = Path(kudig.__file__).resolve().parent
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

    The build copies node_modules' file into kudig/js/vendor (gitignored), so installed wheels and
    images carry it; a source checkout uses node_modules directly after `npm ci`.
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
        + "); run `make setup` (npm ci) or set KUDIG_MOMENT_JS to a moment.min.js 2.21.0"
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
  function render(textJson, paramsJson, localJson) {
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

  // ---- local time -> UTC as ECMAScript (and GraalJS) define it ----
  // QuickJS converts a local date-time to UTC with the offset in effect at the wrong instant (the
  // local time read as UTC), which is off by up to the zone's offset around DST transitions: in
  // America/Los_Angeles `new Date(2016, 2, 13, 3, 0)` came out as 04:00 PDT. The spec (and GraalJS,
  // through java.time) uses the offset valid at that local time; in a gap or an overlap, the offset
  // from before the transition. Reading (getters, getTimezoneOffset, format) is already right, so
  // only the constructor with fields and the local setters are replaced.

  var NativeDate = Date;
  var DateProto = NativeDate.prototype;
  var nativeUTC = NativeDate.UTC;
  var nativeGetTime = DateProto.getTime;
  var nativeSetTime = DateProto.setTime;
  var nativeOffset = DateProto.getTimezoneOffset;
  var localGetters = [DateProto.getFullYear, DateProto.getMonth, DateProto.getDate, DateProto.getHours,
                      DateProto.getMinutes, DateProto.getSeconds, DateProto.getMilliseconds];
  var DAY_MS = 86400000;

  // Milliseconds east of UTC at UTC instant u.
  function offsetAt(u) { return -callMethod(nativeOffset, new NativeDate(u)) * 60000; }

  // The UTC time value of local time value t (ECMAScript's UTC(t)).
  function localToUtc(t) {
    if (t !== t || t === Infinity || t === -Infinity) { return NaN; }
    var before = offsetAt(t - DAY_MS);
    var after = offsetAt(t + DAY_MS);
    if (before === after || offsetAt(t - before) === before) { return t - before; }
    if (offsetAt(t - after) === after) { return t - after; }
    return t - before;  // in a gap: the offset from before the transition moves the time forward
  }

  // Local time value of fields [year, month, date, hours, minutes, seconds, ms], without Date.UTC's
  // mapping of years 0..99 to 1900..1999 (setFullYear(50) means the year 50).
  function localValue(f) {
    var d = new NativeDate(0);
    d.setUTCFullYear(f[0], f[1], f[2]);
    d.setUTCHours(f[3], f[4], f[5], f[6]);
    return callMethod(nativeGetTime, d);
  }

  function KDate(year, month, date, hours, minutes, seconds, ms) {
    if (!(this instanceof KDate)) { return NativeDate(); }
    var n = arguments.length;
    if (n < 2) { return n === 0 ? new NativeDate() : new NativeDate(year); }
    var t = nativeUTC(year, month, n > 2 ? date : 1, n > 3 ? hours : 0, n > 4 ? minutes : 0,
                      n > 5 ? seconds : 0, n > 6 ? ms : 0);
    return new NativeDate(localToUtc(t));
  }
  KDate.prototype = DateProto;
  KDate.UTC = nativeUTC;
  KDate.parse = NativeDate.parse;
  KDate.now = NativeDate.now;
  defineProperty(KDate, 'length', { value: 7 });
  defineProperty(KDate, 'name', { value: 'Date' });
  defineProperty(DateProto, 'constructor', { value: KDate, writable: true, enumerable: false, configurable: true });

  // A local setter that replaces fields first..first+maxArgs-1 (indexes into localGetters).
  function localSetter(first, maxArgs, fromZeroIfInvalid) {
    return function () {
      var args = arguments;
      var values = [];
      var count = args.length < maxArgs ? args.length : maxArgs;
      for (var i = 0; i < count; i++) { values.push(+args[i]); }
      var now = callMethod(nativeGetTime, this);  // throws TypeError on non-dates
      var fields;
      if (now !== now) {
        if (!fromZeroIfInvalid) { return NaN; }
        fields = [1970, 0, 1, 0, 0, 0, 0];
      } else {
        fields = [];
        for (var j = 0; j < 7; j++) { fields.push(callMethod(localGetters[j], this)); }
      }
      if (count === 0) { values.push(NaN); count = 1; }
      for (var k = 0; k < count; k++) { fields[first + k] = values[k]; }
      return callMethod(nativeSetTime, this, localToUtc(localValue(fields)));
    };
  }
  hide(DateProto, 'setFullYear', localSetter(0, 3, true));
  hide(DateProto, 'setMonth', localSetter(1, 2, false));
  hide(DateProto, 'setDate', localSetter(2, 1, false));
  hide(DateProto, 'setHours', localSetter(3, 4, false));
  hide(DateProto, 'setMinutes', localSetter(4, 3, false));
  hide(DateProto, 'setSeconds', localSetter(5, 2, false));
  hide(DateProto, 'setMilliseconds', localSetter(6, 1, false));
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

    Accepts what digdag accepts (kudig.timezones, i.e. Java's ZoneId.of). "UTC" -> "UTC0";
    "+09:00" -> "<+0900>-09:00" (POSIX offsets count west of Greenwich, hence the inverted sign);
    region ids ("Asia/Tokyo") -> ":<path of the TZif file>".
    """
    try:
        tz = parse_timezone(timezone)
    except KudigError as e:
        raise TemplateError(e.message) from None
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


@contextmanager
def _local_time_zone(timezone: str) -> Iterator[None]:
    """Hold the evaluation lock with the C library's local zone set to `timezone`, then restore."""
    value = posix_tz(timezone)
    with _LOCK:
        old = os.environ.get("TZ")
        changed = old != value
        if changed:
            os.environ["TZ"] = value
            time.tzset()
        try:
            yield
        finally:
            if changed:
                if old is None:
                    del os.environ["TZ"]
                else:
                    os.environ["TZ"] = old
                time.tzset()


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

    Thread-safe (all evaluation is serialised by a process-wide lock, which the time zone handling
    needs anyway). `time_limit_s` bounds one evaluation and `memory_limit_bytes` the context's heap,
    so a runaway expression fails its task instead of hanging the executor. The binding measures
    the limit in process CPU time (`clock()`), so other busy threads shorten it, and QuickJS's regex
    engine never checks it: a catastrophically backtracking regex runs until it finishes (the task's
    own timeout is the backstop there). The GIL is released while JS runs.
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

    def _call(self, text: str, params_json: str | None, local_json: str | None) -> str:
        """Evaluate `text` in the current context; the lock and time zone are already held."""
        render = self._ensure_context()
        try:
            result = render(_to_json(text), params_json, local_json)
        except quickjs.JSException as e:
            # Only what JS cannot catch lands here: the time-limit interrupt, or a failure while
            # reporting an error (out of memory, stack overflow).
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
        with _local_time_zone(timezone):
            return self._call(text, params_json, None)

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
        with _local_time_zone(timezone):
            return _ConfigEvaluation(self, params_json).object(config)


class _ConfigEvaluation:
    """One eval_config call: the raw params JSON is sent to JS once, then reused per string."""

    def __init__(self, engine: TemplateEngine, params_json: str) -> None:
        self._engine = engine
        self._params_json: str | None = params_json
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
        result = engine._call(code, params_json, local_json)
        self._sent_to = ctx
        return result
