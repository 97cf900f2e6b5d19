"""`pg>`: digdag's PgOperatorFactory (and its JDBC base) on psycopg 3.

psycopg is imported inside the functions: this module is importable with the standard library
only (the runner core is copied into users' images), and only a pg> task needs the library (the
runner image has it: `psycopg[binary]`).

* Query: the rendered text of the `_command` file (`_command_text`, read and `${...}`-rendered by
  the engine, which has the template engine and the project files: see kudig/engine/core.py), a
  `_command: {data: ...}` map's `data`, or the `query` parameter (used verbatim).
* Connection (`PgConnectionConfig`): each of `host`, `port` (5432), `user`, `database`, `ssl`
  (false), `schema`, `connect_timeout` (30 s), `socket_timeout` (1800 s) from the secret
  `pg.<key>` first, then the parameter (`pg:` map entries are defaults). The password is a secret
  only: `pg.password`, or the secret named by `password_override` (which must exist).
* `create_table: t` runs `DROP TABLE IF EXISTS t; CREATE TABLE t AS <query>`, `insert_into: t`
  `INSERT INTO t <query>` (`schema.t` split at the first dot, identifiers quoted).
* `download_file: path` (CSV, digdag's CsvWriter format) and `store_last_results: first|true|all`
  (`pg.last_results`) run one statement in read-only mode (no status table).
* Otherwise, with `strict_transaction` (default true) the SQL runs inside a transaction that also
  marks its row of digdag's status table `__digdag_status` completed, so a retry of a task whose
  SQL already committed skips it (see `_strict`). The query id (digdag's state `queryId`, a UUID
  persisted before the first call) is derived from the session, attempt and task name, plus
  `KUDIG_RUN_ID` (set by `kudig run` per run, as each local run is a new attempt): stable across
  `_retry` and a re-created pod, new for a new attempt.
* Errors quote the server's message: `Failed to execute given SQL script [ERROR: ...]`,
  `Failed to connect to the database [...]`; a secret value never appears in them.
"""

from __future__ import annotations

import datetime
import decimal
import json
import os
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .durations import duration_seconds, timeout_seconds
from .protocol import RunnerError, TaskInput, TaskOutput, empty_output, merged_params, query_text
from .secrets import ReadSecrets, SecretNotFoundError
from .shell import task_cwd

if TYPE_CHECKING:
    import psycopg

MAX_ROWS = 8192
MAX_COLUMNS = 64
MAX_VALUE_SIZE = 256
STATUS_TABLE = "__digdag_status"
MAX_POLL_INTERVAL = 1200.0


class DbError(RunnerError):
    def __init__(self, message: str) -> None:
        super().__init__(message, "DatabaseError")


def _require_psycopg() -> None:
    try:
        import psycopg  # noqa: F401
    except ImportError:
        raise RunnerError(
            "pg> needs the psycopg library (pip install 'psycopg[binary]'); the kudig runner image has it",
            "ConfigError",
        ) from None


# --------------------------------------------------------------------------- connection


