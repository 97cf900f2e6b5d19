"""td_run>, td_wait>, td_wait_table>, td_for_each> against the local TD-API stand-in
(tests/td_server.py), through `kudig run` and the runner's operator functions directly."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kudig_runner import td_family
from kudig_runner.dispatch import run_task
from kudig_runner.protocol import TaskInput

ROOT = Path(__file__).resolve().parents[3]
if str(ROOT) not in sys.path:  # tests/unit has no __init__.py: make `tests.td_server` importable
    sys.path.insert(0, str(ROOT))

pytest.importorskip("tdclient")
pytest.importorskip("duckdb")

from tests import peers  # noqa: E402
from tests.td_server import APIKEY, TdServer, td_server  # noqa: E402, F401  (the fixture)


def kudig_env() -> dict[str, str]:
    return peers.kudig_env({"td.apikey": APIKEY})


def kudig_run(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return peers.kudig_run(project, *args, secrets={"td.apikey": APIKEY}, timeout=180)


def header(server: TdServer, database: str) -> str:
    return f'_export:\n  td:\n    database: {database}\n    endpoint: "{server.endpoint()}"\n    use_ssl: false\n'


def wait_for(what: str, condition: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_td_run_and_td_for_each_through_kudig_run(td_server: TdServer, tmp_path: Path) -> None:  # noqa: F811
    td_server.create_database("fam_db")
    td_server.query(
        "CREATE TABLE fam_db.items AS SELECT * FROM (VALUES (1, 'a'), (2, 'b'), (3, 'c')) t(x, name)"
    )
    td_server.create_saved_query(
        "fam_daily", "fam_db", "SELECT count(*) AS n, TD_SCHEDULED_TIME() AS t, max(name) AS last FROM items"
    )
    (tmp_path / "fam.dig").write_text(
        header(td_server, "fam_db")
        + """
+run:
  td_run>: fam_daily
  store_last_results: true
  download_file: out/daily.csv

+show:
  echo>: run-ok n=${td.last_results.n} t=${td.last_results.t} last=${td.last_results.last} same=${td.last_job_id == td.last_job.id}

+each:
  td_for_each>:
  query: SELECT x, name, x * 1.5 AS f, x = 2 AS two FROM items ORDER BY x
  _parallel: true
  _do:
    +echo:
      echo>: each x=${td.each.x} name=${td.each.name} f=${td.each.f} two=${td.each.two}

+after:
  echo>: after-each job=${td.last_job.num_records}
"""
    )
    proc = kudig_run(tmp_path, "fam.dig", "--session", "2024-01-30")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    # td_run>: the saved query ran at the session time, results stored and downloaded as td>'s.
    assert "run-ok n=3 t=1706572800 last=c same=true" in out
    assert (tmp_path / "out" / "daily.csv").read_bytes() == b"n,t,last\r\n3,1706572800,c\r\n"
    run_job = next(j for j in td_server.jobs.values() if "TD_SCHEDULED_TIME() AS t" in j.query)
    assert run_job.params["scheduled_time"] == "1706572800" and run_job.params["domain_key"]
    # td_for_each>: three generated subtasks, each with its row as td.each.*
    for line in (
        "each x=1 name=a f=1.5 two=false",
        "each x=2 name=b f=3 two=true",
        "each x=3 name=c f=4.5 two=false",
    ):
        assert line in out, out
    assert "+fam+each^sub+td-for-each-0+echo" in out and "+fam+each^sub+td-for-each-2+echo" in out
    assert "td-for-each-3" not in out
    assert "after-each job=3" in out  # td_for_each> stored the td.last_job keys
    each_job = next(j for j in td_server.jobs.values() if "x * 1.5 AS f" in j.query)
    assert "-- project_id" not in each_job.query  # digdag adds no header lines here


def test_td_wait_table_and_td_wait_return_after_the_data_arrives(
    td_server: TdServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    td_server.create_database("wait_db")
    (tmp_path / "w.dig").write_text(
        header(td_server, "wait_db")
        + """
+table:
  td_wait_table>: arrivals
  rows: 2
  interval: 1s

+table_seen:
  echo>: table-ok

+rows:
  td_wait>:
  query: SELECT count(*) >= 3 AS ready /* wait-marker */ FROM arrivals
  interval: 1s

+done:
  echo>: wait-ok
