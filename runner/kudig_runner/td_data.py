"""`td_load>`, `td_table_export>`, `td_result_export>`, `td_partial_delete>`: digdag's
TdLoadOperatorFactory, TdTableExportOperatorFactory, TDResultExportOperatorFactory and
TdPartialDeleteOperatorFactory on td-client, with td>'s client, job lifecycle (domain keys, the
wait, a killed task killing its job) and the stored `td.last_job` keys (td.py).

tdclient is imported inside the functions (see td.py): this module is importable with the
standard library only.

* `td_load>: file.yml` (an Embulk config, `${...}` rendered and parsed by the engine, passed as
  `_command_config`) or `config: {...}`: a bulk load job into `table: [db.]t`
  (`POST /v3/job/issue/bulkload/{db}`, td-client's `connector_issue`), `${secret:...}` resolved in
  the config; `td_load>: name` or `name: name`: a saved bulk load session started at the session
  time (`POST /v3/bulk_loads/{name}/jobs`, td-client's `connector_run`).
* `td_table_export>`: the rows of `table` from `from` to `to` written to S3 (`s3_bucket`,
  `s3_path_prefix`, `file_format`) with the secrets `aws.s3.access_key_id`/`secret_access_key`
  (falling back to `aws.*`), td-client's `export_data`.
* `td_result_export>`: job `job_id`'s result written through the saved `result_connection` with
  `result_settings` (`POST /v3/job/result_export/{id}`).
* `td_partial_delete>: table`: the rows with `from <= time < to` (whole hours) deleted
  (`POST /v3/table/partialdelete/{db}/{t}`).
"""

from __future__ import annotations

import datetime
import json
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .protocol import RunnerError, TaskInput, TaskOutput, empty_output, merged_params
from .secrets import SECRET_PATTERN
from .td import (
    SECRET_KEYS as TD_SECRET_KEYS,
)
from .td import (
    Client,
    _require_tdclient,
    _scheduled_time,
    _split_table,
    job_outputs,
    resolve_secrets,
    result_connection,
    run_job,
    submitter,
)

_AWS_KEYS = ("access_key_id", "secret_access_key")
# td_table_export> reads the S3 keys itself: `aws.s3.*` first, then `aws.*` (digdag's getSecrets).
EXPORT_SECRET_KEYS = (
    TD_SECRET_KEYS + tuple(f"aws.s3.{k}" for k in _AWS_KEYS) + tuple(f"aws.{k}" for k in _AWS_KEYS)
)
FILE_FORMATS = ("tsv.gz", "jsonl.gz", "json.gz", "line-json.gz")


def _config_error(message: str) -> RunnerError:
    return RunnerError(message, "ConfigError")


def _required(params: Mapping[str, Any], key: str) -> Any:
    value = params.get(key)
    if value is None:
        raise _config_error(f"Parameter '{key}' is required but not set")
    return value


def _string(params: Mapping[str, Any], key: str) -> str:
    value = _required(params, key)
    if isinstance(value, (dict, list, bool)):
        raise _config_error(f"Parameter '{key}' must be a string: {json.dumps(value)}")
    return str(value)


def _zone(params: Mapping[str, Any]) -> datetime.tzinfo:
    name = str(params.get("timezone") or "UTC")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise _config_error(f"Invalid timezone: {name}") from None


def _run(
    client: Client,
    task_input: TaskInput,
    params: Mapping[str, Any],
    op: str,
    submit: Callable[[str], str],
    fresh_key: bool = False,
) -> TaskOutput:
    """Submit, wait (a stopped task kills the job), store the td.last_job keys."""
    show = run_job(client, task_input, params, submitter(client, submit), op=op, fresh_key=fresh_key)
    output = empty_output()
    job_outputs(client, show, Path("."), None, False, output, op=op)  # nothing downloaded
    return output


def _job_id(api: Any, data: bytes) -> str:
    return str(api.checked_json(data, ["job_id"])["job_id"])


# --------------------------------------------------------------------------- td_load>


