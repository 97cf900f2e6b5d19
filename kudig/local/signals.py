"""SIGINT and SIGTERM for the local commands (`kudig run`, `kudig scheduler`).

The work runs in a thread and the main thread only waits for it, so a signal handler (which
Python runs in the main thread) never interrupts code holding a lock it needs. The first signal
asks the work to stop gracefully (kill the running tasks' process trees, keep what finished); a
second one asks for an immediate stop. `until_signalled` returns the work's result and the first
signal received (None if none), or re-raises the work's exception.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any, TypeVar

T = TypeVar("T")

SIGNALS = (signal.SIGINT, signal.SIGTERM)


def until_signalled(
    work: Callable[[], T],
    on_signal: Callable[[int, int], None],
    name: str = "kudig-work",
) -> tuple[T | None, int | None]:
    """Run `work` in a thread; call `on_signal(signum, count)` (count 1, 2, ...) on each signal."""
    received: list[int] = []
    result: list[T] = []
    failure: list[BaseException] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        on_signal(signum, len(received))

    def target() -> None:
        try:
            result.append(work())
        except BaseException as e:  # re-raised in the main thread
            failure.append(e)

    in_main = threading.current_thread() is threading.main_thread()
    previous: dict[int, Any] = {sig: signal.signal(sig, handler) for sig in SIGNALS} if in_main else {}
    try:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        while thread.is_alive():
            thread.join(0.5)  # wake up now and then: a handler only runs between bytecodes
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
    if failure:
        raise failure[0]
    return (result[0] if result else None), (received[0] if received else None)
