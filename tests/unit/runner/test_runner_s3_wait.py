"""s3_wait> against a real S3-compatible server (moto's, tests/s3peer.py), through `kudig run`
(the runner as a subprocess) and the runner's operator function directly."""

from __future__ import annotations

import datetime
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from kudig_runner import s3_wait
from kudig_runner.dispatch import run_task
from kudig_runner.protocol import TaskInput

ROOT = Path(__file__).resolve().parents[3]
if str(ROOT) not in sys.path:  # tests/unit has no __init__.py: make `tests.s3peer` importable
    sys.path.insert(0, str(ROOT))

from tests import peers  # noqa: E402
from tests.s3peer import ACCESS_KEY, SECRET_KEY, S3Server, s3, s3_project  # noqa: E402, F401  (the fixture)

# the aws.* names are the fallback s3_wait> reads when aws.s3.* has no value
SECRETS = {"aws.s3.access_key_id": ACCESS_KEY, "aws.secret_access_key": SECRET_KEY}


def _env() -> dict[str, str]:
    return peers.kudig_env(SECRETS)


def kudig_run(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return peers.kudig_run(project, *args, secrets=SECRETS)


def test_waits_until_the_object_exists_then_next_task_uses_metadata(s3: S3Server, tmp_path: Path) -> None:  # noqa: F811
    s3.create_bucket("wait-local")
    root = s3_project(tmp_path / "p", s3.endpoint(), "wait-local")
    log = tmp_path / "log.txt"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "kudig.cli", "run", "s3.dig", "--session", "2024-01-30"],
            cwd=root,
            env=_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            deadline = time.monotonic() + 60
            while "does not exist yet" not in log.read_text():
                assert proc.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
            s3.put("wait-local", "data/2024-01-30/done.csv", "a,b\n1,2\n", {"owner": "etl"})
            assert proc.wait(60) == 0, log.read_text()
        finally:
            if proc.poll() is None:
                proc.kill()
    text = log.read_text()
    assert "s3-ok size=8 type=text/plain owner=etl modified=number" in text
    assert "s3://wait-local/data/2024-01-30/done.csv exists (8 bytes)" in text
    assert SECRET_KEY not in text and ACCESS_KEY not in text
    for saved in (root / ".digdag").rglob("*"):
        if saved.is_file():
            assert SECRET_KEY not in saved.read_text(errors="replace")


def test_missing_bucket_times_out_clearly(s3: S3Server, tmp_path: Path) -> None:  # noqa: F811
    root = s3_project(tmp_path / "p", s3.endpoint(), "missing")
    start = time.monotonic()
    proc = kudig_run(root, "missing.dig", "--no-save")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "Timeout happened: s3://no-such-bucket-missing/x.csv did not appear within 1s" in out
    assert "(bucket 'no-such-bucket-missing' does not exist)" in out
    assert "never-here" not in proc.stdout
    assert time.monotonic() - start < 60  # one 5 s poll, not digdag's longer waits
    assert SECRET_KEY not in out


def test_continue_on_timeout_leaves_last_object_absent(s3: S3Server, tmp_path: Path) -> None:  # noqa: F811
    s3.create_bucket("cont")
    root = s3_project(tmp_path / "p", s3.endpoint(), "cont")
    proc = kudig_run(root, "cont.dig", "--no-save")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "cont-ok [undefined]" in proc.stdout + proc.stderr


def _input(config: dict[str, Any], secrets: dict[str, str] | None = None) -> TaskInput:
    return {
        "task_name": "+wf+wait",
        "type": "s3_wait",
        "config": config,
        "params": {},
        "env": {},
        "secrets": secrets or {},
        "workdir": "",
    }


