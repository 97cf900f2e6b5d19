"""`td_run>`, `td_wait>`, `td_wait_table>`, `td_for_each>`: digdag's TdRunOperatorFactory,
TdWaitOperatorFactory, TdWaitTableOperatorFactory and TdForEachOperatorFactory on td-client, with
td>'s client, job lifecycle and results (td.py).

tdclient is imported inside the functions (see td.py): this module is importable with the
standard library only.

* `td_run>: name` runs a saved query by name (`POST /v3/schedule/run/{name}/{session time}` with a
  `domain_key`), `td_run>: 123` (a number) by id (`POST /v4/queries/123/jobs`, JSON
  `scheduled_time` + `domain_key`); then as td>: `download_file`, `store_last_results`, the
  `td.last_job` keys.
* `td_wait>` runs its query until the first column of the first row is true (not NULL, `false`
  or integer 0; no rows: false), sleeping `interval` (30 s) between checks, in this process:
  digdag's agent re-invokes the operator instead. Each check is a new job. Stores nothing.
* `td_wait_table>: [db.]t` waits for the table (REST list, every `min(interval, 30 s)`), then,
  with `rows: N` > 0, runs a count job every `interval` until the count is at least N.
* `td_for_each>` runs its query and returns one subtask per row, `+td-for-each-<i>`: a copy of
  `_do` with `_export: {td: {each: {<column>: <value>}}}`, `_parallel` copied (subtask_config,
  expanded by the engine as for_each>'s). Stores the td.last_job keys.
"""

from __future__ import annotations

import copy
import json
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, cast

from .durations import duration_seconds, show_seconds
from .protocol import RunnerError, TaskInput, TaskOutput, empty_output, merged_params, query_text
from .shell import task_cwd
from .td import (
    ENGINES,
    Client,
    TdError,
    _bool,
    _int,
    _quoted,
    _require_tdclient,
    _scheduled_time,
    _split_table,
    call,
    job_options,
    job_outputs,
    result_rows,
    run_job,
    submitter,
)

DEFAULT_INTERVAL = 30  # digdag's td_wait default (config.td.wait.poll_interval)
MIN_INTERVAL = 1  # digdag's default minimum is 30 s (config.td.wait.min_poll_interval): see the docs
MAX_INTERVAL = 2 * 86400
TABLE_EXISTENCE_INTERVAL = 30
MAX_FOR_EACH_ROWS = 1000  # digdag's Limits.maxWorkflowTasks default

_sleep = time.sleep  # tests replace it


def _engine(params: Mapping[str, Any]) -> str:
    engine = str(params.get("engine") or "presto").strip()
    if engine not in ENGINES:
        raise RunnerError(
            f"Unknown 'engine:' option (available options are: hive and presto): {engine}", "ConfigError"
        )
    return engine


def _interval(params: Mapping[str, Any]) -> int:
    """digdag's `interval` (a DurationParam: `30s`, `1m 30s`), bounded."""
    value = params.get("interval")
    if value is None:
        return DEFAULT_INTERVAL
    try:
        seconds = duration_seconds(str(value))
    except ValueError:
        raise RunnerError(
            f"Parameter 'interval' must be a duration like 30s, 10m or 1h 30m: {value}", "ConfigError"
        ) from None
    if seconds < MIN_INTERVAL or seconds > MAX_INTERVAL:
        raise RunnerError(
            f"poll interval must be at least {show_seconds(MIN_INTERVAL)} and no greater than "
            f"{show_seconds(MAX_INTERVAL)}",
            "ConfigError",
        )
    return seconds


def _query_submitter(
    client: Client, query: str, engine: str, kwargs: Mapping[str, Any]
) -> Callable[[str], str]:
    def submit(key: str) -> str:
        kind = cast(Literal["hive", "presto"], engine)
        return str(client.api.query(query, type=kind, db=client.database, domain_key=key, **kwargs))

    return submitter(client, submit)


def _first_row(client: Client, job_id: str) -> list[Any] | None:
    """The first row of the job's result (None: no rows, or a 404 result)."""
    import tdclient.errors

    def first() -> list[Any] | None:
        try:
            for row in result_rows(client, job_id):
                return list(row)
        except tdclient.errors.NotFoundError:
            pass
        return None

    row: list[Any] | None = call(client, f"Fetching the result of job '{job_id}'", first)
    return row


# --------------------------------------------------------------------------- td_run>


def run_td_run(task_input: TaskInput, cwd: str | os.PathLike[str]) -> TaskOutput:
    params = merged_params(task_input, "td")
    command = params.get("_command")
    if command is None or command == "":
        raise RunnerError("Parameter '_command' is required but not set", "ConfigError")
    if isinstance(command, bool) or not isinstance(command, (int, str)):
        text = json.dumps(command) if isinstance(command, (bool, float, list, dict)) else str(command)
        raise RunnerError(f"Invalid saved query reference: {text}", "ConfigError")
    when = _scheduled_time(params)
    if when is None:
        raise RunnerError("Parameter 'session_time' is required but not set", "ConfigError")
    download_file = params.get("download_file")
    store = _bool(params.get("store_last_results", False), "store_last_results")
    _require_tdclient()
    workdir = task_cwd(task_input, cwd)
    client = Client(params, task_input)
    return client.scrubbed(
        lambda: _run_saved(client, task_input, params, command, when, download_file, store, workdir)
    )


