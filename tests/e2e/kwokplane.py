"""A KWOK control plane and kudig's controller on it: what the scale smoke test and bench/scale.py share.

`Plane` drives hack/kwok/up and hack/kwok/down (etcd, kube-apiserver, kube-scheduler and kwok as
local processes, fake nodes, kudig's CRDs; never the shared test cluster) and reads the API server's
own numbers (/metrics, its RSS). `Controller` is `python -m kudig_operator` as a child process
against that plane, with the controller's own kubeconfig (an ordinary user, so API Priority and
Fairness treats it as it treats a deployed controller), killable with SIGKILL. The helpers below
push a project, start sessions and count task pods through the plane's admin client.

Task pods never run: kwok plays them (hack/kwok/stages.yaml). A task asks for its fake outcome in
its `_env`: `KWOK_EXIT` (exit code), `KWOK_DELAY` (how long it "runs", a Go duration) and
`KWOK_STORE` (a JSON object: its store_params).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parents[2]
HACK = ROOT / "hack" / "kwok"
CACHE = Path(os.environ.get("KUDIG_CACHE", str(Path.home() / ".cache" / "kudig")))
TICKS = os.sysconf("SC_CLK_TCK")
# never pulled: no container runs on a KWOK node
FAKE_RUNNER_IMAGE = "localhost/kudig/runner:kwok"
TERMINAL_OR_ERROR = ("Succeeded", "Failed", "Killed", "Error")

T = TypeVar("T")


def deadline_wait(fn: Callable[[], T | None], timeout: float, what: str, interval: float = 0.5) -> T:
    """Polls `fn` until it returns a truthy value (returned); AssertionError at the deadline."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while True:
        last = fn()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last value: {last!r}")
        time.sleep(interval)