"""
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "kudig.cli", "run", "w.dig", "--no-save"],
        cwd=tmp_path,
        env=kudig_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.extend(proc.stdout or []), daemon=True)
    reader.start()
    try:

        def lists() -> int:
            return sum(1 for r in td_server.requests if r.path.startswith("/v3/table/list/wait_db"))

        def jobs(marker: str) -> list[Any]:
            return [j for j in td_server.jobs.values() if marker in j.query and j.status == "success"]

        wait_for("td_wait_table> to look for the table twice", lambda: lists() >= 2)
        td_server.query("CREATE TABLE wait_db.arrivals AS SELECT 1 AS id")
        wait_for("a count job", lambda: bool(jobs('count(*) from "arrivals"')))
        assert proc.poll() is None  # one row of the two: still waiting
        td_server.query("INSERT INTO wait_db.arrivals VALUES (2)")
        wait_for("td_wait>'s first check", lambda: bool(jobs("wait-marker")))
        time.sleep(1.5)
        assert proc.poll() is None  # two rows of three: still waiting
        td_server.query("INSERT INTO wait_db.arrivals VALUES (3)")
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    reader.join(timeout=10)
    out = "".join(output)
    assert proc.returncode == 0, out
    assert "td_wait_table>: table wait_db.arrivals does not exist; checking again in 1s" in out
    assert "td_wait_table>: table wait_db.arrivals has 1 rows (waiting for 2); checking again in 1s" in out
    assert "td_wait_table>: table wait_db.arrivals has 2 rows (at least 2)" in out
    assert "td_wait>: the condition is false" in out
    assert "td_wait>: the condition is true" in out
    assert out.index("table-ok") < out.index("the condition is false") < out.index("wait-ok")
    # Each check was a new job with a new domain key; td_wait> sends the session time.
    checks = [j for j in td_server.jobs.values() if "wait-marker" in j.query]
    assert len(checks) >= 2
    assert len({j.params["domain_key"] for j in checks}) == len(checks)
    assert all(j.params.get("scheduled_time") for j in checks)
    counts = [j for j in td_server.jobs.values() if 'count(*) from "arrivals"' in j.query]
    assert len(counts) >= 2 and not any(j.params.get("scheduled_time") for j in counts)


def test_bad_sql_fails_quoting_the_server(td_server: TdServer, tmp_path: Path) -> None:  # noqa: F811
    td_server.create_database("famfail_db")
    (tmp_path / "bad.dig").write_text(
        header(td_server, "famfail_db")
        + "+each:\n  td_for_each>:\n  query: SELECT * FROM no_such_rows\n  _do:\n    echo>: never-each\n"
        + "+after:\n  echo>: never-here\n"
    )
    proc = kudig_run(tmp_path, "bad.dig", "--no-save")
    assert proc.returncode != 0
    assert "TD job " in proc.stderr and " error: " in proc.stderr
    assert "Table with name no_such_rows does not exist" in proc.stderr
    assert "never-each" not in proc.stdout and "never-here" not in proc.stdout
    (tmp_path / "badwait.dig").write_text(
        header(td_server, "famfail_db")
        + "+w:\n  td_wait>:\n  query: SELECT oops FROM no_wait_table\n  interval: 1s\n"
    )
    proc = kudig_run(tmp_path, "badwait.dig", "--no-save")
    assert proc.returncode != 0
    assert "Table with name no_wait_table does not exist" in proc.stderr
    (tmp_path / "badrun.dig").write_text(
        header(td_server, "famfail_db") + "+r:\n  td_run>: no_such_saved_query\n"
    )
    proc = kudig_run(tmp_path, "badrun.dig", "--no-save")
    assert proc.returncode != 0
    assert "Saved query 'no_such_saved_query' does not exist" in proc.stderr


# --------------------------------------------------------------------------- direct


@pytest.fixture
def direct(td_server: TdServer, monkeypatch: pytest.MonkeyPatch) -> TdServer:  # noqa: F811
    monkeypatch.setenv("KUDIG_TEST_TD_APIKEY", APIKEY)
    monkeypatch.delenv("KUDIG_RUN_ID", raising=False)
    td_server.create_database("famd_db")
    return td_server


def _input(server: TdServer, op: str, config: dict[str, Any], task: str = "+wf+t") -> TaskInput:
    base = {"database": "famd_db", "endpoint": server.endpoint(), "use_ssl": False}
    base.update({"session_uuid": "u-2", "attempt_id": 1, "session_time": "2024-01-30T00:00:00+00:00"})
    return {
        "task_name": task,
        "type": op,
        "config": {**base, **config},
        "params": {},
        "env": {},
        "secrets": {"td.apikey": "KUDIG_TEST_TD_APIKEY"},
        "workdir": "",
    }


def _error(out: Any) -> str:
    assert out["error"] is not None, out
    return str(out["error"]["message"])


def test_td_run_by_id_and_a_retry_adopts_the_job(direct: TdServer, tmp_path: Path) -> None:
    saved = direct.create_saved_query(
        "famd_by_id", "famd_db", "SELECT TD_SCHEDULED_TIME() AS t, 'hive' AS e", "hive"
    )
    task = _input(direct, "td_run", {"_command": saved, "store_last_results": True}, "+wf+byid")
    out = run_task(task, tmp_path)
    assert out["error"] is None, out["error"]
    td = out["store_params"]["td"]
    assert td["last_results"] == {"t": 1706572800, "e": "hive"}
    assert td["last_job"] == {"id": td["last_job_id"], "num_records": 1}
    assert out["reset_store_params"] == ["td.last_results"]
    job = direct.jobs[td["last_job_id"]]
    assert job.type == "hive" and job.params["scheduled_time"] == "1706572800"
    # The same task again (a _retry, a re-created pod): the domain key is taken, the job adopted.
    again = run_task(task, tmp_path)
    assert again["error"] is None and again["store_params"]["td"]["last_job_id"] == td["last_job_id"]
    # By name, the same key derivation: also adopted on a retry.
    direct.create_saved_query("famd_named", "famd_db", "SELECT 1 AS one")
    named = _input(direct, "td_run", {"_command": "famd_named"}, "+wf+named")
    first, second = run_task(named, tmp_path), run_task(named, tmp_path)
    assert first["error"] is None and second["error"] is None
    assert first["store_params"]["td"]["last_job_id"] == second["store_params"]["td"]["last_job_id"]
    assert "last_results" not in first["store_params"]["td"]
    # Not a saved query reference; no session time.
    assert "Invalid saved query reference: [1]" in _error(
        run_task(_input(direct, "td_run", {"_command": [1]}), tmp_path)
    )
    no_time = _input(direct, "td_run", {"_command": "famd_named"})
    del no_time["config"]["session_time"]
    assert "Parameter 'session_time' is required" in _error(run_task(no_time, tmp_path))


class Stop(Exception):
    """Raised by the tests' sleep: a wait that would go on."""


