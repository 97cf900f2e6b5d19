"""Real peers for the tests of http>, http_call> and mail>: an HTTP server and an SMTP server,
started in this process (threads), recording what they receive.

* `HttpPeer`: the standard library's ThreadingHTTPServer. Each request is recorded (method, path,
  headers, body) and answered by path:
  `/json` 200 JSON `{"name": "kudig", "count": 3}`; `/flaky/<key>` 503 the first two times for
  each key, then 200 JSON `{"ok": true}`; `/rate/<key>` 429 once, then 200; `/missing` 404 with a text body; `/redirect` a 302 to
  `/json`; `/status/<n>` an empty answer with status n; `/wf.json` and `/wf.yaml` a workflow
  (application/json, application/x-yaml); `/text` a JSON workflow served as text/plain.
* `SmtpPeer`: aiosmtpd's threaded Controller, AUTH LOGIN/PLAIN without TLS accepted for
  `SMTP_USER`/`SMTP_PASSWORD` only; each message is recorded with its envelope.

Bind to `0.0.0.0` for a pod on the single-node cluster to reach them through the node's IP.
"""

from __future__ import annotations

import json
import socket
import threading
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

WORKFLOW = {
    "+first": {"sh>": "echo fetched-first ${greeting}"},
    "+second": {"echo>": "fetched-second"},
}
WORKFLOW_YAML = "+first:\n  sh>: echo fetched-yaml ${greeting}\n+second:\n  echo>: fetched-yaml-second\n"
_LOCK = threading.Lock()
SMTP_USER = "mailer"
SMTP_PASSWORD = "smtp-pass-4f9a1c"  # a test secret: never in logs, status or events


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class HttpPeer:
    host: str = "127.0.0.1"
    requests: list[Recorded] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    server: ThreadingHTTPServer | None = None

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.server_address[1])

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

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

        self.server = ThreadingHTTPServer((self.host, 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def on(self, path: str) -> list[Recorded]:
        return [r for r in self.requests if r.path.split("?")[0] == path]


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class SmtpPeer:
    host: str = "127.0.0.1"
    port: int = 0
    messages: list[tuple[str, list[str], EmailMessage]] = field(default_factory=list)
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
                return "250 OK"

        def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
            if isinstance(data, LoginPassword):
                user, password = data.login.decode(), data.password.decode()
                if user == SMTP_USER and password == SMTP_PASSWORD:
                    peer.logins.append(user)
                    return AuthResult(success=True)
            return AuthResult(success=False, handled=False)

        self.port = self.port or free_port(self.host)
        self.controller = Controller(
            Handler(),
            hostname=self.host,
            port=self.port,
            authenticator=authenticator,
            auth_require_tls=False,
            auth_required=False,
        )
        self.controller.start()
        return self

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()


# Secrets the project below uses (local: KUDIG_SECRET_<KEY>; cluster: the kudig-secrets Secret).
PROJECT_SECRETS = {
    "api.token": "tok-5e2b9d7c",
    "http.user": "alice",
    "http.password": "pw-http-0c41aa",
    "mail.password": SMTP_PASSWORD,
}


def local_secret_env() -> dict[str, str]:
    return {"KUDIG_SECRET_" + key.replace(".", "__").upper(): value for key, value in PROJECT_SECRETS.items()}


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
