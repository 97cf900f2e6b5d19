"""A throw-away PostgreSQL server for the tests of pg> and param_set>/param_get>.

Debian's server (installed by `hack/postgres` when missing) runs from a temporary data directory
on a free port, listening on every address with password (scram-sha-256) authentication for a
test user, so a pod on the single-node cluster reaches it through the node's IP. PostgreSQL
refuses to run as root: as root the server runs as the `postgres` OS user (`runuser`).

Use the `postgres` fixture (session-scoped: one server for the whole run, stopped at the end)::

    from tests.postgres import PgServer, postgres  # noqa: F401  (the fixture)

    def test_x(postgres: PgServer) -> None:
        postgres.sql("SELECT 1")

Without PostgreSQL (hack/postgres failed: not root, no apt) the tests are skipped, except under
CI=true or KUDIG_E2E=1, where they fail.
"""

from __future__ import annotations

import atexit
import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.peers import free_port, start_or_skip

ROOT = Path(__file__).resolve().parent.parent
HACK_POSTGRES = ROOT / "hack" / "postgres"


@dataclass
class PgServer:
    bindir: Path
    datadir: Path
    sockdir: Path
    port: int
    user: str
    password: str
    database: str
    as_postgres: bool

    def _cmd(self, argv: list[str]) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *argv] if self.as_postgres else argv

    def sql(self, query: str) -> list[tuple[Any, ...]]:
        """Run `query` as the test user over TCP (psycopg); the rows of its last statement."""
        import psycopg

        with psycopg.connect(self.dsn(), autocommit=True) as conn, conn.cursor() as cur:
            cur.execute(query.encode())
            return list(cur.fetchall()) if cur.description else []

    def dsn(self, host: str = "127.0.0.1") -> str:
        return (
            f"host={host} port={self.port} dbname={self.database} user={self.user} password={self.password}"
        )

    def stop(self) -> None:
        subprocess.run(
            self._cmd(
                [str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-m", "immediate", "-w", "stop"]
            ),
            capture_output=True,
            check=False,
        )


def start_postgres() -> PgServer:
    """Install (if needed), initialise and start a server in a new temporary directory."""
    out = subprocess.run([str(HACK_POSTGRES)], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"hack/postgres failed:\n{out.stderr[-2000:]}")
    bindir = Path(out.stdout.strip().splitlines()[-1])
    as_postgres = os.geteuid() == 0
    top = Path(tempfile.mkdtemp(prefix="kudig-pg-"))
    datadir, sockdir = top / "data", top / "sock"
    datadir.mkdir()
    sockdir.mkdir()
    if as_postgres:
        shutil.chown(top, "postgres", "postgres")
        shutil.chown(datadir, "postgres", "postgres")
        shutil.chown(sockdir, "postgres", "postgres")
    password = secrets.token_hex(12)
    server = PgServer(bindir, datadir, sockdir, free_port(), "kudig", password, "kudig", as_postgres)
    pwfile = top / "pw"
    pwfile.write_text(password + "\n")
    if as_postgres:
        shutil.chown(pwfile, "postgres", "postgres")
    log = top / "server.log"

    def run(argv: list[str]) -> None:
        res = subprocess.run(server._cmd(argv), capture_output=True, text=True, check=False)
        if res.returncode != 0:
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"{argv[0]} failed: {res.stdout}{res.stderr}{tail}")

    # The bootstrap superuser is the test user itself (its password from the file); local
    # socket connections trust, TCP ones need the password.
    run(
        [
            str(bindir / "initdb"),
            "-D",
            str(datadir),
            "-U",
            server.user,
            f"--pwfile={pwfile}",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "-E",
            "UTF8",
            "--locale=C",
        ]
    )
    with (datadir / "pg_hba.conf").open("a") as f:
        f.write("host all all 0.0.0.0/0 scram-sha-256\nhost all all ::/0 scram-sha-256\n")
    if as_postgres:
        log.touch()
        shutil.chown(log, "postgres", "postgres")
    opts = f"-p {server.port} -c listen_addresses=* -k {sockdir} -c fsync=off -c max_connections=50"
    run([str(bindir / "pg_ctl"), "-D", str(datadir), "-o", opts, "-l", str(log), "-w", "-t", "60", "start"])
    atexit.register(server.stop)  # a safety net when pytest ends without its teardown (a no-op after it)
    try:
        server_create_db(server)
    except Exception:
        server.stop()
        raise
    return server


def server_create_db(server: PgServer) -> None:
    import psycopg

    dsn = f"host=127.0.0.1 port={server.port} dbname=postgres user={server.user} password={server.password}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {server.database}".encode())


@pytest.fixture(scope="session")
def postgres() -> Iterator[PgServer]:
    server = start_or_skip(start_postgres, "no PostgreSQL")
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.datadir.parent, ignore_errors=True)


def pg_project(root: Path, host: str, port: int, table: str, param_host: str | None = None) -> Path:
    """A project exercising pg> (create_table from a rendered .sql file, insert_into,
    download_file, store_last_results used in an if>) and param_set>/param_get>. The password
    comes from the secrets `pg.password` and `param_server.password`, never from the files."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "queries").mkdir(exist_ok=True)
    (root / "queries" / "create.sql").write_text(
        "-- rendered by kudig as digdag does: ${table} costs ${price}\n"
        "SELECT g AS id, 'item-' || g AS name, g * ${price} AS amount FROM generate_series(1, 3) g;\n"
    )
    (root / "pg.dig").write_text(
        f"""_export:
  pg:
    host: "{host}"
    port: {port}
    database: kudig
    user: kudig
  param_server:
    type: postgresql
    host: "{param_host or host}"
    port: {port}
    database: kudig
    user: kudig
  table: {table}
  price: 10

+create:
  pg>: queries/create.sql
  create_table: ${{table}}

+insert:
  pg>:
  query: "SELECT 4, 'four, \\"quoted\\"', NULL::integer"
  insert_into: ${{table}}

+download:
  pg>:
  query: SELECT * FROM ${{table}} ORDER BY id
  download_file: out/${{table}}.csv

+count:
  pg>:
  query: SELECT count(*) AS cnt, sum(amount) AS total FROM ${{table}}
  store_last_results: first

+check_count:
  if>: ${{pg.last_results.cnt == 4 && pg.last_results.total == 60}}
  _do:
    sh>: echo "pg-count-ok cnt=${{pg.last_results.cnt}}"

+all:
  pg>:
  query: SELECT id, name FROM ${{table}} WHERE id <= 2 ORDER BY id
  store_last_results: all

+check_all:
  if>: ${{pg.last_results[0].name == 'item-1' && pg.last_results.length == 2}}
  _do:
    sh>: echo "pg-all-ok rows=${{pg.last_results.length}}"

+set:
  param_set>:
  {table}_key: value-${{table}}
  {table}_num: 42

+get:
  param_get>:
  {table}_key: got_value
  {table}_num: got_num
  {table}_missing: got_missing

+show:
  sh>: echo "param-ok [${{got_value}}] [${{got_num}}] [${{got_missing}}]"
"""
    )
    return root
