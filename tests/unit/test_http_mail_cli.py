"""http>, http_call> and mail> through `kudig run` (a subprocess, as a user runs it), against a
real HTTP server and a real SMTP server (tests/peers.py), plain and over TLS (HTTPS, SMTPS, with
the test's CA trusted through SSL_CERT_FILE); and `kudig check` rejecting the digdag operators
kudig does not implement."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.peers import (  # noqa: F401  (the fixtures http, smtp, tls, other_tls)
    PROJECT_SECRETS,
    SMTP_USER,
    HttpPeer,
    SmtpPeer,
    TlsFiles,
    http_fixture,
    local_secret_env,
    other_tls_fixture,
    project_files,
    smtp_fixture,
    tls_fixture,
)
from tests.peers import write_files as write


def kudig(root: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kudig.cli", *args],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def test_kudig_run_http_http_call_and_mail(http: HttpPeer, smtp: SmtpPeer, tmp_path: Path) -> None:
    write(tmp_path, project_files(f"127.0.0.1:{http.port}", "127.0.0.1", smtp.port))
    proc = kudig(tmp_path, "run", "work.dig", "--session", "2024-01-30", env=local_secret_env())
    logs = proc.stdout + proc.stderr
    assert proc.returncode == 0, logs

    (post,) = http.on("/json")
    assert post.method == "POST"
    assert parse_qs(urlsplit(post.path).query) == {"day": ["2024-01-30"]}
    assert json.loads(post.body) == {"greeting": "hello kudig"}
    assert post.headers["X-Token"] == PROJECT_SECRETS["api.token"]
    assert post.headers["Authorization"].startswith("Basic ")
    # the next task's ${} used the stored JSON answer and status
    (seen,) = http.on("/seen")
    assert parse_qs(urlsplit(seen.path).query) == {"name": ["kudig"], "count": ["3"], "status": ["200"]}
    assert len(http.on("/flaky/session-2024-01-30")) == 3  # 503, 503, 200
    assert "HTTP 5XX Server Error: GET http://127.0.0.1" in logs and "retrying in 1s" in logs
    # http_call> ran the fetched workflow as subtasks
    assert "fetched-yaml hi-from-export" in logs
    assert "fetched-yaml-second" in logs

    ((mail_from, rcpts, msg),) = smtp.messages
    assert mail_from == "kudig@example.com" and smtp.logins == [SMTP_USER]
    assert sorted(rcpts) == ["audit@example.com", "ops@example.com", "team@example.com"]
    assert msg["Subject"] == "Done kudig 2024-01-30"
    body, attachment = msg.iter_parts()
    assert body.get_content_type() == "text/html"
    assert body.get_content().strip() == "<p>Status 200 for kudig on 2024-01-30</p>"
    assert attachment.get_filename() == "report.csv" and "2024-01-30,42" in attachment.get_content()

    # no secret value in the output or the saved results
    saved = "".join(p.read_text() for p in (tmp_path / ".digdag").rglob("*") if p.is_file())
    for value in PROJECT_SECRETS.values():
        assert value not in logs and value not in saved


def test_kudig_run_https_and_smtps_trusting_the_ca_by_env(
    tls: TlsFiles, other_tls: TlsFiles, tmp_path: Path
) -> None:
    https, smtps = HttpPeer(tls=tls).start(), SmtpPeer(tls=tls, mode="ssl").start()
    untrusted = HttpPeer(tls=other_tls).start()
    try:
        write(
            tmp_path,
            {
                "tls.dig": f"""+get:
  http>: https://localhost:{https.port}/json
  store_content: true
+mail:
  mail>: {{data: "got ${{JSON.parse(http.last_content).name}}"}}
  subject: over tls
  from: kudig@example.com
  to: ops@example.com
  host: 127.0.0.1
  port: {smtps.port}
  ssl: true
  username: {SMTP_USER}
