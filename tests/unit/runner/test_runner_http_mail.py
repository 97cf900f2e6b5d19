"""http>, http_call> and mail> in the runner, against real servers (tests/peers.py): plain, and
over TLS (HTTPS, SMTP with STARTTLS, SMTPS) with a CA made for the test, trusted through
SSL_CERT_FILE; a certificate from another CA fails at once, in one line."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kudig_runner import http_op
from kudig_runner.dispatch import run_task
from kudig_runner.protocol import WORKFLOW_TEXT_KEY, TaskInput

from tests.peers import (  # noqa: F401  (the fixtures http, smtp, tls, other_tls)
    SMTP_PASSWORD,
    SMTP_USER,
    HttpPeer,
    SmtpPeer,
    TlsFiles,
    http_fixture,
    other_tls_fixture,
    smtp_fixture,
    tls_fixture,
)

SECRETS = {
    "http.user": "alice",
    "http.password": "pw-http-77d1",
    "api.token": "tok-93ab51",
    "mail.password": SMTP_PASSWORD,
}


@pytest.fixture
def waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    slept: list[float] = []
    monkeypatch.setattr(http_op, "_sleep", slept.append)
    return slept


@pytest.fixture(autouse=True)
def secret_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for i, value in enumerate(SECRETS.values()):
        monkeypatch.setenv(f"TEST_SECRET_{i}", value)


def task(op: str, config: dict[str, Any], secrets: tuple[str, ...] = ()) -> TaskInput:
    names = {key: f"TEST_SECRET_{i}" for i, key in enumerate(SECRETS)}
    return {
        "task_name": "+t",
        "type": op,
        "config": config,
        "params": {},
        "env": {},
        "secrets": {k: names[k] for k in secrets},
        "workdir": "",
    }


def test_http_post_json_headers_query_basic_auth_and_stored_content(
    http: HttpPeer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = {
        "_command": http.url("/json"),
        "method": "post",
        "content": {"name": "x", "n": 1},
        "headers": [{"X-Token": "${secret:api.token}"}, {"X-Plain": "p"}],
        "query": {"a": "1", "b": "two words"},
        "store_content": True,
    }
    out = run_task(task("http", config, ("http.user", "http.password", "api.token")), tmp_path)
    assert out["error"] is None, out["error"]
    assert out["store_params"] == {
        "http": {"last_status": 200, "last_content": '{"name": "kudig", "count": 3}'}
    }
    assert out["reset_store_params"] == ["http.last_status", "http.last_content"]  # store_content: true
    (req,) = http.requests
    assert req.method == "POST"
    assert req.path == "/json?a=1&b=two+words"
    assert json.loads(req.body) == {"name": "x", "n": 1}
    assert req.headers["Content-Type"] == "application/json"
    assert req.headers["X-Token"] == "tok-93ab51"
    assert req.headers["X-Plain"] == "p"
    assert req.headers["Authorization"] == "Basic " + base64.b64encode(b"alice:pw-http-77d1").decode()
    logged = capsys.readouterr().out
    assert "Sending HTTP request: POST" in logged
    for value in SECRETS.values():
        assert value not in logged


def test_http_content_formats(http: HttpPeer, tmp_path: Path) -> None:
    def send(**config: Any) -> Any:
        out = run_task(task("http", {"_command": http.url("/json"), "method": "PUT", **config}), tmp_path)
        assert out["error"] is None, out["error"]
        return http.requests[-1]

    form = send(content={"a": "1", "b": "x y"}, content_format="form")
    assert form.body == b"a=1&b=x+y"
    assert form.headers["Content-Type"] == "application/x-www-form-urlencoded"
    text = send(content="hello")
    assert (text.body, text.headers["Content-Type"]) == (b"hello", "plain/text")  # sic, as digdag
    scalar_json = send(content="hello", content_format="json", content_type="application/vnd.x+json")
    assert (scalar_json.body, scalar_json.headers["Content-Type"]) == (b'"hello"', "application/vnd.x+json")
    array = send(content=[1, 2])
    assert (array.body, array.headers["Content-Type"]) == (b"[1,2]", "application/json")


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"content": "x", "content_format": "form"}, "Invalid content format for scalars: 'form'"),
        ({"content": {"a": 1}, "content_format": "yaml"}, "Invalid content format for objects: 'yaml'"),
        ({"content": {"a": {"b": 1}}, "content_format": "form"}, "Invalid form content field value: a"),
        ({"headers": {"A": "b"}}, "Invalid header"),
    ],
)
def test_http_bad_parameters(http: HttpPeer, tmp_path: Path, config: dict[str, Any], message: str) -> None:
    out = run_task(task("http", {"_command": http.url("/json"), "method": "POST", **config}), tmp_path)
    assert out["error"] is not None and message in out["error"]["message"]
    assert http.requests == []


def test_http_retries_503_with_backoff_then_succeeds(
    http: HttpPeer, tmp_path: Path, waits: list[float]
) -> None:
    out = run_task(task("http", {"_command": http.url("/flaky/a")}), tmp_path)
    assert out["error"] is None, out["error"]
    assert out["store_params"]["http"] == {"last_status": 200}
    assert len(http.on("/flaky/a")) == 3
    assert waits == [1.0, 2.0]


def test_http_post_is_not_retried_by_default_but_can_be(
    http: HttpPeer, tmp_path: Path, waits: list[float]
) -> None:
    out = run_task(task("http", {"_command": http.url("/flaky/b"), "method": "POST"}), tmp_path)
    assert out["error"] is not None
    assert out["error"]["message"].startswith("HTTP 5XX Server Error: POST http://127.0.0.1:")
    assert "503" in out["error"]["message"] and "busy" in out["error"]["message"]
    assert len(http.on("/flaky/b")) == 1
    out = run_task(
        task("http", {"_command": http.url("/flaky/b"), "method": "POST", "retry": True}), tmp_path
    )
    assert out["error"] is None
    assert len(http.on("/flaky/b")) == 3


def test_http_429_is_retried_even_with_retry_false(
    http: HttpPeer, tmp_path: Path, waits: list[float]
) -> None:
    out = run_task(
        task("http", {"_command": http.url("/rate/a"), "method": "POST", "retry": False}), tmp_path
    )
    assert out["error"] is None and len(http.on("/rate/a")) == 2 and waits == [1.0]


def test_http_404_fails_without_retry(http: HttpPeer, tmp_path: Path, waits: list[float]) -> None:
    out = run_task(task("http", {"_command": http.url("/missing")}), tmp_path)
    assert out["error"] is not None
    assert out["error"]["message"] == (
        f"HTTP 4XX Client Error: GET {http.url('/missing')} - 404 Not Found: no such thing here"
    )
    assert len(http.on("/missing")) == 1 and waits == []


def test_http_unreachable_host_fails_naming_the_error(tmp_path: Path) -> None:
    out = run_task(
        task("http", {"_command": "http://127.0.0.1:9/x", "method": "POST", "timeout": 5}), tmp_path
    )
    assert out["error"] is not None
    assert out["error"]["message"].startswith("HTTP request failed: POST http://127.0.0.1:9/x: ")
    assert "refused" in out["error"]["message"].lower()


def test_http_redirects(http: HttpPeer, tmp_path: Path) -> None:
    out = run_task(task("http", {"_command": http.url("/redirect")}), tmp_path)
    assert out["store_params"]["http"]["last_status"] == 200
    out = run_task(task("http", {"_command": http.url("/redirect"), "follow_redirects": False}), tmp_path)
    assert out["error"] is None and out["store_params"]["http"]["last_status"] == 302


def test_http_uri_secret_replaces_the_command_and_is_masked(
    http: HttpPeer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("URI_VAR", http.url("/missing"))
    the_task = task("http", {"_command": "http://example.invalid/"})
    the_task["secrets"]["http.uri"] = "URI_VAR"
    out = run_task(the_task, tmp_path)
    assert out["error"] is not None
    assert out["error"]["message"].startswith("HTTP 4XX Client Error: GET http://*** - 404")
    assert "/missing" not in capsys.readouterr().out + out["error"]["message"]


def test_http_authorization_secret_is_the_header(
    http: HttpPeer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUTH_VAR", "Bearer zzz-123")
    the_task = task("http", {"_command": http.url("/json")}, ("http.user", "http.password"))
    the_task["secrets"]["http.authorization"] = "AUTH_VAR"
    assert run_task(the_task, tmp_path)["error"] is None
    assert http.requests[0].headers["Authorization"] == "Bearer zzz-123"


def test_http_stored_content_is_limited(
    http: HttpPeer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(http_op, "MAX_STORED_CONTENT", 10)
    out = run_task(task("http", {"_command": http.url("/json"), "store_content": True}), tmp_path)
    assert out["error"] is not None and out["error"]["message"] == "Response content too large: 29 > 10"


def test_http_call_returns_the_workflow_text(http: HttpPeer, tmp_path: Path) -> None:
    out = run_task(task("http_call", {"_command": http.url("/wf.json")}), tmp_path)
    assert out["error"] is None and out["store_params"] == {}
    assert out["subtask_config"] is not None
    assert json.loads(out["subtask_config"][WORKFLOW_TEXT_KEY])["+second"] == {"echo>": "fetched-second"}
    out = run_task(task("http_call", {"_command": http.url("/wf.yaml")}), tmp_path)
    assert out["subtask_config"] is not None
    assert out["subtask_config"][WORKFLOW_TEXT_KEY].startswith("+first:\n  sh>: echo fetched-yaml")
    out = run_task(task("http_call", {"_command": http.url("/text")}), tmp_path)
    assert out["error"] is not None and out["error"]["message"] == (
        "Unsupported Content-Type (expected application/json or application/x-yaml): text/plain"
    )
    out = run_task(
        task("http_call", {"_command": http.url("/text"), "content_type_override": "application/json"}),
        tmp_path,
    )
    assert out["error"] is None


def _mail_config(smtp: SmtpPeer, **extra: Any) -> dict[str, Any]:
    return {
        "_command_text": "Hello ${not rendered here}, <b>bold</b>",
        "_command": "body.txt",
        "subject": "Report ✓",
        "from": "kudig@example.com",
        "to": ["a@example.com", "B <b@example.com>"],
        "cc": "c@example.com",
        "bcc": ["hidden@example.com"],
        "html": True,
        "mail": {"host": "127.0.0.1", "port": smtp.port, "username": SMTP_USER},
        **extra,
    }


def test_mail_with_html_recipients_bcc_auth_and_attachment(
    smtp: SmtpPeer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "r.csv").write_text("a,b\n1,2\n")
    config = _mail_config(
        smtp,
        attach_files=[
            {"path": "data/r.csv", "content_type": "text/csv"},
            {"path": "data/r.csv", "filename": "copy.bin"},
        ],
    )
    out = run_task(task("mail", config, ("mail.password",)), tmp_path)
    assert out["error"] is None, out["error"]
    ((mail_from, rcpts, msg),) = smtp.messages
    assert mail_from == "kudig@example.com"
    assert sorted(rcpts) == ["a@example.com", "b@example.com", "c@example.com", "hidden@example.com"]
    assert smtp.logins == [SMTP_USER]
    assert msg["Subject"] == "Report ✓"
    assert msg["Cc"] == "c@example.com" and "Bcc" not in msg and "hidden" not in msg.as_string()
    assert msg.get_content_type() == "multipart/mixed"
    body, first, second = msg.iter_parts()
    assert body.get_content_type() == "text/html" and "<b>bold</b>" in body.get_content()
    assert first.get_filename() == "r.csv" and first.get_content_type() == "text/csv"
    assert first.get_content() == "a,b\n1,2\n"
    assert second.get_filename() == "copy.bin" and second.get_content_type() == "application/octet-stream"
    assert SMTP_PASSWORD not in capsys.readouterr().out


def test_mail_inline_body_plain_text(smtp: SmtpPeer, tmp_path: Path) -> None:
    config = _mail_config(smtp, html=False, to="a@example.com")
    del config["_command_text"], config["_command"]
    config["body"] = "plain body"
    config["mail"] = {"host": "127.0.0.1", "port": str(smtp.port)}
    assert run_task(task("mail", config), tmp_path)["error"] is None
    ((_, _rcpts, msg),) = smtp.messages
    assert msg.get_content_type() == "text/plain" and msg.get_content().strip() == "plain body"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"to": None}, "Parameter 'to' is required but not set"),
        ({"subject": None}, "Parameter 'subject' is required but not set"),
        ({"to": "not-an-address"}, "Invalid address in 'to': 'not-an-address'"),
        ({"mail": {"port": 25}}, "Missing SMTP configuration"),
        ({"mail": {"host": "127.0.0.1"}}, "Parameter 'port' is required but not set"),
        ({"attach_files": [{"path": "nope.csv"}]}, "Cannot read attach_files path 'nope.csv'"),
        ({"attach_files": [{"path": "../x"}]}, "attach_files path '../x' is outside the project"),
    ],
)
def test_mail_bad_parameters(smtp: SmtpPeer, tmp_path: Path, change: dict[str, Any], message: str) -> None:
    config = {k: v for k, v in {**_mail_config(smtp), **change}.items() if v is not None}
    out = run_task(task("mail", config, ("mail.password",)), tmp_path)
    assert out["error"] is not None and message in out["error"]["message"], out["error"]
    assert smtp.messages == []


def test_mail_wrong_password_and_unreachable_server(
    smtp: SmtpPeer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BAD_PW", "wrong-pw-555")
    the_task = task("mail", _mail_config(smtp))
    the_task["secrets"]["mail.password"] = "BAD_PW"
    out = run_task(the_task, tmp_path)
    assert out["error"] is not None
    assert out["error"]["message"].startswith("Failed to send mail: SMTP authentication failed")
    assert "wrong-pw-555" not in json.dumps(out)
    out = run_task(task("mail", _mail_config(smtp, mail={"host": "127.0.0.1", "port": 9})), tmp_path)
    assert out["error"] is not None
    assert out["error"]["message"].startswith("Failed to send mail via 127.0.0.1:9: ConnectionRefusedError")


# ------------------------------------------------------------------------------------------ TLS


@pytest.fixture
def trust(monkeypatch: pytest.MonkeyPatch, tls: TlsFiles) -> TlsFiles:
    """The runner trusts the test CA (and nothing else): OpenSSL's SSL_CERT_FILE."""
    monkeypatch.setenv("SSL_CERT_FILE", str(tls.ca))
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    return tls