class ConnectionConfig:
    """Connection settings: each from the secret `<prefix>.<key>` first, then the parameter."""

    def __init__(
        self,
        params: Mapping[str, Any],
        task_input: TaskInput,
        prefix: str = "pg",
        password_keys: tuple[str, ...] | None = None,
    ) -> None:
        self._secrets = ReadSecrets(task_input["secrets"])
        secret = self._secrets.get

        def setting(key: str, default: Any = None, required: bool = False) -> Any:
            value = secret(f"{prefix}.{key}")
            if value is None:
                value = params.get(key)
            if value is None or value == "":
                if required:
                    raise RunnerError(f"Parameter '{key}' is required but not set", "ConfigError")
                return default
            return value

        self.host = str(setting("host", required=True))
        self.port = _int(setting("port", 5432), "port")
        self.user = str(setting("user", required=True))
        self.database = str(setting("database", required=True))
        self.ssl = _bool(setting("ssl", False), "ssl")
        schema = setting("schema")
        self.schema = None if schema is None else str(schema)
        self.connect_timeout = _seconds(setting("connect_timeout", 30), "connect_timeout")
        self.socket_timeout = _seconds(setting("socket_timeout", 1800), "socket_timeout")
        override = params.get("password_override")
        if override:
            self.password: str | None = secret(str(override))
            if self.password is None:
                raise SecretNotFoundError(str(override))
        else:
            self.password = None
            for key in password_keys or (f"{prefix}.password",):
                self.password = secret(key)
                if self.password is not None:
                    break

    def scrub(self, text: str) -> str:
        """`text` without any secret value this configuration read."""
        return self._secrets.scrub(text)

    def connect(self, statement_timeout: float | None = None) -> psycopg.Connection[Any]:
        import psycopg

        options = []
        if self.schema:
            options.append(f"-c search_path={_option_value(self.schema)}")
        if statement_timeout:
            options.append(f"-c statement_timeout={int(statement_timeout * 1000)}")
        kwargs: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "dbname": self.database,
            "user": self.user,
            "connect_timeout": max(1, int(self.connect_timeout)),
            "application_name": "kudig",
            "keepalives": 1,
            # digdag's ssl: true uses NonValidatingFactory: encrypted, the certificate not verified.
            "sslmode": "require" if self.ssl else "disable",
            "autocommit": True,
        }
        if options:
            kwargs["options"] = " ".join(options)
        if self.password is not None:
            kwargs["password"] = self.password
        try:
            return psycopg.connect(**kwargs)
        except psycopg.Error as e:
            raise DbError(self.scrub(f"Failed to connect to the database [{_message(e)}]")) from None


def _option_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace(" ", "\\ ")


def _int(value: Any, name: str) -> int:
    try:
        return int(str(value).strip())
    except ValueError:
        raise RunnerError(f"Parameter '{name}' must be an integer: {value}", "ConfigError") from None


def _bool(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "false"):
        return text == "true"
    raise RunnerError(f"Parameter '{name}' must be a boolean: {value}", "ConfigError")


def _seconds(value: Any, name: str) -> float:
    try:
        seconds = timeout_seconds(value)
    except ValueError:
        raise RunnerError(
            f"Parameter '{name}' must be seconds or a duration like 30s: {value}", "ConfigError"
        ) from None
    return seconds or 0.0


def _message(e: BaseException) -> str:
    """The server's error as PgJDBC shows it (`ERROR: ...`, position, detail, hint)."""
    diag: Any = getattr(e, "diag", None)
    primary = getattr(diag, "message_primary", None) if diag is not None else None
    if diag is None or not primary:
        return str(e).strip()
    text = f"{diag.severity or 'ERROR'}: {primary}"
    for label, value in (("Detail", diag.message_detail), ("Hint", diag.message_hint)):
        if value:
            text += f"\n  {label}: {value}"
    if diag.statement_position:
        text += f"\n  Position: {diag.statement_position}"
    return text


def _sqlstate(e: BaseException) -> str:
    return str(getattr(e, "sqlstate", None) or "")


# --------------------------------------------------------------------------- the query


def _table(name: Any, option: str) -> Any:
    from psycopg import sql

    text = str(name)
    if not text:
        raise RunnerError(f"Parameter '{option}' must be a table name", "ConfigError")
    schema, dot, table = text.partition(".")
    if dot:
        return sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(table))
    return sql.Identifier(text)


def _last_results_option(value: Any) -> str | None:
    if value is None or value is False or value == "false":
        return None
    if value is True or value == "true" or value == "first":
        return "first"
    if value == "all":
        return "all"
    raise RunnerError(f'last_results must be either of "first" or "all": {value}', "ConfigError")


