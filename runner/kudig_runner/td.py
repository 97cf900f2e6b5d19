"""`td>`: digdag's TdOperatorFactory on Treasure Data's Python client (td-client, `tdclient`).

tdclient is imported inside the functions: this module is importable with the standard library
only (the runner core is copied into users' images); the runner image has the library.

* Client (`TDOperator.fromConfig`): the API key is the secret `td.apikey` only (trimmed);
  `endpoint` (host or host:port, default `api.treasuredata.com`) and `use_ssl` (true) from the
  secret `td.<key>` first, then the parameter (`td:` map entries are defaults). `database` from the
  secret `td.database` or the parameter, required.
* Query: the rendered text of the `_command` file (`_command_text`, rendered by the engine), a
  `_command: {data: ...}` map's `data`, or `query` verbatim. `create_table` / `insert_into` add
  digdag's prefix (presto: `DROP TABLE IF EXISTS "db"."t";` + `CREATE TABLE "db"."t" AS`,
  `INSERT INTO "db"."t"`; hive: `INSERT OVERWRITE|INTO TABLE `db`.`t``, the table created by REST
  first), at a `-- DIGDAG_INSERT_LINE` line, else after the leading comment block; then the six
  `-- project_id: ...` header lines.
* Job lifecycle (`TDOperator.runJob`): submit with a domain key, poll `/v3/job/status` with
  digdag's backoff (1, 2, 4, ... 30 s), on `error`/`killed` fail with the job's
  `debug.cmdout` + `debug.stderr`. The domain key is derived from the session, attempt, task name
  and `KUDIG_RUN_ID` (the runner keeps no state between runs): a retry that finds its key taken
  (409 `details.conflicts_with`) adopts that job instead of running the query twice; when that
  job had failed, the next key of the sequence submits it anew (so `_retry` re-runs failed SQL).
* Results: `download_file` (CSV as digdag's: header from `hive_result_schema`, CRLF),
  `store_last_results: true` (`td.last_results`: the first row as a map, reset first); always
  `td.last_job_id`, `td.last_job.id`, `td.last_job.num_records`.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, cast

from .protocol import RunnerError, TaskInput, TaskOutput, empty_output, merged_params, query_text
from .secrets import ReadSecrets, substitute_secrets
from .shell import task_cwd

DEFAULT_ENDPOINT = "api.treasuredata.com"
MAX_POLL_INTERVAL = 30.0
MAX_DOMAIN_KEY_TRIES = 20
SECRET_KEYS = ("td.apikey", "td.endpoint", "td.use_ssl", "td.database")
FINISHED = ("success", "error", "killed")


class TdError(RunnerError):
    def __init__(self, message: str, error_class: str = "TDOperatorError") -> None:
        super().__init__(message, error_class)


def _require_tdclient() -> None:
    try:
        import tdclient  # noqa: F401
    except ImportError:
        raise RunnerError(
            "td> needs Treasure Data's client library (pip install td-client); the kudig runner image has it",
            "ConfigError",
        ) from None


def _bool(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "false"):
        return text == "true"
    raise RunnerError(f"Parameter '{name}' must be a boolean: {value}", "ConfigError")


def _int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise RunnerError(f"Parameter '{name}' must be an integer: {value}", "ConfigError")
    try:
        return int(str(value).strip())
    except ValueError:
        raise RunnerError(f"Parameter '{name}' must be an integer: {value}", "ConfigError") from None


T = TypeVar("T")


class Client:
    """The configured API (td-client's `tdclient.api.API`) and the secret values to scrub."""

    def __init__(
        self, params: Mapping[str, Any], task_input: TaskInput, require_database: bool = True
    ) -> None:
        self._secrets = ReadSecrets(task_input["secrets"])
        secret = self._secrets.get
        apikey = secret("td.apikey")
        if apikey is None:
            raise RunnerError("The 'td.apikey' secret is missing", "ConfigError")
        self.apikey = apikey.strip()
        if not self.apikey:
            raise RunnerError("The 'td.apikey' secret is empty", "ConfigError")
        self._secrets.remember(self.apikey)
        endpoint = secret("td.endpoint") or params.get("endpoint") or DEFAULT_ENDPOINT
        use_ssl = secret("td.use_ssl")
        ssl = _bool(use_ssl if use_ssl is not None else params.get("use_ssl", True), "use_ssl")
        host = str(endpoint).strip()
        host = re.sub(r"^https?://", "", host).rstrip("/")
        self.url = f"{'https' if ssl else 'http'}://{host}"
        database = secret("td.database") or params.get("database")
        if database is None and require_database:
            raise RunnerError("Parameter 'database' is required but not set", "ConfigError")
        self.database = str(database or "").strip()
        if not self.database and require_database:
            raise RunnerError("Parameter 'database' is empty", "ConfigError")
        import tdclient.api

        # td-client's own POST retries are off (digdag: setRetryLimit(0)); the operator retries.
        self.api = tdclient.api.API(apikey=self.apikey, endpoint=self.url, retry_post_requests=False)

    def secret(self, key: str) -> str | None:
        """The secret `key` (None: the task has none), scrubbed from every message from now on."""
        return self._secrets.get(key)

    def scrub(self, text: str) -> str:
        return self._secrets.scrub(text)

    def scrubbed(self, run: Callable[[], T]) -> T:
        """`run()`, its task error (a RunnerError) scrubbed of every secret value read."""
        try:
            return run()
        except RunnerError as e:
            e.message = self.scrub(e.message)
            raise


# --------------------------------------------------------------------------- errors


class _Conflict(Exception):
    def __init__(self, job_id: str) -> None:
        super().__init__(job_id)
        self.job_id = job_id


def _deterministic(e: BaseException) -> bool:
    """digdag's BaseTDOperator: 4xx except 408/429 are not retried; network errors and 5xx are."""
    import tdclient.errors

    if isinstance(e, (tdclient.errors.AuthError, tdclient.errors.ForbiddenError)):
        return True
    if isinstance(e, (tdclient.errors.NotFoundError, tdclient.errors.AlreadyExistsError)):
        return True
    if isinstance(e, tdclient.errors.APIError):
        m = re.match(r"(\d{3}):", str(e))
        if m:
            code = int(m.group(1))
            return 400 <= code < 500 and code not in (408, 429)
        return str(e).startswith("Unexpected API response")
    return isinstance(e, ValueError)


def _describe(e: BaseException) -> str:
    import tdclient.errors

    text = str(e)
    if isinstance(e, tdclient.errors.AuthError):
        return f"Treasure Data rejected the API key (401 Unauthorized); check the 'td.apikey' secret: {text}"
    if isinstance(e, tdclient.errors.ForbiddenError):
        return f"Treasure Data denied access (403 Forbidden): {text}"
    return f"{type(e).__name__}: {text}" if not isinstance(e, tdclient.errors.APIError) else text


def call(
    client: Client,
    what: str,
    fn: Callable[[], Any],
    sleep: Callable[[float], None] = time.sleep,
    retries: int = 3,
) -> Any:
    """digdag's callWithRetry: transient errors retried (0.5, 1.5, 2 s), others fail the task."""
    delays = [0.5, 1.5, 2.0]
    attempt = 0
    while True:
        try:
            return fn()
        except (RunnerError, _Conflict):
            raise
        except Exception as e:
            if _deterministic(e) or attempt >= retries:
                raise TdError(client.scrub(f"{what} failed: {_describe(e)}")) from None
            print(client.scrub(f"td>: {what} failed ({_describe(e)}); retrying"), flush=True)
            sleep(delays[min(attempt, len(delays) - 1)])
            attempt += 1


# --------------------------------------------------------------------------- the query


def _split_table(name: Any, option: str) -> tuple[str | None, str]:
    text = str(name or "").strip()
    if not text:
        raise RunnerError(f"Parameter '{option}' must be a table name", "ConfigError")
    db, dot, table = text.partition(".")
    return (db, table) if dot else (None, text)


def _quoted(db: str | None, table: str, q: str) -> str:
    return (f"{q}{db}{q}." if db else "") + f"{q}{table}{q}"


def insert_command(query: str, command: str) -> str:
    """digdag's insertCommandStatement: at `-- DIGDAG_INSERT_LINE`, else after the leading
    comment block, else first; a newline after the command."""
    lines = query.splitlines(keepends=True)
    for i, line in enumerate(lines):
        if line.strip().startswith("-- DIGDAG_INSERT_LINE"):
            lines[i] = command + "\n"
            return "".join(lines)
    i = 0
    while i < len(lines) and (lines[i].strip().startswith("--") or not lines[i].strip()):
        i += 1
    return "".join(lines[:i]) + command + "\n" + "".join(lines[i:])


def header_comment(params: Mapping[str, Any], task_name: str) -> str:
    """digdag's wrapStmtWithComment: six `-- key: value` lines before every td> query."""
    keys = (
        ("project_id", params.get("project_id", "")),
        ("project_name", params.get("project_name", "")),
        ("workflow_name", params.get("workflow_name", "")),
        ("session_id", params.get("session_id", "")),
        ("attempt_id", params.get("attempt_id", "")),
        ("task_name", task_name),
    )
    return "".join(f"-- {k}: {'' if v is None else v}\n" for k, v in keys)


def _domain_key(task_input: TaskInput, params: Mapping[str, Any], n: int) -> str:
    parts = [
        str(params.get("session_uuid", "")),
        str(params.get("attempt_id", "")),
        os.environ.get("KUDIG_RUN_ID", ""),
        task_input["task_name"] or str(params.get("task_name", "")),
        str(n),
    ]
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "kudig:td:" + "\0".join(parts)))