@pytest.fixture
def https(trust: TlsFiles) -> Iterator[HttpPeer]:
    peer = HttpPeer(tls=trust).start()
    yield peer
    peer.stop()


@pytest.fixture
def https_untrusted(trust: TlsFiles, other_tls: TlsFiles) -> Iterator[HttpPeer]:
    peer = HttpPeer(tls=other_tls).start()
    yield peer
    peer.stop()


def test_https_with_a_trusted_ca(https: HttpPeer, tmp_path: Path) -> None:
    assert https.url("/json").startswith("https://127.0.0.1:")
    out = run_task(task("http", {"_command": https.url("/json"), "store_content": True}), tmp_path)
    assert out["error"] is None, out["error"]
    assert out["store_params"]["http"]["last_content"] == '{"name": "kudig", "count": 3}'
    out = run_task(task("http_call", {"_command": https.url("/wf.json")}), tmp_path)
    assert out["error"] is None, out["error"]
    assert [r.path for r in https.requests] == ["/json", "/wf.json"]


def test_https_untrusted_certificate_fails_at_once_in_one_line(
    https_untrusted: HttpPeer, tmp_path: Path, waits: list[float]
) -> None:
    url = https_untrusted.url("/json")
    out = run_task(task("http", {"_command": url}), tmp_path)  # GET: retried on errors, not on this
    assert out["error"] is not None
    message = out["error"]["message"]
    assert message.startswith(
        f"HTTP request failed: GET {url}: the server's TLS certificate is not trusted (unable to get local issuer certificate)"
    ), message
    assert "SSL_CERT_FILE" in message and "insecure: true" in message and "\n" not in message
    assert waits == [] and https_untrusted.requests == []
    # insecure: true skips the check, as in digdag
    out = run_task(task("http", {"_command": url, "insecure": True}), tmp_path)
    assert out["error"] is None, out["error"]
    assert out["store_params"]["http"]["last_status"] == 200


