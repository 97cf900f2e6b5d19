"""The shell's plumbing: a lock per key, and timers."""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, TypeVar

log = logging.getLogger("kudig.controller")

Key = tuple[str, str]  # (namespace, name)
T = TypeVar("T")
R = TypeVar("R")


class KeyedLocks:
    """One lock per key, existing only while someone holds or waits for it."""

    def __init__(self) -> None:
        self.guard = threading.Lock()
        self.locks: dict[Any, tuple[threading.Lock, int]] = {}

    @contextmanager
    def hold(self, key: Any) -> Iterator[None]:
        with self.guard:
            lock, users = self.locks.get(key, (threading.Lock(), 0))
            self.locks[key] = (lock, users + 1)
        try:
            with lock:
                yield
        finally:
            with self.guard:
                lock, users = self.locks[key]
                if users == 1:
                    del self.locks[key]
                else:
                    self.locks[key] = (lock, users - 1)

    def __len__(self) -> int:
        return len(self.locks)


class Wakeups:
    """Timers for retries and `wait>`: one thread and a heap, one pending time per key."""

    def __init__(self, fire: Callable[[Any], None], clock: Callable[[], float] = time.time) -> None:
        self._fire = fire
        self._clock = clock
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Any]] = []
        self._due: dict[Any, float] = {}
        self._seq = 0
        self._stopped = False

    def set(self, key: Any, at: float) -> None:
        with self._cond:
            if self._due.get(key) == at:
                return
            self._due[key] = at
            self._seq += 1
            heapq.heappush(self._heap, (at, self._seq, key))
            self._cond.notify()

    def due(self, key: Any) -> float | None:
        """When `key` fires next (None: not pending)."""
        with self._cond:
            return self._due.get(key)

    def cancel(self, key: Any) -> None:
        with self._cond:
            self._due.pop(key, None)  # its heap entry is skipped when it comes up

    def __len__(self) -> int:
        return len(self._due)

    def overdue(self) -> int:
        """How many timers are past due and not fired yet (waiting for the timer thread)."""
        now = self._clock()
        with self._cond:
            return sum(1 for at in self._due.values() if at <= now)

    def run(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._stopped:
                        return
                    while self._heap and self._due.get(self._heap[0][2]) != self._heap[0][0]:
                        heapq.heappop(self._heap)  # cancelled or superseded
                    if not self._heap:
                        self._cond.wait()
                        continue
                    at, _, key = self._heap[0]
                    delay = at - self._clock()
                    if delay <= 0:
                        heapq.heappop(self._heap)
                        del self._due[key]
                        break
                    self._cond.wait(delay)
            try:
                self._fire(key)
            except Exception:
                log.exception("wake-up of %s failed", key)

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()


class Fanout:
    """Blocking calls of one batch run side by side on up to `width` threads (the pod creates of a
    plan: each is one round trip to the API server, so one after the other they cap a fan-out at
    1/latency pods per second). Results come back in order; the first exception is raised once
    every call of the batch has ended. Width 1 runs the calls inline, in order."""

    def __init__(self, width: int) -> None:
        self.width = max(1, width)
        self._pool: ThreadPoolExecutor | None = None
        self._guard = threading.Lock()

    def map(self, fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
        batch = list(items)
        if self.width == 1 or len(batch) < 2:
            return [fn(item) for item in batch]
        with self._guard:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=self.width, thread_name_prefix="kudig-fanout")
            pool = self._pool
        futures = [pool.submit(fn, item) for item in batch]
        errors = [f.exception() for f in futures]  # waits for every call
        for error in errors:
            if error is not None:
                raise error
        return [f.result() for f in futures]

    def stop(self) -> None:
        with self._guard:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)
