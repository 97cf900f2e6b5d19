"""What the controller costs per task on a real cluster: API requests, CPU, memory.

Runs the controller as a local process against KUBECONFIG (watching one fresh namespace) and
drives it through:

* a 30-step chain and a 100-way fan-out of trivial `sh>: 'true'` tasks, one controller process
  each: Kubernetes API requests per task (every request kudig's code makes, counted by its one
  client wrapper and read from the controller's /metrics, plus kopf's own requests, counted by a
  hook this benchmark installs around kopf's HTTP client), controller CPU ms per task (utime +
  stime from /proc) and peak RSS (VmHWM);
* 1,000 finished sessions (a workflow of control tasks, so no pods: the sessions finish quickly
  and only the controller's own bookkeeping is measured), in batches of 100, each batch deleted
  once finished (as a history limit would; `--keep` keeps them): RSS after each batch and what
  the controller keeps in memory, to show memory follows live objects, not history.

    KUBECONFIG=~/.cache/kudig/cluster/kubeconfig python bench/controller_cost.py [--sessions 1000]

Targets (issue #7): at most 4 API requests and 20 ms of controller CPU per trivial task; RSS flat
after 1,000 finished sessions.

`--fake` measures the controller alone, in process, against the unit tests' in-memory API
(`FakeKube`): fan-outs of 100 / 1,000 / 5,000 / 10,000 `sh>` tasks (`_parallel: {limit: 200}`),
driven once with one pod event per reconcile and once with bursts of pod events (`--burst`, one
reconcile per burst, as the watch coalesces them), printing controller CPU ms per task (process
time of the watch-event handling and the reconciles, which includes the in-memory API's own work
for the requests they make), the slowest single reconcile and the status writes. Target (issue
#18): CPU per task at 10,000 tasks at most 1.5x that at 100.

    python bench/controller_cost.py --fake [--sizes 100,1000,5000,10000] [--burst 50]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TICKS = os.sysconf("SC_CLK_TCK")

# Run the controller with kopf's aiohttp requests counted (this benchmark's hook, not the product's).
LAUNCHER = """
import atexit, collections, json, os, sys
import aiohttp
counts = collections.Counter()
original = aiohttp.ClientSession._request
async def counted(self, method, url, *args, **kwargs):
    counts[method] += 1
    return await original(self, method, url, *args, **kwargs)
aiohttp.ClientSession._request = counted
def dump():
    with open(os.environ["BENCH_KOPF_COUNTS"], "w") as f:
        json.dump(counts, f)