""",
                "bad.dig": f"+get:\n  http>: {untrusted.url('/json')}\n+after:\n  echo>: never-here\n",
            },
        )
        env = {**local_secret_env(), "SSL_CERT_FILE": str(tls.ca)}
        proc = kudig(tmp_path, "run", "tls.dig", "--no-save", env=env)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert [r.path for r in https.requests] == ["/json"]
        ((_, rcpts, msg),) = smtps.messages
        assert smtps.encrypted == [True] and smtps.logins == [SMTP_USER]
        assert rcpts == ["ops@example.com"] and msg.get_content().strip() == "got kudig"
        # another CA's certificate: the task fails at once (GET is not retried for it)
        proc = kudig(tmp_path, "run", "bad.dig", "--no-save", env=env)
        logs = proc.stdout + proc.stderr
        assert proc.returncode == 1
        assert (
            f"HTTP request failed: GET {untrusted.url('/json')}: the server's TLS certificate is not trusted"
            in logs
        )
        assert "retrying" not in logs and "never-here" not in proc.stdout
    finally:
        https.stop()
        smtps.stop()
        untrusted.stop()


@pytest.mark.parametrize(
    ("task", "message"),
    [
        ("  http>: http://127.0.0.1:{http}/missing\n", "HTTP 4XX Client Error: GET http://127.0.0.1:{http}/missing - 404 Not Found: no such thing here"),
        ("  http>: http://127.0.0.1:{http}/json\n  method: POST\n  content: {{a: 1}}\n  content_format: xml\n", "Invalid content format for objects: 'xml'"),
        ("  mail>: {{data: hi}}\n  subject: s\n  from: a@example.com\n  host: 127.0.0.1\n  port: {smtp}\n", "Parameter 'to' is required but not set"),
        ("  mail>: nope.html\n  subject: s\n", "File not found: nope.html"),
        ("  http>: http://127.0.0.1:1/x\n  method: POST\n", "HTTP request failed: POST http://127.0.0.1:1/x: [Errno 111] Connection refused"),
    ],
)  # fmt: skip
def test_kudig_run_bad_parameters_fail_the_task_naming_them(
    http: HttpPeer, smtp: SmtpPeer, tmp_path: Path, task: str, message: str
) -> None:
    write(
        tmp_path,
        {
            "bad.dig": "+bad:\n"
            + task.format(http=http.port, smtp=smtp.port)
            + "+after:\n  echo>: never-here\n"
        },
    )
    proc = kudig(tmp_path, "run", "bad.dig", "--no-save")
    assert proc.returncode == 1
    assert message.format(http=http.port) in proc.stdout + proc.stderr
    assert "never-here" not in proc.stdout
    assert len(http.on("/missing")) <= 1  # a 404 is not retried
    assert smtp.messages == []


@pytest.mark.parametrize(
    ("op", "message"),
    [
        (
            "embulk",
            "bad.dig:4: operator embulk> is not supported by kudig: it runs on Embulk, a Java bulk-loading "
            "tool; it would need the `embulk` command",
        ),
        (
            "bq",
            "bad.dig:4: operator bq> is not supported by kudig: it runs on Google BigQuery, a cloud service; "
            "it would need a Google Cloud project and the secret 'gcp.credential'",
        ),
        ("gcs_wait", "which kudig does not provide (no client for it, and nothing here to test it against)"),
        ("emr", "bad.dig:4: operator emr> is not supported by kudig: it runs on Amazon EMR, a cloud service"),
        ("redshift_unload", "Instead use `pg>` (Redshift speaks PostgreSQL's protocol)"),
        ("htp", "bad.dig:4: Unknown operator type 'htp>' (did you mean [http>"),
    ],
)
def test_unsupported_operators_are_rejected_before_any_task_runs(
    tmp_path: Path, op: str, message: str
) -> None:
    write(tmp_path, {"bad.dig": f"+first:\n  sh>: touch ran\n+second:\n  {op}>: x\n"})
    check = kudig(tmp_path, "check", "bad.dig")
    assert check.returncode == 1 and message in check.stderr, check.stderr
    run = kudig(tmp_path, "run", "bad.dig", "--no-save")
    assert run.returncode == 1 and message in run.stderr
    assert not (tmp_path / "ran").exists()


def test_the_implemented_operators_are_accepted(tmp_path: Path) -> None:
    ops = ["sh", "py", "http", "http_call", "mail"]
    write(tmp_path, {"ok.dig": "".join(f"+t{i}:\n  {op}>: x\n" for i, op in enumerate(ops))})
    check = kudig(tmp_path, "check", "ok.dig")
    assert check.returncode == 0, check.stderr


def test_a_fetched_workflow_becomes_subtasks_like_call() -> None:
    from kudig_runner.protocol import WORKFLOW_TEXT_KEY

    from kudig.engine.core import TaskFailed, TaskSucceeded
    from kudig.taskio import output_event

    text = "timezone: Asia/Tokyo\nschedule:\n  daily>: 01:00\n_export:\n  a: 1\n+x:\n  echo>: ${a}\n"
    event = output_event(7, {"subtask_config": {WORKFLOW_TEXT_KEY: text}})
    assert isinstance(event, TaskSucceeded)
    assert event.result.subtask_config == {"_export": {"a": 1}, "+x": {"echo>": "${a}"}}
    bad = output_event(7, {"subtask_config": {WORKFLOW_TEXT_KEY: "+x: [unclosed\n"}})
    assert isinstance(bad, TaskFailed) and not bad.retryable
    assert bad.message.startswith("Invalid workflow fetched by http_call>: http_call.dig:")
    listed = output_event(7, {"subtask_config": {WORKFLOW_TEXT_KEY: "- a\n"}})
    assert isinstance(listed, TaskFailed) and "must be a YAML map" in listed.message


def test_http_without_store_content_keeps_the_body_an_earlier_http_stored(
    http: HttpPeer, tmp_path: Path
) -> None:
    """digdag's HttpOperatorFactory resets only what it stores: after an http> without
    store_content, http.last_status is the new one and http.last_content still the body an earlier
    http> stored (real digdag 0.10.5.1 prints `status=201 content=first-body` for this shape)."""
    (tmp_path / "keep.dig").write_text(
        f"+stored:\n  http>: {http.url('/json')}\n  store_content: true\n"
        f"+status_only:\n  http>: {http.url('/status/201')}\n"
        "+show:\n  echo>: status=${http.last_status} name=${JSON.parse(http.last_content).name}\n"
        f"+again:\n  http>: {http.url('/seen')}\n  store_content: true\n"
        "+show_again:\n  echo>: content=${http.last_content}\n"
    )
    proc = kudig(tmp_path, "run", "keep.dig", "--no-save")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert [r.path for r in http.requests] == ["/json", "/status/201", "/seen"]
    lines = proc.stdout.splitlines()
    assert "status=201 name=kudig" in lines, proc.stdout
    assert "content=ok" in lines, proc.stdout
