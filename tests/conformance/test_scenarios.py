"""digdag conformance scenarios, each run end to end through the real `kudig run`.

Every directory under `scenarios/` is a small digdag project plus a `scenario.yml` that says how
to run it and what must come out (see `scenarios/README.md` for the keys). Each scenario is copied
to a fresh temporary directory and `python -m kudig.cli ...` runs there as a subprocess: no mocks,
no imports of kudig internals. A scenario with `xfail: "reason"` documents a known divergence
from digdag and must keep failing (strict) until kudig is fixed.

The scenarios are independent processes that mostly wait (on subprocesses and short sleeps), so
the selected ones are started together on a small thread pool when the first test asks for its
result; each test then waits for its own scenario and checks it. `KUDIG_CONFORMANCE_JOBS` sets
the pool size (default: twice the CPU count, at most 8).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

SCENARIOS = Path(__file__).resolve().parent / "scenarios"
REPO_ROOT = Path(__file__).resolve().parents[2]

# Keys of one run ("step"): the top level of scenario.yml is the first step, `then:` lists more.
STEP_KEYS = frozenset(
    {
        "args",
        "env",
        "write",
        "remove",
        "exit",
        "timeout",
        "stdout_contains",
        "stdout_not_contains",
        "stdout_in_order",
        "stdout_regex",
        "stderr_contains",
        "output_contains",
        "output_not_contains",
        "output_in_order",
        "output_regex",
        "output_count",
        "files",
        "files_contain",
        "files_not_contain",
        "files_in_order",
        "files_exist",
        "files_absent",
        "min_seconds",
        "max_seconds",
    }
)
SCENARIO_KEYS = STEP_KEYS | {"description", "digdag", "xfail", "then"}
DEFAULT_TIMEOUT = 60.0


def scenario_names() -> list[str]:
    return sorted(p.name for p in SCENARIOS.iterdir() if (p / "scenario.yml").is_file())


def load_scenario(name: str) -> dict[str, Any]:
    data = yaml.safe_load((SCENARIOS / name / "scenario.yml").read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{name}/scenario.yml must be a map")
    unknown = set(data) - SCENARIO_KEYS
    if unknown:
        raise ValueError(f"{name}/scenario.yml: unknown keys {sorted(unknown)}")
    for i, step in enumerate(data.get("then") or []):
        bad = set(step) - STEP_KEYS
        if bad:
            raise ValueError(f"{name}/scenario.yml: then[{i}]: unknown keys {sorted(bad)}")
    return data


def steps_of(data: dict[str, Any]) -> list[dict[str, Any]]:
    first = {k: v for k, v in data.items() if k in STEP_KEYS}
    return [first, *(data.get("then") or [])]


# --------------------------------------------------------------------------- running


@dataclass
class StepRun:
    args: list[str]
    exit_code: int | None
    stdout: str
    stderr: str
    seconds: float
    failures: list[str] = field(default_factory=list)


@dataclass
class ScenarioRun:
    name: str
    workdir: Path
    steps: list[StepRun] = field(default_factory=list)
    error: str | None = None

    @property
    def failures(self) -> list[str]:
        out = [f"setup: {self.error}"] if self.error else []
        for i, step in enumerate(self.steps):
            out.extend(f"run {i + 1} ({' '.join(step.args)}): {f}" for f in step.failures)
        return out

    def report(self) -> str:
        lines = [f"scenario {self.name} in {self.workdir}"]
        for i, step in enumerate(self.steps):
            lines.append(
                f"--- run {i + 1}: kudig {' '.join(step.args)} -> exit {step.exit_code} in {step.seconds:.2f}s"
            )
            lines.append("stdout:\n" + _tail(step.stdout))
            lines.append("stderr:\n" + _tail(step.stderr))
        lines.append("--- failures:")
        lines.extend(self.failures)
        return "\n".join(lines)


def _tail(text: str, limit: int = 6000) -> str:
    return text if len(text) <= limit else "...\n" + text[-limit:]


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _in_order(text: str, needles: list[str]) -> str | None:
    pos = 0
    for needle in needles:
        found = text.find(needle, pos)
        if found < 0:
            where = "at all" if needle not in text else f"after offset {pos}"
            return f"{needle!r} not found {where}"
        pos = found + len(needle)
    return None


def check_step(step: dict[str, Any], run: StepRun, workdir: Path) -> list[str]:
    fails: list[str] = []
    expected_exit = step.get("exit", 0)
    if run.exit_code != expected_exit:
        fails.append(f"exit code {run.exit_code}, expected {expected_exit}")
    streams = {"stdout": run.stdout, "stderr": run.stderr, "output": run.stdout + "\n" + run.stderr}
    for stream, text in streams.items():
        for needle in _as_list(step.get(f"{stream}_contains")):
            if str(needle) not in text:
                fails.append(f"{stream} does not contain {needle!r}")
        for needle in _as_list(step.get(f"{stream}_not_contains")):
            if str(needle) in text:
                fails.append(f"{stream} contains {needle!r}")
        order = step.get(f"{stream}_in_order")
        if order:
            problem = _in_order(text, [str(n) for n in order])
            if problem:
                fails.append(f"{stream} order: {problem}")
        for pattern in _as_list(step.get(f"{stream}_regex")):
            if not re.search(pattern, text, re.MULTILINE):
                fails.append(f"{stream} does not match /{pattern}/")
    for needle, count in (step.get("output_count") or {}).items():
        actual = streams["output"].count(str(needle))
        if actual != count:
            fails.append(f"output has {actual} x {needle!r}, expected {count}")

    def read(rel: str) -> str | None:
        path = workdir / rel
        return path.read_text(encoding="utf-8") if path.is_file() else None

    for rel, content in (step.get("files") or {}).items():
        actual = read(rel)
        if actual is None:
            fails.append(f"file {rel} is missing")
        elif actual != str(content):
            fails.append(f"file {rel} is {actual!r}, expected {content!r}")
    for rel, needles in (step.get("files_contain") or {}).items():
        actual = read(rel)
        for needle in _as_list(needles):
            if actual is None or str(needle) not in actual:
                fails.append(f"file {rel} does not contain {needle!r} (content: {actual!r})")
    for rel, needles in (step.get("files_not_contain") or {}).items():
        actual = read(rel) or ""
        for needle in _as_list(needles):
            if str(needle) in actual:
                fails.append(f"file {rel} contains {needle!r} (content: {actual!r})")
    for rel, needles in (step.get("files_in_order") or {}).items():
        actual = read(rel)
        problem = "file is missing" if actual is None else _in_order(actual, [str(n) for n in needles])
        if problem:
            fails.append(f"file {rel} order: {problem} (content: {actual!r})")
    for rel in _as_list(step.get("files_exist")):
        if not (workdir / rel).exists():
            fails.append(f"{rel} does not exist")
    for rel in _as_list(step.get("files_absent")):
        if (workdir / rel).exists():
            fails.append(f"{rel} exists but should not")
    if "min_seconds" in step and run.seconds < float(step["min_seconds"]):
        fails.append(f"took {run.seconds:.2f}s, expected at least {step['min_seconds']}s")
    if "max_seconds" in step and run.seconds > float(step["max_seconds"]):
        fails.append(f"took {run.seconds:.2f}s, expected at most {step['max_seconds']}s")
    return fails


def _env() -> dict[str, str]:
    """The scenarios' environment; taken on the main thread (`ScenarioPool`): pytest sets and
    deletes PYTEST_CURRENT_TEST there, and a copy taken meanwhile on a worker could read a key
    that is gone (KeyError)."""
    env = dict(os.environ)
    env.pop("PYTEST_CURRENT_TEST", None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH", "")]))
    env.pop("KUDIG_CONFORMANCE_JOBS", None)
    env.setdefault("LC_ALL", "C.UTF-8")
    return env


def run_scenario(name: str, base_tmp: Path, base_env: dict[str, str] | None = None) -> ScenarioRun:
    data = load_scenario(name)
    workdir = base_tmp / name
    result = ScenarioRun(name, workdir)
    shutil.copytree(SCENARIOS / name, workdir, ignore=shutil.ignore_patterns("scenario.yml"))
    for step in steps_of(data):
        for pattern in _as_list(step.get("remove")):
            for target in sorted(workdir.glob(pattern)):
                if target.is_dir():
                    shutil.rmtree(target)
                else:
                    target.unlink()
        for rel, content in (step.get("write") or {}).items():
            (workdir / rel).parent.mkdir(parents=True, exist_ok=True)
            (workdir / rel).write_text(str(content), encoding="utf-8")
        args = [str(a) for a in step["args"]]
        env = dict(base_env) if base_env is not None else _env()
        env.update({str(k): str(v) for k, v in (step.get("env") or {}).items()})
        started = time.monotonic()
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "kudig.cli", *args],
                cwd=workdir,
                env=env,
                capture_output=True,
                text=True,
                timeout=float(step.get("timeout", DEFAULT_TIMEOUT)),
                check=False,
            )
            step_run = StepRun(args, proc.returncode, proc.stdout, proc.stderr, time.monotonic() - started)
        except subprocess.TimeoutExpired as e:
            out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
            err = e.stderr.decode() if isinstance(e.stderr, bytes) else (e.stderr or "")
            step_run = StepRun(args, None, out, err, time.monotonic() - started)
            step_run.failures.append(f"timed out after {step.get('timeout', DEFAULT_TIMEOUT)}s")
        step_run.failures.extend(check_step(step, step_run, workdir))
        result.steps.append(step_run)
    return result


class ScenarioPool:
    """Starts every selected scenario at once on a thread pool; `result(name)` waits for one."""

    def __init__(self, names: list[str], base_tmp: Path) -> None:
        jobs = int(os.environ.get("KUDIG_CONFORMANCE_JOBS") or min(8, 2 * (os.cpu_count() or 1)))
        self._executor = ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="scenario")
        self._base = base_tmp
        self._env = _env()
        self._futures: dict[str, Future[ScenarioRun]] = {}
        # Slowest first (those with sleeps or retry intervals), so they overlap with the rest.
        for name in sorted(names, key=lambda n: -_weight(n)):
            self._submit(name)

    def _submit(self, name: str) -> Future[ScenarioRun]:
        future = self._executor.submit(run_scenario, name, self._base, self._env)
        self._futures[name] = future
        return future

    def result(self, name: str) -> ScenarioRun:
        future = self._futures.get(name) or self._submit(name)
        return future.result()

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)


def _weight(name: str) -> float:
    text = (SCENARIOS / name / "scenario.yml").read_text(encoding="utf-8")
    match = re.search(r"^min_seconds:\s*([\d.]+)", text, re.MULTILINE)
    if match:
        return float(match.group(1))
    try:
        return len(steps_of(load_scenario(name)))
    except (ValueError, yaml.YAMLError):
        return 0.0


# --------------------------------------------------------------------------- pytest


def _params() -> list[Any]:
    params = []
    for name in scenario_names():
        try:
            reason = load_scenario(name).get("xfail")
        except (ValueError, yaml.YAMLError):
            reason = None  # reported by the test itself (load_scenario raises again there)
        marks = [pytest.mark.xfail(strict=True, reason=str(reason))] if reason else []
        params.append(pytest.param(name, id=name, marks=marks))
    return params


@pytest.fixture(scope="session")
def scenario_pool(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ScenarioPool]:
    selected = [
        item.callspec.params["scenario"]
        for item in request.session.items
        if Path(str(getattr(item, "path", ""))).resolve() == Path(__file__).resolve()
        and "scenario" in getattr(getattr(item, "callspec", None), "params", {})
    ]
    pool = ScenarioPool(selected, tmp_path_factory.mktemp("conformance"))
    yield pool
    pool.close()


def test_scenario_files_are_valid() -> None:
    names = scenario_names()
    assert len(names) >= 40, f"only {len(names)} scenarios"
    for name in names:
        data = load_scenario(name)
        assert data.get("description"), f"{name}: description is required"
        for step in steps_of(data):
            assert step.get("args"), f"{name}: every run needs args"
        assert list((SCENARIOS / name).glob("*.dig")) or list((SCENARIOS / name).glob("**/*.dig")), name


@pytest.mark.parametrize("scenario", _params())
def test_scenario(scenario: str, scenario_pool: ScenarioPool) -> None:
    run = scenario_pool.result(scenario)
    if run.failures:
        pytest.fail(run.report(), pytrace=False)


def test_checks_detect_mismatches(tmp_path: Path) -> None:
    """The checker itself: every kind of expectation fails when the run does not meet it."""
    (tmp_path / "out.txt").write_text("a\nb\n", encoding="utf-8")
    run = StepRun(["run"], 1, "x=1\nsecond\n", "boom\n", 2.0)
    step = {
        "exit": 0,
        "stdout_contains": ["missing"],
        "stdout_not_contains": ["x=1"],
        "stdout_in_order": ["second", "x=1"],
        "stdout_regex": ["^x=2$"],
        "stderr_contains": ["quiet"],
        "output_count": {"boom": 2},
        "files": {"out.txt": "a\n"},
        "files_contain": {"out.txt": ["c"]},
        "files_not_contain": {"out.txt": ["b"]},
        "files_in_order": {"out.txt": ["b", "a"]},
        "files_exist": ["nope.txt"],
        "files_absent": ["out.txt"],
        "min_seconds": 3,
        "max_seconds": 1,
    }
    assert len(check_step(step, run, tmp_path)) == len(step)
    ok = {
        "exit": 1,
        "stdout_in_order": ["x=1", "second"],
        "stdout_regex": ["^second$"],
        "output_count": {"boom": 1},
        "files": {"out.txt": "a\nb\n"},
        "files_in_order": {"out.txt": ["a", "b"]},
        "files_absent": ["nope.txt"],
    }
    assert check_step(ok, run, tmp_path) == []