atexit.register(dump)
import signal
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
from kudig_operator.main import run
run()
"""


class Controller:
    def __init__(self, ns: str, tmp: Path, image: str, tag: str) -> None:
        self.port_file = tmp / f"port-{tag}"
        self.kopf_file = tmp / f"kopf-{tag}.json"
        env = dict(
            os.environ,
            KUDIG_RUNNER_IMAGE=image,
            KUDIG_NAMESPACE=ns,
            KUDIG_CACHE_DIR=str(tmp / f"cache-{tag}"),
            KUDIG_HEALTH_ADDRESS="127.0.0.1:0",
            KUDIG_HEALTH_PORT_FILE=str(self.port_file),
            KUDIG_LOG_LEVEL=os.environ.get("KUDIG_LOG_LEVEL", "WARNING"),
            BENCH_KOPF_COUNTS=str(self.kopf_file),
            PYTHONPATH=os.pathsep.join([str(ROOT / "operator"), str(ROOT / "runner"), str(ROOT)]),
        )
        self.log = tmp / f"controller-{tag}.log"
        command = [sys.executable, "-c", LAUNCHER]
        spy = os.environ.get("BENCH_PY_SPY")  # a profile of the controller: py-spy's raw format
        if spy:
            command = [
                "py-spy",
                "record",
                "--gil",
                "-r",
                "100",
                "-f",
                "raw",
                "-o",
                f"{spy}.{tag}",
                "--",
                *command,
            ]
        self.proc = subprocess.Popen(command, env=env, stdout=self.log.open("wb"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while not self._ready():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"controller did not become ready; log: {self.log}")
            time.sleep(0.2)

    def _ready(self) -> bool:
        if not self.port_file.exists() or not self.port_file.read_text():
            return False
        try:
            return self.get("readyz") == "ok"
        except OSError:
            return False

    def get(self, path: str) -> str:
        port = int(self.port_file.read_text())
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/{path}", timeout=5) as r:
            return str(r.read().decode())

    def requests(self) -> int:
        return sum(
            int(float(v))
            for v in re.findall(r"^kudig_kube_requests_total\{[^}]*\} (\S+)$", self.get("metrics"), re.M)
        )

    def request_breakdown(self) -> dict[str, int]:
        out = {}
        for labels, v in re.findall(
            r"^kudig_kube_requests_total\{([^}]*)\} (\S+)$", self.get("metrics"), re.M
        ):
            d = dict(re.findall(r'(\w+)="([^"]*)"', labels))
            out[f"{d['verb']} {d['resource']}"] = int(float(v))
        return out

    def cached(self) -> dict[str, int]:
        return {
            k: int(float(v))
            for k, v in re.findall(
                r'^kudig_controller_cached_objects\{kind="([^"]+)"\} (\S+)$', self.get("metrics"), re.M
            )
        }

    def cpu_ms(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) * 1000 / TICKS

    def memory_kib(self, key: str) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
        return 0

    def stop(self) -> int:
        if os.environ.get("BENCH_PY_SPY"):
            import signal

            self.proc.send_signal(signal.SIGINT)  # py-spy writes its profile on SIGINT
        else:
            self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        try:
            return sum(json.loads(self.kopf_file.read_text()).values())
        except (OSError, ValueError):
            return -1


def fake_cost(tasks: int, burst: int, limit: int = 200) -> tuple[float, float, int]:
    """Controller CPU ms per task, the slowest reconcile (ms) and status writes, for a fan-out of
    `tasks` pods finished `burst` at a time, against FakeKube (in process)."""
    sys.path.insert(0, str(ROOT / "tests" / "unit" / "operator"))
    from fake_kube import FakeKube
    from kudig_operator.controller import Controller

    from kudig.api import SESSIONS, WORKFLOWS, encode_key

    kube = FakeKube()
    tmp = Path(tempfile.mkdtemp(prefix="kudig-fake-cost-"))
    now = [1_706_572_800.0]
    ctl = Controller(
        kube, runner_image="runner:bench", cache_dir=tmp, clock=lambda: now[0], task_max_run=tasks + 10
    )
    dig = f"+fan:\n  _parallel:\n    limit: {limit}\n" + "".join(
        f"  +t{i:05d}:\n    sh>: 'true'\n" for i in range(tasks)
    )
    kube.add_config_map("ns", "wf-files", {encode_key("wf.dig"): dig})
    spec = {"dig": dig, "project": {"configMaps": ["wf-files"]}}
    ctl.on_workflow_event("ns", "wf", kube.add(WORKFLOWS, "ns", {"metadata": {"name": "wf"}, "spec": spec}))
    session = {
        "metadata": {"name": "s"},
        "spec": {"workflow": "wf", "sessionTime": "2024-01-30T00:00:00+00:00"},
    }
    body = kube.add(SESSIONS, "ns", session)
    cpu = 0.0
    worst = 0.0
    writes0 = kube.requests[("update", "sessions/status")]
    c0 = time.process_time()
    ctl.on_session_event("ns", "s", body)
    cpu += time.process_time() - c0
    done = 0
    while True:
        pending = [n for n in kube.created_pods[done : done + burst] if ("ns", n) in kube.pods]
        if not pending:
            break
        pods = [kube.finish_pod("ns", n, output={"store_params": {}, "error": None}) for n in pending]
        done += len(pending)
        now[0] += 0.01
        c0 = time.process_time()
        for pod in pods:  # the watch notes each event and queues a reconcile for it; the first
            ctl.note_pod("ns", pod, False)  # takes them all in, the others are coalesced
        for _ in pods:
            ctl.reconcile_news("ns", "s")
        spent = time.process_time() - c0
        cpu += spent
        worst = max(worst, spent)
    phase = kube.status("ns", "s").get("phase")
    if phase != "Succeeded" or done != tasks:
        raise SystemExit(f"{tasks} tasks: the session is {phase} after {done} pods")
    return cpu * 1000 / tasks, worst * 1000, kube.requests[("update", "sessions/status")] - writes0


def fake_main(sizes: list[int], burst: int) -> int:
    print(
        f"controller CPU per task against FakeKube (fan-out, _parallel limit 200; burst = {burst} pod events)"
    )
    base: dict[int, float] = {}
    for size in sizes:
        for b in (1, burst):
            per_task, worst, writes = fake_cost(size, b)
            base.setdefault(b, per_task)
            print(
                f"  {size:>6} tasks, {b:>3} event(s)/reconcile: {per_task:6.2f} ms CPU/task "
                f"({per_task / base[b]:.2f}x the smallest)  slowest reconcile {worst:6.1f} ms  "
                f"status writes {writes}",
                flush=True,
            )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--fake", action="store_true", help="the controller alone, against FakeKube")
    parser.add_argument("--sizes", default="100,1000,5000,10000", help="--fake: fan-out sizes")
    parser.add_argument("--burst", type=int, default=50, help="--fake: pod events per reconcile in bursts")
    parser.add_argument("--image", default="localhost/kudig/runner:dev", help="runner image")
    parser.add_argument("--chain", type=int, default=30)
    parser.add_argument("--fanout", type=int, default=100)
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep finished sessions in the cluster (default: delete each batch once finished, as a history limit would)",
    )
    args = parser.parse_args()
    if args.fake:
        return fake_main([int(s) for s in args.sizes.split(",")], args.burst)

    from benchcluster import Cluster

    from kudig.cluster.project import build_objects
    from kudig.naming import session_name

    cluster = Cluster()
    core, custom = cluster.core, cluster.custom
    namespace = cluster.namespace
    tmp = Path(tempfile.mkdtemp(prefix="kudig-cost-"))

    def push(ns: str, name: str, dig: str) -> None:
        project = tmp / f"{ns}-{name}"
        project.mkdir()
        (project / f"{name}.dig").write_text(dig)
        for obj in build_objects(project, name, ns):
            if obj["kind"] == "ConfigMap":
                core.create_namespaced_config_map(ns, obj)
            else:
                custom.create_namespaced_custom_object("kudig.io", "v1alpha1", ns, "workflows", obj)

    def start(ns: str, wf: str, when: datetime) -> str:
        name = session_name(wf, when)
        body = {
            "apiVersion": "kudig.io/v1alpha1",
            "kind": "Session",
            "metadata": {"name": name},
            "spec": {"workflow": wf, "sessionTime": when.isoformat()},
        }
        custom.create_namespaced_custom_object("kudig.io", "v1alpha1", ns, "sessions", body)
        return name

    def phases(ns: str) -> list[str]:
        items = custom.list_namespaced_custom_object("kudig.io", "v1alpha1", ns, "sessions")["items"]
        return [(o.get("status") or {}).get("phase", "") for o in items]

    def wait_done(ns: str, count: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ps = phases(ns)
            if len(ps) == count and all(p in ("Succeeded", "Failed", "Killed") for p in ps):
                if any(p != "Succeeded" for p in ps):
                    raise SystemExit(f"a session did not succeed: {ps}")
                return
            time.sleep(0.25)
        raise SystemExit(f"sessions not done after {timeout:.0f}s: {phases(ns)}")

    t0 = datetime(2024, 1, 30, tzinfo=UTC)
    results: list[str] = []
    try:
        for label, tasks, dig in (
            (
                f"{args.chain}-step chain",
                args.chain,
                "".join(f"+t{i:03d}:\n  sh>: 'true'\n" for i in range(args.chain)),
            ),
            (
                f"{args.fanout}-way fan-out",
                args.fanout,
                "+fan:\n  _parallel: true\n"
                + "".join(f"  +t{i:03d}:\n    sh>: 'true'\n" for i in range(args.fanout)),
            ),
        ):
            if tasks == 0:
                continue
            ns = namespace()
            push(ns, "wf", dig)
            ctl = Controller(ns, tmp, args.image, label.split()[0])
            time.sleep(1.0)  # let the Workflow compile and the watches settle
            req0, cpu0 = ctl.requests(), ctl.cpu_ms()
            started = time.monotonic()
            start(ns, "wf", t0)
            wait_done(ns, 1, 120 + 10 * tasks)
            time.sleep(2.0)  # the last status write's echo is handled too
            wall = time.monotonic() - started
            requests, cpu = ctl.requests() - req0, ctl.cpu_ms() - cpu0
            breakdown = ctl.request_breakdown()
            peak = ctl.memory_kib("VmHWM")
            kopf = ctl.stop()
            results.append(
                f"{label:>20}: {requests / tasks:.2f} API requests/task by kudig (+{kopf} by kopf in all: its watches)  "
                f"{cpu / tasks:.1f} ms CPU/task  peak RSS {peak / 1024:.0f} MiB  wall {wall:.1f}s"
            )
            results.append(f"{'':>22}requests: {breakdown}")
            print(results[-2], flush=True)
            core.delete_namespace(ns)

        if args.sessions < 100:
            return 0
        ns = namespace()
        push(
            ns,
            "ctl",
            "+a:\n  echo>: one\n+b:\n  for_range>:\n    from: 0\n    to: 3\n    step: 1\n  _do:\n    echo>: ${range.index}\n",
        )
        ctl = Controller(ns, tmp, args.image, "sessions")
        rss: list[int] = []
        batch = 100
        for b in range(args.sessions // batch):
            for i in range(batch):
                start(ns, "ctl", t0 + timedelta(hours=b * batch + i))
            wait_done(ns, batch if not args.keep else (b + 1) * batch, 300)
            if not args.keep:
                custom.delete_collection_namespaced_custom_object("kudig.io", "v1alpha1", ns, "sessions")
                deadline = time.monotonic() + 120
                while phases(ns) and time.monotonic() < deadline:
                    time.sleep(0.25)
            time.sleep(1.0)
            rss.append(ctl.memory_kib("VmRSS"))
            print(
                f"  after {(b + 1) * batch:>5} finished sessions: RSS {rss[-1] / 1024:.1f} MiB  kept {ctl.cached()}",
                flush=True,
            )
        growth = (rss[-1] - rss[len(rss) // 2]) / 1024 if len(rss) > 1 else 0.0
        how = "kept in the cluster" if args.keep else "each batch deleted once finished"
        results.append(
            f"{args.sessions} finished sessions ({how}): RSS {rss[0] / 1024:.1f} MiB after the first {batch}, "
            f"{rss[-1] / 1024:.1f} MiB after all (median {statistics.median(rss) / 1024:.1f}; "
            f"second half {growth:+.1f} MiB); the controller keeps: {ctl.cached()}"
        )
        ctl.stop()
        core.delete_namespace(ns)
    finally:
        print("\n".join(["", "controller cost:", *results]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