def proc_cpu_ms(pid: int) -> float:
    """utime + stime of a process, in milliseconds (/proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / TICKS


def proc_memory_kib(pid: int, key: str = "VmRSS") -> int:
    """A /proc/<pid>/status memory line (VmRSS, VmHWM) in KiB; 0 when the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class Plane:
    """One KWOK control plane: `KWOK_NAME` names its state dir, `KWOK_PORT_BASE` its ports."""

    def __init__(self, name: str = "kwok", port_base: int = 26400, nodes: int = 10, task_delay_ms: int = 200):
        self.name = name
        self.env = dict(
            os.environ,
            KWOK_NAME=name,
            KWOK_PORT_BASE=str(port_base),
            KWOK_NODES=str(nodes),
            KWOK_TASK_DELAY_MS=str(task_delay_ms),
        )
        self.dir = CACHE / name
        self.kubeconfig = self.dir / "kubeconfig"
        self.controller_kubeconfig = self.dir / "controller.kubeconfig"
        self.logs = self.dir / "logs"
        self._api: Any = None

    def up(self) -> None:
        proc = subprocess.run([str(HACK / "up")], env=self.env, capture_output=True, text=True, timeout=1800)
        if proc.returncode != 0:
            raise AssertionError(f"hack/kwok/up failed ({proc.returncode}):\n{proc.stderr[-4000:]}")

    def down(self) -> None:
        if self._api is not None:
            self._api.close()
            self._api = None
        subprocess.run([str(HACK / "down")], env=self.env, capture_output=True, text=True, timeout=120)

    def restart(self, component: str, sig: str = "TERM", between: Callable[[], object] | None = None) -> int:
        """Stops one component (`kube-apiserver`, `etcd`, `kube-scheduler`, `kwok`) by its recorded
        pid with SIGTERM or SIGKILL, calls `between()` while it is down (to wait for what the
        outage should cause), starts it again with the same command line and waits until it
        answers (hack/kwok/restart). Returns the new pid."""

        def step(*args: str) -> str:
            proc = subprocess.run(
                [str(HACK / "restart"), *args, component],
                env=self.env,
                capture_output=True,
                text=True,
                timeout=180,
            )
            if proc.returncode != 0:
                raise AssertionError(
                    f"hack/kwok/restart {' '.join(args)} {component} failed:\n{proc.stderr[-4000:]}"
                )
            return proc.stdout

        step("--stop", "--signal", sig)
        try:
            if between is not None:
                between()
        finally:
            out = step("--start")
        return int(out.split()[-1])

    # --- the admin client (system:masters) ------------------------------------------------------------
    @property
    def api(self) -> Any:
        """An ApiClient of its own (the process-wide default configuration is left alone)."""
        if self._api is None:
            from kubernetes import config

            self._api = config.new_client_from_config(config_file=str(self.kubeconfig))
        return self._api

    @property
    def core(self) -> Any:
        from kubernetes import client

        return client.CoreV1Api(self.api)

    @property
    def custom(self) -> Any:
        from kubernetes import client

        return client.CustomObjectsApi(self.api)

    def raw_get(self, path: str) -> str:
        """GET a non-resource path (/metrics) as the admin (token and CA from the kubeconfig)."""
        import ssl

        import yaml

        config = yaml.safe_load(self.kubeconfig.read_text())
        cluster = config["clusters"][0]["cluster"]
        token = config["users"][0]["user"]["token"]
        context = ssl.create_default_context(cafile=cluster["certificate-authority"])
        request = urllib.request.Request(
            cluster["server"] + path, headers={"Authorization": f"Bearer {token}"}
        )
        with urllib.request.urlopen(request, timeout=30, context=context) as response:
            return str(response.read().decode())

    def request_counts(self) -> dict[str, int]:
        """apiserver_request_total summed per "VERB resource[/subresource]" (WATCH included)."""
        out: dict[str, int] = {}
        for labels, value in re.findall(
            r"^apiserver_request_total\{([^}]*)\} (\S+)$", self.raw_get("/metrics"), re.M
        ):
            d = dict(re.findall(r'(\w+)="([^"]*)"', labels))
            key = f"{d.get('verb', '')} {d.get('resource', '')}" + (
                f"/{d['subresource']}" if d.get("subresource") else ""
            )
            out[key] = out.get(key, 0) + int(float(value))
        return out

    def pid(self, component: str) -> int:
        return int((self.dir / "pids" / f"{component}.pid").read_text())

    def rss_mib(self, component: str, key: str = "VmRSS") -> float:
        return proc_memory_kib(self.pid(component), key) / 1024

    # --- kudig objects ----------------------------------------------------------------------------------
    def namespace(self, name: str) -> str:
        self.core.create_namespace({"metadata": {"name": name}})
        return name

    def push(self, namespace: str, project: Path, name: str, spec: dict[str, Any] | None = None) -> None:
        """The project's ConfigMaps and Workflows; `spec` (e.g. `{"history": {"keep": 50}}`) is
        part of each Workflow as it is created (a later patch could race its first compile)."""
        from kudig.cluster.project import build_objects

        for obj in build_objects(project, name, namespace):
            if obj["kind"] == "ConfigMap":
                self.core.create_namespaced_config_map(namespace, obj)
            else:
                obj["spec"].update(spec or {})
                self.custom.create_namespaced_custom_object(
                    "kudig.io", "v1alpha1", namespace, "workflows", obj
                )

    def wait_workflow(self, namespace: str, name: str, timeout: float = 60) -> None:
        """Until the controller compiled the Workflow (its Compiled condition)."""

        def ready() -> bool:
            obj = self.custom.get_namespaced_custom_object(
                "kudig.io", "v1alpha1", namespace, "workflows", name
            )
            conditions = (obj.get("status") or {}).get("conditions") or []
            return any(c.get("type") == "Compiled" and c.get("status") == "True" for c in conditions)

        deadline_wait(ready, timeout, f"workflow {namespace}/{name} compiled")

    def start(self, namespace: str, workflow: str, session_time: datetime) -> str:
        from kudig.naming import session_name

        name = session_name(workflow, session_time)
        body = {
            "apiVersion": "kudig.io/v1alpha1",
            "kind": "Session",
            "metadata": {"name": name},
            "spec": {"workflow": workflow, "sessionTime": session_time.isoformat(), "params": {}},
        }
        self.custom.create_namespaced_custom_object("kudig.io", "v1alpha1", namespace, "sessions", body)
        return name

    def session(self, namespace: str, name: str) -> dict[str, Any]:
        obj: dict[str, Any] = self.custom.get_namespaced_custom_object(
            "kudig.io", "v1alpha1", namespace, "sessions", name
        )
        return obj

    def sessions(self, namespace: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.custom.list_namespaced_custom_object(
            "kudig.io", "v1alpha1", namespace, "sessions"
        )["items"]
        return items

    def pods(
        self, namespace: str, selector: str = "app.kubernetes.io/managed-by=kudig"
    ) -> list[dict[str, Any]]:
        """Task pods as plain dicts (one paged LIST; the typed client's objects are slow at 10k)."""
        out: list[dict[str, Any]] = []
        token = None
        while True:
            response = self.core.list_namespaced_pod(
                namespace, label_selector=selector, limit=2000, _continue=token, _preload_content=False
            )
            page = json.loads(response.data)
            out.extend(page["items"])
            token = page["metadata"].get("continue")
            if not token:
                return out

    def delete_pods(self, namespace: str) -> None:
        """Removes every pod of `namespace` at once (no kubelet and no garbage collector here)."""
        self.core.delete_collection_namespaced_pod(namespace, grace_period_seconds=0)


class Controller:
    """`python -m kudig_operator` against a Plane, watching every namespace."""

    def __init__(self, plane: Plane, workdir: Path, env: dict[str, str] | None = None) -> None:
        self.plane = plane
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / "controller.log"
        self.port_file = workdir / "health-port"
        self.extra_env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 90) -> None:
        self.port_file.unlink(missing_ok=True)
        env = dict(
            os.environ,
            KUBECONFIG=str(self.plane.controller_kubeconfig),
            KUDIG_RUNNER_IMAGE=FAKE_RUNNER_IMAGE,
            KUDIG_CACHE_DIR=str(self.workdir / "projects"),
            KUDIG_HEALTH_ADDRESS="127.0.0.1:0",
            KUDIG_HEALTH_PORT_FILE=str(self.port_file),
            KUDIG_LOG_LEVEL=os.environ.get("KUDIG_LOG_LEVEL", "WARNING"),
            PYTHONPATH=os.pathsep.join([str(ROOT / "operator"), str(ROOT / "runner"), str(ROOT)]),
        )
        env.pop("KUDIG_NAMESPACE", None)
        env.update(self.extra_env)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "kudig_operator"], env=env, stdout=log, stderr=log
            )

        def ready() -> bool:
            assert self.proc is not None and self.proc.poll() is None, (
                f"the controller exited:\n{self.tail()}"
            )
            if not self.port_file.exists() or not self.port_file.read_text():
                return False
            try:
                return self.get("readyz").strip() == "ok"
            except OSError:
                return False

        deadline_wait(ready, timeout, "the controller's /readyz", 0.2)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def get(self, path: str) -> str:
        port = int(self.port_file.read_text())
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/{path}", timeout=10) as response:
                return str(response.read().decode())
        except urllib.error.HTTPError as e:
            return str(e.read().decode())

    def kudig_requests(self) -> dict[str, int]:
        """Requests kudig's own client made, per "verb resource" (its kudig_kube_requests_total)."""
        out: dict[str, int] = {}
        for labels, value in re.findall(
            r"^kudig_kube_requests_total\{([^}]*)\} (\S+)$", self.get("metrics"), re.M
        ):
            d = dict(re.findall(r'(\w+)="([^"]*)"', labels))
            key = f"{d.get('verb', '')} {d.get('resource', '')}"
            out[key] = out.get(key, 0) + int(float(value))
        return out

    def operations(self) -> dict[str, int]:
        """The controller's operation counters (kudig_controller_operations_total: reconciles,
        pods created, the pod watch's lists, streams, events and errors...)."""
        return {
            op: int(float(value))
            for op, value in re.findall(
                r'^kudig_controller_operations_total\{operation="([^"]*)"\} (\S+)$', self.get("metrics"), re.M
            )
        }

    def cpu_ms(self) -> float:
        return proc_cpu_ms(self.pid)

    def memory_kib(self, key: str = "VmRSS") -> int:
        return proc_memory_kib(self.pid, key)

    def kill(self) -> None:
        """SIGKILL: no cleanup, no flush, as a node failure or the OOM killer would."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        self.proc = None

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def fan_out_dig(tasks: int, limit: int = 1000) -> str:
    """`for_range>` over `tasks` trivial `sh>` tasks, at most `limit` at once."""
    return (
        "+fan:\n"
        "  for_range>:\n"
        f"    from: 0\n    to: {tasks}\n    step: 1\n"
        f"  _parallel:\n    limit: {limit}\n"
        "  _do:\n"
        "    sh>: 'true'\n"
    )


def chain_dig(steps: int) -> str:
    return "".join(f"+s{i:04d}:\n  sh>: 'true'\n" for i in range(steps))


def write_project(root: Path, workflow: str, dig: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / f"{workflow}.dig").write_text(dig)
    return root


def pods_per_task(pods: list[dict[str, Any]]) -> dict[str, int]:
    """How many pods each task (the `kudig.io/task` annotation: its full name) had."""
    counts: dict[str, int] = {}
    for pod in pods:
        task = (pod["metadata"].get("annotations") or {}).get("kudig.io/task", "")
        counts[task] = counts.get(task, 0) + 1
    return counts
