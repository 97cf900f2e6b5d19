"""The scale smoke test: kudig's controller on a KWOK control plane of its own (tests/e2e/kwokplane.py).

A fan-out of SMOKE_TASKS `sh>` tasks (`_parallel: {limit: 1000}`) on fake nodes, the controller
SIGKILLed once mid-way and started again: every task ran exactly once (one pod per task name) and
the session succeeded. A fan-out of RESTART_TASKS with the API server killed and started again
mid-way (hack/kwok/restart): the same controller process carries the session to success, every
task once, its pod watch back on the new server. And the fake pods speak the runner's protocol: a
task's store_params reach the next task, and a task that asks to fail fails as `sh>` does.

The plane is not the shared test cluster (its own etcd, apiserver, scheduler and ports, see
hack/kwok/up), so this module needs neither that cluster nor the e2e lock; `make test` runs it
with the other e2e tests (hack/cluster/e2e). Environment:

* KUDIG_KWOK_SMOKE_TASKS  the fan-out's size (default below). The controller reads its task cap
  from KUDIG_TASK_MAX_RUN (digdag's executor.task_max_run, default 1,000), set here to fit.
* KUDIG_KWOK_RESTART_TASKS  the fan-out of the API server restart (default 1,000).
* KUDIG_KWOK_E2E_NAME, KUDIG_KWOK_E2E_PORT_BASE  the plane's name and ports (kwok-e2e, 27400).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from .kwokplane import Controller, Plane, deadline_wait, fan_out_dig, pods_per_task, write_project

# The fan-out's size, above digdag's default cap of 1,000 (the controller reads KUDIG_TASK_MAX_RUN):
# 2,500 take about 100 s here with the kill, 2 minutes with the plane's start (docs/scale.md).
SMOKE_TASKS = int(os.environ.get("KUDIG_KWOK_SMOKE_TASKS", "2500"))
RESTART_TASKS = int(os.environ.get("KUDIG_KWOK_RESTART_TASKS", "1000"))
TASK_MAX_RUN = max(SMOKE_TASKS, RESTART_TASKS) + 10


@pytest.fixture(autouse=True)
def _e2e_cluster_required() -> None:
    """Overrides the e2e conftest's: these tests use their own KWOK plane, not the shared cluster."""


@pytest.fixture(scope="module")
def plane() -> Iterator[Plane]:
    p = Plane(
        name=os.environ.get("KUDIG_KWOK_E2E_NAME", "kwok-e2e"),
        port_base=int(os.environ.get("KUDIG_KWOK_E2E_PORT_BASE", "27400")),
        nodes=4,
        task_delay_ms=200,
    )
    p.down()  # what an interrupted run left behind
    p.up()
    try:
        yield p
    finally:
        p.down()


@pytest.fixture(scope="module")
def controller(plane: Plane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Controller]:
    ctl = Controller(
        plane,
        tmp_path_factory.mktemp("kwok-controller"),
        env={"KUDIG_TASK_MAX_RUN": str(TASK_MAX_RUN), "KUDIG_RESYNC_SECONDS": "5"},
    )
    ctl.start()
    try:
        yield ctl
    finally:
        ctl.stop()


def _finished(
    plane: Plane, namespace: str, name: str, controller: Controller, timeout: float
) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        obj = plane.session(namespace, name)
        phase = (obj.get("status") or {}).get("phase")
        return obj if phase in ("Succeeded", "Failed", "Killed", "Error") else None

    try:
        return deadline_wait(done, timeout, f"session {namespace}/{name} to finish", 1.0)
    except AssertionError as e:
        status = {
            k: v for k, v in (plane.session(namespace, name).get("status") or {}).items() if k != "engine"
        }
        raise AssertionError(f"{e}\nstatus: {status}\ncontroller log:\n{controller.tail()}") from None


def _pods_once_succeeded(
    plane: Plane, namespace: str, selector: str, count: int, timeout: float, every: float
) -> list[dict[str, Any]]:
    """The pods matching `selector`, listed once at least `count` of them have Succeeded."""

    def enough() -> list[dict[str, Any]] | None:
        pods = plane.pods(namespace, selector)
        finished = [p for p in pods if (p.get("status") or {}).get("phase") == "Succeeded"]
        return pods if len(finished) >= count else None

    return deadline_wait(enough, timeout, f"{count} task pods Succeeded", every)


def test_fake_pods_speak_the_runner_protocol(plane: Plane, controller: Controller, tmp_path: Path) -> None:
    """+a stores code=3 through its termination message; +b exits with ${code}: the session
    fails as a real `sh>: exit 3` would, and nothing is retried."""
    ns = plane.namespace("kwok-protocol")
    dig = (
        "+a:\n  sh>: 'true'\n  _env:\n    KWOK_STORE: '{\"code\": 3}'\n"
        "+b:\n  sh>: 'exit ${code}'\n  _env:\n    KWOK_EXIT: '${code}'\n"
    )
    plane.push(ns, write_project(tmp_path / "proto", "proto", dig), "proto")
    plane.wait_workflow(ns, "proto")
    name = plane.start(ns, "proto", datetime(2024, 1, 30, tzinfo=UTC))
    obj = _finished(plane, ns, name, controller, 90)
    status = obj["status"]
    assert status["phase"] == "Failed", status.get("message")
    assert "Command failed with code 3 (runtime)" in status.get("message", ""), status.get("message")
    counts = pods_per_task(plane.pods(ns))
    assert counts == {"+proto+a": 1, "+proto+b": 1}, counts


