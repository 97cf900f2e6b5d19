"""Real peers for the tests of http>, http_call> and mail>: an HTTP server and an SMTP server,
started in this process (threads), recording what they receive; and what the other peers' helpers
(tests/postgres.py, tests/td_server.py) share: `free_port`, `serve_http`/`stop_http`, `required`.

* `HttpPeer`: the standard library's ThreadingHTTPServer. Each request is recorded (method, path,
  headers, body) and answered by path:
  `/json` 200 JSON `{"name": "kudig", "count": 3}`; `/flaky/<key>` 503 the first two times for
  each key, then 200 JSON `{"ok": true}`; `/rate/<key>` 429 once, then 200; `/missing` 404 with a text body; `/redirect` a 302 to
  `/json`; `/status/<n>` an empty answer with status n; `/wf.json` and `/wf.yaml` a workflow
  (application/json, application/x-yaml); `/text` a JSON workflow served as text/plain.
* `SmtpPeer`: aiosmtpd's threaded Controller, AUTH LOGIN/PLAIN accepted for
  `SMTP_USER`/`SMTP_PASSWORD` only; each message is recorded with its envelope (and in `tls`,
  whether it came over TLS).
* TLS: `make_tls` makes a CA and a server certificate for 127.0.0.1/localhost with Debian's
  `openssl` CLI (the `tls` and `other_tls` fixtures: two CAs, one run each). `HttpPeer(tls=...)`
  serves HTTPS; `SmtpPeer(tls=..., mode="starttls")` requires STARTTLS before MAIL and AUTH,
  `mode="ssl"` is TLS from the first byte (SMTPS). Clients trust the CA with `SSL_CERT_FILE`.
* Fixtures `http`, `smtp` (plain, on 127.0.0.1), `tls`, `other_tls`: import their functions into
  a test module (`from tests.peers import http_fixture  # noqa: F401`).

Bind to `0.0.0.0` for a pod on the single-node cluster to reach them through the node's IP.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import pytest

T = TypeVar("T")
WORKFLOW = {
    "+first": {"sh>": "echo fetched-first ${greeting}"},
    "+second": {"echo>": "fetched-second"},
}
WORKFLOW_YAML = "+first:\n  sh>: echo fetched-yaml ${greeting}\n+second:\n  echo>: fetched-yaml-second\n"
_LOCK = threading.Lock()
SMTP_USER = "mailer"
SMTP_PASSWORD = "smtp-pass-4f9a1c"  # a test secret: never in logs, status or events


def required() -> bool:
    """Whether a peer that cannot be set up fails the test rather than skipping it (CI, e2e)."""
    return os.environ.get("CI") == "true" or os.environ.get("KUDIG_E2E") == "1"


def start_or_skip(start: Callable[[], T], what: str) -> T:
    """`start()`, a peer that needs something from this machine (a Debian package, PyPI); when it
    cannot (RuntimeError, OSError), the test is skipped as `what: <error>`, or fails under
    `required()`."""
    try:
        return start()
    except (RuntimeError, OSError) as e:
        if required():
            raise
        pytest.skip(f"{what}: {e}")


def free_port(host: str = "") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


# ----------------------------------------------------------------------------------------- TLS


@dataclass(frozen=True)
class TlsFiles:
    """A CA (`ca`, what clients trust) and a server certificate it signed, with its key."""

    ca: Path
    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert, self.key)
        return context


def make_tls(directory: Path, hosts: tuple[str, ...] = ("127.0.0.1", "localhost")) -> TlsFiles:
    """A new CA and a server certificate for `hosts` (IP addresses or DNS names), valid two days,
    made with the `openssl` CLI (P-256 keys)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca, ca_key = directory / "ca.pem", directory / "ca.key"
    cert, key, csr, ext = (
        directory / "server.pem",
        directory / "server.key",
        directory / "server.csr",
        directory / "server.ext",
    )
    names = ",".join(f"IP:{h}" if h.replace(".", "").isdigit() or ":" in h else f"DNS:{h}" for h in hosts)
    ext.write_text(
        f"subjectAltName={names}\nbasicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
        "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n"
    )
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    tag = secrets.token_hex(4)
    for argv in (
        ["req", "-x509", *ec, "-keyout", ca_key, "-out", ca, "-days", "2", "-subj", f"/CN=kudig test CA {tag}",
         "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
        ["req", *ec, "-keyout", key, "-out", csr, "-subj", f"/CN={hosts[0]}"],
        ["x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-set_serial", str(int(tag, 16)),
         "-days", "2", "-out", cert, "-extfile", ext],
    ):  # fmt: skip
        proc = subprocess.run(["openssl", *map(str, argv)], capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"openssl {argv[0]} failed: {proc.stderr}")
    return TlsFiles(ca, cert, key)


@pytest.fixture(scope="session", name="tls")
def tls_fixture(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """A CA the tests trust (SSL_CERT_FILE) and a server certificate for 127.0.0.1."""
    return make_tls(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="session", name="other_tls")
def other_tls_fixture(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """Another CA and server certificate: what a client trusting only `tls.ca` refuses."""
    return make_tls(tmp_path_factory.mktemp("other-tls"))


# ---------------------------------------------------------------------------------------- HTTP


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client refusing the certificate, or hanging up: the test sees it client-side


def serve_http(
    host: str, handler: type[BaseHTTPRequestHandler], tls: TlsFiles | None = None
) -> ThreadingHTTPServer:
    """A ThreadingHTTPServer for `handler` on `host` and a free port, serving in a daemon thread;
    HTTPS with `tls` (the handshake happens in the request's thread). Stop it with `stop_http`."""
    server = _QuietServer((host, 0), handler)
    if tls is not None:
        server.socket = tls.server_context().wrap_socket(
            server.socket, server_side=True, do_handshake_on_connect=False
        )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def stop_http(server: ThreadingHTTPServer | None) -> None:
    if server is not None:
        server.shutdown()
        server.server_close()


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class HttpPeer:
    host: str = "127.0.0.1"
    tls: TlsFiles | None = None
    requests: list[Recorded] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    server: ThreadingHTTPServer | None = None

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.server_address[1])

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}{path}"

    def start(self) -> HttpPeer:
        peer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _answer(
                self, status: int, body: bytes = b"", ctype: str | None = None, **headers: str
            ) -> None:
                self.send_response(status)
                if ctype:
                    self.send_header("Content-Type", ctype)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                path = self.path.split("?")[0]
                with _LOCK:
                    peer.requests.append(Recorded(self.command, self.path, dict(self.headers.items()), body))
                    peer.counts[path] = peer.counts.get(path, 0) + 1
                    count = peer.counts[path]
                if path == "/json":
                    self._answer(200, json.dumps({"name": "kudig", "count": 3}).encode(), "application/json")
                elif path.startswith("/flaky/"):
                    if count <= 2:
                        self._answer(503, b"busy", "text/plain")
                    else:
                        self._answer(200, b'{"ok": true}', "application/json; charset=utf-8")
                elif path.startswith("/rate/"):
                    self._answer(
                        429 if count == 1 else 200, b"slow down" if count == 1 else b"{}", "application/json"
                    )
                elif path == "/seen":
                    self._answer(200, b"ok", "text/plain")
                elif path == "/missing":
                    self._answer(404, b"no such thing here", "text/plain")
                elif path == "/redirect":
                    self._answer(302, b"", None, Location="/json")
                elif path.startswith("/status/"):
                    self._answer(int(path.rsplit("/", 1)[1]), b"", "text/plain")
                elif path == "/wf.json":
                    self._answer(200, json.dumps(WORKFLOW).encode(), "application/json")
                elif path == "/wf.yaml":
                    self._answer(200, WORKFLOW_YAML.encode(), "application/x-yaml")
                elif path == "/text":
                    self._answer(200, json.dumps(WORKFLOW).encode(), "text/plain")
                else:
                    self._answer(404, b"unknown path", "text/plain")

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = _handle

        self.server = serve_http(self.host, Handler, self.tls)
        return self

    def stop(self) -> None:
        stop_http(self.server)

    def on(self, path: str) -> list[Recorded]:
        return [r for r in self.requests if r.path.split("?")[0] == path]


@dataclass
class SmtpPeer:
    host: str = "127.0.0.1"
    port: int = 0
    tls: TlsFiles | None = None
    mode: str = "plain"  # with `tls`: "starttls" (required before MAIL and AUTH) or "ssl" (SMTPS)
    messages: list[tuple[str, list[str], EmailMessage]] = field(default_factory=list)
    encrypted: list[bool] = field(default_factory=list)  # per message: did it come over TLS
    logins: list[str] = field(default_factory=list)
    controller: Any = None

    def start(self) -> SmtpPeer:
        from aiosmtpd.controller import Controller
        from aiosmtpd.smtp import AuthResult, LoginPassword

        peer = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                msg = message_from_bytes(envelope.original_content or envelope.content, policy=policy.default)
                assert isinstance(msg, EmailMessage)
                peer.messages.append((envelope.mail_from, list(envelope.rcpt_tos), msg))
                peer.encrypted.append(server.transport.get_extra_info("ssl_object") is not None)
                return "250 OK"

        def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
            if isinstance(data, LoginPassword):
                user, password = data.login.decode(), data.password.decode()
                if user == SMTP_USER and password == SMTP_PASSWORD:
                    peer.logins.append(user)
                    return AuthResult(success=True)
            return AuthResult(success=False, handled=False)

        self.port = self.port or free_port(self.host)
        tls: dict[str, Any] = {"auth_require_tls": False}
        if self.mode == "starttls":
            assert self.tls is not None
            tls = {
                "tls_context": self.tls.server_context(),
                "require_starttls": True,
                "auth_require_tls": True,
            }
        elif self.mode == "ssl":
            assert self.tls is not None
            tls = {"ssl_context": self.tls.server_context(), "auth_require_tls": False}
        self.controller = Controller(
            Handler(),
            hostname=self.host,
            port=self.port,
            authenticator=authenticator,
            auth_required=False,
            **tls,
        )
        self.controller.start()
        return self

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()


@pytest.fixture(name="http")
def http_fixture() -> Iterator[HttpPeer]:
    peer = HttpPeer().start()
    yield peer
    peer.stop()


@pytest.fixture(name="smtp")
def smtp_fixture() -> Iterator[SmtpPeer]:
    peer = SmtpPeer().start()
    yield peer
    peer.stop()


def write_files(root: Path, files: dict[str, str]) -> Path:
    """Writes `files` (relative path: text) under `root`, making directories."""
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


ROOT = Path(__file__).resolve().parents[1]


def secret_env(values: Mapping[str, str]) -> dict[str, str]:
    """Local secrets (key -> value) as `kudig run` reads them: `KUDIG_SECRET_<KEY>`, dots as `__`."""
    return {"KUDIG_SECRET_" + key.replace(".", "__").upper(): value for key, value in values.items()}


def kudig_env(values: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a test's `kudig run`: this one without any ambient `KUDIG_SECRET_*`,
    with `values` as local secrets and this checkout importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUDIG_SECRET_")}
    env.update(secret_env(values or {}))
    env["PYTHONPATH"] = str(ROOT)
    return env


def kudig_run(
    project: Path, *args: str, secrets: Mapping[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """`kudig run ARGS` in `project` as a user runs it, with `secrets` as local secrets."""
    return subprocess.run(
        [sys.executable, "-m", "kudig.cli", "run", *args],
        cwd=project,
        env=kudig_env(secrets),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# Secrets the project below uses (local: KUDIG_SECRET_<KEY>; cluster: the kudig-secrets Secret).
PROJECT_SECRETS = {
    "api.token": "tok-5e2b9d7c",
    "http.user": "alice",
    "http.password": "pw-http-0c41aa",
    "mail.password": SMTP_PASSWORD,
}


def local_secret_env() -> dict[str, str]:
    return secret_env(PROJECT_SECRETS)


def project_files(http: str, smtp_host: str, smtp_port: int) -> dict[str, str]:
    """A project using http>, http_call> and mail> against the peers (`http`: `host:port`).

    +post sends JSON with a secret header and basic auth and stores the JSON answer; +use sends
    what `${http.last_content}` and `${http.last_status}` hold back to /seen; +flaky is answered
    503 twice; +call runs the workflow /wf.yaml serves; +mail sends an HTML mail whose body file
    is rendered, with a bcc and an attachment."""
    wf = f"""_export:
  who: kudig
  greeting: hi-from-export
  http:
    timeout: 10
+post:
  http>: http://{http}/json
  method: POST
  content:
    greeting: hello ${{who}}
  headers:
    - X-Token: ${{secret:api.token}}
  query:
    day: ${{session_date}}
  store_content: true
+use:
  http>: http://{http}/seen
  query:
    name: ${{JSON.parse(http.last_content).name}}
    count: ${{JSON.parse(http.last_content).count}}
    status: ${{http.last_status}}
+flaky:
  http>: http://{http}/flaky/session-${{session_date}}
+call:
  http_call>: http://{http}/wf.yaml
+mail:
  mail>: mail/body.html
  subject: Done ${{who}} ${{session_date}}
  from: kudig@example.com
  to: [ops@example.com, "Team <team@example.com>"]
  bcc: audit@example.com
  html: true
  attach_files:
    - path: data/report.csv
      content_type: text/csv
  host: {smtp_host}
  port: {smtp_port}
  username: {SMTP_USER}
"""
    return {
        "work.dig": wf,
        "mail/body.html": "<p>Status ${http.last_status} for ${who} on ${session_date}</p>\n",
        "data/report.csv": "day,rows\n2024-01-30,42\n",
    }
