"""Checks a workflow before it runs: `${...}` syntax and `call>` targets.

digdag finds a JavaScript syntax error or a call> cycle only when the task runs, possibly hours
into a session. Both are visible in the text, so we report them up front with file and line —
`kudig run`, `kudig check`, `kudig push` and the controller's Workflow status all call this.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import quickjs

from kudig.compiler import base_workdir, call_target
from kudig.errors import ConfigError
from kudig.yamlload import YMap, load_dig

_ctx_lock = threading.Lock()
_ctx: Any = None


def template_expressions(text: str) -> Iterator[str]:
    """The `${...}` expressions of a template, found as digdag finds them: braces balance, and
    (like digdag's scanner) quotes are not special, so `${'}'}` is as broken here as at run time."""
    i = 0
    n = len(text)
    while i < n:
        j = text.find("$", i)
        if j < 0 or j + 1 >= n:
            return
        if text[j + 1] == "$":
            i = j + 2
            continue
        if text[j + 1] != "{":
            i = j + 1
            continue
        start = j + 2
        k = start
        while k < n and (text[k].isalpha()):
            k += 1
        if k < n and text[k] == ":" and k > start and text[start:k].islower():
            i = k  # ${secret:...} and friends are not JavaScript
            continue
        depth = 1
        k = start
        while k < n:
            c = text[k]
            if c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
                if depth == 0:
                    break
            k += 1
        if k >= n:
            return  # unclosed: digdag leaves it as text
        if text[start:k].strip():
            yield text[start:k]  # digdag's renderer skips an empty ${}
        i = k + 1


def syntax_error(expression: str) -> str | None:
    """QuickJS's complaint about `expression`, compiled but never run; None when it parses."""
    global _ctx
    with _ctx_lock:
        if _ctx is None:
            _ctx = quickjs.Context()
            _ctx.set_time_limit(1)
        _ctx.set("__kudig_src", "return (" + expression + "\n);")
        try:
            _ctx.eval("new Function('params', __kudig_src); undefined")
        except quickjs.JSException as e:
            return str(e).splitlines()[0]
    return None


def _strings(
    value: Any, where: YMap | None, key: str | None
) -> Iterator[tuple[str, YMap | None, str | None]]:
    if isinstance(value, str):
        yield value, where, key
    elif isinstance(value, dict):
        inner = value if isinstance(value, YMap) else where
        for k, v in value.items():
            yield from _strings(v, inner, k if isinstance(value, YMap) else key)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v, where, key)


def template_problems(definition: YMap) -> list[ConfigError]:
    """Every `${...}` that cannot parse. Not fatal by itself: digdag only fails the task that
    evaluates it (an untaken `if>` branch never does), so `kudig run` warns and `kudig check`
    refuses."""
    problems = []
    for text, where, key in _strings(definition, definition, None):
        if "${" not in text:
            continue
        for expr in template_expressions(text):
            problem = syntax_error(expr)
            if problem is not None:
                line = where.line_of(key) if where is not None and key is not None else None
                problems.append(
                    ConfigError(
                        f"Invalid JavaScript in ${{{expr}}}: {problem}", where.file if where else None, line
                    )
                )
    return problems


def _call_targets(value: Any, where: YMap | None) -> Iterator[tuple[str, YMap | None]]:
    if isinstance(value, dict):
        inner = value if isinstance(value, YMap) else where
        target = value.get("call>")
        if isinstance(target, str) and "$" not in target:
            yield target, inner
        for v in value.values():
            yield from _call_targets(v, inner)
    elif isinstance(value, list):
        for v in value:
            yield from _call_targets(v, where)


def check_calls(
    definition: YMap, project_dir: Path, file: str, stack: tuple[str, ...] = (), workdir: str | None = None
) -> None:
    """Follow literal `call>` targets: a missing file, a cycle or a path leaving the project is an
    error at the call's line. Targets resolve against the `_workdir` digdag gives each file
    (`compiler.call_target`, `compiler.base_workdir`); the top level's is in its `_export`."""
    if workdir is None:
        export = definition.get("_export")
        workdir = str(export.get("_workdir") or "") if isinstance(export, dict) else ""
    if "$" in workdir:
        return  # known at run time only
    stack = (*stack, str(PurePosixPath(file)))
    for target, where in _call_targets(definition, definition):
        line = where.line_of("call>") if where is not None else None
        source = where.file if where is not None else file
        try:
            key = call_target(workdir, target)
        except ConfigError as e:
            raise ConfigError(e.message, source, line) from None
        if key in stack:
            raise ConfigError("call> cycle: " + " -> ".join([*stack, key]), source, line)
        path = project_dir / key
        if not path.is_file():
            raise ConfigError(f"call> workflow file not found: {key}", source, line)
        called = load_dig(path, project_dir)
        own = called.get("_export")
        inner = base_workdir(key, own.get("_workdir") if isinstance(own, dict) else None)
        check_calls(called, project_dir, key, stack, workdir if inner is None else inner)


# digdag's `Parameter 'x' is not used at task +t.` (OperatorManager.warnUnusedKeys): after a task
# succeeds, each of its own keys the operator did not read. Which operators can warn at all was
# settled by running digdag 0.10.5.1 (tests/unit/test_lint_unused_keys.py, the scenario
# unused_key_warnings): every operator built on digdag's BaseOperator reads the whole config (its
# RetryControl does), and so do the loops (ParallelControl), `sh>`, `py>` (arguments), `rb>`, the
# whole `td>` family (a query template, `session_time`...), `pg>`, `http>`, `mail>`, `call>`,
# `require>`: they never warn. `fail>` never succeeds, so it never warns either. What remains reads
# only these keys (besides `_command`); any other key of the task is reported, `_retry`, `timeout`
# and `docker` included (none of these operators uses them).
OPERATOR_KEYS: dict[str, frozenset[str]] = {
    "echo": frozenset(),
    "notify": frozenset(),
    "nop": frozenset(),
    "if": frozenset({"_do", "_else_do"}),
    "wait": frozenset({"blocking", "poll_interval"}),
    "s3_wait": frozenset(
        {
            "bucket",
            "key",
            "version_id",
            "path_style_access",
            "endpoint",
            "region",
            "timeout",
            "continue_on_timeout",
            "aws",
        }
    ),
}

# Keys taken before the operator runs, never reported: the operator's name and command, what the
# engine reads (`_env`, `_secrets` for the command's environment; `_export`, `_error`, `_check`
# are not part of the task's own config in digdag; `_after`, `_background` are removed by its
# compiler).
ENGINE_KEYS = frozenset(
    {"_type", "_command", "_export", "_env", "_secrets", "_error", "_check", "_after", "_background"}
)


def unused_keys(tasks: Iterator[Any] | list[Any]) -> list[ConfigError]:
    """digdag's `Parameter 'x' is not used at task +wf+t.`, where digdag prints it (OPERATOR_KEYS),
    with a suggestion (`poll_intervall` -> `poll_interval`). Only a warning, as in digdag."""
    from kudig.compiler import suggest

    out = []
    for spec in tasks:
        op = spec.config.get("_type")
        known = OPERATOR_KEYS.get(op) if isinstance(op, str) else None
        if spec.is_group or known is None:
            continue
        allowed = ENGINE_KEYS | known
        for key in spec.config:
            if isinstance(key, str) and key not in allowed and not key.startswith("+"):
                hint = suggest(key, known) if known else ""
                did_you_mean = hint[len(repr(key)) :].strip()
                text = f"Parameter '{key}' is not used at task {spec.name}."
                out.append(ConfigError(f"{text} {did_you_mean}".rstrip(), spec.file, spec.line))
    return out
