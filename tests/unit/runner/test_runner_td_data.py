"""td_load>, td_partial_delete>, td_result_export>, td_table_export> against the local TD-API
stand-in (tests/td_server.py: td-client over HTTP, the data in DuckDB, table exports written to
moto's S3), through `kudig run` and the runner's operator functions directly."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
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
from tests.s3peer import ACCESS_KEY, SECRET_KEY, S3Server, s3  # noqa: E402, F401  (the fixture)
from tests.td_server import (  # noqa: E402
    APIKEY,
    TdServer,
    td_data_project,
    td_data_session,
    td_server,  # noqa: F401  (the fixture)
)

DAY = 1706572800  # 2024-01-30T00:00:00Z


def _rows(server: TdServer, sql: str) -> list[tuple[Any, ...]]:
    return server.query(sql)


def test_partial_delete_load_and_result_export_through_kudig_run(td_server: TdServer, tmp_path: Path) -> None:  # noqa: F811
    td_server.create_database("data_db")
    td_data_session(td_server, "data_daily", "data_db")
    td_server.create_connection("data_out")
    root = td_data_project(tmp_path / "p", td_server.endpoint(), "data_db", "data_daily", "data_out")
    proc = peers.kudig_run(
        root, "tddata.dig", "--session", "2024-01-30", secrets={"td.apikey": APIKEY}, timeout=180
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "td-data-ok " in out
    # td_partial_delete>: hours 1 and 2 are gone (from/to local ISO times in the workflow's zone).
    assert _rows(td_server, "SELECT hour FROM data_db.events ORDER BY hour") == [(0,), (3,), (4,), (5,)]
    (delete,) = [j for j in td_server.jobs.values() if j.type == "partialdelete" and j.database == "data_db"]
    assert (delete.params["from"], delete.params["to"]) == (str(DAY + 3600), str(DAY + 3 * 3600))
    assert delete.params["domain_key"]
    # td_load> from the config file: rendered (${min_hour}), its ${secret:td.apikey} resolved.
    assert _rows(td_server, "SELECT hour FROM data_db.events_copy ORDER BY hour") == [(0,), (3,), (4,), (5,)]
    by_file = [b for b in td_server.bulk_loads if b["table"] == "events_copy"]
    assert by_file[0]["config"]["in"]["query"] == "SELECT time, hour FROM events WHERE hour >= 0"
    # td_load> of a saved session by name, at the session time.
    assert _rows(td_server, "SELECT time, n FROM data_db.events_session") == [(DAY, 4)]
    # td_result_export>: the td> job's result written through the connection.
    assert _rows(td_server, "SELECT hour FROM data_db.hours_out ORDER BY hour") == [(0,), (3,), (4,), (5,)]
    (export,) = [
        e
        for e in td_server.result_exports
        if e["result_connection_id"] == str(td_server.connections["data_out"])
    ]
    assert json.loads(export["result_connection_settings"]) == {"table": "hours_out", "mode": "replace"}
    assert APIKEY not in out


@pytest.fixture
def direct(td_server: TdServer, monkeypatch: pytest.MonkeyPatch) -> TdServer:  # noqa: F811
    monkeypatch.setenv("KUDIG_TEST_TD_APIKEY", APIKEY)
    monkeypatch.setenv("KUDIG_TEST_AWS_KEY", ACCESS_KEY)
    monkeypatch.setenv("KUDIG_TEST_AWS_SECRET", SECRET_KEY)
    monkeypatch.delenv("KUDIG_RUN_ID", raising=False)
    td_server.create_database("datad_db")
    td_server.query(
        "CREATE OR REPLACE TABLE datad_db.ev AS SELECT 1706572800 + h * 1800 AS time, h AS n FROM range(0, 8) t(h)"
    )
    return td_server


def _input(server: TdServer, op: str, config: dict[str, Any], task: str = "+wf+t") -> TaskInput:
    base = {"database": "datad_db", "endpoint": server.endpoint(), "use_ssl": False, "timezone": "Asia/Tokyo"}
    base.update({"session_uuid": "u-3", "attempt_id": 1, "session_time": "2024-01-30T00:00:00+00:00"})
    return {
        "task_name": task,
        "type": op,
        "config": {**base, **config},
        "params": {},
        "env": {},
        "secrets": {
            "td.apikey": "KUDIG_TEST_TD_APIKEY",
            "aws.s3.access_key_id": "KUDIG_TEST_AWS_KEY",
            "aws.secret_access_key": "KUDIG_TEST_AWS_SECRET",
        },
        "workdir": "",
    }


def _error(out: Any) -> str:
    assert out["error"] is not None, out
    return str(out["error"]["message"])


def test_option_errors_are_digdags(direct: TdServer, tmp_path: Path) -> None:
    def run(op: str, **config: Any) -> Any:
        return run_task(_input(direct, op, config), tmp_path)

    assert (
        _error(run("td_load", name="a", config={"in": {}}))
        == "The parameters config and name cannot both be set"
    )
    assert _error(run("td_load", _command="a", name="b")) == (
        "Only the command or one of the config and name params may be set"
    )
    assert _error(run("td_load")) == "No parameter is set"
    assert (
        _error(run("td_load", config={"in": {"type": "td"}})) == "Parameter 'table' is required but not set"
    )
    assert "Unsupported input type: s3" in _error(run("td_load", config={"in": {"type": "s3"}}, table="x"))
    assert "Bulk load session 'nope' does not exist" in _error(run("td_load", _command="nope"))
    # td_partial_delete>: whole hours, digdag's timestamp forms
    assert _error(run("td_partial_delete", _command="ev", **{"from": DAY + 60, "to": DAY + 3600})) == (
        "'from' and 'to' parameters must be whole hours"
    )
    assert _error(run("td_partial_delete", _command="ev", **{"from": "2024-01-30 00:00:00", "to": DAY})) == (
        "Invalid timestamp format: 2024-01-30 00:00:00"
    )
    assert (
        _error(run("td_partial_delete", _command="ev", to=DAY)) == "Parameter 'from' is required but not set"
    )
    assert "Table 'datad_db.nope' does not exist" in _error(
        run("td_partial_delete", _command="nope", **{"from": DAY, "to": DAY + 3600})
    )
    # td_table_export>
    export = {"table": "ev", "from": 0, "to": 1, "s3_bucket": "b", "s3_path_prefix": "p/"}
    assert _error(run("td_table_export", **export, file_format="csv")) == "invalid file_format option"
    assert _error(run("td_table_export", **{**export, "from": "yesterday"}, file_format="tsv.gz")) == (
        "Parameter 'from' must be epoch seconds or 'yyyy-MM-dd HH:mm:ss[ Z]': yesterday"
    )
    # td_result_export>
    assert _error(run("td_result_export", result_connection="c", result_settings={})) == (
        "Parameter 'job_id' is required but not set"
    )
    assert _error(run("td_result_export", job_id="1", result_connection="c", result_settings="x")) == (
        "Parameter 'result_settings' must be a map"
    )
    assert "Connection 'no_conn' does not exist" in _error(
        run("td_result_export", job_id="1", result_connection="no_conn", result_settings={})
    )


def test_partial_delete_times_and_a_retry_adopts_the_job(direct: TdServer, tmp_path: Path) -> None:
    # A local ISO time is in the workflow's time zone (Asia/Tokyo here): 09:00 JST is 00:00 UTC.
    task = _input(
        direct, "td_partial_delete", {"_command": "ev", "from": "2024-01-30T09:00:00", "to": str(DAY + 3600)}
    )
    out = run_task(task, tmp_path)
    assert out["error"] is None, out
    assert direct.query("SELECT n FROM datad_db.ev ORDER BY n") == [(2,), (3,), (4,), (5,), (6,), (7,)]
    job_id = out["store_params"]["td"]["last_job_id"]
    assert out["store_params"]["td"]["last_job"] == {"id": job_id, "num_records": 2}
    # The same task again (a `_retry`, a re-created pod): the same domain key, the job adopted.
    again = run_task(task, tmp_path)
    assert again["store_params"]["td"]["last_job_id"] == job_id
    assert (
        len([j for j in direct.jobs.values() if j.type == "partialdelete" and j.database == "datad_db"]) == 1
    )
    # An ISO time with an offset, epoch as text.
    out = run_task(
        _input(
            direct,
            "td_partial_delete",
            {"_command": "ev", "from": "2024-01-30T02:00:00+01:00", "to": str(DAY + 7200)},
            "+wf+t2",
        ),
        tmp_path,
    )
    assert out["error"] is None, out
    assert direct.query("SELECT n FROM datad_db.ev ORDER BY n") == [(4,), (5,), (6,), (7,)]


@pytest.mark.parametrize("in_flight", [False, True], ids=["waiting", "submit-in-flight"])
def test_a_stopped_load_kills_its_job(direct: TdServer, tmp_path: Path, in_flight: bool) -> None:
    """SIGTERM to the runner while its bulk load runs: the job is killed at Treasure Data, as td>'s;
    also when the signal comes while the submit's answer is still on its way (the job exists, the
    runner does not know its id yet)."""
    session = f"datad_slow_{in_flight}"
    direct.answer_delay = 3.0 if in_flight else 0.0
    direct.create_bulk_load_session(
        session,
        "datad_db",
        "slow",
        {"in": {"type": "td", "apikey": APIKEY, "query": "SELECT 1 AS time"}},
    )
    before = set(direct.jobs)
    delay, direct.job_delay = direct.job_delay, 60.0  # the job stays queued until killed
    (tmp_path / "in.json").write_text(
        json.dumps(_input(direct, "td_load", {"_command": session}, f"+wf+{session}"))
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT / "runner"))
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
        while set(direct.jobs) == before and time.monotonic() < deadline and runner.poll() is None:
            time.sleep(0.1)
        assert set(direct.jobs) != before, "no job was submitted"
        runner.send_signal(signal.SIGTERM)
        out, _ = runner.communicate(timeout=60)
    finally:
        direct.job_delay, direct.answer_delay = delay, 0.0
        if runner.poll() is None:
            runner.kill()
    (job,) = [direct.jobs[j] for j in set(direct.jobs) - before]
    assert job.type == "bulkload" and job.status == "killed", out
    assert f"td_load>: killed job {job.job_id} (SIGTERM)" in out
    error = json.loads((tmp_path / "out.json").read_text())["error"]
    assert error["message"] == f"Stopped by SIGTERM: TD job {job.job_id} was killed"
    assert direct.tables("datad_db").count("slow") == 0


@pytest.fixture
def exports(direct: TdServer, s3: S3Server) -> Iterator[S3Server]:  # noqa: F811
    direct.s3, direct.s3_keys = s3, (ACCESS_KEY, SECRET_KEY)
    s3.create_bucket("td-exports")
    try:
        yield s3
    finally:
        direct.s3, direct.s3_keys = None, None


def test_table_export_writes_the_time_range_to_s3(
    direct: TdServer, exports: S3Server, tmp_path: Path
) -> None:
    config = {
        "table": "datad_db.ev",
        "file_format": "jsonl.gz",
        "from": "2024-01-30 09:00:00",  # in `timezone` (Asia/Tokyo): 00:00 UTC
        "to": "2024-01-30 01:30:00 +0000",
        "s3_bucket": "td-exports",
        "s3_path_prefix": "ev/2024-01-30/",
        "hive_pool_name": "etl",
    }
    out = run_task(_input(direct, "td_table_export", config, "+wf+export"), tmp_path)
    assert out["error"] is None, out
    assert out["store_params"]["td"]["last_job"]["num_records"] == 3
    (key,) = exports.keys("td-exports", "ev/2024-01-30/")
    assert key.endswith(".jsonl.gz")
    lines = gzip.decompress(exports.get("td-exports", key)).decode().splitlines()
    assert [json.loads(line)["n"] for line in lines] == [0, 1, 2]
    (sent,) = [e for e in direct.exports if e["key"] == key]
    assert sent["pool_name"] == "etl" and sent["from"] == str(DAY) and sent["to"] == str(DAY + 5400)
    # The S3 keys travel from the secrets (aws.s3.* first, aws.* as the fallback) and nowhere else.
    assert (sent["access_key_id"], sent["secret_access_key"]) == (ACCESS_KEY, SECRET_KEY)
    assert SECRET_KEY not in json.dumps(out)
    # Wrong keys: the export job fails, the message quotes S3 and not the key.
    direct.s3_keys = (ACCESS_KEY, "other")
    failed = run_task(_input(direct, "td_table_export", config, "+wf+again"), tmp_path)
    assert "The AWS Access Key Id you provided does not exist" in _error(failed)
    assert SECRET_KEY not in _error(failed)
