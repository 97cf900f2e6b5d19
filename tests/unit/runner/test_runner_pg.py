"""pg> and param_set>/param_get> against a real PostgreSQL (Debian's, tests/postgres.py), through
`kudig run` (the runner as a subprocess) and the runner's operator functions directly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from kudig_runner.dispatch import run_task
from kudig_runner.protocol import TaskInput

ROOT = Path(__file__).resolve().parents[3]
if str(ROOT) not in sys.path:  # tests/unit has no __init__.py: make `tests.postgres` importable
    sys.path.insert(0, str(ROOT))

from tests import peers  # noqa: E402
from tests.postgres import PgServer, pg_project, postgres  # noqa: E402, F401  (the fixture)


def kudig_run(
    project: Path, pg: PgServer, *args: str, password: str | None = None
) -> subprocess.CompletedProcess[str]:
    secrets = {
        "pg.password": pg.password if password is None else password,
        "param_server.password": pg.password,
    }
    return peers.kudig_run(project, *args, secrets=secrets)


def test_workflow_create_insert_download_last_results_params(postgres: PgServer, tmp_path: Path) -> None:  # noqa: F811
    root = pg_project(tmp_path / "p", "127.0.0.1", postgres.port, "orders_local")
    proc = kudig_run(root, postgres, "pg.dig", "--session", "2024-01-30")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "pg-count-ok cnt=4" in out
    assert "pg-all-ok rows=2" in out
    assert "param-ok [value-orders_local] [42] []" in out
    rows = postgres.sql("SELECT id, name, amount FROM orders_local ORDER BY id")
    assert rows == [(1, "item-1", 10), (2, "item-2", 20), (3, "item-3", 30), (4, 'four, "quoted"', None)]
    csv = (root / "out" / "orders_local.csv").read_bytes()
    assert csv == (
        b'id,name,amount\r\n1,item-1,10\r\n2,item-2,20\r\n3,item-3,30\r\n4,"four, ""quoted""",\r\n'
    )
    stored = postgres.sql(
        "SELECT key, value, value_type, site_id FROM params WHERE key LIKE 'orders_local%' ORDER BY key"
    )
    assert stored == [
        ("orders_local_key", '{"value":"value-orders_local"}', 0, 0),
        ("orders_local_num", '{"value":"42"}', 0, 0),
    ]
    # The password is nowhere: output, logs, the saved session status.
    saved = "".join(p.read_text() for p in (root / ".digdag").rglob("*") if p.is_file())
    assert postgres.password not in out
    assert postgres.password not in saved
    # Each run is a new attempt: --rerun creates and inserts again (not skipped as already done).
    proc = kudig_run(root, postgres, "pg.dig", "--session", "2024-01-30", "--rerun")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert postgres.sql("SELECT count(*) FROM orders_local") == [(4,)]


def test_bad_sql_quotes_the_server(postgres: PgServer, tmp_path: Path) -> None:  # noqa: F811
    (tmp_path / "bad.dig").write_text(
        f"+q:\n  pg>:\n  query: SELECT * FROM no_such_table\n  host: 127.0.0.1\n  port: {postgres.port}\n"
        "  database: kudig\n  user: kudig\n"
    )
    proc = kudig_run(tmp_path, postgres, "bad.dig", "--no-save")
    assert proc.returncode != 0
    assert 'Failed to execute given SQL script [ERROR: relation "no_such_table" does not exist' in proc.stderr


def test_wrong_password_is_clear_and_not_printed(postgres: PgServer, tmp_path: Path) -> None:  # noqa: F811
    (tmp_path / "pw.dig").write_text(
        f"+q:\n  pg>:\n  query: SELECT 1\n  host: 127.0.0.1\n  port: {postgres.port}\n  database: kudig\n  user: kudig\n"
    )
    proc = kudig_run(tmp_path, postgres, "pw.dig", "--no-save", password="wrong-pass-xyz")
    assert proc.returncode != 0
    assert "Failed to connect to the database [" in proc.stderr
    assert 'password authentication failed for user "kudig"' in proc.stderr
    assert "wrong-pass-xyz" not in proc.stdout + proc.stderr


def test_retry_runs_failed_sql_again(postgres: PgServer, tmp_path: Path) -> None:  # noqa: F811
    # A sequence is not transactional: the first try fails (1/0), the _retry succeeds.
    postgres.sql("DROP SEQUENCE IF EXISTS retry_seq; CREATE SEQUENCE retry_seq; DROP TABLE IF EXISTS retry_t")
    postgres.sql("CREATE TABLE retry_t (n int)")
    (tmp_path / "retry.dig").write_text(
        f"+q:\n  _retry: 2\n  pg>:\n  host: 127.0.0.1\n  port: {postgres.port}\n  database: kudig\n  user: kudig\n"
        "  query: INSERT INTO retry_t SELECT 1 / (CASE WHEN nextval('retry_seq') < 2 THEN 0 ELSE 1 END)\n"
    )
    proc = kudig_run(tmp_path, postgres, "retry.dig", "--no-save")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert postgres.sql("SELECT count(*) FROM retry_t") == [(1,)]
    assert postgres.sql("SELECT last_value FROM retry_seq") == [(2,)]


