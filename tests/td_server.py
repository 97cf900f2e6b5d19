"""A local stand-in for Treasure Data's REST API, for the td> tests (Treasure Data's cloud cannot
be reached from here). It is NOT Treasure Data: see docs/operators-td.md, "The stand-in server".

* HTTP on the standard library's ThreadingHTTPServer, in this process (a thread); bind 0.0.0.0
  for a pod on the single-node cluster to reach it through the node's IP.
* Auth: `Authorization: TD1 <key>` (td-client-python) or the bare key (td-client-java for a key
  not shaped like a TD key); anything else is a 401 in TD's error shape.
* The part of the v3 API the td-client operators use: job issue (presto, trino, hive; form fields
  urlencoded or multipart) with `domain_key` dedupe (409 + `details.conflicts_with`), job status,
  show (`hive_result_schema` as a JSON string, `num_records`, `debug.cmdout`/`stderr`), result
  (`msgpack`, `msgpack.gz`, `json`, `csv`, `tsv`; `Range` answered with 206), kill; database
  list/create/delete; table list/create (log)/delete/rename; saved queries run by name
  (`/v3/schedule/run/{name}/{time}`, form `domain_key`) or id (`/v4/queries/{id}/jobs`, JSON
  `scheduled_time` + `domain_key`), created by the tests (`create_saved_query`).
* The SQL really runs, on DuckDB (in memory, one database for the server's life): a TD database is
  a DuckDB schema, so tables persist across jobs; a job's database is its default schema. The
  dialect is DuckDB's, not Presto's or Hive's: `"db"."t"` quoting works, Hive backquotes are
  turned into double quotes. `INSERT INTO|OVERWRITE [TABLE] t <query>` is run by column name and
  adds the query's missing columns to `t` (TD's log tables take new columns on write), OVERWRITE
  deleting the rows first. `TD_TIME_RANGE`, `TD_TIME_ADD`, `TD_TIME_FORMAT`, `TD_TIME_PARSE` (with
  an optional time zone argument) and `TD_SCHEDULED_TIME()` are provided.
* Jobs run in a thread, one at a time: `queued` -> `running` -> `success` | `error` | `killed`.
"""

from __future__ import annotations

import datetime
import decimal
import gzip
import io
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit
from zoneinfo import ZoneInfo

import duckdb
import msgpack
import pytest

from tests.peers import serve_http, stop_http

APIKEY = "1/0123456789abcdef0123456789abcdef01234567"  # a test secret: never in logs or status


# --------------------------------------------------------------------------- TD_* functions

_ZONES = {"JST": "Asia/Tokyo", "PST": "America/Los_Angeles", "PDT": "America/Los_Angeles", "UTC": "UTC"}


def _tz(name: str | None) -> datetime.tzinfo:
    if not name:
        return datetime.UTC
    text = name.strip()
    m = re.fullmatch(r"([+-])(\d\d):?(\d\d)", text)
    if m:
        delta = datetime.timedelta(hours=int(m.group(2)), minutes=int(m.group(3)))
        return datetime.timezone(-delta if m.group(1) == "-" else delta)
    return ZoneInfo(_ZONES.get(text.upper(), text))


def _parse_time(text: str, tz: str | None) -> int:
    """TD's time string (`2024-01-30`, `2024-01-30 12:00:00[.fff] [zone]`) or epoch seconds."""
    value = text.strip()
    if re.fullmatch(r"-?\d+", value):
        return int(value)
    zone = tz
    m = re.fullmatch(r"(.*?\d)\s*([A-Za-z][A-Za-z_/]*|[+-]\d\d:?\d\d)", value)
    if m and not re.fullmatch(r".*\d[T ]\d.*", m.group(2)):
        value, zone = m.group(1), m.group(2)
    parsed = datetime.datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=_tz(zone))
    return int(parsed.timestamp())


def td_time_range(t: str | None, start: str | None, end: str | None, tz: str | None) -> bool | None:
    if t is None:
        return None
    value = int(float(t))
    if start is not None and value < _parse_time(start, tz):
        return False
    return not (end is not None and value >= _parse_time(end, tz))


def td_time_add(t: str | None, duration: str | None, tz: str | None) -> int | None:
    if t is None or duration is None:
        return None
    parts = re.findall(r"(-?\d+)([wdhms])", duration.strip())
    if not parts or "".join(n + u for n, u in parts) != duration.strip().replace(" ", ""):
        raise ValueError(f"TD_TIME_ADD: invalid duration '{duration}'")
    unit = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}
    return _parse_time(t, tz) + sum(int(n) * unit[u] for n, u in parts)


_JAVA_FORMAT = {
    "yyyy": "%Y",
    "yy": "%y",
    "MMMM": "%B",
    "MMM": "%b",
    "MM": "%m",
    "dd": "%d",
    "HH": "%H",
    "hh": "%I",
    "mm": "%M",
    "ss": "%S",
    "a": "%p",
    "EEEE": "%A",
    "EEE": "%a",
    "D": "%j",
    "z": "%Z",
    "Z": "%z",
}


def td_time_format(t: str | None, fmt: str | None, tz: str | None) -> str | None:
    """Java SimpleDateFormat patterns (the common ones: y M d H h m s S a E D z Z, 'quoted')."""
    if t is None or fmt is None:
        return None
    moment = datetime.datetime.fromtimestamp(_parse_time(t, None), _tz(tz))
    out = []
    for m in re.finditer(r"'([^']*)'|([A-Za-z])\2*|[^A-Za-z']+", fmt):
        token = m.group(0)
        if m.group(1) is not None or token.startswith("'"):
            out.append(m.group(1) or "'")
        elif token.startswith("S"):
            out.append(f"{moment.microsecond // 1000:03d}"[: len(token)])
        elif token[0].isalpha():
            spec = _JAVA_FORMAT.get(token) or _JAVA_FORMAT.get(token[0])
            if spec is None:
                raise ValueError(f"TD_TIME_FORMAT: unsupported pattern '{token}'")
            out.append(moment.strftime(spec))
        else:
            out.append(token)
    return "".join(out)