def test_direct_run_stores_metadata_and_version_errors(
    s3: S3Server,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("T_AK", ACCESS_KEY)
    monkeypatch.setenv("T_SK", SECRET_KEY)
    secrets = {"aws.access_key_id": "T_AK", "aws.s3.secret_access_key": "T_SK"}
    s3.create_bucket("direct")
    s3.put("direct", "a b/ü.txt", "hello", {"Team": "data"})
    out = run_task(_input({"_command": "direct/a b/ü.txt", "endpoint": s3.endpoint()}, secrets), tmp_path)
    assert out["error"] is None, out["error"]
    assert out["reset_store_params"] == ["s3.last_object"]
    last = out["store_params"]["s3"]["last_object"]
    assert last["user_metadata"] == {"team": "data"}
    assert last["metadata"]["Content-Length"] == 5
    assert isinstance(last["metadata"]["Last-Modified"], int)
    assert '"' not in last["metadata"]["ETag"]
    assert "Date" not in last["metadata"]
    # a version that does not exist is an error from the server (400), not a wait
    bad = run_task(
        _input(
            {"bucket": "direct", "key": "a b/ü.txt", "version_id": "nope", "endpoint": s3.endpoint()}, secrets
        ),
        tmp_path,
    )
    assert bad["error"] is not None
    assert "S3 request HEAD s3://direct/a b/ü.txt failed: HTTP 400" in bad["error"]["message"]
    assert SECRET_KEY not in str(bad)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"_command": "no-slash"}, "Illegal s3 path: no-slash"),
        (
            {"bucket": "b"},
            "Either the s3_wait operator command or both 'bucket' and 'key' parameters must be set",
        ),
        ({"_command": "b/k", "timeout": "soon"}, "Invalid timeout: 'soon'"),
        (
            {"_command": "b/k", "path_style_access": "yes"},
            "Expected 'true' or 'false' for parameter 'path_style_access'",
        ),
        ({"_command": "b/k"}, "The secret aws.s3.access_key_id (or aws.access_key_id) is required"),
    ],
)
def test_config_errors(config: dict[str, Any], message: str, tmp_path: Path) -> None:
    out = run_task(_input(config), tmp_path)
    assert out["error"] is not None
    assert message in out["error"]["message"]
    assert out["error"]["class"] == "ConfigError"


def test_params_from_aws_maps_and_endpoint_styles(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("T_AK", ACCESS_KEY)
    monkeypatch.setenv("T_SK", SECRET_KEY)
    monkeypatch.setenv("T_REGION", "eu-west-1")
    secrets = {"aws.s3.access_key_id": "T_AK", "aws.s3.secret_access_key": "T_SK"}
    task = _input({"_command": "logs/x"}, secrets)
    task["params"] = {"aws": {"region": "ap-northeast-1", "s3": {"path_style_access": False}}}
    params = s3_wait.s3_params(task)
    client = s3_wait.make_client(task, params, "logs")
    assert (client.scheme, client.host, client.path_prefix, client.region) == (
        "https",
        "logs.s3.ap-northeast-1.amazonaws.com",
        "",
        "ap-northeast-1",
    )
    task["secrets"] = {**secrets, "aws.region": "T_REGION"}  # the secret beats the parameter
    client = s3_wait.make_client(task, {"endpoint": "minio.local:9000", "path_style_access": True}, "logs")
    assert (client.host, client.path_prefix, client.region) == ("minio.local:9000", "/logs", "eu-west-1")
    client = s3_wait.make_client(task, {"endpoint": "http://10.1.2.3:9000"}, "logs")  # an IP: path style
    assert (client.scheme, client.host, client.path_prefix) == ("http", "10.1.2.3:9000", "/logs")


def test_signature_matches_botocore(s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    monkeypatch.setenv("T_AK", ACCESS_KEY)
    monkeypatch.setenv("T_SK", SECRET_KEY)
    task = _input({}, {"aws.access_key_id": "T_AK", "aws.secret_access_key": "T_SK"})
    client = s3_wait.make_client(task, {"endpoint": "http://127.0.0.1:9000"}, "bkt")
    now = datetime.datetime(2024, 1, 30, 12, 34, 56, tzinfo=datetime.UTC)
    path = "/bkt/dir/a%20b.csv"
    ours = s3_wait.signed_headers(client, "HEAD", path, "versionId=v1", now)["authorization"]
    reference = s3.sigv4_reference(
        "http://127.0.0.1:9000" + path + "?versionId=v1", "20240130T123456Z", s3_wait.EMPTY_SHA256
    )
    assert ours == reference


def test_poll_waits_follow_digdag(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """5, 10, 20 ... s, capped by what is left of the timeout but never below 5 s."""
    waits: list[float] = []
    clock = [0.0]

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        clock[0] += seconds

    monkeypatch.setattr(s3_wait, "_sleep", sleep)
    monkeypatch.setattr(s3_wait.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(s3_wait, "_probe", lambda client, target, deadline: None)
    monkeypatch.setattr(s3_wait, "_bucket_note", lambda client, target: "")
    monkeypatch.setenv("T_AK", ACCESS_KEY)
    monkeypatch.setenv("T_SK", SECRET_KEY)
    secrets = {"aws.access_key_id": "T_AK", "aws.secret_access_key": "T_SK"}
    out = run_task(_input({"_command": "b/k", "timeout": "1m 2s"}, secrets), tmp_path)
    assert out["error"] is not None and out["error"]["message"].startswith("Timeout happened")
    assert waits == [5, 10, 20, 27]
