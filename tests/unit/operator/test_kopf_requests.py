"""kopf's API requests, as the controller configures them (`main.configure_requests`), wait out an
API server that is slow to come back: a restarted kube-apiserver answers 503 "before all known
HTTP paths have been installed" and 429 "storage is (re)initializing" for a while, and kopf's own
retries run out after 9 attempts, ending its watch of Sessions for good (the e2e API-server
restart test failed so under load). Driven through kopf's real request routine against a real
HTTP server on this machine."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import kopf
import pytest
from kopf._cogs.clients import api, auth, errors
from kopf._cogs.structs import credentials
from kudig_operator.main import Backoffs, configure_requests

LIST = {
    "apiVersion": "kudig.io/v1alpha1",
    "kind": "SessionList",
    "metadata": {"resourceVersion": "7"},
    "items": [],
}


class Restarting:
    """An API server that answers `failures` requests with a 503, then lists."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.requests = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests += 1
                failing = server.requests <= server.failures
                body = json.dumps(
                    {
                        "kind": "Status",
                        "apiVersion": "v1",
                        "status": "Failure",
                        "message": "the request has been made before all known HTTP paths have been installed",
                        "reason": "ServiceUnavailable",
                        "code": 503,
                    }
                    if failing
                    else LIST
                ).encode()
                self.send_response(503 if failing else 200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"


@pytest.fixture
def restarting() -> Iterator[Restarting]:
    server = Restarting(failures=20)  # more than kopf's 9 attempts
    yield server
    server.httpd.shutdown()


def get(server: Restarting, settings: kopf.OperatorSettings) -> object:
    async def main() -> object:
        context = auth.APIContext(credentials.ConnectionInfo(server=server.url))
        try:
            response = await api.request(
                "get",
                "/apis/kudig.io/v1alpha1/sessions",
                settings=settings,
                context=context,
                logger=logging.getLogger("test"),
            )
            return await response.json()
        finally:
            await context.session.close()

    return asyncio.run(main())


def fast(settings: kopf.OperatorSettings) -> kopf.OperatorSettings:
    configure_requests(settings, Backoffs(first=(0.001, 0.001), then=0.001))
    return settings


def test_a_request_outlasts_a_server_that_fails_longer_than_kopfs_retries(restarting: Restarting) -> None:
    assert get(restarting, fast(kopf.OperatorSettings())) == LIST
    assert restarting.requests == 21


def test_kopfs_own_retries_give_up_on_the_same_server(restarting: Restarting) -> None:
    """The control: kopf's default number of attempts escalates the 503 (what ended the watch)."""
    settings = kopf.OperatorSettings()
    defaults = settings.networking.error_backoffs
    assert isinstance(defaults, tuple) and len(defaults) == 8
    settings.networking.error_backoffs = tuple(0.001 for _ in defaults)
    with pytest.raises(errors.APIServerError):
        get(restarting, settings)
    assert restarting.requests == 9


def test_the_delays_never_run_out_and_start_again_for_each_request() -> None:
    settings = kopf.OperatorSettings()
    configure_requests(settings)
    backoffs = settings.networking.error_backoffs
    assert isinstance(backoffs, Backoffs) and not hasattr(backoffs, "__len__")
    first = list(itertools.islice(backoffs, 1000))
    assert first[:6] == [1, 1, 2, 3, 5, 8] and set(first[6:]) == {10.0}
    assert list(itertools.islice(backoffs, 6)) == first[:6]  # kopf iterates it once per request
    assert settings.watching.server_timeout == 300