def _scheduled_time(params: Mapping[str, Any]) -> int | None:
    import datetime

    value = params.get("session_time")
    if not isinstance(value, str) or not value:
        return None
    try:
        return int(datetime.datetime.fromisoformat(value).timestamp())
    except ValueError:
        return None


def _conflicting_job(e: BaseException) -> str | None:
    """`details.conflicts_with` of a 409 (td-client keeps the body in the message)."""
    text = str(e)
    start = text.find("{")
    if start < 0:
        return None
    try:
        body = json.loads(text[start:])
    except ValueError:
        return None
    details = body.get("details") if isinstance(body, dict) else None
    value = details.get("conflicts_with") if isinstance(details, dict) else None
    return None if value is None else str(value)


# --------------------------------------------------------------------------- running a job


def run_job(
    client: Client,
    task_input: TaskInput,
    params: Mapping[str, Any],
    submit: Callable[[str], str],
    sleep: Callable[[float], None] = time.sleep,
    op: str = "td",
    fresh_key: bool = False,
) -> dict[str, Any]:
    """Submit (idempotently, by domain key), wait for the job, fail on error; its `show_job`.
    `fresh_key`: a random domain key (a polling operator's new job per check, as digdag's)."""
    job = _Submitted()
    with _killed_on_stop(client, job, op):
        job_id = _submit(client, task_input, params, submit, sleep, op, fresh_key, job)
        iteration = 0
        interval = 1.0
        while True:
            sleep(interval)
            status = call(
                client, f"Getting the status of job {job_id}", lambda: client.api.job_status(job_id), sleep
            )
            if status in FINISHED:
                break
            iteration += 1
            interval = min(2.0**iteration, MAX_POLL_INTERVAL)
    show: dict[str, Any] = call(client, f"Showing job {job_id}", lambda: client.api.show_job(job_id), sleep)
    if status != "success":
        debug = show.get("debug") or {}
        cmdout = debug.get("cmdout") or ""
        stderr = debug.get("stderr") or ""
        raise TdError(client.scrub(f"TD job {job_id} {status}: {cmdout}\n{stderr}".rstrip()), "TDJobError")
    show["job_id"] = job_id
    return show