def td_time_parse(text: str | None, tz: str | None) -> int | None:
    return None if text is None else _parse_time(text, tz)


def _install_functions(db: duckdb.DuckDBPyConnection) -> None:
    v = "VARCHAR"
    db.create_function("_td_time_range", td_time_range, [v, v, v, v], "BOOLEAN", null_handling="special")
    db.create_function("_td_time_add", td_time_add, [v, v, v], "BIGINT", null_handling="special")
    db.create_function("_td_time_format", td_time_format, [v, v, v], v, null_handling="special")
    db.create_function("_td_time_parse", td_time_parse, [v, v], "BIGINT", null_handling="special")

    def c(x: str) -> str:
        return f"CAST({x} AS VARCHAR)"

    db.execute(
        f"CREATE MACRO TD_TIME_RANGE(t, s, e) AS _td_time_range({c('t')}, {c('s')}, {c('e')}, NULL), "
        f"(t, s, e, z) AS _td_time_range({c('t')}, {c('s')}, {c('e')}, {c('z')})"
    )
    db.execute(
        f"CREATE MACRO TD_TIME_ADD(t, d) AS _td_time_add({c('t')}, {c('d')}, NULL), "
        f"(t, d, z) AS _td_time_add({c('t')}, {c('d')}, {c('z')})"
    )
    db.execute(
        f"CREATE MACRO TD_TIME_FORMAT(t, f) AS _td_time_format({c('t')}, {c('f')}, NULL), "
        f"(t, f, z) AS _td_time_format({c('t')}, {c('f')}, {c('z')})"
    )
    db.execute(
        f"CREATE MACRO TD_TIME_PARSE(s) AS _td_time_parse({c('s')}, NULL), "
        f"(s, z) AS _td_time_parse({c('s')}, {c('z')})"
    )


# --------------------------------------------------------------------------- jobs


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _value(v: Any) -> Any:
    """A DuckDB value as TD's result would carry it."""
    if v is None or isinstance(v, (bool, int, float, str, bytes)):
        return v
    if isinstance(v, decimal.Decimal):
        return int(v) if v == v.to_integral_value() else float(v)
    if isinstance(v, datetime.datetime):
        return v.strftime("%Y-%m-%d %H:%M:%S.") + f"{v.microsecond // 1000:03d}"
    if isinstance(v, (datetime.date, datetime.time)):
        return v.isoformat()
    if isinstance(v, (list, tuple)):
        return [_value(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _value(x) for k, x in v.items()}
    return str(v)


def _type(t: Any) -> str:
    name = str(t).lower()
    return {"hugeint": "bigint", "ubigint": "bigint", "int128": "bigint"}.get(name, name)


@dataclass
class Job:
    job_id: str
    type: str
    database: str
    query: str
    params: dict[str, str]
    status: str = "queued"
    created_at: str = field(default_factory=_now)
    start_at: str | None = None
    end_at: str | None = None
    columns: list[tuple[str, str]] | None = None
    rows: list[list[Any]] = field(default_factory=list)
    num_records: int = 0
    cmdout: str = ""
    stderr: str = ""
    # A job that is not a query (bulk load, export, partial delete, result export): what it does,
    # under the SQL lock, returning its num_records; errors end it in `error` as a query's.
    action: Callable[[Job], int] | None = None

    def summary(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "status": self.status,
            "type": self.type,
            "database": self.database,
            "query": self.query,
            "created_at": self.created_at,
            "updated_at": self.end_at or self.start_at or self.created_at,
            "start_at": self.start_at,
            "end_at": self.end_at,
            "num_records": self.num_records,
            "result_size": len(gzip.compress(b"".join(msgpack.packb(r) for r in self.rows))),
            "priority": int(self.params.get("priority") or 0),
            "retry_limit": int(self.params.get("retry_limit") or 0),
            "hive_result_schema": None if self.columns is None else json.dumps(self.columns),
            "debug": {"cmdout": self.cmdout, "stderr": self.stderr},
            "url": f"https://console.example.invalid/jobs/{self.job_id}",
            "user_name": "kudig-test",
            "result": self.params.get("result", ""),
        }


_TARGET = re.compile(
    r'INSERT\s+(INTO|OVERWRITE)\s+(?:TABLE\s+)?((?:"[^"]+"|\w+)(?:\s*\.\s*(?:"[^"]+"|\w+))?)\s+(.*)',
    re.IGNORECASE | re.DOTALL,
)


_OVERWRITE = "/*kudig:overwrite*/"


def _strip_comments(sql: str) -> str:
    return re.sub(r"\A(?:\s*--[^\n]*\n?)*\s*", "", sql)


def _ident(text: str) -> str:
    return text.strip().strip('"')


class Database:
    """The SQL side: DuckDB, one TD database per schema."""

    def __init__(self) -> None:
        self.db = duckdb.connect(":memory:")
        _install_functions(self.db)
        self.lock = threading.Lock()
        self.created: dict[str, str] = {}

    def schemas(self) -> list[str]:
        rows = self.db.execute(
            "SELECT schema_name FROM information_schema.schemata WHERE catalog_name = current_database() "
            "AND schema_name NOT IN ('main', 'information_schema', 'pg_catalog')"
        ).fetchall()
        return sorted(r[0] for r in rows)

    def tables(self, schema: str) -> list[tuple[str, list[tuple[str, str]], int]]:
        out = []
        names = self.db.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = ? ORDER BY 1", [schema]
        ).fetchall()
        for (name,) in names:
            cols = self.db.execute(f'DESCRIBE "{schema}"."{name}"').fetchall()
            count = self.db.execute(f'SELECT count(*) FROM "{schema}"."{name}"').fetchone()
            out.append((name, [(c[0], _type(c[1])) for c in cols], int(count[0]) if count else 0))
        return out

    def run(self, job: Job) -> None:
        cur = self.db.cursor()
        try:
            cur.execute(f"SET schema = '{job.database}'")
            query = job.query.replace("`", '"')
            scheduled = job.params.get("scheduled_time") or str(int(time.time()))
            query = re.sub(r"TD_SCHEDULED_TIME\(\s*\)", str(int(scheduled)), query, flags=re.IGNORECASE)
            # DuckDB cannot parse Hive's INSERT OVERWRITE / INSERT INTO TABLE: marked, then rewritten.
            query = re.sub(
                r"\bINSERT\s+OVERWRITE\s+TABLE\s+", f"INSERT INTO {_OVERWRITE} ", query, flags=re.I
            )
            query = re.sub(r"\bINSERT\s+INTO\s+TABLE\s+", "INSERT INTO ", query, flags=re.I)
            for statement in duckdb.extract_statements(query):
                text = _strip_comments(statement.query).rstrip().rstrip(";")
                m = _TARGET.match(text.replace(f"{_OVERWRITE} ", ""))
                if m:
                    mode = "OVERWRITE" if _OVERWRITE in text else "INTO"
                    job.num_records = self._insert(cur, job.database, mode, m.group(2), m.group(3))
                    job.columns, job.rows = None, []
                    continue
                cur.execute(text)
                if cur.description and statement.type == duckdb.StatementType.SELECT:
                    job.columns = [(d[0], _type(d[1])) for d in cur.description]
                    job.rows = [[_value(v) for v in row] for row in cur.fetchall()]
                    job.num_records = len(job.rows)
                else:
                    row = cur.fetchone() if cur.description else None
                    job.columns, job.rows = None, []
                    job.num_records = int(row[0]) if row and isinstance(row[0], int) else 0
        finally:
            cur.close()

    def _insert(
        self, cur: duckdb.DuckDBPyConnection, database: str, mode: str, target: str, body: str
    ) -> int:
        schema, _, table = target.rpartition(".")
        schema, table = _ident(schema) or database, _ident(table)
        name = f'"{schema}"."{table}"'
        cur.execute(f"CREATE OR REPLACE TEMP TABLE __kudig_src AS {body}")
        src = cur.execute("DESCRIBE __kudig_src").fetchall()
        exists = cur.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = ? AND table_name = ?",
            [schema, table],
        ).fetchone()
        if not exists or not exists[0]:
            cur.execute(f"CREATE TABLE {name} AS SELECT * FROM __kudig_src")
        else:
            have = {c[0] for c in cur.execute(f"DESCRIBE {name}").fetchall()}
            for col, typ, *_ in src:
                if col not in have:
                    cur.execute(f'ALTER TABLE {name} ADD COLUMN "{col}" {typ}')
            if mode.upper() == "OVERWRITE":
                cur.execute(f"DELETE FROM {name}")
            cur.execute(f"INSERT INTO {name} BY NAME SELECT * FROM __kudig_src")
        count = cur.execute("SELECT count(*) FROM __kudig_src").fetchone()
        cur.execute("DROP TABLE __kudig_src")
        return int(count[0]) if count else 0