def run_td_load(task_input: TaskInput, cwd: str | os.PathLike[str]) -> TaskOutput:
    """digdag's TdLoadOperator: exactly one of `_command`, `name`, `config`."""
    params = merged_params(task_input, "td")
    command = params.get("_command")
    name = params.get("name")
    config = params.get("config")
    if config is not None and name is not None:
        raise _config_error("The parameters config and name cannot both be set")
    given = sum(1 for v in (command, name, config) if v is not None)
    if given > 1:
        raise _config_error("Only the command or one of the config and name params may be set")
    if given == 0:
        raise _config_error("No parameter is set")
    embulk: Any = None
    session: str | None = None
    if command is not None:
        text = _string(params, "_command")
        if text.endswith((".yml", ".yaml")):
            embulk = params.get("_command_config")
            if embulk is None:
                raise _config_error(
                    f"td_load>: the config file {text} was not read (kudig's engine reads it)"
                )
        else:
            session = text
    elif name is not None:
        session = _string(params, "name")
    else:
        embulk = config
    table: tuple[str | None, str] | None = None
    if embulk is not None:
        if not isinstance(embulk, Mapping):
            raise _config_error(f"The bulk load config must be a map: {json.dumps(embulk, default=str)}")
        table = _split_table(_string(params, "table"), "table")
    when = _scheduled_time(params)
    if session is not None and when is None:
        raise _config_error("Parameter 'session_time' is required but not set")
    _require_tdclient()
    client = Client(params, task_input)
    api = client.api

    if embulk is not None:
        assert table is not None
        for key in SECRET_PATTERN.findall(json.dumps(embulk, default=str)):
            client.secret(key.strip())  # its value is scrubbed from messages
        resolved = resolve_secrets(embulk, task_input["secrets"])
        db, t = table[0] or client.database, table[1]

        def submit(key: str) -> str:
            return str(api.connector_issue(db, t, {"config": resolved, "domain_key": key}))

        print(f"td_load>: starting a bulk load into {db}.{t}", flush=True)
    else:
        assert session is not None
        import tdclient.util

        path = tdclient.util.create_url("/v3/bulk_loads/{name}/jobs", name=session)

        def submit(key: str) -> str:
            # td-client's connector_run, with the body digdag sends (scheduled_time, domain_key)
            body = json.dumps({"scheduled_time": when, "domain_key": key}).encode()
            with api.post(path, body, headers={"content-type": "application/json; charset=utf-8"}) as res:
                data = res.read()
                if res.status != 200:
                    api.raise_error(f"DataConnectorSession: {session} job create failed", res, data)
            return _job_id(api, data)

        print(f"td_load>: starting bulk load session name={session} at time={when}", flush=True)
    return client.scrubbed(lambda: _run(client, task_input, params, "td_load", submit))


# --------------------------------------------------------------------------- td_partial_delete>


def timestamp_param(value: Any, key: str, zone: datetime.tzinfo) -> int:
    """digdag's TimestampParam: epoch seconds (a number, or a string of digits), an ISO date-time
    with an offset (`2024-01-30T00:00:00+09:00`), or a local one in the workflow's time zone."""
    if isinstance(value, bool) or value is None:
        raise _config_error(
            f"Parameter '{key}' is required but not set"
            if value is None
            else f"Not a valid timestamp: '{value}'"
        )
    if isinstance(value, int):
        return value
    if not isinstance(value, str):
        raise _config_error(f"Not a valid timestamp: '{json.dumps(value, default=str)}'")
    if value.isdigit():
        return int(value)
    if not re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d(:\d\d(\.\d+)?)?(Z|[+-]\d\d:\d\d(:\d\d)?)?", value):
        raise _config_error(f"Invalid timestamp format: {value}")
    try:
        moment = datetime.datetime.fromisoformat(value)
    except ValueError:
        raise _config_error(f"Invalid timestamp format: {value}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone)
    return int(moment.timestamp())


def run_td_partial_delete(task_input: TaskInput, cwd: str | os.PathLike[str]) -> TaskOutput:
    """digdag's TdPartialDeleteOperator: `_command` is the table (in `database`), `from`/`to`
    TimestampParams that must be whole hours."""
    params = merged_params(task_input, "td")
    table = _string(params, "_command")
    zone = _zone(params)
    start = timestamp_param(params.get("from"), "from", zone)
    end = timestamp_param(params.get("to"), "to", zone)
    if start % 3600 or end % 3600:
        raise _config_error("'from' and 'to' parameters must be whole hours")
    _require_tdclient()
    client = Client(params, task_input)
    api = client.api
    import tdclient.util

    path = tdclient.util.create_url("/v3/table/partialdelete/{db}/{table}", db=client.database, table=table)

    def submit(key: str) -> str:
        with api.post(path, {"from": str(start), "to": str(end), "domain_key": key}) as res:
            data = res.read()
            if res.status != 200:
                api.raise_error("Partial delete failed", res, data)
        return _job_id(api, data)

    print(f"td_partial_delete>: deleting rows of {client.database}.{table} from {start} to {end}", flush=True)
    return client.scrubbed(lambda: _run(client, task_input, params, "td_partial_delete", submit))


# --------------------------------------------------------------------------- td_table_export>


def export_time(value: Any, key: str, zone: datetime.tzinfo) -> int:
    """digdag's td_table_export> `from`/`to`: epoch seconds, or `yyyy-MM-dd HH:mm:ss[ Z]` (Z as
    `+0900`) read in the `timezone` param."""
    if value is None:
        raise _config_error(f"Parameter '{key}' is required but not set")
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    text = str(value).strip()
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    for pattern in ("%Y-%m-%d %H:%M:%S %z", "%Y-%m-%d %H:%M:%S"):
        try:
            moment = datetime.datetime.strptime(text, pattern)
        except ValueError:
            continue
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=zone)
        return int(moment.timestamp())
    raise _config_error(f"Parameter '{key}' must be epoch seconds or 'yyyy-MM-dd HH:mm:ss[ Z]': {value}")


