"""td> against the local TD-API stand-in (tests/td_server.py: td-client speaks to it over HTTP,
the SQL runs on DuckDB), through `kudig run` (the runner as a subprocess) and the runner's
operator function directly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from kudig_runner.dispatch import run_task
from kudig_runner.protocol import TaskInput

ROOT = Path(__file__).resolve().parents[3]
if str(ROOT) not in sys.path:  # tests/unit has no __init__.py: make `tests.td_server` importable
    sys.path.insert(0, str(ROOT))

pytest.importorskip("tdclient")
pytest.importorskip("duckdb")

from tests import peers  # noqa: E402
from tests.td_server import (  # noqa: E402
    APIKEY,
    FAMILY_SAVED_QUERY,
    TdServer,
    td_project,
    td_server,  # noqa: F401  (the fixture)
)


def kudig_run(project: Path, *args: str, apikey: str = APIKEY) -> subprocess.CompletedProcess[str]:
    return peers.kudig_run(project, *args, secrets={"td.apikey": apikey}, timeout=180)


def test_workflow_create_insert_hive_download_last_results(td_server: TdServer, tmp_path: Path) -> None:  # noqa: F811
    td_server.create_database("local_db")
    td_server.create_saved_query("local_daily", "local_db", FAMILY_SAVED_QUERY)
    root = td_project(tmp_path / "p", td_server.endpoint(), "local_db", "events", "local_daily")
    proc = kudig_run(root, "td.dig", "--session", "2024-01-30")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "td-count-ok cnt=4 job=" in out
    assert "family-ok 3" in out  # td_run>, td_wait_table>, td_wait>, td_for_each> (3 rows)
    assert "(+td+family_each^sub+td-for-each-2+row): if>: true" in out
    rows = td_server.query("SELECT id, name, amount, day FROM local_db.events ORDER BY id")
    assert rows == [
        (1, "item-1", 10, "2024-01-30"),
        (2, "item-2", 20, "2024-01-30"),
        (3, "item-3", 30, "2024-01-30"),
        (4, 'four, "quoted"', None, None),
    ]
    csv = (root / "out" / "events.csv").read_bytes()
    assert csv == b'id,name,amount\r\n1,item-1,10\r\n2,item-2,20\r\n3,item-3,30\r\n4,"four, ""quoted""",\r\n'
    # td_ddl>: databases and tables created, dropped, renamed.
    assert td_server.tables("local_db") == ["archived_events", "events"]
    assert "local_db_extra" in td_server.databases()
    jobs = [j for j in td_server.jobs.values() if j.database == "local_db"]
    # The .sql file was rendered; create_table got digdag's prefix; hive ran as hive.
    create = jobs[0].query
    assert "-- rendered by kudig as digdag does: events on 2024-01-30\n" in create
    assert 'DROP TABLE IF EXISTS "events";\nCREATE TABLE "events" AS\nSELECT' in create
    assert "-- task_name: +td+create\n" in create
    assert 'INSERT INTO "events"\nSELECT' in jobs[1].query
    assert jobs[2].type == "hive"
    assert all(j.params.get("domain_key") for j in jobs)
    assert {j.params.get("scheduled_time") for j in jobs if "count(*) from" not in j.query} == {"1706572800"}
    assert any(j.query == 'select count(*) from "events"' for j in jobs)  # td_wait_table> sends no time
    # The API key is nowhere: output, the saved session state.
    saved = "".join(p.read_text() for p in (root / ".digdag").rglob("*") if p.is_file())
    assert APIKEY not in out and APIKEY not in saved
    assert any(r.authorization == f"TD1 {APIKEY}" for r in td_server.requests)


def test_bad_sql_quotes_the_server(td_server: TdServer, tmp_path: Path) -> None:  # noqa: F811
    td_server.create_database("bad_db")
    (tmp_path / "bad.dig").write_text(
        f'+q:\n  td>:\n  query: SELECT * FROM no_such_table\n  database: bad_db\n  endpoint: "{td_server.endpoint()}"\n'
        "  use_ssl: false\n+after:\n  echo>: never-here\n"
    )
    proc = kudig_run(tmp_path, "bad.dig", "--no-save")
    assert proc.returncode != 0
    assert "TD job " in proc.stderr and " error: " in proc.stderr
    assert "Table with name no_such_table does not exist" in proc.stderr
    assert "never-here" not in proc.stdout