def test_https_host_name_is_verified(https: HttpPeer, tmp_path: Path, waits: list[float]) -> None:
    # the certificate is for 127.0.0.1 and localhost: 127.0.0.2 reaches the same server, not its name
    https.stop()
    https.host = "0.0.0.0"
    https.start()
    url = f"https://127.0.0.2:{https.port}/json"
    out = run_task(task("http", {"_command": url}), tmp_path)
    assert out["error"] is not None
    assert (
        "is not trusted (IP address mismatch, certificate is not valid for '127.0.0.2'"
        in out["error"]["message"]
    )
    out = run_task(task("http", {"_command": f"https://localhost:{https.port}/json"}), tmp_path)
    assert out["error"] is None, out["error"]


@pytest.mark.parametrize("mode", ["starttls", "ssl"])
def test_mail_over_tls_with_a_trusted_ca(trust: TlsFiles, tmp_path: Path, mode: str) -> None:
    peer = SmtpPeer(tls=trust, mode=mode).start()
    try:
        settings = {"host": "127.0.0.1", "port": peer.port, "username": SMTP_USER}
        if mode == "ssl":
            settings["ssl"] = True  # tls: true (the default) is then moot
        config = {**_mail_config(peer), "mail": settings}
        out = run_task(task("mail", config, ("mail.password",)), tmp_path)
        assert out["error"] is None, out["error"]
        assert peer.encrypted == [True] and peer.logins == [SMTP_USER]
        ((_, rcpts, msg),) = peer.messages
        assert msg["Subject"] == "Report ✓" and len(rcpts) == 4
    finally:
        peer.stop()


