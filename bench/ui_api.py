"""The UI server's cost for big sessions: the DAG layout alone and whole API answers, by size.

    .venv/bin/python bench/ui_api.py [SIZES...]     (default 1000 10000 100000)

For each size: the time of `kudig.ui.layout.layout` (best of 5), and the time and JSON size of
GET /api/v1/sessions/NS/NAME, .../dag and .../gantt served by `kudig ui --fixtures` (aiohttp,
best of 3), for a session of groups run one after another, each of 100 parallel tasks.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "operator"), str(ROOT / "runner")]

from aiohttp.test_utils import TestClient, TestServer  # noqa: E402

from kudig import sessionread  # noqa: E402
from kudig.ui.layout import layout  # noqa: E402
from kudig.ui.server import Settings, make_app  # noqa: E402
from tests import ui_fixtures as fx  # noqa: E402


def best(fn, times: int) -> float:  # type: ignore[no-untyped-def]
    out = []
    for _ in range(times):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return min(out)


async def api(root: Path, name: str) -> list[tuple[str, float, int]]:
    results = []
    async with TestClient(TestServer(make_app(Settings("fixtures", fixtures=root)))) as client:
        for part in ("", "/dag", "/gantt"):
            sizes, laps = [], []
            for _ in range(3):
                t = time.perf_counter()
                resp = await client.get(f"/api/v1/sessions/bench/{name}{part}")
                body = await resp.read()
                laps.append(time.perf_counter() - t)
                sizes.append(len(body))
                assert resp.status == 200, body[:200]
            results.append((part or "/", min(laps), sizes[0]))
    return results


def main(sizes: list[int]) -> None:
    print(f"{'tasks':>8} {'layout':>10} {'endpoint':>10} {'time':>10} {'bytes':>12}")
    for n in sizes:
        tasks = fx.big("big", n)
        obj = fx.session("bench", f"big-{n}", "big", "2024-01-30T00:00:00+00:00", tasks)
        rows = sessionread.task_rows(obj)
        lay = best(lambda: layout(rows), 5)  # noqa: B023
        with tempfile.TemporaryDirectory() as d:
            fx.write_fixtures(Path(d), [obj])
            for part, secs, size in asyncio.run(api(Path(d), f"big-{n}")):
                print(f"{len(rows):>8} {lay * 1000:>8.1f}ms {part:>10} {secs * 1000:>8.1f}ms {size:>12,}")


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [1000, 10000, 100000])