def test_wrong_apikey_fails_clearly_and_is_not_printed(td_server: TdServer, tmp_path: Path) -> None:  # noqa: F811
    td_server.create_database("auth_db")
    (tmp_path / "k.dig").write_text(
        f'+q:\n  td>:\n  query: SELECT 1\n  database: auth_db\n  endpoint: "{td_server.endpoint()}"\n  use_ssl: false\n'
    )
    proc = kudig_run(tmp_path, "k.dig", "--no-save", apikey="wrong-key-7d3e91")
    assert proc.returncode != 0
    assert (
        "Treasure Data rejected the API key (401 Unauthorized); check the 'td.apikey' secret" in proc.stderr
    )
    assert "wrong-key-7d3e91" not in proc.stdout + proc.stderr
    proc = kudig_run(tmp_path, "k.dig", "--no-save", apikey="")
    assert proc.returncode != 0
    assert "The 'td.apikey' secret is empty" in proc.stderr


def _input(server: TdServer, config: dict[str, Any], task: str = "+wf+t") -> TaskInput:
    base = {"database": "direct_db", "endpoint": server.endpoint(), "use_ssl": False}
    base.update({"session_uuid": "u-1", "attempt_id": 1, "session_time": "2024-01-30T00:00:00+00:00"})
    return {
        "task_name": task,
        "type": "td",
        "config": {**base, **config},
        "params": {},
        "env": {},
        "secrets": {"td.apikey": "KUDIG_TEST_TD_APIKEY"},
        "workdir": "",
    }