def _run_saved(
    client: Client,
    task_input: TaskInput,
    params: Mapping[str, Any],
    command: int | str,
    when: int,
    download_file: Any,
    store: bool,
    workdir: Path,
) -> TaskOutput:
    import datetime

    import tdclient.util

    api = client.api
    stamp = datetime.datetime.fromtimestamp(when, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(command, int):
        path = f"/v4/queries/{command}/jobs"
        what = f"saved query id={command}"
    else:
        path = tdclient.util.create_url("/v3/schedule/run/{name}/{time}", name=command, time=when)
        what = f"saved query name={command}"

    def start(key: str) -> str:
        if isinstance(command, int):
            body = json.dumps({"scheduled_time": stamp, "domain_key": key}).encode()
            request = api.post(path, body, headers={"content-type": "application/json"})
        else:
            request = api.post(path, {"domain_key": key})
        with request as res:
            data = res.read()
            if res.status != 200:
                api.raise_error(f"Starting {what} failed", res, data)
        if isinstance(command, int):
            return str(api.checked_json(data, ["id"])["id"])
        jobs = api.checked_json(data, ["jobs"])["jobs"]
        if not isinstance(jobs, list) or not jobs or not isinstance(jobs[0], dict) or "job_id" not in jobs[0]:
            raise ValueError(f"Unexpected API response: no job started: {data!r}")
        return str(jobs[0]["job_id"])

    print(f"td_run>: starting {what} with time={stamp}", flush=True)
    show = run_job(client, task_input, params, submitter(client, start), op="td_run")
    output = empty_output()
    job_outputs(client, show, workdir, download_file, store, output, op="td_run")
    return output


# --------------------------------------------------------------------------- td_wait>


def _truthy(value: Any) -> bool:
    """digdag's TdWaitOperator.isTruthy: NULL, false and integer 0 are false, anything else true."""
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value != 0
    return True


def run_td_wait(task_input: TaskInput, cwd: str | os.PathLike[str]) -> TaskOutput:
    params = merged_params(task_input, "td")
    query = query_text(params, "td_wait")
    engine = _engine(params)
    interval = _interval(params)
    options = job_options(params, engine, scheduled=True)
    _require_tdclient()
    client = Client(params, task_input)
    return client.scrubbed(lambda: _wait(client, task_input, params, query, engine, options, interval))


def _wait(
    client: Client,
    task_input: TaskInput,
    params: Mapping[str, Any],
    query: str,
    engine: str,
    options: Mapping[str, Any],
    interval: int,
) -> TaskOutput:
    submit = _query_submitter(client, query, engine, options)
    while True:
        show = run_job(client, task_input, params, submit, op="td_wait", fresh_key=True)
        job_id = str(show["job_id"])
        row = _first_row(client, job_id)
        if row is not None and not row:
            raise TdError("Got empty row in result of query")
        if row is not None and _truthy(row[0]):
            print(f"td_wait>: the condition is true (job {job_id})", flush=True)
            return empty_output()
        print(
            f"td_wait>: the condition is false (job {job_id}); checking again in {show_seconds(interval)}",
            flush=True,
        )
        _sleep(interval)


# --------------------------------------------------------------------------- td_wait_table>


def run_td_wait_table(task_input: TaskInput, cwd: str | os.PathLike[str]) -> TaskOutput:
    params = merged_params(task_input, "td")
    command = params.get("_command")
    if not isinstance(command, str) or not command.strip():
        raise RunnerError(f"td_wait_table> needs a table name ([db.]table): {command!r}", "ConfigError")
    db, table = _split_table(command, "_command")
    rows = _int(params.get("rows", 0), "rows")
    engine = _engine(params)
    interval = _interval(params)
    options = job_options(params, engine, scheduled=False)  # digdag sends no scheduled_time here
    _require_tdclient()
    client = Client(params, task_input)
    return client.scrubbed(
        lambda: _wait_table(client, task_input, params, db, table, rows, engine, options, interval)
    )


def _wait_table(
    client: Client,
    task_input: TaskInput,
    params: Mapping[str, Any],
    db: str | None,
    table: str,
    rows: int,
    engine: str,
    options: Mapping[str, Any],
    interval: int,
) -> TaskOutput:
    import tdclient.errors

    database = db or client.database
    name = f"{database}.{table}"

    def exists() -> bool:
        try:
            return table in client.api.list_tables(database)
        except tdclient.errors.NotFoundError:
            return False

    wait = min(interval, TABLE_EXISTENCE_INTERVAL)
    while not call(client, f"Checking table {name}", exists):
        print(
            f"td_wait_table>: table {name} does not exist; checking again in {show_seconds(wait)}", flush=True
        )
        _sleep(wait)
    if rows <= 0:
        print(f"td_wait_table>: table {name} exists", flush=True)
        return empty_output()
    if engine == "presto":
        query = "select count(*) from " + _quoted(db, table, '"')
    else:
        query = f"select count(*) from (select * from {_quoted(db, table, '`')} limit {rows}) sub"
    submit = _query_submitter(client, query, engine, options)
    while True:
        show = run_job(client, task_input, params, submit, op="td_wait_table", fresh_key=True)
        job_id = str(show["job_id"])
        row = _first_row(client, job_id)
        if row is None:
            raise TdError(f"Got unexpected empty result for count job: {job_id}")
        if len(row) != 1:
            raise TdError(f"Got unexpected result row size for count job: {len(row)}")
        count = row[0]
        if isinstance(count, bool) or not isinstance(count, int):
            raise TdError(f"Got unexpected value type count job: {_msgpack_type(count)}")
        if count >= rows:
            print(f"td_wait_table>: table {name} has {count} rows (at least {rows})", flush=True)
            return empty_output()
        print(
            f"td_wait_table>: table {name} has {count} rows (waiting for {rows}); "
            f"checking again in {show_seconds(interval)}",
            flush=True,
        )
        _sleep(interval)


def _msgpack_type(value: Any) -> str:
    """A msgpack value's type as msgpack-java names it (digdag's messages)."""
    if value is None:
        return "NIL"
    for kind, name in (
        (bool, "BOOLEAN"),
        (int, "INTEGER"),
        (float, "FLOAT"),
        (str, "STRING"),
        ((bytes, bytearray), "BINARY"),
        ((list, tuple), "ARRAY"),
        (dict, "MAP"),
    ):
        if isinstance(value, kind):
            return name
    return "EXTENSION"


# --------------------------------------------------------------------------- td_for_each>


def run_td_for_each(task_input: TaskInput, cwd: str | os.PathLike[str]) -> TaskOutput:
    params = merged_params(task_input, "td")
    config = task_input["config"]
    block = config.get("_do")
    if block is None:
        raise RunnerError("Parameter '_do' is required but not set", "ConfigError")
    if not isinstance(block, Mapping):
        raise RunnerError("_do must be a task definition (a map)", "ConfigError")
    query = query_text(params, "td_for_each")
    engine = _engine(params)
    options = job_options(params, engine, scheduled=True)
    _require_tdclient()
    client = Client(params, task_input)
    return client.scrubbed(lambda: _for_each(client, task_input, params, query, engine, options, dict(block)))


def _each_value(value: Any) -> Any:
    """digdag keeps nil, boolean, integer, float and string values; others fail the task."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TdError(f"Unsupported column type: {_msgpack_type(value)}")


def _for_each(
    client: Client,
    task_input: TaskInput,
    params: Mapping[str, Any],
    query: str,
    engine: str,
    options: Mapping[str, Any],
    block: dict[str, Any],
) -> TaskOutput:
    import tdclient.errors

    submit = _query_submitter(client, query, engine, options)
    show = run_job(client, task_input, params, submit, op="td_for_each")
    job_id = str(show["job_id"])
    schema = show.get("hive_result_schema") or []
    columns = [str(c[0]) for c in schema if isinstance(c, (list, tuple)) and c]

    def fetch() -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        try:
            for row in result_rows(client, job_id):
                # digdag zips the names with the values, the shorter list deciding
                out.append({k: _each_value(v) for k, v in zip(columns, row, strict=False)})
                if len(out) > MAX_FOR_EACH_ROWS:
                    raise TdError(f"Too many tasks. Limit: {MAX_FOR_EACH_ROWS}", "TaskLimitExceededException")
        except tdclient.errors.NotFoundError:
            pass
        return out

    rows = call(client, f"Downloading the result of job '{job_id}'", fetch)
    subtasks: dict[str, Any] = {}
    for i, row in enumerate(rows):
        task = copy.deepcopy(block)
        export = dict(task.get("_export") or {})
        td = dict(export.get("td") or {}) if isinstance(export.get("td"), Mapping) else {}
        each = dict(td.get("each") or {}) if isinstance(td.get("each"), Mapping) else {}
        each.update(row)
        td["each"] = each
        export["td"] = td
        task["_export"] = export
        subtasks[f"+td-for-each-{i}"] = task
    if subtasks and "_parallel" in task_input["config"]:
        subtasks["_parallel"] = task_input["config"]["_parallel"]
    print(f"td_for_each>: {len(rows)} rows: {len(rows)} subtasks", flush=True)
    output = empty_output()
    job_outputs(client, show, Path("."), None, False, output, op="td_for_each")
    output["subtask_config"] = subtasks or None
    return output
