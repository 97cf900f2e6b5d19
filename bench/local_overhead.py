"""Per-task overhead of `kudig run` (issue #11): N sequential `sh>` tasks and N `py>` tasks,
against running the same commands directly, and N `echo>` tasks (run in the engine itself). Targets: at most 15 ms per `sh>` task and 40 ms per
`py>` task over the direct run.

    python bench/local_overhead.py [--tasks 200]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def timed(argv: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run(argv, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=200)
    n = parser.parse_args().tasks
    kudig = [sys.executable, "-m", "kudig.cli"]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "sh.dig").write_text("".join(f"+t{i}:\n  sh>: echo {i}\n" for i in range(n)))
        (root / "py.dig").write_text("".join(f"+t{i}:\n  py>: tasks.f\n" for i in range(n)))
        (root / "echo.dig").write_text("".join(f"+t{i}:\n  echo>: {i}\n" for i in range(n)))
        (root / "tasks.py").write_text("def f():\n    print('x')\n")
        (root / "empty.dig").write_text("+t:\n  echo>: x\n")
        startup = timed([*kudig, "run", "empty.dig", "--no-save"], root)
        sh_run = timed([*kudig, "run", "sh.dig", "--no-save"], root) - startup
        start = time.perf_counter()
        for i in range(n):
            subprocess.run(["sh", "-c", f"echo {i}"], check=True, stdout=subprocess.DEVNULL)
        sh_direct = time.perf_counter() - start
        py_run = timed([*kudig, "run", "py.dig", "--no-save"], root) - startup
        start = time.perf_counter()
        for _ in range(n):
            subprocess.run(
                [sys.executable, "-c", "import tasks; tasks.f()"],
                cwd=root,
                check=True,
                stdout=subprocess.DEVNULL,
            )
        py_direct = time.perf_counter() - start
        echo_run = timed([*kudig, "run", "echo.dig", "--no-save"], root) - startup
    print(f"kudig run start-up (one echo> task): {startup * 1000:.0f} ms")
    for op, run, direct, target in (("sh", sh_run, sh_direct, 15), ("py", py_run, py_direct, 40)):
        overhead = (run - direct) / n * 1000
        print(
            f"{n} {op}> tasks: kudig run {run:.2f} s, direct {direct:.2f} s, "
            f"overhead {overhead:.1f} ms/task (target <= {target} ms)"
        )
    print(f"{n} echo> tasks (no process at all): {echo_run:.2f} s, {echo_run / n * 1000:.1f} ms/task")


if __name__ == "__main__":
    main()