def _input(pg: PgServer, config: dict[str, Any], task: str = "+wf+t") -> TaskInput:
    base = {"host": "127.0.0.1", "port": pg.port, "database": "kudig", "user": "kudig"}
    base.update({"session_uuid": "u-1", "attempt_id": 1})
    return {
        "task_name": task,
        "type": "pg",
        "config": {**base, **config},
        "params": {},
        "env": {},
        "secrets": {"pg.password": "KUDIG_TEST_PG_PW"},
        "workdir": "",
    }


def test_strict_transaction_skips_a_completed_query(
    postgres: PgServer,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("KUDIG_TEST_PG_PW", postgres.password)
    monkeypatch.delenv("KUDIG_RUN_ID", raising=False)
    postgres.sql("DROP TABLE IF EXISTS strict_t; CREATE TABLE strict_t (n int)")
    task = _input(postgres, {"query": "INSERT INTO strict_t VALUES (1)"}, "+wf+strict")
    assert run_task(task, tmp_path)["error"] is None
    # The same task again (a retry after the SQL committed, a re-created pod): skipped.
    assert run_task(task, tmp_path)["error"] is None
    assert "already completed" in capfd.readouterr().out
    assert postgres.sql("SELECT count(*) FROM strict_t") == [(1,)]
    done = postgres.sql("SELECT count(*) FROM __digdag_status WHERE completed_at IS NOT NULL")
    assert done[0][0] >= 1
    # A new run (attempt) runs it again; strict_transaction: false has no status row at all.
    monkeypatch.setenv("KUDIG_RUN_ID", "another-run")
    assert run_task(task, tmp_path)["error"] is None
    loose = _input(postgres, {"query": "VACUUM strict_t", "strict_transaction": False})
    assert run_task(loose, tmp_path)["error"] is None  # cannot run inside a transaction
    strict = _input(postgres, {"query": "VACUUM strict_t"}, "+wf+vacuum")
    out = run_task(strict, tmp_path)
    assert (
        out["error"] is not None and "VACUUM cannot run inside a transaction block" in out["error"]["message"]
    )
    loose = _input(postgres, {"query": "INSERT INTO strict_t VALUES (2)", "strict_transaction": False})
    assert run_task(loose, tmp_path)["error"] is None
    assert postgres.sql("SELECT count(*) FROM strict_t") == [(3,)]


def test_option_errors_and_last_results_shapes(
    postgres: PgServer,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KUDIG_TEST_PG_PW", postgres.password)
    for extra, message in (
        ({"insert_into": "a", "create_table": "b"}, "Can't use both of insert_into and create_table"),
        (
            {"download_file": "x.csv", "insert_into": "a"},
            "Can't use download_file with insert_into or create_table",
        ),
        (
            {"store_last_results": "first", "create_table": "a"},
            "Can't use store_last_results with insert_into or create_table",
        ),
        (
            {"store_last_results": "all", "download_file": "x"},
            "Can't use both download_file and store_last_results at once",
        ),
        ({"store_last_results": "some"}, 'last_results must be either of "first" or "all": some'),
    ):
        out = run_task(_input(postgres, {"query": "SELECT 1", **extra}), tmp_path)
        assert out["error"] is not None and out["error"]["message"] == message
    out = run_task(
        _input(postgres, {"query": "SELECT 1 AS a WHERE false", "store_last_results": True}), tmp_path
    )
    assert out["store_params"] == {"pg": {"last_results": {}}}
    out = run_task(
        _input(
            postgres,
            {
                "query": "SELECT 1.5::numeric AS x, 2::numeric AS y, 'a'::text AS z",
                "store_last_results": "first",
            },
        ),
        tmp_path,
    )
    assert out["store_params"] == {"pg": {"last_results": {"x": 1.5, "y": 2, "z": "a"}}}
    out = run_task(
        _input(postgres, {"query": "SELECT repeat('x', 300) AS big", "store_last_results": "first"}), tmp_path
    )
    assert out["error"] is not None and "exceeded the limit: 300 > 256" in out["error"]["message"]
    # Read-only mode runs one statement only.
    out = run_task(_input(postgres, {"query": "SELECT 1; SELECT 2", "store_last_results": "first"}), tmp_path)
    assert out["error"] is not None and out["error"]["message"].startswith(
        "Failed to execute given SQL script ["
    )
    # Secrets first: pg.database from a secret wins over the parameter.
    monkeypatch.setenv("KUDIG_TEST_PG_DB", "postgres")
    task = _input(postgres, {"query": "SELECT current_database() AS db", "store_last_results": "first"})
    task["secrets"]["pg.database"] = "KUDIG_TEST_PG_DB"
    assert run_task(task, tmp_path)["store_params"] == {"pg": {"last_results": {"db": "postgres"}}}


def test_param_server_errors(tmp_path: Path) -> None:
    task: TaskInput = {
        "task_name": "+t",
        "type": "param_get",
        "config": {"_local_keys": ["a"], "a": "b"},
        "params": {},
        "env": {},
        "secrets": {},
        "workdir": "",
    }
    out = run_task(task, tmp_path)
    assert (
        out["error"] is not None
        and out["error"]["message"] == "param_server.type is required to use this operator."
    )
    task["config"]["param_server"] = {"type": "redis"}
    out = run_task(task, tmp_path)
    assert out["error"] is not None and out["error"]["message"].startswith(
        "Unsupported param_server.type : redis"
    )
    task["config"] = {
        "_local_keys": [],
        "param_server": {"type": "postgresql", "host": "h", "user": "u", "database": "d"},
    }
    out = run_task(task, tmp_path)
    assert out["error"] is not None and out["error"]["message"] == "no key is set."
