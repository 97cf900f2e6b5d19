"""Plumbing for the operator's e2e tests: CRDs, the runner image, a controller process, sessions.

The controller runs as a process on this machine against the cluster (the same code the
operator image runs), so a test can kill it with SIGKILL and start it again.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from kudig.api import GROUP, TERMINAL, VERSION

from .conftest import E2E_GROUP, Kube, namespace_name, wait_for

ROOT = Path(__file__).resolve().parents[2]
RUNNER_IMAGE = os.environ.get("KUDIG_E2E_RUNNER_IMAGE", "localhost/kudig/runner:dev")
TERMINAL_OR_ERROR = (*TERMINAL, "Error")
E2E_DEFAULT_LABEL = "e2e-defaults"


class Operator:
    """`python -m kudig_operator` as a child process, serving every namespace, or only its test
    group's (`KUDIG_E2E_GROUP`, conftest.py)."""

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the controller and wait until it says it is ready (/readyz: its first resync
        against the API server succeeded and its watches deliver what the server lists)."""
        env = dict(os.environ)
        port_file = self.log_path.parent / "health-port"
        port_file.unlink(missing_ok=True)
        env.update(
            {
                "KUDIG_RUNNER_IMAGE": RUNNER_IMAGE,
                "KUDIG_CACHE_DIR": str(self.log_path.parent / "projects"),
                "KUDIG_HEALTH_ADDRESS": "127.0.0.1:0",
                "KUDIG_HEALTH_PORT_FILE": str(port_file),
                "KUDIG_RESYNC_SECONDS": "5",
                # the controller's defaults for every task pod (Helm's runner.pod): test_pod_placement
                "KUDIG_TASK_POD": json.dumps({"labels": {E2E_DEFAULT_LABEL: "from-controller"}}),
                "PYTHONPATH": os.pathsep.join([str(ROOT / "operator"), str(ROOT / "runner"), str(ROOT)]),
            }
        )
        env.pop("KUDIG_NAMESPACE", None)
        if E2E_GROUP:  # this group's namespaces only (conftest.py): the other group has its own controller
            env["KUDIG_NAMESPACE"] = f"e2e-{E2E_GROUP}-*"
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kudig_operator"], env=env, stdout=log, stderr=log
        )

        def ready() -> bool:
            assert self.proc is not None and self.proc.poll() is None, (
                f"the controller exited:\n{self.tail()}"
            )
            if not port_file.exists() or not port_file.read_text():
                return False
            return self.probe("readyz")[0] == 200

        wait_for(ready, 60, "the controller's /readyz")

    def probe(self, path: str) -> tuple[int, str]:
        """GET /healthz, /readyz or /metrics of the running controller."""
        import urllib.error
        import urllib.request

        port = int((self.log_path.parent / "health-port").read_text())
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/{path}", timeout=5) as response:
                return int(response.status), response.read().decode()
        except urllib.error.HTTPError as e:
            return int(e.code), e.read().decode()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.proc = None

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@contextlib.contextmanager
def setup_lock() -> Iterator[None]:
    """One e2e process at a time builds kudig's images and applies the CRDs (the second finds
    them done: images are cached by content)."""
    import fcntl

    with open("/tmp/kudig-e2e-setup.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def apply_crds(kube: Kube) -> None:
    from kudig_operator.crdgen import install

    install(kube.api)


@pytest.fixture(scope="session", name="operator")
def operator_fixture(kube: Kube, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    with setup_lock():  # groups side by side (conftest.py) build the image and apply the CRDs once
        if not os.environ.get("KUDIG_E2E_SKIP_IMAGES"):
            subprocess.run([str(ROOT / "hack" / "kudig-images"), "runner"], check=True)
        apply_crds(kube)
    op = Operator(tmp_path_factory.mktemp("operator") / "operator.log")
    op.start()
    yield op
    op.stop()


def push(
    kube: Kube,
    namespace: str,
    project: Path,
    name: str | None = None,
    *,
    validate: bool = True,
    spec: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """`kudig push`'s objects, created; `spec` adds to each Workflow's spec (as a GitOps render
    edited by hand would: the Workflow is created with it, so no Session races a later patch)."""
    from kudig.cluster.project import build_objects

    objects = build_objects(project, name or project.name, namespace, validate=validate)
    for obj in objects:
        if obj["kind"] == "Workflow" and spec:
            obj["spec"].update(spec)
        if obj["kind"] == "ConfigMap":
            kube.core.create_namespaced_config_map(namespace, obj)
        else:
            kube.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "workflows", obj)
    return objects


def start(
    kube: Kube, namespace: str, workflow: str, session_time: str, params: dict[str, Any] | None = None
) -> str:
    from datetime import datetime

    from kudig.naming import session_name

    name = session_name(workflow, datetime.fromisoformat(session_time))
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Session",
        "metadata": {"name": name},
        "spec": {"workflow": workflow, "sessionTime": session_time, "params": params or {}},
    }
    kube.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "sessions", body)
    return name


def session(kube: Kube, namespace: str, name: str) -> dict[str, Any]:
    obj: dict[str, Any] = kube.custom.get_namespaced_custom_object(
        GROUP, VERSION, namespace, "sessions", name
    )
    return obj


def wait_session(kube: Kube, op: Operator, namespace: str, name: str, timeout: float = 180) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        obj = session(kube, namespace, name)
        return obj if (obj.get("status") or {}).get("phase") in TERMINAL_OR_ERROR else None

    try:
        return wait_for(done, timeout, f"session {namespace}/{name} to finish")
    except AssertionError as e:
        obj = session(kube, namespace, name)
        raise AssertionError(
            f"{e}\nstatus: {json.dumps({k: v for k, v in (obj.get('status') or {}).items() if k != 'engine'})}\noperator log:\n{op.tail()}"
        ) from None


def engine_state(obj: dict[str, Any], kube: Kube | None = None) -> dict[str, Any]:
    """The Session's engine state as JSON; with `kube`, results kept in ConfigMaps are read back."""
    from kudig_operator import results

    data = results.decode_json(obj["status"]["engine"]["data"])
    if kube is None:  # rows still inline in the status only (a small session's are)
        return {**data, "tasks": results.rows(data, {})}
    namespace = obj["metadata"]["namespace"]
    fetched: dict[str, bytes] = {}
    names = results.refs(data)
    while True:  # the chunks, then what their rows refer to
        for name in names:
            if name not in fetched:
                cm = kube.core.read_namespaced_config_map(name, namespace)
                fetched[name] = results.blob_of(kube.api.sanitize_for_serialization(cm))
        more = results.refs(data, fetched)
        if more == names:
            break
        names = more
    state, _ = results.decode(data, fetched)
    return state.to_json()