def _submit(
    client: Client,
    task_input: TaskInput,
    params: Mapping[str, Any],
    submit: Callable[[str], str],
    sleep: Callable[[float], None],
    op: str,
    fresh_key: bool,
    job: _Submitted,
) -> str:
    """The job's id: submitted now, or adopted from an earlier try of this task (its domain key)."""
    for n in range(MAX_DOMAIN_KEY_TRIES):
        key = str(uuid.uuid4()) if fresh_key else _domain_key(task_input, params, n)
        try:
            job_id = str(call(client, "Submitting the job", functools.partial(submit, key), sleep))
            job.started(job_id)
            print(f"{op}>: started job {job_id}", flush=True)
            return job_id
        except _Conflict as c:
            held = c.job_id
            status = call(
                client, "Getting the job status", functools.partial(client.api.job_status, held), sleep
            )
            if status in ("error", "killed"):
                print(f"{op}>: job {held} of an earlier try {status}; submitting again", flush=True)
                job.check()
                continue
            job.started(held)
            print(f"{op}>: job {held} was already submitted by an earlier try; waiting for it", flush=True)
            return held
    raise TdError(f"Gave up submitting: {MAX_DOMAIN_KEY_TRIES} earlier tries of this task failed")


class _Stopped(Exception):
    def __init__(self, signum: int) -> None:
        self.signum = signum