def test_a_retry_adopts_the_submitted_job_and_resubmits_a_failed_one(
    td_server: TdServer,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KUDIG_TEST_TD_APIKEY", APIKEY)
    monkeypatch.delenv("KUDIG_RUN_ID", raising=False)
    td_server.create_database("direct_db")
    td_server.query("CREATE TABLE direct_db.once (time BIGINT, n INTEGER)")
    task = _input(td_server, {"query": "SELECT 1 AS time, 7 AS n", "insert_into": "once"}, "+wf+once")
    first = run_task(task, tmp_path)
    assert first["error"] is None, first["error"]
    # The same task again (a _retry, a re-created pod): the domain key is taken, the job adopted.
    second = run_task(task, tmp_path)
    assert second["error"] is None
    assert second["store_params"]["td"]["last_job_id"] == first["store_params"]["td"]["last_job_id"]
    assert td_server.query("SELECT count(*) FROM direct_db.once") == [(1,)]
    # A new run (KUDIG_RUN_ID: a new attempt) inserts again.
    monkeypatch.setenv("KUDIG_RUN_ID", "another-run")
    assert run_task(task, tmp_path)["error"] is None
    assert td_server.query("SELECT count(*) FROM direct_db.once") == [(2,)]
    # A failed job is submitted again by the retry (its SQL did not take effect).
    td_server.query("CREATE TABLE direct_db.flaky (n INTEGER)")
    flaky = _input(
        td_server, {"query": "SELECT n FROM direct_db.flaky_src", "store_last_results": True}, "+wf+f"
    )
    out = run_task(flaky, tmp_path)
    assert out["error"] is not None and "flaky_src does not exist" in out["error"]["message"]
    td_server.query("CREATE TABLE direct_db.flaky_src AS SELECT 5 AS n")
    out = run_task(flaky, tmp_path)
    assert out["error"] is None, out["error"]
    assert out["store_params"]["td"]["last_results"] == {"n": 5}
    assert out["reset_store_params"] == ["td.last_results"]
    assert out["store_params"]["td"]["last_job"]["num_records"] == 1


def test_option_errors_and_empty_results(
    td_server: TdServer,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KUDIG_TEST_TD_APIKEY", APIKEY)
    td_server.create_database("direct_db")
    for extra, message in (
        ({"insert_into": "a", "create_table": "b"}, "Setting both insert_into and create_table is invalid"),
        (
            {"download_file": "x.csv", "insert_into": "a"},
            "download_file is invalid if insert_into or create_table is set",
        ),
        ({"engine": "spark"}, "Unknown 'engine:' option (available options are: hive and presto): spark"),
        ({"result_settings": {"a": 1}}, "result_settings is valid only if result_connection is set"),
        ({"database": None}, "Parameter 'database' is required but not set"),
    ):
        task = _input(td_server, {"query": "SELECT 1", **extra})
        if extra.get("database", "") is None:
            del task["config"]["database"]
        out = run_task(task, tmp_path)
        assert out["error"] is not None and message in out["error"]["message"], (extra, out["error"])
    # result_connection: looked up by name; its id and the settings (secrets resolved) go with the job
    conn = td_server.create_connection("my_pg")
    monkeypatch.setenv("KUDIG_TEST_PG_PW", 's3cr3t"pw')
    task = _input(
        td_server,
        {
            "query": "SELECT 1 AS a",
            "result_connection": "my_pg",
            "result_settings": {"table": "out", "password": "${secret:pg.password}", "mode": "replace"},
        },
        "+wf+rc",
    )
    task["secrets"]["pg.password"] = "KUDIG_TEST_PG_PW"
    out = run_task(task, tmp_path)
    assert out["error"] is None, out["error"]
    job = td_server.jobs[str(out["store_params"]["td"]["last_job_id"])]
    assert job.params["result_connection_id"] == str(conn)
    assert json.loads(job.params["result_connection_settings"]) == {
        "table": "out",
        "password": 's3cr3t"pw',
        "mode": "replace",
    }
    missing = run_task(
        _input(td_server, {"query": "SELECT 1", "result_connection": "nope"}, "+wf+rc2"), tmp_path
    )
    assert missing["error"] is not None
    assert "Connection 'nope' does not exist" in missing["error"]["message"], missing["error"]
    task = _input(td_server, {"query": "SELECT 1 AS a"})
    task["secrets"] = {}
    out = run_task(task, tmp_path)
    assert out["error"] is not None and "The 'td.apikey' secret is missing" in out["error"]["message"]
    # No rows: td.last_results is {}; a hive `create_table` is INSERT OVERWRITE after a REST create.
    out = run_task(
        _input(td_server, {"query": "SELECT 1 AS a WHERE false", "store_last_results": True}), tmp_path
    )
    assert out["error"] is None and out["store_params"]["td"]["last_results"] == {}
    for n in (1, 2):
        task = _input(
            td_server,
            {"query": f"SELECT {n} AS v", "create_table": "direct_db.hv", "engine": "hive"},
            f"+wf+h{n}",
        )
        assert run_task(task, tmp_path)["error"] is None
    assert td_server.query("SELECT v FROM direct_db.hv") == [(2,)]


def test_td_ddl_options_and_errors(
    td_server: TdServer,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KUDIG_TEST_TD_APIKEY", APIKEY)
    td_server.create_database("ddl_db")

    def ddl(config: dict[str, Any]) -> Any:
        task = _input(td_server, {"database": "ddl_db", **config})
        task["type"] = "td_ddl"
        return run_task(task, tmp_path)

    assert ddl({"create_tables": ["a", "b"], "drop_tables": ["missing"]})["error"] is None
    td_server.query("INSERT INTO ddl_db.a VALUES (1)")
    assert ddl({"empty_tables": ["a"], "create_tables": ["b"]})["error"] is None  # b: a 409, ignored
    assert td_server.query("SELECT count(*) FROM ddl_db.a") == [(0,)]
    out = ddl({"rename_tables": [{"from": "nope", "to": "x"}]})
    assert out["error"] is not None and "Renaming table ddl_db.nope doesn't exist" in out["error"]["message"]
    out = ddl({"rename_tables": [{"from": "a", "to": "other.x"}]})
    assert out["error"] is not None and "can't include database name" in out["error"]["message"]
    assert ddl({"rename_tables": [{"from": "a", "to": "b"}]})["error"] is None  # overwrites b
    assert td_server.tables("ddl_db") == ["b"]
    assert ddl({"create_databases": ["ddl_db2"], "drop_databases": ["ddl_nope"]})["error"] is None
    assert ddl({"drop_databases": ["ddl_db2"]})["error"] is None
    assert "ddl_db2" not in td_server.databases()
    out = ddl({"create_tables": "a"})
    assert out["error"] is not None and "Parameter 'create_tables' must be a list" in out["error"]["message"]


def test_a_stopped_task_kills_its_job(td_server: TdServer, tmp_path: Path) -> None:  # noqa: F811
    """SIGTERM to the runner while its job runs (`kudig kill`, a deleted pod, Ctrl-C of `kudig
    run`): the job is killed at Treasure Data, as digdag's operator cleanup does, and the task
    ends with an error saying so."""
    import signal
    import time

    td_server.create_database("direct_db")
    before = set(td_server.jobs)
    delay, td_server.job_delay = td_server.job_delay, 60.0  # the job stays queued until killed
    task = _input(td_server, {"query": "SELECT 1 AS a"}, "+wf+long")
    (tmp_path / "in.json").write_text(json.dumps(task))
    env = dict(os.environ, KUDIG_TEST_TD_APIKEY=APIKEY, PYTHONPATH=str(ROOT / "runner"))
    runner = subprocess.Popen(
        [sys.executable, "-m", "kudig_runner", "--input", "in.json", "--output", "out.json"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while set(td_server.jobs) == before and time.monotonic() < deadline and runner.poll() is None:
            time.sleep(0.1)
        assert set(td_server.jobs) != before, "no job was submitted"
        runner.send_signal(signal.SIGTERM)
        out, _ = runner.communicate(timeout=60)
    finally:
        td_server.job_delay = delay
        if runner.poll() is None:
            runner.kill()
    (job,) = [td_server.jobs[j] for j in set(td_server.jobs) - before]
    assert job.status == "killed", out
    assert f"td>: killed job {job.job_id} (SIGTERM)" in out
    error = json.loads((tmp_path / "out.json").read_text())["error"]
    assert error["message"] == f"Stopped by SIGTERM: TD job {job.job_id} was killed"
    assert runner.returncode != 0