def _json_value(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, datetime.datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "\\x" + bytes(value).hex()
    if isinstance(value, (dict, list)):
        return json.loads(json.dumps(value, default=str))
    return str(value)


def _csv_value(value: Any) -> str | None:
    """digdag's CsvWriter: NULL empty, strings as they are, others as JSON (numbers, json)."""
    if value is None:
        return None
    value = _json_value(value)
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _csv_field(value: str | None) -> str:
    if value is None:
        return ""
    if value == "":
        return '""'
    if any(c in value for c in '",\r\n'):
        value = value.replace("\r\n", "\n").replace("\r", "\n")
        return '"' + value.replace('"', '""') + '"'
    return value


def write_csv(path: Path, columns: list[str], rows: Any) -> int:
    """The result as digdag's CSV: header, `,`, CRLF, quoting only when needed. Rows written."""
    n = 0
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as f:
        f.write(",".join(_csv_field(c) for c in columns) + "\r\n")
        for row in rows:
            f.write(",".join(_csv_field(_csv_value(v)) for v in row) + "\r\n")
            n += 1
    return n


def _row_map(columns: list[str], row: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, raw in zip(columns, row, strict=False):
        value = _json_value(raw)
        if isinstance(value, str) and len(value) > MAX_VALUE_SIZE:
            raise RunnerError(
                f"The size of result value exceeded the limit: {len(value)} > {MAX_VALUE_SIZE}",
                "ResultTooLarge",
            )
        out[name] = value
    return out


# --------------------------------------------------------------------------- running


def _query_id(task_input: TaskInput, params: Mapping[str, Any]) -> str:
    parts = [
        str(params.get("session_uuid", "")),
        str(params.get("attempt_id", "")),
        os.environ.get("KUDIG_RUN_ID", ""),
        task_input["task_name"] or str(params.get("task_name", "")),
    ]
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "kudig:pg:" + "\0".join(parts)))


def _read_only(
    conn: psycopg.Connection[Any], query: str, download: Path | None, last: str | None
) -> dict[str, Any]:
    import psycopg

    stored: dict[str, Any] = {}
    try:
        with conn.cursor() as cur:
            # One statement, as JDBC's executeQuery (the extended protocol allows only one).
            cur.execute(query.encode(), prepare=True)
            columns = [d.name for d in cur.description] if cur.description else []
            if download is not None:
                n = write_csv(download, columns, cur)
                print(f"pg>: wrote {n} rows to {download.name}", flush=True)
            elif last is not None:
                if len(columns) > MAX_COLUMNS:
                    raise RunnerError(
                        f"The number of result columns exceeded the limit: {len(columns)} > {MAX_COLUMNS}",
                        "ResultTooLarge",
                    )
                if last == "first":
                    row = cur.fetchone()
                    stored = {"pg": {"last_results": {} if row is None else _row_map(columns, row)}}
                else:
                    rows = cur.fetchmany(MAX_ROWS + 1)
                    if len(rows) > MAX_ROWS:
                        raise RunnerError(
                            f"The number of result rows exceeded the limit: {len(rows)} > {MAX_ROWS}",
                            "ResultTooLarge",
                        )
                    stored = {"pg": {"last_results": [_row_map(columns, r) for r in rows]}}
    except psycopg.Error as e:
        if _sqlstate(e) == "25006":
            raise DbError(f"Query must be read-only if download_file is set [{_message(e)}]") from None
        raise DbError(f"Failed to execute given SQL script [{_message(e)}]") from None
    return stored


def _run_script(cur: psycopg.Cursor[Any], statement: Any) -> None:
    cur.execute(statement)
    while cur.nextset():  # drain every result, as digdag's execute + getMoreResults
        pass