class _Submitted:
    """The job a task waits for, once known, and a stop that came before it was."""

    def __init__(self) -> None:
        self.job_id: str | None = None
        self.pending: int | None = None

    def started(self, job_id: str) -> None:
        self.job_id = job_id
        self.check()

    def check(self) -> None:
        """Stop now if a signal came while a request was in flight."""
        if self.pending is not None:
            raise _Stopped(self.pending)


@contextlib.contextmanager
def _killed_on_stop(client: Client, job: _Submitted, op: str) -> Iterator[None]:
    """While submitting and waiting for a job: SIGTERM/SIGINT (the task was killed: `kudig kill`,
    a deleted pod, Ctrl-C of `kudig run`) kills the job at Treasure Data before the task ends, as
    digdag's operator cleanup does; a job left running would go on costing. A signal that comes
    while the submit is in flight waits for its answer (the job's id), so a job the server just
    started is killed too. Only in the main thread (where signal handlers run); elsewhere the wait
    is as before."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: object) -> None:
        if job.job_id is None:
            job.pending = signum  # the submit is in flight: stop once its answer is in
            return
        raise _Stopped(signum)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    except _Stopped as e:
        for sig, handler in previous.items():  # a second signal now ends the process as usual
            signal.signal(sig, handler)
        name = signal.Signals(e.signum).name
        job_id = job.job_id
        if job_id is None:
            raise RunnerError(f"Stopped by {name} before a TD job was started", "Killed") from None
        try:
            client.api.kill(job_id)
            print(f"{op}>: killed job {job_id} ({name})", flush=True)
        except Exception as kill_error:
            print(client.scrub(f"{op}>: could not kill job {job_id}: {_describe(kill_error)}"), flush=True)
        raise RunnerError(f"Stopped by {name}: TD job {job_id} was killed", "Killed") from None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def submitter(client: Client, submit: Callable[[str], str]) -> Callable[[str], str]:
    """`submit(domain_key)` with a 409 naming the job that holds the key turned into `_Conflict`."""
    import tdclient.errors

    def run(key: str) -> str:
        try:
            return submit(key)
        except tdclient.errors.AlreadyExistsError as e:
            existing = _conflicting_job(e)
            if existing is None:
                raise
            raise _Conflict(existing) from None

    return run


def result_rows(client: Client, job_id: str) -> Any:
    return client.api.job_result_format_each(job_id, "msgpack")


def job_outputs(
    client: Client,
    show: Mapping[str, Any],
    workdir: Path,
    download_file: Any,
    store_last_results: bool,
    output: TaskOutput,
    op: str = "td",
) -> None:
    """digdag's processJobResult plus the td.last_job keys."""
    import tdclient.errors

    from .pg import write_csv

    job_id = str(show["job_id"])
    schema = show.get("hive_result_schema") or []
    columns = [str(c[0]) for c in schema if isinstance(c, (list, tuple)) and c]
    if download_file:
        target = Path(os.path.normpath(workdir / str(download_file)))

        def download() -> int:
            return write_csv(target, columns, result_rows(client, job_id))

        try:
            n = call(client, f"Failed to download result of job '{job_id}'", download)
        except TdError as e:
            raise TdError(e.message.replace(" failed: ", ": ", 1)) from None
        print(f"{op}>: wrote {n} rows to {download_file}", flush=True)
    td: dict[str, Any] = {}
    if store_last_results:

        def first() -> list[Any] | None:
            try:
                for row in result_rows(client, job_id):
                    return list(row)
            except tdclient.errors.NotFoundError:  # digdag: a 404 result is "no rows"
                pass
            return None

        row = call(client, f"Fetching the result of job '{job_id}'", first)
        td["last_results"] = {} if row is None or not columns else dict(zip(columns, row, strict=False))
        output["reset_store_params"].append("td.last_results")
    num = show.get("num_records")
    td["last_job_id"] = job_id
    td["last_job"] = {"id": job_id, "num_records": int(num) if isinstance(num, int) else 0}
    output["store_params"] = {"td": td}


