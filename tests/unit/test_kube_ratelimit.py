"""The controller's client toward the API server: a token bucket (KUDIG_API_QPS / KUDIG_API_BURST)
and 429s retried after their Retry-After, against a real HTTP server playing a throttling API
server."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest

from kudig.cluster.kube import Kube
from kudig.cluster.ratelimit import DEFAULT_BURST, DEFAULT_QPS, TokenBucket, rate_from_env, retry_429


def test_the_bucket_lets_a_burst_through_then_the_rate() -> None:
    bucket = TokenBucket(qps=50, burst=100)
    assert [bucket.reserve(0.0) for _ in range(100)] == [0.0] * 100
    assert bucket.reserve(0.0) == pytest.approx(0.02)
    assert bucket.reserve(0.0) == pytest.approx(0.04), "callers queue behind each other's debt"
    assert bucket.reserve(10.0) == 0.0, "refilled (up to the burst)"


def test_the_defaults_allow_40_pods_a_second_and_hold_a_flood_to_the_rate() -> None:
    qps, burst = rate_from_env(None, "")
    assert (qps, burst) == (DEFAULT_QPS, DEFAULT_BURST)
    bucket = TokenBucket(qps, burst)
    # 40 pods/s at 4 requests per pod (released: create, log read, log stored, delete) for a
    # minute, plus 10 % for the rest: never a wait
    waits = [bucket.reserve(i / 176.0) for i in range(176 * 60)]
    assert max(waits) == 0.0
    # a flood of 2,000 requests at once: the last waits until the rate allows it
    flood = TokenBucket(qps, burst)
    last = [flood.reserve(0.0) for _ in range(2000)][-1]
    assert last == pytest.approx((2000 - burst) / qps)


def test_bad_settings_name_the_variable() -> None:
    with pytest.raises(ValueError, match="KUDIG_API_QPS"):
        rate_from_env("fast", None)
    with pytest.raises(ValueError, match="KUDIG_API_BURST"):
        rate_from_env("10", "0")


class Throttling(BaseHTTPRequestHandler):
    """Answers the first `throttle` requests of each path with 429 and Retry-After, then 200."""

    hits: ClassVar[dict[str, list[float]]] = {}
    throttle = 1
    retry_after = "1"

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        key = f"{self.command} {self.path.split('?')[0]}"
        seen = self.hits.setdefault(key, [])
        seen.append(time.monotonic())
        if len(seen) <= self.throttle:
            body = b'{"kind":"Status","code":429,"reason":"TooManyRequests"}'
            self.send_response(429)
            self.send_header("Retry-After", self.retry_after)
        else:
            body = json.dumps({"metadata": {"name": "x", "resourceVersion": "1"}}).encode()
            self.send_response(201 if self.command == "POST" else 200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    Throttling.hits, Throttling.throttle, Throttling.retry_after = {}, 1, "1"
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Throttling)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def kube_at(url: str, rate: TokenBucket | None = None) -> Kube:
    """A `Kube` made as `Kube.connect` makes it (from the default client configuration)."""
    from kubernetes import client

    saved = client.Configuration.get_default_copy()
    configuration = client.Configuration(host=url)
    client.Configuration.set_default(configuration)
    try:
        return Kube(rate=rate)
    finally:
        client.Configuration.set_default(saved)


def test_a_429_is_retried_after_its_retry_after(server: str) -> None:
    kube = kube_at(server)
    started = time.monotonic()
    assert kube.get("sessions", "ns", "x") is not None
    assert kube.create_pod("ns", {"metadata": {"name": "p"}}) is True, "a POST too: a 429 did nothing"
    (get,) = [v for k, v in Throttling.hits.items() if k.startswith("GET")]
    (post,) = [v for k, v in Throttling.hits.items() if k.startswith("POST")]
    assert len(get) == 2 and len(post) == 2
    assert get[1] - get[0] >= 0.95, "waited for the Retry-After"
    assert time.monotonic() - started >= 1.9


def test_a_429_that_persists_is_reported_as_one(server: str) -> None:
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    Throttling.throttle, Throttling.retry_after = 1000, "0"
    configuration = client.Configuration(host=server)
    configuration.retries = retry_429(attempts=2)
    kube = Kube(client.ApiClient(configuration))
    with pytest.raises(ApiException) as caught:
        kube.get("sessions", "ns", "x")
    assert caught.value.status == 429
    assert sum(len(v) for v in Throttling.hits.values()) == 3, "the first try and 2 retries"


def test_requests_wait_for_the_rate_limit(server: str) -> None:
    Throttling.throttle = 0
    kube = kube_at(server, TokenBucket(qps=20, burst=2))
    started = time.monotonic()
    for _ in range(12):
        kube.get("sessions", "ns", "x")
    assert time.monotonic() - started >= 0.45, "10 requests past the burst at 20/s"
    assert kube.requests[("get", "sessions")] == 12