def run_td_table_export(task_input: TaskInput, cwd: str | os.PathLike[str]) -> TaskOutput:
    """digdag's TdTableExportOperator."""
    params = merged_params(task_input, "td")
    db, table = _split_table(_string(params, "table"), "table")
    file_format = _string(params, "file_format")
    if file_format not in FILE_FORMATS:
        raise _config_error("invalid file_format option")
    zone = _zone(params)
    start = export_time(params.get("from"), "from", zone)
    end = export_time(params.get("to"), "to", zone)
    bucket = _string(params, "s3_bucket")
    prefix = _string(params, "s3_path_prefix")
    pool = params.get("hive_pool_name")
    _require_tdclient()
    client = Client(params, task_input)
    keys = {}
    for k in _AWS_KEYS:
        value = client.secret(f"aws.s3.{k}") or client.secret(f"aws.{k}")
        if value is None:
            raise RunnerError(f"Secret not found: aws.s3.{k} (or aws.{k})", "SecretNotFoundError")
        keys[k] = value
    database = db or client.database
    api = client.api

    def submit(key: str) -> str:
        options: dict[str, Any] = {
            **keys,
            "bucket": bucket,
            "file_prefix": prefix,
            "file_format": file_format,
            "from": start,
            "to": end,
            "domain_key": key,
        }
        if pool:
            options["pool_name"] = str(pool)
        return str(api.export_data(database, table, "s3", options))  # type: ignore[arg-type]

    print(
        f"td_table_export>: exporting {database}.{table} to s3://{bucket}/{prefix} ({file_format})",
        flush=True,
    )
    return client.scrubbed(lambda: _run(client, task_input, params, "td_table_export", submit))


# --------------------------------------------------------------------------- td_result_export>


def run_td_result_export(task_input: TaskInput, cwd: str | os.PathLike[str]) -> TaskOutput:
    """digdag's TDResultExportOperator: `job_id`, `result_connection` and `result_settings` are
    read from the task's own parameters (not the `td:` map); `database` is not needed."""
    raw = merged_params(task_input)
    job_id = _string(raw, "job_id")
    _string(raw, "result_connection")
    if not isinstance(_required(raw, "result_settings"), Mapping):
        raise _config_error("Parameter 'result_settings' must be a map")
    params = merged_params(task_input, "td")
    _require_tdclient()
    client = Client(params, task_input, require_database=False)
    api = client.api
    import tdclient.util

    path = tdclient.util.create_url("/v3/job/result_export/{id}", id=job_id)

    def start() -> TaskOutput:
        form = result_connection(client, task_input, raw)

        def submit(key: str) -> str:  # digdag sends no domain key here
            with api.post(path, form) as res:
                data = res.read()
                if res.status != 200:
                    api.raise_error(f"Result export of job {job_id} failed", res, data)
            return _job_id(api, data)

        print(
            f"td_result_export>: exporting the result of job {job_id} to {raw['result_connection']}",
            flush=True,
        )
        return _run(client, task_input, params, "td_result_export", submit, fresh_key=True)

    return client.scrubbed(start)