# --------------------------------------------------------------------------- td>


ENGINES = ("presto", "hive")


def run_td(task_input: TaskInput, cwd: str | os.PathLike[str]) -> TaskOutput:
    params = merged_params(task_input, "td")
    query = query_text(params, "td")
    engine = str(params.get("engine") or "presto").strip()
    create_table = params.get("create_table")
    insert_into = params.get("insert_into")
    download_file = params.get("download_file")
    store = _bool(params.get("store_last_results", False), "store_last_results")
    if insert_into and create_table:
        raise RunnerError("Setting both insert_into and create_table is invalid", "ConfigError")
    if download_file and (insert_into or create_table):
        raise RunnerError("download_file is invalid if insert_into or create_table is set", "ConfigError")
    if engine not in ENGINES:
        raise RunnerError(
            f"Unknown 'engine:' option (available options are: hive and presto): {engine}", "ConfigError"
        )
    if params.get("result_settings") is not None and not params.get("result_connection"):
        raise RunnerError("result_settings is valid only if result_connection is set", "ConfigError")
    options = job_options(params, engine, scheduled=True)
    _require_tdclient()
    workdir = task_cwd(task_input, cwd)
    client = Client(params, task_input)
    return client.scrubbed(
        lambda: _run_td(
            client, task_input, params, query, engine, create_table, insert_into,
            download_file, store, options, workdir,
        )
    )  # fmt: skip


def result_connection(client: Client, task_input: TaskInput, params: Mapping[str, Any]) -> dict[str, str]:
    """`result_connection: NAME` (+ `result_settings`): the job writes its result through that
    saved connection, as digdag's TdOperator sends it: the connection's id (looked up by name,
    `GET /v3/connections/lookup`) and the settings as a JSON string, `${secret:...}` resolved."""
    name = str(params["result_connection"])
    api = client.api

    def lookup() -> str:
        with api.get("/v3/connections/lookup", {"name": name}) as res:
            data = res.read()
            if res.status != 200:
                api.raise_error(f"Looking up result connection '{name}' failed", res, data)
        return str(api.checked_json(data, ["id"])["id"])

    out = {"result_connection_id": str(call(client, f"Looking up result connection '{name}'", lookup))}
    settings = params.get("result_settings")
    if settings is not None:
        if not isinstance(settings, Mapping):
            raise RunnerError("Parameter 'result_settings' must be a map", "ConfigError")
        resolved = resolve_secrets(settings, task_input["secrets"])
        out["result_connection_settings"] = json.dumps(resolved, ensure_ascii=False, default=str)
    return out


