"""`kudig secrets --local` (digdag's local secrets): set, list (keys only), delete; `kudig run`
hands them to tasks through `${secret:...}` without ever writing the value anywhere."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path


def kudig(tmp_path: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUDIG_SECRET_")}
    env["KUDIG_CONFIG_DIR"] = str(tmp_path / "config")
    return subprocess.run(
        [sys.executable, "-m", "kudig.cli", *args],
        cwd=tmp_path,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_local_secrets_round_trip_and_reach_tasks_unseen(tmp_path: Path) -> None:
    value = "s3cr3t-Vv9"
    (tmp_path / "pw.txt").write_text("from-file\n")
    assert kudig(tmp_path, "secrets", "--local", "--set", f"db.password={value}").returncode == 0
    assert kudig(tmp_path, "secrets", "--local", "--set", "api.key=@pw.txt").returncode == 0
    assert kudig(tmp_path, "secrets", "--local", "--set", "token", stdin="typed\n").returncode == 0
    listed = kudig(tmp_path, "secrets", "--local")
    assert listed.stdout.split() == ["api.key", "db.password", "token"]
    assert value not in listed.stdout + listed.stderr
    store = tmp_path / "config" / "secrets.json"
    assert stat.S_IMODE(store.stat().st_mode) == 0o600
    (tmp_path / "wf.dig").write_text(
        '+use:\n  sh>: test "${secret:db.password}" = "$EXPECTED" && test "$TOKEN" = typed && echo matched\n'
        "  _env:\n    EXPECTED: " + value + "\n    TOKEN: ${secret:token}\n"
    )
    run = kudig(tmp_path, "run", "wf.dig", "--session", "2024-01-30")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "matched" in run.stdout
    saved = "".join(p.read_text() for p in (tmp_path / ".digdag").rglob("*.yml"))
    assert value not in saved and "typed" not in saved
    assert kudig(tmp_path, "secrets", "--local", "--delete", "token").returncode == 0
    assert kudig(tmp_path, "secrets", "--local").stdout.split() == ["api.key", "db.password"]
    gone = kudig(tmp_path, "secrets", "--local", "--delete", "token")
    assert gone.returncode == 1 and "No local secret 'token'" in gone.stderr


def test_secrets_without_local_says_where_cluster_secrets_live(tmp_path: Path) -> None:
    proc = kudig(tmp_path, "secrets", "--set", "a=b")
    assert proc.returncode == 1 and "Kubernetes Secret" in proc.stderr
