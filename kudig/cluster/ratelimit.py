"""Client-side rate limiting toward the API server: a token bucket, and 429s retried.

As client-go's `rest.Config` QPS/Burst: `burst` requests may go at once, then `qps` per second on
average; a caller over the rate waits its turn (a reservation, so concurrent callers queue fairly
instead of spinning). The API server's own throttling (API Priority and Fairness) answers 429
with a Retry-After: those requests are retried after it (`retry_429`), any verb, since a 429 means
the server did nothing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

QPS_ENV = "KUDIG_API_QPS"
BURST_ENV = "KUDIG_API_BURST"
# >= 40 pods/s with room to spare: a task costs about 1.1 requests when its pod stays, about 4 when
# it is released (create, log read, log stored, delete); a flood (a resync of 1,000 Sessions) waits
DEFAULT_QPS = 200.0
DEFAULT_BURST = 400
RETRIES_429 = 8


class TokenBucket:
    """`qps` tokens a second, at most `burst` saved; `reserve(now)` takes one and says how long
    to wait for it (0: at once). Time is an input; `take` is the blocking shell."""

    def __init__(
        self,
        qps: float,
        burst: int,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if qps <= 0 or burst < 1:
            raise ValueError(f"a rate limit needs qps > 0 and burst >= 1, got {qps}/{burst}")
        self.qps, self.burst = float(qps), int(burst)
        self._clock, self._sleep = clock, sleep
        self._tokens = float(burst)
        self._at: float | None = None
        self._lock = threading.Lock()

    def reserve(self, now: float) -> float:
        with self._lock:
            if self._at is not None:
                self._tokens = min(float(self.burst), self._tokens + (now - self._at) * self.qps)
            self._at = now
            self._tokens -= 1.0  # may go negative: the debt is the queue ahead
            return 0.0 if self._tokens >= 0 else -self._tokens / self.qps

    def take(self) -> float:
        """Wait for a token; returns the seconds waited."""
        wait = self.reserve(self._clock())
        if wait > 0:
            self._sleep(wait)
        return wait


def rate_from_env(qps: str | None, burst: str | None) -> tuple[float, int]:
    """(qps, burst) as KUDIG_API_QPS / KUDIG_API_BURST say (unset: 200 / 400)."""
    try:
        q = float(qps) if qps and qps.strip() else DEFAULT_QPS
        b = int(burst) if burst and burst.strip() else DEFAULT_BURST
    except ValueError:
        raise ValueError(
            f"{QPS_ENV} must be a number and {BURST_ENV} a whole number, got {qps!r} and {burst!r}"
        ) from None
    if q <= 0 or b < 1:
        raise ValueError(f"{QPS_ENV} must be above 0 and {BURST_ENV} at least 1, got {qps!r} and {burst!r}")
    return q, b


def retry_429(attempts: int = RETRIES_429) -> Any:
    """urllib3 retries for a client Configuration's `retries`: a 429 is retried (any verb) after
    its Retry-After (or a short backoff without one), up to `attempts` times, then returned as
    the 429 it is; connection and read errors as urllib3's default (3, idempotent verbs only)."""
    from urllib3.util.retry import Retry

    class RetryAfter429(Retry):
        def is_retry(self, method: str, status_code: int, has_retry_after: bool = False) -> bool:
            return status_code == 429 and bool(self.total)

    return RetryAfter429(
        total=attempts,
        connect=3,
        read=3,
        status=attempts,
        backoff_factor=0.1,
        backoff_max=2.0,
        respect_retry_after_header=True,
        raise_on_status=False,
    )