def test_fan_out_runs_every_task_once_through_a_controller_kill(
    plane: Plane, controller: Controller, tmp_path: Path
) -> None:
    ns = plane.namespace("kwok-smoke")
    plane.push(ns, write_project(tmp_path / "fan", "fan", fan_out_dig(SMOKE_TASKS, 1000)), "fan")
    plane.wait_workflow(ns, "fan")
    started = time.monotonic()
    name = plane.start(ns, "fan", datetime(2024, 1, 30, tzinfo=UTC))
    selector = f"kudig.io/session={name}"

    before = _pods_once_succeeded(plane, ns, selector, SMOKE_TASKS // 3, 120, 0.5)
    controller.kill()
    assert len(before) < SMOKE_TASKS, "the controller finished creating pods before it was killed"
    controller.start()

    obj = _finished(plane, ns, name, controller, 240)
    status = obj["status"]
    assert status["phase"] == "Succeeded", status.get("message")

    pods = plane.pods(ns, selector)
    counts = pods_per_task(pods)
    twice = {task: n for task, n in counts.items() if n != 1}
    assert not twice, f"tasks that ran more than once: {dict(list(twice.items())[:10])}"
    assert len(counts) == SMOKE_TASKS, f"{len(counts)} tasks ran, {SMOKE_TASKS} expected"
    phases = {p["status"].get("phase") for p in pods}
    assert phases == {"Succeeded"}, phases
    print(
        f"\n{SMOKE_TASKS} tasks, controller killed after {len(before)} pods: "
        f"{time.monotonic() - started:.0f}s, {len(pods)} pods"
    )


def test_fan_out_completes_through_an_api_server_restart(
    plane: Plane, controller: Controller, tmp_path: Path
) -> None:
    """Once the first pods succeeded (the others still being created), the API server is SIGKILLed
    (a crash: every connection cut, requests in flight lost) and, once the controller's pod watch
    has failed on it, started again with the same flags. The same controller process (no restart)
    carries the session to Succeeded, every task exactly one pod, and its pod watch listed and
    delivered events again on the new server (its operation counters on /metrics)."""
    ns = plane.namespace("kwok-restart")
    plane.push(ns, write_project(tmp_path / "fan", "fan", fan_out_dig(RESTART_TASKS, 1000)), "fan")
    plane.wait_workflow(ns, "fan")
    pid = controller.pid
    started = time.monotonic()
    name = plane.start(ns, "fan", datetime(2024, 1, 30, tzinfo=UTC))
    selector = f"kudig.io/session={name}"

    before = _pods_once_succeeded(plane, ns, selector, RESTART_TASKS // 50, 90, 0.2)
    ops_before = controller.operations()
    during: dict[str, int] = {}

    def noticed() -> dict[str, int] | None:
        ops = controller.operations()
        return ops if ops["pod_watch_errors"] > ops_before["pod_watch_errors"] else None

    def outage() -> None:  # the API server is down: hold it so until the controller has seen it
        during.update(deadline_wait(noticed, 30, "the controller's pod watch to fail on the outage", 0.2))

    down_at = time.monotonic()
    plane.restart("kube-apiserver", "KILL", outage)
    back_at = time.monotonic()

    obj = _finished(plane, ns, name, controller, 150)
    status = obj["status"]
    assert status["phase"] == "Succeeded", status.get("message")
    assert controller.proc is not None and controller.proc.poll() is None, "the controller exited"
    assert controller.pid == pid, "the controller was restarted"
    ops = controller.operations()
    assert ops["pod_watch_lists"] > during["pod_watch_lists"], f"the pod watch never listed again: {ops}"
    assert ops["pod_watch_events"] > during["pod_watch_events"], f"no pod event since the restart: {ops}"
    assert controller.get("readyz").strip() == "ok", controller.get("readyz")

    pods = plane.pods(ns, selector)
    counts = pods_per_task(pods)
    twice = {task: n for task, n in counts.items() if n != 1}
    assert not twice, f"tasks that ran more than once: {dict(list(twice.items())[:10])}"
    assert len(counts) == RESTART_TASKS, f"{len(counts)} tasks ran, {RESTART_TASKS} expected"
    assert {p["status"].get("phase") for p in pods} == {"Succeeded"}
    print(
        f"\n{RESTART_TASKS} tasks, API server killed after {len(before)} pods "
        f"(down {back_at - down_at:.1f}s): {time.monotonic() - started:.0f}s; pod watch "
        f"{ops['pod_watch_errors'] - ops_before['pod_watch_errors']} errors, "
        f"{ops['pod_watch_lists'] - ops_before['pod_watch_lists']} lists; "
        f"pods adopted after a lost create: {ops.get('pods_adopted', 0) - ops_before.get('pods_adopted', 0)}"
    )