def tasks_by_name(obj: dict[str, Any], kube: Kube | None = None) -> dict[str, dict[str, Any]]:
    return {t["name"]: t for t in engine_state(obj, kube)["tasks"] if not t.get("superseded")}


def task_pods(kube: Kube, namespace: str, session_name: str) -> list[Any]:
    pods: list[Any] = kube.core.list_namespaced_pod(
        namespace, label_selector=f"kudig.io/session={session_name}"
    ).items
    return pods


def pod_log_of(kube: Kube, namespace: str, session_name: str, task: str) -> str:
    logs = []
    for pod in sorted(task_pods(kube, namespace, session_name), key=lambda p: p.metadata.creation_timestamp):
        if (pod.metadata.annotations or {}).get("kudig.io/task") == task:
            logs.append(kube.core.read_namespaced_pod_log(pod.metadata.name, namespace, container="task"))
    return "".join(logs)


def kudig_cli(
    *args: str, namespace: str | None = None, ok: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """`kudig ARGS [-n NAMESPACE]` as a user types it, with this environment (KUBECONFIG); asserts
    that it exits 0 exactly when `ok`."""
    argv = [sys.executable, "-m", "kudig.cli", *args, *(["-n", namespace] if namespace else [])]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=dict(os.environ))
    assert (proc.returncode == 0) == ok, f"kudig {' '.join(args)}: {proc.stdout}{proc.stderr}"
    return proc


#: The test that reads the minute-by-minute schedule the `schedule_clock` fixture starts.
CLOCK_TEST = "test_schedules.py::test_one_session_per_minute_through_the_whole_suite"


@dataclass(frozen=True)
class ScheduleClock:
    """Two `minutes_interval>: 1` workflows pushed when the e2e session starts, in their own
    namespace: `tick` runs every minute while every other test runs (controller kills, restarts
    and hand-overs to the in-cluster controllers included); `tock` is suspended from its first
    moment. The clock test, ordered last, reads what a whole suite's minutes made of them."""

    namespace: str
    pushed_at: datetime


@pytest.fixture(scope="session", autouse=True)
def schedule_clock(request: pytest.FixtureRequest) -> Iterator[ScheduleClock | None]:
    """Started only when the clock test is among the collected tests (waiting for minute
    boundaries is then shared with the rest of the suite instead of adding to it)."""
    if not any(item.nodeid.endswith(CLOCK_TEST) for item in request.session.items):
        yield None
        return
    kube: Kube = request.getfixturevalue("kube")
    request.getfixturevalue("operator")
    from kudig.cluster.project import build_objects

    namespace = namespace_name("schedule-clock")
    kube.core.create_namespace({"metadata": {"name": namespace, "labels": {"kudig.io/e2e": "true"}}})
    root = Path(str(request.config.cache.mkdir("schedule-clock"))) / namespace
    root.mkdir(parents=True)
    (root / "tick.dig").write_text(
        "schedule:\n  minutes_interval>: 1\n+t:\n  echo>: ${session_time} after '${last_executed_session_time}'\n"
    )
    (root / "tock.dig").write_text("schedule:\n  minutes_interval>: 1\n+t:\n  echo>: ${session_time}\n")
    pushed_at = datetime.now(UTC)
    for obj in build_objects(root, "clock", namespace):
        if obj["kind"] == "ConfigMap":
            kube.core.create_namespaced_config_map(namespace, obj)
        else:
            if obj["metadata"]["name"] == "tock":
                obj["spec"]["suspend"] = True  # `kudig disable` before its first slot
            kube.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "workflows", obj)
    try:
        yield ScheduleClock(namespace, pushed_at)
    finally:
        with contextlib.suppress(Exception):
            kube.core.delete_namespace(namespace, propagation_policy="Background", grace_period_seconds=0)