def resolve_secrets(value: Any, secrets: Mapping[str, str]) -> Any:
    """`value` with `${secret:...}` resolved in every string of it (maps and lists walked), as
    digdag's UserSecretTemplate does for result_settings and td_load>'s config."""
    if isinstance(value, str):
        return substitute_secrets(value, secrets)
    if isinstance(value, Mapping):
        return {k: resolve_secrets(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve_secrets(v, secrets) for v in value]
    return value


def job_options(params: Mapping[str, Any], engine: str, scheduled: bool) -> dict[str, Any]:
    """A query job's options, as digdag's td operators send them: priority (out of -2..2: 0, as
    Priority.fromInt), job_retry, the engine's pool and version, and — when `scheduled` — the
    session time."""
    priority = _int(params.get("priority", 0), "priority")
    kwargs: dict[str, Any] = {
        "priority": priority if -2 <= priority <= 2 else 0,
        "retry_limit": _int(params.get("job_retry", 0), "job_retry"),
    }
    when = _scheduled_time(params) if scheduled else None
    if when is not None:
        kwargs["scheduled_time"] = when
    pool = params.get("presto_pool_name" if engine == "presto" else "hive_pool_name")
    if pool:
        kwargs["pool_name"] = str(pool)
    version = params.get("hive_engine_version") if engine == "hive" else None
    version = version or params.get("engine_version")
    if version:
        kwargs["engine_version"] = str(version)
    return kwargs


def _run_td(
    client: Client,
    task_input: TaskInput,
    params: Mapping[str, Any],
    query: str,
    engine: str,
    create_table: Any,
    insert_into: Any,
    download_file: Any,
    store: bool,
    options: Mapping[str, Any],
    workdir: Path,
) -> TaskOutput:
    import tdclient.errors

    database = client.database
    target = insert_into or create_table
    if target:
        db, table = _split_table(target, "insert_into" if insert_into else "create_table")
        if engine == "presto":
            name = _quoted(db, table, '"')
            command = (
                f"INSERT INTO {name}"
                if insert_into
                else f"DROP TABLE IF EXISTS {name};\nCREATE TABLE {name} AS"
            )
        else:
            name = _quoted(db, table, "`")
            command = f"INSERT {'INTO' if insert_into else 'OVERWRITE'} TABLE {name}"
        if insert_into or engine == "hive":

            def ensure() -> None:
                with contextlib.suppress(tdclient.errors.AlreadyExistsError):
                    client.api.create_log_table(db or database, table)

            call(client, f"Creating table {db or database}.{table}", ensure)
        query = insert_command(query, command)
    query = header_comment(params, task_input["task_name"]) + query
    kwargs = dict(options)
    if params.get("result_url"):
        kwargs["result_url"] = substitute_secrets(str(params["result_url"]), task_input["secrets"])
    if params.get("result_connection"):
        kwargs.update(result_connection(client, task_input, params))

    def submit(key: str) -> str:
        kind = cast(Literal["hive", "presto"], engine)
        return str(client.api.query(query, type=kind, db=database, domain_key=key, **kwargs))

    show = run_job(client, task_input, params, submitter(client, submit))
    output = empty_output()
    job_outputs(client, show, workdir, download_file, store, output)
    return output


# --------------------------------------------------------------------------- td_ddl>


def _names(params: Mapping[str, Any], key: str) -> list[str]:
    value = params.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise RunnerError(f"Parameter '{key}' must be a list of names: {value}", "ConfigError")
    return [v.strip() for v in value]


def _ddl_table(name: str, database: str) -> tuple[str, str]:
    db, table = _split_table(name, "table")
    return db or database, table


def run_td_ddl(task_input: TaskInput, cwd: str | os.PathLike[str]) -> TaskOutput:
    """digdag's TdDdlOperatorFactory: delete databases (drop_ + empty_) -> create databases
    (create_ + empty_) -> delete tables -> create tables -> renames; 404 on delete and 409 on
    create are ignored, a rename overwrites its target. Stores nothing."""
    params = merged_params(task_input, "td")
    drop_dbs, create_dbs, empty_dbs = (_names(params, f"{k}_databases") for k in ("drop", "create", "empty"))
    drop_ts, create_ts, empty_ts = (_names(params, f"{k}_tables") for k in ("drop", "create", "empty"))
    renames: list[tuple[str, str]] = []
    raw = params.get("rename_tables") or []
    if not isinstance(raw, list):
        raise RunnerError(f"Parameter 'rename_tables' must be a list: {raw}", "ConfigError")
    for item in raw:
        if not isinstance(item, Mapping) or not item.get("from") or not item.get("to"):
            raise RunnerError(f"rename_tables entries need 'from' and 'to': {item}", "ConfigError")
        to = str(item["to"]).strip()
        if "." in to:
            raise RunnerError("'to' option of rename_tables can't include database name", "ConfigError")
        renames.append((str(item["from"]).strip(), to))
    _require_tdclient()
    client = Client(params, task_input)
    client.scrubbed(
        lambda: _run_ddl(client, drop_dbs, create_dbs, empty_dbs, drop_ts, create_ts, empty_ts, renames)
    )
    return empty_output()


def _run_ddl(
    client: Client,
    drop_dbs: list[str],
    create_dbs: list[str],
    empty_dbs: list[str],
    drop_ts: list[str],
    create_ts: list[str],
    empty_ts: list[str],
    renames: list[tuple[str, str]],
) -> None:
    import tdclient.errors
    import tdclient.util

    api = client.api
    database = client.database

    def table_exists(db: str, table: str) -> bool:
        try:
            return table in api.list_tables(db)
        except tdclient.errors.NotFoundError:
            return False

    for source, _ in renames:
        db, table = _ddl_table(source, database)
        if not call(client, f"Checking table {db}.{table}", functools.partial(table_exists, db, table)):
            raise TdError(f"Renaming table {db}.{table} doesn't exist", "ConfigError")

    def ignoring(error: type[Exception], fn: Callable[..., Any], *args: str) -> Callable[[], None]:
        def run() -> None:
            with contextlib.suppress(error):
                fn(*args)

        return run

    for db in drop_dbs + empty_dbs:
        print(f"td_ddl>: deleting database {db}", flush=True)
        call(
            client,
            f"Deleting database {db}",
            ignoring(tdclient.errors.NotFoundError, api.delete_database, db),
        )
    for db in create_dbs + empty_dbs:
        print(f"td_ddl>: creating database {db}", flush=True)
        call(
            client,
            f"Creating database {db}",
            ignoring(tdclient.errors.AlreadyExistsError, api.create_database, db),
        )
    for name in drop_ts + empty_ts:
        db, table = _ddl_table(name, database)
        print(f"td_ddl>: deleting table {db}.{table}", flush=True)
        call(
            client,
            f"Deleting table {db}.{table}",
            ignoring(tdclient.errors.NotFoundError, api.delete_table, db, table),
        )
    for name in create_ts + empty_ts:
        db, table = _ddl_table(name, database)
        print(f"td_ddl>: creating table {db}.{table}", flush=True)
        call(
            client,
            f"Creating table {db}.{table}",
            ignoring(tdclient.errors.AlreadyExistsError, api.create_log_table, db, table),
        )
    for source, to in renames:
        db, table = _ddl_table(source, database)
        print(f"td_ddl>: renaming table {db}.{table} to {to}", flush=True)
        path = tdclient.util.create_url("/v3/table/rename/{db}/{table}/{to}", db=db, table=table, to=to)

        def rename(path: str = path) -> None:
            with api.post(path, {"overwrite": "true"}) as res:
                body = res.read()
                if res.status != 200:
                    api.raise_error("Rename table failed", res, body)

        call(client, f"Renaming table {db}.{table} to {to}", rename)