# --------------------------------------------------------------------------- HTTP


class ApiError(Exception):
    def __init__(self, status: int, error: str, text: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(text)
        self.status = status
        self.body: dict[str, Any] = {"error": error, "text": text, "severity": "error"}
        if details is not None:
            self.body["details"] = details


@dataclass
class Request:
    method: str
    path: str
    authorization: str | None


@dataclass
class SavedQuery:
    id: int
    name: str
    type: str
    database: str
    query: str


@dataclass
class BulkLoadSession:
    name: str
    database: str
    table: str
    config: dict[str, Any]


@dataclass
class TdServer:
    apikey: str = APIKEY
    host: str = "0.0.0.0"
    jobs: dict[str, Job] = field(default_factory=dict)
    domain_keys: dict[str, str] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None
    sql: Database = field(default_factory=Database)
    job_delay: float = 0.2  # seconds a job stays queued: the client sees it running first
    answer_delay: float = 0.0  # seconds between starting a job and answering its submit
    saved_queries: dict[str, SavedQuery] = field(default_factory=dict)
    # result connections (TD's console makes them; not in this API): name -> id, name -> type
    connections: dict[str, int] = field(default_factory=dict)
    connection_types: dict[str, str] = field(default_factory=dict)
    # bulk load sessions (TD's console or `td connector:create`; not in this API): name -> session
    bulk_load_sessions: dict[str, BulkLoadSession] = field(default_factory=dict)
    # where table exports write (an S3Server of tests/s3peer.py), and the keys it must be given
    s3: Any = None
    s3_keys: tuple[str, str] | None = None
    # what was asked, for the tests
    bulk_loads: list[dict[str, Any]] = field(default_factory=list)
    exports: list[dict[str, Any]] = field(default_factory=list)
    result_exports: list[dict[str, Any]] = field(default_factory=list)

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.server_address[1])

    def endpoint(self, host: str = "127.0.0.1") -> str:
        return f"{host}:{self.port}"

    def start(self) -> TdServer:
        td = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                self._handle("GET")

            def do_POST(self) -> None:
                self._handle("POST")

            def _handle(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                td.requests.append(Request(method, self.path, self.headers.get("Authorization")))
                try:
                    status, payload, headers = td.dispatch(method, self.path, dict(self.headers), body)
                except ApiError as e:
                    status, payload, headers = e.status, json.dumps(e.body).encode(), {}
                except Exception as e:  # a bug of the stand-in: a 500 the test will show
                    status, payload, headers = 500, json.dumps({"error": repr(e)}).encode(), {}
                self.send_response(status)
                headers.setdefault("Content-Type", "application/json; charset=utf-8")
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.server = serve_http(self.host, Handler)
        return self

    def stop(self) -> None:
        stop_http(self.server)

    # ---------------------------------------------------------------- requests

    def dispatch(
        self, method: str, raw_path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, bytes, dict[str, str]]:
        auth = {k.lower(): v for k, v in headers.items()}.get("authorization", "")
        if auth not in (f"TD1 {self.apikey}", self.apikey):
            raise ApiError(401, "Unauthorized", "Authentication failed: invalid API key")
        url = urlsplit(raw_path)
        parts = [unquote(p) for p in url.path.strip("/").split("/")]
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        form = _form(headers, body) if method == "POST" else {}
        route = "/".join(parts[:3])
        if method == "POST" and route == "v3/job/issue" and len(parts) == 5 and parts[3] == "bulkload":
            doc = _json_body(body)
            fields = {**query, **{k: str(v) for k, v in doc.items() if k != "config"}}
            job = self.bulk_load(parts[4], fields.get("table", ""), doc.get("config"), fields)
            return self._json({"job_id": job.job_id, "job": job.job_id, "database": job.database})
        if method == "POST" and route == "v3/job/issue" and len(parts) == 5:
            return self._json(self.issue(parts[3], parts[4], {**query, **form}))
        if method == "POST" and parts[:2] == ["v3", "bulk_loads"] and len(parts) == 4 and parts[3] == "jobs":
            doc = _json_body(body)
            session = self.bulk_load_sessions.get(parts[2])
            if session is None:
                raise ApiError(404, "Resource not found", f"Bulk load session '{parts[2]}' does not exist")
            fields = {
                "domain_key": str(doc.get("domain_key") or ""),
                "scheduled_time": str(doc.get("scheduled_time") or ""),
            }
            job = self.bulk_load(session.database, session.table, session.config, fields)
            return self._json({"job_id": job.job_id, "name": parts[2], "database": job.database})
        if method == "POST" and route == "v3/export/run" and len(parts) == 5:
            job = self.table_export(parts[3], parts[4], {**query, **form})
            return self._json({"job_id": job.job_id, "job": job.job_id, "database": job.database})
        if method == "POST" and route == "v3/job/result_export" and len(parts) == 4:
            job = self.result_export(parts[3], {**query, **form})
            return self._json({"job_id": job.job_id, "job": job.job_id, "database": job.database})
        if method == "POST" and route == "v3/table/partialdelete" and len(parts) == 5:
            job = self.partial_delete(parts[3], parts[4], {**query, **form})
            return self._json({"job_id": job.job_id, "database": parts[3], "table": parts[4],
                               "from": job.params.get("from"), "to": job.params.get("to")})  # fmt: skip
        if method == "GET" and route == "v3/job/status" and len(parts) == 4:
            job = self._job(parts[3])
            s = job.summary()
            return self._json(
                {
                    k: s[k]
                    for k in (
                        "job_id",
                        "status",
                        "created_at",
                        "start_at",
                        "end_at",
                        "num_records",
                        "result_size",
                    )
                }
            )
        if method == "GET" and route == "v3/job/show" and len(parts) == 4:
            return self._json(self._job(parts[3]).summary())
        if method == "GET" and route == "v3/job/result" and len(parts) == 4:
            return self.result(self._job(parts[3]), query.get("format", "tsv"), headers)
        if method == "POST" and route == "v3/schedule/run" and len(parts) == 5:
            saved = self._saved(name=parts[3])
            job = self._start(saved, {**query, **form}, parts[4])
            return self._json({"jobs": [{"job_id": job.job_id, "type": job.type, "scheduled_at": _now()}]})
        if method == "POST" and route.startswith("v4/queries/") and len(parts) == 4 and parts[3] == "jobs":
            try:
                doc = json.loads(body or b"{}")
                when = datetime.datetime.strptime(doc["scheduled_time"], "%Y-%m-%dT%H:%M:%SZ")
            except (ValueError, KeyError, TypeError) as e:
                raise ApiError(400, "Bad Request", f"Invalid request body: {e}") from None
            saved = self._saved(id=parts[2])
            stamp = str(int(when.replace(tzinfo=datetime.UTC).timestamp()))
            job = self._start(saved, {"domain_key": str(doc.get("domain_key") or "")}, stamp)
            return self._json({"id": job.job_id})
        if method == "GET" and route == "v3/connections/lookup" and len(parts) == 3:
            name = query.get("name", "")
            if name not in self.connections:
                raise ApiError(404, "Resource not found", f"Connection '{name}' does not exist")
            return self._json({"id": self.connections[name], "name": name})
        if method == "POST" and route == "v3/job/kill" and len(parts) == 4:
            job = self._job(parts[3])
            former = job.status
            if former in ("queued", "booting", "running"):
                job.status = "killed"
                job.end_at = _now()
            return self._json({"job_id": job.job_id, "former_status": former})
        with self.sql.lock:
            return self._json(self.catalog(method, parts))

    # ---------------------------------------------------------------- jobs that move data

    def bulk_load(self, database: str, table: str, config: Any, params: dict[str, str]) -> Job:
        """A bulk load (TD's data connector, Embulk's config): `in: {type: td, apikey, database,
        query}` runs the query here (the apikey must be this server's) and `out: {mode:
        append|replace|truncate}` (append by default) writes the rows to `database.table`."""
        if not isinstance(config, dict):
            raise ApiError(422, "Unprocessable Entity", "A bulk load needs a 'config' object")
        source = config.get("in")
        if not isinstance(source, dict) or source.get("type") != "td":
            kind = source.get("type") if isinstance(source, dict) else source
            raise ApiError(
                422,
                "Unprocessable Entity",
                f"Unsupported input type: {kind} (the stand-in loads `in: {{type: td}}`)",
            )
        out = config.get("out") if isinstance(config.get("out"), dict) else {}
        mode = str(out.get("mode") or "append")
        if mode not in ("append", "replace", "truncate"):
            raise ApiError(422, "Unprocessable Entity", f"Unsupported out mode: {mode}")
        if not table:
            raise ApiError(422, "Unprocessable Entity", "A bulk load needs a 'table'")

        def load(job: Job) -> int:
            if source.get("apikey") != self.apikey:
                raise ValueError("in: td: authentication failed: invalid apikey")
            scheduled = job.params.get("scheduled_time") or str(int(time.time()))
            sql = re.sub(
                r"TD_SCHEDULED_TIME\(\s*\)", str(int(scheduled)), str(source.get("query") or ""), flags=re.I
            )
            cur = self.sql.db.cursor()
            try:
                cur.execute(f"SET schema = '{source.get('database') or database}'")
                return self.sql._insert(
                    cur, database, "INTO" if mode == "append" else "OVERWRITE", f'"{database}"."{table}"', sql
                )
            finally:
                cur.close()

        self.bulk_loads.append({"database": database, "table": table, "config": config, **params})
        return self._new_job("bulkload", database, params, load)

    def table_export(self, database: str, table: str, params: dict[str, str]) -> Job:
        """The table's rows with `from <= time < to`, written to S3 (`TdServer.s3`, moto) as
        `<file_prefix><job id>_0.<file_format>`: `tsv.gz` (no header), `jsonl.gz` and
        `line-json.gz` (an object per line), `json.gz` (one array of objects)."""
        fmt = params.get("file_format", "")
        if fmt not in ("tsv.gz", "jsonl.gz", "json.gz", "line-json.gz"):
            raise ApiError(422, "Unprocessable Entity", f"Invalid file_format: {fmt}")
        if params.get("storage_type") != "s3" or not params.get("bucket"):
            raise ApiError(422, "Unprocessable Entity", "An export needs storage_type=s3 and a bucket")
        with self.sql.lock:
            self._table(database, table)

        def export(job: Job) -> int:
            if self.s3 is None:
                raise ValueError("the stand-in has no S3 to export to (tests set TdServer.s3)")
            if (
                self.s3_keys is not None
                and (params.get("access_key_id"), params.get("secret_access_key")) != self.s3_keys
            ):
                raise ValueError("S3: The AWS Access Key Id you provided does not exist in our records")
            cur = self.sql.db.execute(
                f'SELECT * FROM "{database}"."{table}" WHERE time >= ? AND time < ? ORDER BY time',
                [int(params.get("from") or 0), int(params.get("to") or 2**62)],
            )
            names = [d[0] for d in cur.description or []]
            rows = [[_value(v) for v in r] for r in cur.fetchall()]
            if fmt == "tsv.gz":
                text = "".join("\t".join("" if v is None else str(v) for v in r) + "\n" for r in rows)
            elif fmt == "json.gz":
                text = json.dumps([dict(zip(names, r, strict=True)) for r in rows])
            else:
                text = "".join(json.dumps(dict(zip(names, r, strict=True))) + "\n" for r in rows)
            key = f"{params.get('file_prefix', '')}{job.job_id}_0.{fmt}"
            self.s3.put_bytes(params["bucket"], key, gzip.compress(text.encode()))
            self.exports.append({"bucket": params["bucket"], "key": key, **params})
            return len(rows)

        return self._new_job("export", database, params, export)

    def result_export(self, source_id: str, params: dict[str, str]) -> Job:
        """The result of job `source_id` written through a result connection: a `td` connection
        (`create_connection(name, "td")`) writes the rows to the settings' `database.table`
        (`mode: append|replace`, append by default)."""
        source = self._job(source_id)
        conn_id = params.get("result_connection_id", "")
        kind = next(
            (self.connection_types.get(n) for n, i in self.connections.items() if str(i) == conn_id), None
        )
        if kind is None:
            raise ApiError(404, "Resource not found", f"Result connection {conn_id} does not exist")
        try:
            settings = json.loads(params.get("result_connection_settings") or "{}")
        except ValueError:
            raise ApiError(422, "Unprocessable Entity", "result_connection_settings is not JSON") from None

        def export(job: Job) -> int:
            if source.status != "success":
                raise ValueError(f"Job {source.job_id} has no result (status {source.status})")
            if kind != "td":
                raise ValueError(f"the stand-in writes results to `td` connections only, not {kind}")
            db = str(settings.get("database") or source.database)
            mode = "OVERWRITE" if settings.get("mode") == "replace" else "INTO"
            cur = self.sql.db.cursor()
            try:
                cols = ", ".join(f'"{c}" {t}' for c, t in source.columns or [])
                cur.execute(f"CREATE OR REPLACE TEMP TABLE __kudig_rows ({cols})")
                if source.rows:
                    marks = ", ".join("?" for _ in source.columns or [])
                    cur.executemany(f"INSERT INTO __kudig_rows VALUES ({marks})", source.rows)
                return self.sql._insert(
                    cur, db, mode, f'"{db}"."{settings["table"]}"', "SELECT * FROM __kudig_rows"
                )
            finally:
                cur.close()

        self.result_exports.append({"job_id": source_id, **params})
        return self._new_job("result_export", source.database, params, export)

    def partial_delete(self, database: str, table: str, params: dict[str, str]) -> Job:
        """Deletes the rows with `from <= time < to` (whole hours, else 422, as TD)."""
        try:
            start, end = int(params.get("from", "")), int(params.get("to", ""))
        except ValueError:
            raise ApiError(422, "Unprocessable Entity", "from and to must be epoch seconds") from None
        if start % 3600 or end % 3600:
            raise ApiError(422, "Unprocessable Entity", "from and to must be multiples of 3600 (whole hours)")
        with self.sql.lock:
            self._table(database, table)

        def delete(job: Job) -> int:
            row = self.sql.db.execute(
                f'DELETE FROM "{database}"."{table}" WHERE time >= ? AND time < ? RETURNING 1', [start, end]
            ).fetchall()
            return len(row)

        return self._new_job("partialdelete", database, params, delete)

    def _json(self, obj: Any) -> tuple[int, bytes, dict[str, str]]:
        return 200, json.dumps(obj).encode(), {}

    def _job(self, job_id: str) -> Job:
        job = self.jobs.get(job_id)
        if job is None:
            raise ApiError(404, "Resource not found", f"Job {job_id} not found")
        return job

    def _saved(self, name: str | None = None, id: str | None = None) -> SavedQuery:
        for saved in self.saved_queries.values():
            if saved.name == name or str(saved.id) == id:
                return saved
        raise ApiError(404, "Resource not found", f"Saved query '{name or id}' does not exist")

    def _start(self, saved: SavedQuery, params: dict[str, str], scheduled_time: str) -> Job:
        """A job of a saved query: its engine, database and SQL, run at `scheduled_time`."""
        if not re.fullmatch(r"-?\d+", scheduled_time):
            raise ApiError(400, "Bad Request", f"Invalid time: {scheduled_time}")
        fields = {"domain_key": params.get("domain_key", ""), "scheduled_time": scheduled_time}
        issued = self.issue(saved.type, saved.database, {"query": saved.query, **fields})
        return self.jobs[issued["job_id"]]

    def issue(self, engine: str, database: str, params: dict[str, str]) -> dict[str, Any]:
        if engine not in ("presto", "trino", "hive"):
            raise ApiError(422, "Unprocessable Entity", f"Unsupported job type: {engine}")
        job = self._new_job(engine, database, params)
        return {"job_id": job.job_id, "job": job.job_id, "database": database}

    def _new_job(
        self, engine: str, database: str, params: dict[str, str], action: Callable[[Job], int] | None = None
    ) -> Job:
        """A job (deduped by `domain_key`: 409 + `details.conflicts_with`), started in a thread."""
        with self.sql.lock:
            if database not in self.sql.schemas():
                raise ApiError(404, "Resource not found", f"Database '{database}' does not exist")
            key = params.get("domain_key")
            if key and key in self.domain_keys:
                existing = self.domain_keys[key]
                raise ApiError(
                    409,
                    "Conflict",
                    f"Domain key '{key}' is already used by job {existing}",
                    {"conflicts_with": existing},
                )
            job_id = str(len(self.jobs) + 1000)
            job = Job(job_id, engine, database, params.get("query", ""), params, action=action)
            self.jobs[job_id] = job
            if key:
                self.domain_keys[key] = job_id
        threading.Thread(target=self._run, args=(job,), daemon=True).start()
        time.sleep(self.answer_delay)  # the job exists before its submitter hears of it
        return job

    def _run(self, job: Job) -> None:
        time.sleep(self.job_delay)
        with self.sql.lock:
            if job.status == "killed":
                return
            job.status, job.start_at = "running", _now()
            job.cmdout = f"started at {job.start_at}\nexecuting query on the kudig TD stand-in (DuckDB)\n"
            try:
                if job.action is not None:
                    job.num_records = job.action(job)
                else:
                    self.sql.run(job)
                job.status = "success"
                job.cmdout += f"finished: {job.num_records} records\n"
            except duckdb.Error as e:
                job.status = "error"
                job.stderr = f"Query {job.job_id} failed: {e}"
            except Exception as e:
                job.status = "error"
                job.stderr = f"Query {job.job_id} failed: {type(e).__name__}: {e}"
            job.end_at = _now()

    def result(self, job: Job, fmt: str, headers: dict[str, str]) -> tuple[int, bytes, dict[str, str]]:
        if job.status != "success":
            raise ApiError(404, "Resource not found", f"Job {job.job_id} has no result (status {job.status})")
        rows = job.rows
        names = [c[0] for c in job.columns or []]
        if fmt in ("msgpack", "msgpack.gz"):
            data = b"".join(msgpack.packb(r, use_bin_type=True) for r in rows)
            if fmt == "msgpack.gz":
                data = gzip.compress(data)
        elif fmt == "json":
            data = b"".join(json.dumps(r).encode() + b"\n" for r in rows)
        elif fmt in ("csv", "tsv"):
            import csv

            buf = io.StringIO()
            writer = csv.writer(buf, delimiter="," if fmt == "csv" else "\t", lineterminator="\n")
            writer.writerows([names, *rows] if fmt == "csv" else rows)
            data = buf.getvalue().encode()
        else:
            raise ApiError(422, "Unprocessable Entity", f"Unsupported result format: {fmt}")
        range_header = {k.lower(): v for k, v in headers.items()}.get("range")
        m = re.fullmatch(r"bytes=(\d+)-(\d*)", range_header or "")
        if m:
            start = int(m.group(1))
            end = min(int(m.group(2)) if m.group(2) else len(data) - 1, len(data) - 1)
            return (
                206,
                data[start : end + 1],
                {
                    "Content-Range": f"bytes {start}-{end}/{len(data)}",
                    "Content-Type": "application/octet-stream",
                },
            )
        return 200, data, {"Content-Type": "application/octet-stream"}

    def catalog(self, method: str, parts: list[str]) -> dict[str, Any]:
        sql = self.sql
        route = "/".join(parts[:3])
        if method == "GET" and route == "v3/database/list":
            return {
                "databases": [
                    {"name": s, "count": len(sql.tables(s)), "created_at": _now(), "updated_at": _now(),
                     "permission": "administrator"}
                    for s in sql.schemas()
                ]
            }  # fmt: skip
        if method == "POST" and route == "v3/database/create" and len(parts) == 4:
            if parts[3] in sql.schemas():
                raise ApiError(409, "Conflict", f"Database '{parts[3]}' already exists")
            sql.db.execute(f'CREATE SCHEMA "{parts[3]}"')
            return {"database": parts[3]}
        if method == "POST" and route == "v3/database/delete" and len(parts) == 4:
            self._schema(parts[3])
            sql.db.execute(f'DROP SCHEMA "{parts[3]}" CASCADE')
            return {"database": parts[3]}
        if method == "GET" and route == "v3/table/list" and len(parts) == 4:
            self._schema(parts[3])
            return {
                "database": parts[3],
                "tables": [
                    {"id": i + 1, "name": n, "type": "log", "count": count,
                     "schema": json.dumps([[c, t] for c, t in cols if c != "time"]),
                     "estimated_storage_size": 0, "created_at": _now(), "updated_at": _now(),
                     "expire_days": None, "last_log_timestamp": None}
                    for i, (n, cols, count) in enumerate(sql.tables(parts[3]))
                ],
            }  # fmt: skip
        if method == "POST" and route == "v3/table/create" and len(parts) in (5, 6):
            db, table = parts[3], parts[4]
            self._schema(db)
            if table in [t[0] for t in sql.tables(db)]:
                raise ApiError(409, "Conflict", f"Table '{table}' already exists")
            sql.db.execute(f'CREATE TABLE "{db}"."{table}" ("time" BIGINT)')
            return {"database": db, "table": table, "type": "log"}
        if method == "POST" and route == "v3/table/delete" and len(parts) == 5:
            self._table(parts[3], parts[4])
            sql.db.execute(f'DROP TABLE "{parts[3]}"."{parts[4]}"')
            return {"database": parts[3], "table": parts[4], "type": "log"}
        if method == "POST" and route == "v3/table/rename" and len(parts) == 6:
            db, old, new = parts[3], parts[4], parts[5]
            self._table(db, old)
            sql.db.execute(f'DROP TABLE IF EXISTS "{db}"."{new}"')
            sql.db.execute(f'ALTER TABLE "{db}"."{old}" RENAME TO "{new}"')
            return {"database": db, "table": new, "type": "log"}
        raise ApiError(
            404, "Resource not found", f"{method} /{'/'.join(parts)} is not served by the stand-in"
        )

    def _schema(self, db: str) -> None:
        if db not in self.sql.schemas():
            raise ApiError(404, "Resource not found", f"Database '{db}' does not exist")

    def _table(self, db: str, table: str) -> None:
        self._schema(db)
        if table not in [t[0] for t in self.sql.tables(db)]:
            raise ApiError(404, "Resource not found", f"Table '{db}.{table}' does not exist")

    # ---------------------------------------------------------------- for the tests

    def create_database(self, name: str) -> None:
        with self.sql.lock:
            if name not in self.sql.schemas():
                self.sql.db.execute(f'CREATE SCHEMA "{name}"')

    def tables(self, database: str) -> list[str]:
        with self.sql.lock:
            return [t[0] for t in self.sql.tables(database)]

    def databases(self) -> list[str]:
        with self.sql.lock:
            return self.sql.schemas()

    def query(self, text: str) -> list[tuple[Any, ...]]:
        with self.sql.lock:
            return self.sql.db.execute(text).fetchall()

    def create_connection(self, name: str, type: str = "td") -> int:
        """A result connection (TD's console; not in this API): its id. A job naming it by
        `result_connection_id` keeps the id and `result_connection_settings` in its params; a
        result export through a `td` connection writes the rows to a table."""
        self.connections[name] = 500 + len(self.connections)
        self.connection_types[name] = type
        return self.connections[name]

    def create_bulk_load_session(self, name: str, database: str, table: str, config: dict[str, Any]) -> None:
        """A saved bulk load session (TD's console or `td connector:create`; not in this API)."""
        self.bulk_load_sessions[name] = BulkLoadSession(name, database, table, config)

    def create_saved_query(self, name: str, database: str, query: str, type: str = "presto") -> int:
        """A saved query (TD's console or `td sched:create`; not in this API): its id."""
        saved = SavedQuery(len(self.saved_queries) + 1, name, type, database, query)
        self.saved_queries[name] = saved
        return saved.id


def _json_body(body: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(body or b"{}")
    except ValueError as e:
        raise ApiError(400, "Bad Request", f"Invalid JSON body: {e}") from None
    if not isinstance(doc, dict):
        raise ApiError(400, "Bad Request", "The body must be a JSON object")
    return doc


def _form(headers: dict[str, str], body: bytes) -> dict[str, str]:
    ctype = {k.lower(): v for k, v in headers.items()}.get("content-type", "")
    if ctype.startswith("multipart/form-data"):
        msg = BytesParser(policy=HTTP).parsebytes(b"Content-Type: " + ctype.encode() + b"\r\n\r\n" + body)
        out = {}
        for part in msg.iter_parts():
            name = part.get_param("name", header="content-disposition")
            payload = part.get_payload(decode=True)
            if isinstance(name, str) and isinstance(payload, bytes):
                out[name] = payload.decode("utf-8")
        return out
    return {k: v[-1] for k, v in parse_qs(body.decode("utf-8"), keep_blank_values=True).items()}


@pytest.fixture(scope="session")
def td_server() -> Iterator[TdServer]:
    server = TdServer().start()
    try:
        yield server
    finally:
        server.stop()


def td_project(root: Path, endpoint: str, database: str, table: str, saved_query: str | None = None) -> Path:
    """A project exercising td>: create_table from a `.sql` file with `${...}` rendered,
    insert_into, engine hive, download_file, store_last_results used in an if>; and td_ddl>. The API key is
    the secret `td.apikey`, never in the files. With `saved_query` (a name `create_saved_query` made
    with `FAMILY_SAVED_QUERY`), also td_run>, td_wait_table>, td_wait> and td_for_each> on the table,
    each checked by an if> (`family-ok` at the end)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "queries").mkdir(exist_ok=True)
    (root / "queries" / "create.sql").write_text(
        "-- rendered by kudig as digdag does: ${table} on ${session_date}\n"
        "SELECT TD_TIME_PARSE('${session_date}') + g AS time, g AS id, 'item-' || CAST(g AS VARCHAR) AS name,\n"
        "  g * ${price} AS amount, TD_TIME_FORMAT(TD_TIME_PARSE('${session_date}'), 'yyyy-MM-dd') AS day\n"
        "FROM range(1, 4) t(g)\n"
    )
    # td_wait>'s query is a file too, `${...}` rendered by the engine
    (root / "queries" / "ready.sql").write_text("SELECT count(*) >= 4 FROM ${table}\n")
    (root / "td.dig").write_text(
        f"""_export:
  td:
    database: {database}
    endpoint: "{endpoint}"
    use_ssl: false
  table: {table}
  price: 10

+create:
  td>: queries/create.sql
  create_table: ${{table}}

+insert:
  td>:
  query: "SELECT TD_TIME_PARSE('${{session_date}} 12:00:00') AS time, 4 AS id, 'four, \\"quoted\\"' AS name, CAST(NULL AS INTEGER) AS amount"
  insert_into: ${{table}}

+hive:
  td>:
  query: SELECT count(DISTINCT day) AS days FROM `${{table}}`
  engine: hive
  store_last_results: true

+download:
  td>:
  query: SELECT id, name, amount FROM ${{table}} ORDER BY id
  download_file: out/${{table}}.csv

+count:
  td>:
  query: >-
    SELECT count(*) AS cnt, sum(amount) AS total FROM ${{table}}
    WHERE TD_TIME_RANGE(time, '${{session_date}}', TD_TIME_ADD('${{session_date}}', '1d'))
  store_last_results: true

+check_count:
  if>: ${{td.last_results.cnt == 4 && td.last_results.total == 60 && td.last_job.num_records == 1}}
  _do:
    sh>: echo "td-count-ok cnt=${{td.last_results.cnt}} job=${{td.last_job_id}}"

+ddl_create:
  td_ddl>:
  create_databases: ["${{td.database}}_extra"]
  create_tables: ["old_${{table}}", "staging_${{table}}"]

+ddl_rename:
  td_ddl>:
  drop_tables: ["staging_${{table}}"]
  rename_tables: [{{from: "old_${{table}}", to: "archived_${{table}}"}}]
"""
        + ("" if saved_query is None else FAMILY_TASKS.replace("SAVED_QUERY", saved_query))
    )
    return root


# The saved query td_project's td_run> runs (in the project's database, on its table `events`).
FAMILY_SAVED_QUERY = "SELECT count(*) AS cnt, TD_SCHEDULED_TIME() AS t FROM events"

FAMILY_TASKS = """
+family_run:
  td_run>: SAVED_QUERY
  store_last_results: true

+family_run_check:
  if>: ${td.last_results.cnt == 4 && td.last_results.t == 1706572800 && td.last_job_id == td.last_job.id}
  _else_do:
    fail>: "td_run> result: ${td.last_results}"

+family_wait_table:
  td_wait_table>: ${table}
  rows: 4
  interval: 1s

+family_wait:
  td_wait>: queries/ready.sql
  interval: 1s

+family_each:
  td_for_each>:
  query: SELECT id, name FROM ${table} WHERE id <= 3 ORDER BY id
  _parallel: true
  _do:
    +row:
      if>: ${td.each.name == 'item-' + td.each.id}
      _else_do:
        fail>: "td_for_each> row: ${td.each}"

+family_done:
  echo>: family-ok ${td.last_job.num_records}
"""


def td_data_project(
    root: Path,
    endpoint: str,
    database: str,
    session: str,
    connection: str,
    bucket: str | None = None,
) -> Path:
    """A project exercising td_partial_delete>, td_load> (a config file with `${secret:...}`, and
    a saved session by name), td_result_export> and, with `bucket`, td_table_export>. `events`
    gets hours 0..5 of the session's day, hours 1 and 2 are deleted; `events_copy` is loaded from
    it by load/events.yml, `events_session` by the session `session` (`create_bulk_load_session`),
    `hours_out` written from a td> job's result through `connection` (`create_connection`); the
    export writes hours 0 and 3 (its range is 00:00-04:00) under `exports/<date>/` of `bucket`.
    Each step's stored `td.last_job` is checked by an if>; `td-data-ok` at the end."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "load").mkdir(exist_ok=True)
    (root / "load" / "events.yml").write_text(
        "in:\n"
        "  type: td\n"
        "  apikey: ${secret:td.apikey}\n"
        f"  database: {database}\n"
        "  query: SELECT time, hour FROM events WHERE hour >= ${min_hour}\n"
        "out:\n"
        "  mode: replace\n"
    )
    export = (
        ""
        if bucket is None
        else f"""
+export_table:
  td_table_export>:
  table: events
  file_format: jsonl.gz
  from: ${{session_date}} 00:00:00
  to: ${{session_date}} 04:00:00 +0000
  s3_bucket: {bucket}
  s3_path_prefix: exports/${{session_date}}/

+check_export:
  if>: ${{td.last_job.num_records == 2}}
  _else_do:
    fail>: "td_table_export> stored ${{td.last_job}}"
"""
    )
    (root / "tddata.dig").write_text(
        f"""timezone: UTC
_export:
  td:
    database: {database}
    endpoint: "{endpoint}"
    use_ssl: false
  min_hour: 0

+seed:
  td>:
  query: SELECT TD_TIME_PARSE('${{session_date}}') + h * 3600 AS time, h AS hour FROM range(0, 6) t(h)
  create_table: events

+delete_hours:
  td_partial_delete>: events
  from: ${{session_date}}T01:00:00
  to: ${{session_date}}T03:00:00

+check_delete:
  if>: ${{td.last_job.num_records == 2 && td.last_job_id == td.last_job.id}}
  _else_do:
    fail>: "td_partial_delete> stored ${{td.last_job}}"

+load_file:
  td_load>: load/events.yml
  table: events_copy

+check_load:
  if>: ${{td.last_job.num_records == 4 && td.last_job_id == td.last_job.id}}
  _else_do:
    fail>: "td_load> stored ${{td.last_job}}"

+load_session:
  td_load>: {session}

+report:
  td>:
  query: SELECT hour FROM events ORDER BY hour

+export_result:
  td_result_export>:
  job_id: ${{td.last_job_id}}
  result_connection: {connection}
  result_settings:
    table: hours_out
    mode: replace

+check_result_export:
  if>: ${{td.last_job.num_records == 4}}
  _else_do:
    fail>: "td_result_export> stored ${{td.last_job}}"
{export}
+done:
  echo>: td-data-ok ${{td.last_job_id}}
"""
    )
    return root


def td_data_session(server: TdServer, name: str, database: str) -> None:
    """The saved bulk load session td_data_project's `td_load>: <name>` starts: the count of
    `events` at the session time into `events_session`."""
    server.create_bulk_load_session(
        name,
        database,
        "events_session",
        {
            "in": {
                "type": "td",
                "apikey": server.apikey,
                "database": database,
                "query": "SELECT TD_SCHEDULED_TIME() AS time, count(*) AS n FROM events",
            },
            "out": {"mode": "append"},
        },
    )