@pytest.mark.parametrize("mode", ["starttls", "ssl"])
def test_mail_untrusted_certificate_fails_in_one_line(
    trust: TlsFiles,
    other_tls: TlsFiles,
    tmp_path: Path,
    mode: str,
) -> None:
    peer = SmtpPeer(tls=other_tls, mode=mode).start()
    try:
        settings: dict[str, Any] = {"host": "127.0.0.1", "port": peer.port, "username": SMTP_USER}
        if mode == "ssl":
            settings["ssl"] = "true"
        out = run_task(task("mail", {**_mail_config(peer), "mail": settings}, ("mail.password",)), tmp_path)
        assert out["error"] is not None
        message = out["error"]["message"]
        assert message.startswith(
            f"Failed to send mail via 127.0.0.1:{peer.port}: the server's TLS certificate is not trusted "
            "(unable to get local issuer certificate): the runner trusts the system's CA certificates"
        ), message
        assert "\n" not in message and SMTP_PASSWORD not in json.dumps(out)
        assert peer.messages == [] and peer.logins == []
    finally:
        peer.stop()


def test_mail_tls_false_does_not_upgrade(trust: TlsFiles, tmp_path: Path) -> None:
    # a server that requires STARTTLS refuses the mail of a client told `tls: false`
    peer = SmtpPeer(tls=trust, mode="starttls").start()
    try:
        settings = {"host": "127.0.0.1", "port": peer.port, "tls": False}
        out = run_task(task("mail", {**_mail_config(peer), "mail": settings}), tmp_path)
        assert out["error"] is not None and "STARTTLS" in out["error"]["message"], out["error"]
        assert peer.messages == []
    finally:
        peer.stop()