def _strict(
    conn: psycopg.Connection[Any],
    params: Mapping[str, Any],
    statement: Any,
    query_id: str,
    sleep: Callable[[float], None] = time.sleep,
) -> bool:
    """Run `statement` once per query id (digdag's PgPersistentTransactionHelper): False when a
    previous run of this query id already completed it (skipped)."""
    import psycopg
    from psycopg import sql

    table_name = str(params.get("status_table") or STATUS_TABLE)
    schema = params.get("status_table_schema")
    table = (
        sql.SQL("{}.{}").format(sql.Identifier(str(schema)), sql.Identifier(table_name))
        if schema
        else sql.Identifier(table_name)
    )
    try:
        conn.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (query_id text NOT NULL UNIQUE, "
                "created_at timestamptz NOT NULL, completed_at timestamptz)"
            ).format(table)
        )
    except psycopg.Error as e:
        raise DbError(
            f"Failed to create the status table {table.as_string(conn)} [{_message(e)}]: "
            "set strict_transaction: false, have an administrator create the table, "
            "or set status_table_schema to a schema where you may create it"
        ) from None
    interval = 1.0
    while True:
        try:
            conn.execute(b"BEGIN")
            row = conn.execute(
                sql.SQL("SELECT completed_at FROM {} WHERE query_id = %s FOR UPDATE NOWAIT").format(table),
                (query_id,),
            ).fetchone()
            if row is None:
                try:
                    conn.execute(
                        sql.SQL(
                            "INSERT INTO {} (query_id, created_at) VALUES (%s, CURRENT_TIMESTAMP)"
                        ).format(table),
                        (query_id,),
                    )
                    conn.execute(b"COMMIT")
                except psycopg.errors.UniqueViolation:
                    conn.execute(b"ROLLBACK")
                continue
            if row[0] is not None:
                conn.execute(b"ROLLBACK")
                return False
            with conn.cursor() as cur:
                try:
                    _run_script(cur, statement)
                except psycopg.Error as e:
                    conn.execute(b"ROLLBACK")
                    raise DbError(f"Failed to execute given SQL script [{_message(e)}]") from None
            conn.execute(
                sql.SQL("UPDATE {} SET completed_at = CURRENT_TIMESTAMP WHERE query_id = %s").format(table),
                (query_id,),
            )
            conn.execute(b"COMMIT")
            break
        except psycopg.errors.LockNotAvailable:
            conn.execute(b"ROLLBACK")
            print(f"pg>: query {query_id} is running elsewhere; checking again in {interval:g}s", flush=True)
            sleep(interval)
            interval = min(interval * 2, MAX_POLL_INTERVAL)
    cleanup = params.get("status_table_cleanup")
    try:
        seconds = duration_seconds(str(cleanup)) if cleanup else 86400
        conn.execute(
            sql.SQL("DELETE FROM {} WHERE completed_at < now() - make_interval(secs => %s)").format(table),
            (seconds,),
        )
    except (psycopg.Error, ValueError) as e:
        print(f"pg>: warning: cleaning up the status table failed: {_message(e)}", flush=True)
    return True


def run_pg(task_input: TaskInput, cwd: str | os.PathLike[str]) -> TaskOutput:
    params = merged_params(task_input, "pg")
    query = query_text(params, "pg")
    create_table = params.get("create_table")
    insert_into = params.get("insert_into")
    download_file = params.get("download_file")
    last = _last_results_option(params.get("store_last_results"))
    if insert_into and create_table:
        raise RunnerError("Can't use both of insert_into and create_table", "ConfigError")
    if download_file and (insert_into or create_table):
        raise RunnerError("Can't use download_file with insert_into or create_table", "ConfigError")
    if last and (insert_into or create_table):
        raise RunnerError("Can't use store_last_results with insert_into or create_table", "ConfigError")
    if download_file and last:
        raise RunnerError("Can't use both download_file and store_last_results at once", "ConfigError")
    strict = _bool(params.get("strict_transaction", True), "strict_transaction")
    _require_psycopg()
    from psycopg import sql

    workdir = task_cwd(task_input, cwd)
    config = ConnectionConfig(params, task_input)
    limit = config.socket_timeout
    task_limit = (
        timeout_seconds(task_input["config"].get("timeout")) if task_input["config"].get("timeout") else None
    )
    if task_limit:
        limit = min(limit, task_limit) if limit else task_limit
    output = empty_output()
    try:
        with config.connect(statement_timeout=limit) as conn:
            if download_file or last:
                target = None
                if download_file:
                    target = Path(os.path.normpath(workdir / str(download_file)))
                output["store_params"] = _read_only(conn, query, target, last)
                return output
            body = query.rstrip().rstrip(";").rstrip() if (create_table or insert_into) else query
            statement: Any
            if create_table:
                t = _table(create_table, "create_table")
                statement = sql.SQL("DROP TABLE IF EXISTS {t}; CREATE TABLE {t} AS \n{q}").format(
                    t=t, q=sql.SQL(body)
                )
            elif insert_into:
                statement = sql.SQL("INSERT INTO {t}\n{q}").format(
                    t=_table(insert_into, "insert_into"), q=sql.SQL(body)
                )
            else:
                statement = query.encode()
            if strict:
                if not _strict(conn, params, statement, _query_id(task_input, params)):
                    print(
                        "pg>: this query already completed in an earlier run of the task: skipped", flush=True
                    )
            else:
                import psycopg

                with conn.cursor() as cur:
                    try:
                        _run_script(cur, statement)
                    except psycopg.Error as e:
                        raise DbError(f"Failed to execute given SQL script [{_message(e)}]") from None
    except RunnerError as e:
        e.message = config.scrub(e.message)
        raise
    return output
