"""Load+compile and drive generated workflows of 1,000 and 10,000 echo> tasks through the engine.

No processes: echo> is a control operator, so this measures the language core and the session
engine alone. Prints wall time and peak Python memory (tracemalloc) for each phase.
Target (issue #2): 10,000 tasks compiled in under 1 s and driven in under 5 s on one core.
Also the warm render of a moment.js template, which runs at every task start (target: well
under a millisecond).
"""

from __future__ import annotations

import argparse
import gc
import time
import tracemalloc
from pathlib import Path
from tempfile import TemporaryDirectory

from kudig.compiler import compile_workflow
from kudig.engine.core import Engine, SessionContext
from kudig.expr import TemplateEngine
from kudig.yamlload import load_dig


def generate(n: int, groups: int) -> str:
    """`groups` sequential groups, each a parallel fan-out of echo> tasks (n in total)."""
    per = n // groups
    lines = ["timezone: UTC", "_export:", "  greeting: hello", ""]
    for g in range(groups):
        lines.append(f"+g{g}:")
        lines.append("  _parallel: true" if g % 2 else "  _parallel: {limit: 50}")
        for i in range(per):
            lines.append(f"  +t{i}:")
            lines.append(f"    echo>: ${{greeting}} {g}-{i}")
    return "\n".join(lines) + "\n"


def measure(n: int, trace: bool) -> tuple[float, float, float, float, float, int]:
    with TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.dig"
        path.write_text(generate(n, max(1, n // 100)), encoding="utf-8")
        gc.collect()
        if trace:
            tracemalloc.start()
        t0 = time.perf_counter()
        definition = load_dig(path)
        t1 = time.perf_counter()
        specs = compile_workflow("bench", definition, max_tasks=n * 2)
        t2 = time.perf_counter()
        peak_compile = tracemalloc.get_traced_memory()[1] if trace else 0
        if trace:
            tracemalloc.reset_peak()
        ctx = SessionContext(
            workflow_name="bench",
            timezone="UTC",
            session_params={"session_time": "2024-01-30T00:00:00+00:00", "timezone": "UTC"},
            attempt_params={},
            evaluator=TemplateEngine(),
            max_tasks=n * 4,
        )
        t3 = time.perf_counter()
        engine = Engine.new(ctx, specs)
        actions = engine.step([], 0.0)
        t4 = time.perf_counter()
        peak_drive = tracemalloc.get_traced_memory()[1] if trace else 0
        if trace:
            tracemalloc.stop()
        logs = sum(1 for a in actions if type(a).__name__ == "TaskLog")
        assert engine.state.success, "bench session did not succeed"
        assert logs == len([s for s in specs if not s.is_group]), (logs, len(specs))
        return t1 - t0, t2 - t1, t4 - t3, peak_compile / 1e6, peak_drive / 1e6, len(engine.state.tasks)


def warm_render_ms(n: int = 1000) -> float:
    """Milliseconds per render of a typical `${moment(...)}` template, the engine warm."""
    engine = TemplateEngine()
    params = {"timezone": "Asia/Tokyo", "session_time": "2024-01-30T00:00:00+09:00"}
    text = 'out/${moment(session_time).add(-1, "days").format("YYYY-MM-DD")}/${timezone}'
    for _ in range(50):
        engine.render(text, params, "Asia/Tokyo")
    start = time.perf_counter()
    for _ in range(n):
        engine.render(text, params, "Asia/Tokyo")
    return (time.perf_counter() - start) * 1000 / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("sizes", nargs="*", type=int, default=[1000, 10000])
    args = parser.parse_args()
    for n in args.sizes:
        load, comp, drive, _, _, rows = measure(n, trace=False)
        *_, mem_compile, mem_drive, _ = measure(n, trace=True)
        print(
            f"tasks={n:>6}  load={load:6.3f}s  compile={comp:6.3f}s  load+compile={load + comp:6.3f}s  "
            f"drive={drive:6.3f}s  rows={rows}  |  peak memory (tracemalloc): "
            f"load+compile={mem_compile:5.1f}MB  drive={mem_drive:5.1f}MB"
        )
    print(f"warm template render (moment.js): {warm_render_ms():.3f} ms")


if __name__ == "__main__":
    main()