def test_td_wait_conditions_and_interval(
    direct: TdServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        raise Stop  # the condition was false: the task would wait

    monkeypatch.setattr(td_family, "_sleep", sleep)

    def wait(query: str, **config: Any) -> Any:
        sleeps.clear()
        task = _input(direct, "td_wait", {"query": query, **config})
        return td_family.run_td_wait(task, tmp_path)

    # True at once (anything but NULL, false, integer 0): no sleep, nothing stored.
    for true in ("SELECT true", "SELECT 2", "SELECT CAST(0 AS DOUBLE)", "SELECT 'false'", "SELECT 1, NULL"):
        out = wait(true)
        assert out["error"] is None and out["store_params"] == {} and sleeps == [], true
    # False: waits `interval` (30 s by default).
    for false in ("SELECT NULL", "SELECT false", "SELECT 0", "SELECT 1 WHERE false"):
        with pytest.raises(Stop):
            wait(false)
        assert sleeps == [30], false
    with pytest.raises(Stop):
        wait("SELECT 0", interval="1m 5s")
    assert sleeps == [65]
    # False until the table has a row, a new job after each wait.
    before = len(direct.jobs)
    direct.query("CREATE TABLE famd_db.later (n INTEGER)")

    def fill(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 2:
            direct.query("INSERT INTO famd_db.later VALUES (5)")
        if len(sleeps) > 2:
            raise Stop

    monkeypatch.setattr(td_family, "_sleep", fill)
    assert wait("SELECT max(n) FROM later", interval="7s")["error"] is None
    assert sleeps == [7, 7] and len(direct.jobs) == before + 3
    monkeypatch.setattr(td_family, "_sleep", sleep)
    for config, message in (
        ({"interval": "3d"}, "poll interval must be at least 1s and no greater than 2d"),
        ({"interval": "soon"}, "Parameter 'interval' must be a duration"),
        ({"engine": "spark"}, "Unknown 'engine:' option (available options are: hive and presto): spark"),
    ):
        out = run_task(_input(direct, "td_wait", {"query": "SELECT 1", **config}), tmp_path)
        assert message in _error(out), config


def test_td_wait_table_forms_and_errors(
    direct: TdServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def sleep(seconds: float) -> None:
        raise Stop

    monkeypatch.setattr(td_family, "_sleep", sleep)
    direct.query("CREATE TABLE famd_db.three AS SELECT * FROM range(3) t(n)")
    direct.create_database("famd_other")
    direct.query("CREATE TABLE famd_other.two AS SELECT * FROM range(2) t(n)")

    def wait_table(command: str, **config: Any) -> Any:
        return run_task(_input(direct, "td_wait_table", {"_command": command, **config}), tmp_path)

    before = len(direct.jobs)
    assert wait_table("three")["error"] is None  # rows 0: the REST check only, no job
    assert len(direct.jobs) == before
    assert wait_table("three", rows=3, engine="hive")["error"] is None
    hive = list(direct.jobs.values())[-1]
    assert hive.type == "hive" and hive.query == "select count(*) from (select * from `three` limit 3) sub"
    # `db.t`: kudig checks that database (digdag checks the task's database: see the docs).
    assert wait_table("famd_other.two", rows=2)["error"] is None
    assert list(direct.jobs.values())[-1].query == 'select count(*) from "famd_other"."two"'
    # Not there, too few rows: a wait (of min(interval, 30 s) and interval).
    with pytest.raises(Stop):
        td_family.run_td_wait_table(_input(direct, "td_wait_table", {"_command": "nope"}), tmp_path)
    with pytest.raises(Stop):
        td_family.run_td_wait_table(
            _input(direct, "td_wait_table", {"_command": "three", "rows": 4}), tmp_path
        )
    assert "Parameter 'rows' must be an integer" in _error(wait_table("three", rows="many"))
    assert "needs a table name" in _error(wait_table(""))


def test_td_for_each_subtasks_and_errors(direct: TdServer, tmp_path: Path) -> None:
    do = {"_export": {"td": {"each": {"extra": 1}}, "k": "v"}, "echo>": "${td.each.a}"}

    def for_each(query: str, **config: Any) -> Any:
        task = _input(direct, "td_for_each", {"query": query, "_do": do, **config}, f"+wf+{query}")
        return run_task(task, tmp_path)

    out = for_each("SELECT * FROM (VALUES (1, NULL), (2, 'y')) t(a, b) ORDER BY a", _parallel={"limit": 2})
    assert out["error"] is None, out["error"]
    assert out["subtask_config"] == {
        "+td-for-each-0": {
            "_export": {"td": {"each": {"extra": 1, "a": 1, "b": None}}, "k": "v"},
            "echo>": "${td.each.a}",
        },
        "+td-for-each-1": {
            "_export": {"td": {"each": {"extra": 1, "a": 2, "b": "y"}}, "k": "v"},
            "echo>": "${td.each.a}",
        },
        "_parallel": {"limit": 2},
    }
    assert out["store_params"]["td"]["last_job"]["num_records"] == 2
    none = for_each("SELECT 1 AS a WHERE false", _parallel=True)
    assert none["error"] is None and none["subtask_config"] is None
    assert "Unsupported column type: ARRAY" in _error(for_each("SELECT [1, 2] AS a"))
    assert "Too many tasks. Limit: 1000" in _error(for_each("SELECT * FROM range(1001) t(a)"))
    missing = _input(direct, "td_for_each", {"query": "SELECT 1"})
    assert "Parameter '_do' is required" in _error(run_task(missing, tmp_path))


def test_the_runner_imports_td_client_only_for_a_td_task() -> None:
    code = "import sys, kudig_runner.dispatch; print('tdclient' in sys.modules, 'duckdb' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.split() == ["False", "False"]


def test_check_accepts_the_td_family_without_unused_key_warnings(tmp_path: Path) -> None:
    """digdag's td operators read their whole config (BaseOperator's RetryControl), so real digdag
    never says a key of theirs is unused, not even a typo such as `intervall`."""
    (tmp_path / "c.dig").write_text(
        "+w:\n  td_wait>:\n  query: SELECT 1\n  intervall: 1s\n"
        "+t:\n  td_wait_table>: t\n  rows: 2\n  interval: 1s\n"
        "+r:\n  td_run>: q\n  store_last_results: true\n  engine: hive\n"
        "+e:\n  td_for_each>:\n  query: SELECT 1 AS a\n  _parallel: true\n  _do:\n    echo>: ${td.each.a}\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "kudig.cli", "check", "c.dig"],
        cwd=tmp_path,
        env=kudig_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "is not used" not in proc.stderr, proc.stderr
