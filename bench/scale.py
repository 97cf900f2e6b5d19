"""kudig at scale on KWOK: fan-outs of 100 / 1,000 / 10,000 tasks, a 300-step chain, 1,000 sessions at once,
and two faults: the controller SIGKILLed mid-way through a 10,000-task fan-out, and 1,000 sessions whose
Workflow keeps a short history (the controller's RSS over time).

Starts (or reuses) a KWOK control plane of its own (hack/kwok/up: etcd, kube-apiserver,
kube-scheduler and kwok as local processes with fake nodes, never the shared test cluster), then,
per scenario, a fresh controller (`python -m kudig_operator`, its own kubeconfig, so API Priority
and Fairness applies to it) and one namespace. Task pods never run: kwok marks each Running at
once and Succeeded after KWOK_TASK_DELAY_MS (200), with the termination message kudig's runner
would write (hack/kwok/stages.yaml).

    python bench/scale.py                      # every scenario (about 15 minutes on 2 cores)
    python bench/scale.py --only fanout --fanouts 100,1000
    python bench/scale.py --keep-plane         # leave the plane up (hack/kwok/down stops it)
    python bench/scale.py --only kill          # 10,000 tasks, the controller SIGKILLed at a third
    python bench/scale.py --only history       # 2 waves of 1,000 sessions x 10, history.keep 50: RSS
    KWOK_NAME=kwok-b KWOK_PORT_BASE=28400 python bench/scale.py ...   # a plane beside the default one

Printed per scenario:

* wall          session created -> last session terminal (s)
* pods/s        task pods / wall
* cpu ms/task   the controller's utime+stime (/proc/<pid>/stat) / tasks
* req/task      API requests per task: kudig's own client (kudig_kube_requests_total) and the
                API server's total for every client (apiserver_request_total: kwok's status
                patches and the scheduler's bindings included; watches counted once)
* rss MiB       the controller's peak RSS (VmHWM); the API server's peak RSS beside it
* B/task        the Session object (JSON) plus the result ConfigMaps it owns, per task
* writes/s      Session writes (PATCH/UPDATE of sessions and sessions/status) per second
* gap p50/p95   chain only: a pod seen Succeeded -> the next pod seen created (ms)

The fault scenarios print one more line: `kill`, when the controller was killed (pods created and
succeeded by then), how long its restart took, the tasks that ran twice (one pod per task name;
must be 0) and the session's phase (CPU and requests add up both controller processes);
`history`, --waves (2) waves of --sessions (1,000) Sessions x 10 tasks whose Workflow keeps the
--keep (50) newest, one wave after the other in one controller: its RSS sampled every --rss-every
seconds (10) and at the end of each wave (flat: the second wave costs no more than the first), and
the Sessions left.

Targets (issue 18): CPU per task at 10,000 tasks <= 1.5x that at 100 and <= 10 ms; >= 40 pods/s;
<= 4 kudig API requests per task; RSS <= 300 MiB at 1,000 sessions x 10 tasks; Session < 1 MiB at
10,000 tasks. The controller's task cap is KUDIG_TASK_MAX_RUN (set here to fit each scenario; a
controller that ignores it fails a session above 1,000 tasks with "Too many tasks", reported as such).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "operator"), str(ROOT / "runner")]

from kubernetes.client.exceptions import ApiException  # noqa: E402

from tests.e2e.kwokplane import (  # noqa: E402
    Controller,
    Plane,
    chain_dig,
    fan_out_dig,
    pods_per_task,
    proc_cpu_ms,
    write_project,
)

PLANE = ("kube-apiserver", "etcd", "kube-scheduler", "kwok")  # the processes of hack/kwok/up

TERMINAL = ("Succeeded", "Failed", "Killed", "Error")
T0 = datetime(2024, 1, 30, tzinfo=UTC)


@dataclass
class Result:
    label: str
    tasks: int
    sessions: int = 1
    wall: float = 0.0
    pods: int = 0
    cpu_ms: float = 0.0
    kudig_requests: int = 0
    api_requests: int = 0
    status_writes: int = 0
    rss_mib: float = 0.0
    api_rss_mib: float = 0.0
    etcd_rss_mib: float = 0.0
    session_bytes: int = 0
    gaps_ms: list[float] = field(default_factory=list)
    outcome: str = "Succeeded"
    reruns: int = 0
    breakdown: dict[str, int] = field(default_factory=dict)
    plane_cpu_ms: dict[str, float] = field(default_factory=dict)  # per control-plane process
    rss_samples: list[tuple[float, float]] = field(default_factory=list)  # (s since start, MiB)
    notes: list[str] = field(default_factory=list)  # what a fault scenario saw

    def row(self) -> str:
        if self.outcome != "Succeeded" and not self.pods:
            return f"{self.label:<26} {self.outcome}"
        t = max(self.tasks, 1)
        gap = (
            f"{statistics.median(self.gaps_ms):5.0f}/{_p95(self.gaps_ms):5.0f}"
            if self.gaps_ms
            else f"{'-':>11}"
        )
        return (
            f"{self.label:<26} {self.wall:7.1f} {self.pods / self.wall if self.wall else 0:7.1f} "
            f"{self.cpu_ms / t:9.2f} {self.kudig_requests / t:6.2f} {self.api_requests / t:6.2f} "
            f"{self.rss_mib:7.0f} {self.api_rss_mib:7.0f} {self.session_bytes / t:7.0f} "
            f"{self.status_writes / self.wall if self.wall else 0:8.1f} {gap}  {self.outcome}"
            + (f" ({self.reruns} tasks ran twice)" if self.reruns else "")
        )


HEADER = (
    f"{'scenario':<26} {'wall s':>7} {'pods/s':>7} {'cpu ms/t':>9} {'kudig':>6} {'api':>6} "
    f"{'rss MiB':>7} {'api MiB':>7} {'B/task':>7} {'writes/s':>8} {'gap p50/p95':>11}\n"
    f"{'':<26} {'':>7} {'':>7} {'':>9} {'req/t':>6} {'req/t':>6}"
)


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))] if ordered else 0.0


class Sampler(threading.Thread):
    """Peak RSS of the API server and etcd, sampled every half second; the controller's RSS
    every `every` seconds from `start()` (`samples`: seconds since then, MiB)."""

    def __init__(self, plane: Plane, ctl: Controller, every: float = 10.0) -> None:
        super().__init__(daemon=True)
        self.plane, self.ctl, self.every = plane, ctl, every
        self.api = self.etcd = 0.0
        self.samples: list[tuple[float, float]] = []
        self.done = threading.Event()

    def run(self) -> None:
        started = next_sample = time.monotonic()
        while not self.done.wait(0.5):
            self.api = max(self.api, self.plane.rss_mib("kube-apiserver"))
            self.etcd = max(self.etcd, self.plane.rss_mib("etcd"))
            now = time.monotonic()
            if now >= next_sample and self.ctl.proc is not None:
                self.samples.append((now - started, self.ctl.memory_kib() / 1024))
                next_sample += self.every


class PodTimes(threading.Thread):
    """When each pod of a namespace was first seen (ADDED) and first seen Succeeded (one watch)."""

    def __init__(self, plane: Plane, namespace: str) -> None:
        super().__init__(daemon=True)
        self.plane, self.namespace = plane, namespace
        self.added: dict[str, float] = {}
        self.finished: dict[str, float] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        from kubernetes import watch

        while not self.stop.is_set():
            w = watch.Watch()
            try:
                for event in w.stream(
                    self.plane.core.list_namespaced_pod,
                    self.namespace,
                    timeout_seconds=5,
                    _preload_content=False,
                ):
                    now = time.monotonic()
                    obj = event["raw_object"]
                    name = obj["metadata"]["name"]
                    self.added.setdefault(name, now)
                    if (obj.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
                        self.finished.setdefault(name, now)
                    if self.stop.is_set():
                        break
            except Exception:  # a dropped watch: start another (times already seen are kept)
                time.sleep(0.2)
            finally:
                w.stop()

    def gaps_ms(self) -> list[float]:
        order = sorted(self.added, key=self.added.__getitem__)
        return [
            (self.added[nxt] - self.finished[prev]) * 1000
            for prev, nxt in itertools.pairwise(order)
            if prev in self.finished
        ]


class ControllerKill(threading.Thread):
    """SIGKILLs the controller once `at` pods have succeeded (seen by a `PodTimes` watch, no
    LIST of 10,000 pods) and starts it again; keeps what the killed process had counted."""

    def __init__(self, ctl: Controller, pods: PodTimes, at: int) -> None:
        super().__init__(daemon=True)
        self.ctl, self.pods, self.at = ctl, pods, at
        self.restarting = threading.Event()
        self.done = threading.Event()
        self.stop = threading.Event()
        self.cpu_ms = 0.0  # the killed process's CPU and requests
        self.requests: dict[str, int] = {}
        self.note = ""

    def run(self) -> None:
        while len(self.pods.finished) < self.at:
            if self.stop.wait(0.5):
                return
        created, finished = len(self.pods.added), len(self.pods.finished)
        self.restarting.set()
        try:
            self.cpu_ms, self.requests = self.ctl.cpu_ms(), self.ctl.kudig_requests()
            self.ctl.kill()
            killed = time.monotonic()
            self.ctl.start()
            self.note = (
                f"controller SIGKILLed at {finished:,} pods succeeded ({created:,} created), "
                f"back (ready) in {time.monotonic() - killed:.1f}s"
            )
        finally:
            self.restarting.clear()
            self.done.set()


class Bench:
    def __init__(self, plane: Plane, tmp: Path, max_tasks: int, rss_every: float = 10.0) -> None:
        self.plane, self.tmp, self.max_tasks, self.rss_every = plane, tmp, max_tasks, rss_every

    def scenario(
        self,
        label: str,
        dig: str,
        tasks: int,
        sessions: int = 1,
        *,
        gaps: bool = False,
        timeout: float = 1800,
        kill_at: float | None = None,
        spec: dict[str, Any] | None = None,
        waves: int = 1,
    ) -> Result:
        """`kill_at`: SIGKILL the controller once this fraction of the tasks succeeded, and start
        it again; `spec`: more of the Workflow's spec (a `history` that deletes finished Sessions:
        then the sessions are done when every Session left is finished); `waves`: start `sessions`
        more once the previous ones are done, as often, in the same controller (between waves the
        pods of deleted Sessions are deleted, as a cluster's garbage collector would)."""
        plane = self.plane
        ns = plane.namespace(f"scale-{uuid.uuid4().hex[:6]}")
        plane.push(ns, write_project(self.tmp / ns, "wf", dig), "wf", spec)
        ctl = Controller(
            plane,
            self.tmp / f"ctl-{ns}",
            env={"KUDIG_TASK_MAX_RUN": str(self.max_tasks), "KUDIG_WORKERS": "8"},
        )
        ctl.start()
        result = Result(label, tasks * sessions * waves, sessions * waves)
        watcher = PodTimes(plane, ns) if gaps or kill_at is not None else None
        killer = (
            ControllerKill(ctl, watcher, max(1, int(tasks * sessions * kill_at)))
            if watcher is not None and kill_at is not None
            else None
        )
        sampler = Sampler(plane, ctl, self.rss_every)
        try:
            plane.wait_workflow(ns, "wf")
            if watcher:
                watcher.start()
            sampler.start()
            time.sleep(1.0)  # the Workflow's own writes settle before counting
            cpu0, kudig0, api0 = ctl.cpu_ms(), ctl.kudig_requests(), plane.request_counts()
            plane0 = {c: proc_cpu_ms(plane.pid(c)) for c in PLANE}
            started = time.monotonic()
            when = [T0 + timedelta(hours=i) for i in range(sessions * waves)]
            if killer is not None:
                killer.start()

            def alive() -> bool:
                if killer is not None and killer.restarting.is_set():
                    return True
                return ctl.proc is not None and ctl.proc.poll() is None

            names: list[str] = []
            collected, gc_seconds = 0, 0.0  # pods of deleted Sessions, deleted between waves
            for wave in range(waves):
                with ThreadPoolExecutor(16) as pool:
                    batch = when[wave * sessions : (wave + 1) * sessions]
                    names += pool.map(lambda t: plane.start(ns, "wf", t), batch)
                phases = self._wait(ns, len(names), timeout, alive, pruned=bool((spec or {}).get("history")))
                if waves > 1:
                    result.notes.append(
                        f"wave {wave + 1}: done at {time.monotonic() - started:.0f}s, controller RSS "
                        f"{ctl.memory_kib() / 1024:.0f} MiB"
                    )
                    gc_started = time.monotonic()
                    collected += self.collect_garbage(ns)
                    gc_seconds += time.monotonic() - gc_started
            result.wall = time.monotonic() - started - gc_seconds  # the benchmark's own GC aside
            time.sleep(1.0)  # the echo of the last status write
            result.plane_cpu_ms = {c: proc_cpu_ms(plane.pid(c)) - plane0[c] for c in PLANE}
            kudig1, api1 = ctl.kudig_requests(), plane.request_counts()
            result.cpu_ms = ctl.cpu_ms() - cpu0
            if killer is not None:
                if not killer.done.is_set():
                    result.notes.append("the controller was never killed: the run ended first")
                else:  # the killed process's counts, then the new one's from zero
                    result.cpu_ms = killer.cpu_ms - cpu0 + ctl.cpu_ms()
                    kudig0 = {k: kudig0.get(k, 0) - v for k, v in killer.requests.items()}
                    result.notes.append(killer.note)
            result.kudig_requests = sum(kudig1.values()) - sum(kudig0.values())
            result.breakdown = {
                k: kudig1.get(k, 0) - kudig0.get(k, 0)
                for k in sorted(set(kudig1) | set(kudig0))
                if kudig1.get(k, 0) != kudig0.get(k, 0)
            }
            result.api_requests = sum(
                v - api0.get(k, 0) for k, v in api1.items() if not k.startswith("WATCH")
            )
            result.status_writes = sum(
                v - api0.get(k, 0)
                for k, v in api1.items()
                if k.split()[0] in ("PATCH", "PUT", "APPLY") and k.split()[1].startswith("sessions")
            )
            result.rss_mib = ctl.memory_kib("VmHWM") / 1024
            failed = [p for p in phases if p != "Succeeded"]
            if failed:
                messages = {
                    (s.get("status") or {}).get("message", "")[:160]
                    for s in plane.sessions(ns)
                    if (s.get("status") or {}).get("phase") != "Succeeded"
                }
                result.outcome = f"{len(failed)} of {len(phases)} not Succeeded: {sorted(messages)[:2]}"
            pods = plane.pods(ns)
            result.pods = len(pods) + collected
            result.reruns = sum(1 for n in pods_per_task(pods).values() if n > 1) if sessions == 1 else 0
            result.session_bytes = self._bytes(ns)
            if killer is not None:
                result.notes.append(
                    f"tasks run twice: {result.reruns}; session phase: {', '.join(sorted(set(phases)))}"
                )
            if spec and spec.get("history"):
                result.notes.append(
                    f"history {spec['history']}: {len(phases)} of {len(names)} Sessions left at the end"
                )
            if watcher and gaps:
                result.gaps_ms = watcher.gaps_ms()
        finally:
            sampler.done.set()
            sampler.join()
            result.api_rss_mib, result.etcd_rss_mib = sampler.api, sampler.etcd
            result.rss_samples = sampler.samples
            if killer is not None:
                killer.stop.set()
            if watcher:
                watcher.stop.set()
            ctl.stop()
            self.clean(ns)
        return result

    def _wait(
        self, ns: str, count: int, timeout: float, alive: Callable[[], bool], pruned: bool = False
    ) -> list[str]:
        """Until the `count` Sessions are finished (`pruned`: every Session left is; history
        deletes only finished ones). The phases of the Sessions left."""
        deadline = time.monotonic() + timeout
        while True:
            phases = [(s.get("status") or {}).get("phase", "") for s in self.plane.sessions(ns)]
            if (pruned or len(phases) == count) and all(p in TERMINAL for p in phases):
                return phases
            if time.monotonic() > deadline:
                raise SystemExit(f"sessions not finished after {timeout:.0f}s: {sorted(set(phases))}")
            if not alive():
                raise SystemExit("the controller exited")
            time.sleep(0.5 if count < 10 else 3.0)  # a LIST of 1,000 sessions is no free probe

    def _bytes(self, ns: str) -> int:
        total = 0
        uids = set()
        for s in self.plane.sessions(ns):
            total += len(json.dumps(s, separators=(",", ":")))
            uids.add(s["metadata"]["uid"])
        response = self.plane.core.list_namespaced_config_map(ns, _preload_content=False)
        for cm in json.loads(response.data)["items"]:
            if any(r.get("uid") in uids for r in cm["metadata"].get("ownerReferences") or []):
                total += len(json.dumps(cm, separators=(",", ":")))
        return total

    def collect_garbage(self, ns: str) -> int:
        """Deletes the pods whose Session is gone, as the garbage collector this plane lacks would;
        how many."""
        left = sorted(s["metadata"]["name"] for s in self.plane.sessions(ns))
        selector = "kudig.io/session" + (f",kudig.io/session notin ({','.join(left)})" if left else "")
        listed = self.plane.core.list_namespaced_pod(ns, label_selector=selector, _preload_content=False)
        count = len(json.loads(listed.data).get("items") or [])
        for _ in range(20):  # the API server deletes a collection within its request timeout (60 s)
            try:
                self.plane.core.delete_collection_namespaced_pod(
                    ns, label_selector=selector, grace_period_seconds=0, _preload_content=False
                )
            except ApiException as e:
                if e.status != 504:
                    raise
                continue  # a 504 after part of them went: delete the rest
            return count
        raise SystemExit(f"the pods of deleted Sessions in {ns} would not go")

    def clean(self, ns: str) -> None:
        """Sessions and pods go (no garbage collector here); the namespace stays (no namespace
        controller either), empty."""
        try:
            self.plane.custom.delete_collection_namespaced_custom_object(
                "kudig.io", "v1alpha1", ns, "sessions"
            )
            self.plane.delete_pods(ns)
        except Exception as e:  # the next scenario has a namespace of its own
            print(f"  (cleanup of {ns}: {e})", file=sys.stderr)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", choices=["fanout", "chain", "sessions", "kill", "history"], action="append")
    parser.add_argument("--fanouts", default="100,1000,10000", help="fan-out sizes (comma-separated)")
    parser.add_argument("--chain", type=int, default=300)
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--per-session", type=int, default=10)
    parser.add_argument("--limit", type=int, default=1000, help="_parallel limit of the fan-outs")
    parser.add_argument("--kill-tasks", type=int, default=10000, help="the fan-out of the kill scenario")
    parser.add_argument("--keep", type=int, default=50, help="history.keep of the history scenario")
    parser.add_argument("--rss-every", type=float, default=10.0, help="seconds between RSS samples")
    parser.add_argument("--waves", type=int, default=2, help="waves of --sessions in the history scenario")
    parser.add_argument("--keep-plane", action="store_true", help="leave the KWOK plane running afterwards")
    args = parser.parse_args()
    only = set(args.only or ["fanout", "chain", "sessions", "kill", "history"])
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # `kill`: the controller stops too

    plane = Plane(  # hack/kwok's own variables choose the plane (a second one beside the default)
        name=os.environ.get("KWOK_NAME", "kwok"), port_base=int(os.environ.get("KWOK_PORT_BASE", "26400"))
    )
    print("starting the KWOK plane (hack/kwok/up; a cold first run builds kwok: ~8 min)", flush=True)
    plane.up()
    tmp = Path(tempfile.mkdtemp(prefix="kudig-scale-"))
    results: list[Result] = []
    # an interrupted run's sessions would be resumed by the next controller and counted with it
    for ns in plane.core.list_namespace().items:
        if ns.metadata.name.startswith("scale-"):
            Bench(plane, tmp, 0).clean(ns.metadata.name)

    def run(bench: Bench, *a: Any, samples: bool = False, **kw: Any) -> None:
        load = os.getloadavg()[0]
        result = bench.scenario(*a, **kw)
        results.append(result)
        print(result.row(), flush=True)
        if result.breakdown:
            print(f"{'':<28}kudig's requests: {result.breakdown}", flush=True)
        if result.plane_cpu_ms:
            t = max(result.tasks, 1)
            print(
                f"{'':<28}CPU ms/task: controller {result.cpu_ms / t:.1f}, "
                + ", ".join(f"{c} {ms / t:.1f}" for c, ms in result.plane_cpu_ms.items()),
                flush=True,
            )
        for note in result.notes:
            print(f"{'':<28}{note}", flush=True)
        if samples:
            print(
                f"{'':<28}controller RSS MiB every {args.rss_every:.0f}s: "
                + " ".join(f"{mib:.0f}" for _, mib in result.rss_samples),
                flush=True,
            )
        print(f"{'':<28}load average (1 min) {load:.1f} before, {os.getloadavg()[0]:.1f} after", flush=True)

    print(HEADER, flush=True)
    try:
        if "fanout" in only:
            for n in (int(x) for x in args.fanouts.split(",") if x):
                run(Bench(plane, tmp, n + 10), f"fan-out {n:,}", fan_out_dig(n, args.limit), n)
        if "chain" in only:
            run(
                Bench(plane, tmp, args.chain + 10),
                f"chain {args.chain}",
                chain_dig(args.chain),
                args.chain,
                gaps=True,
            )
        if "sessions" in only:
            dig = "+p:\n  _parallel: true\n" + "".join(
                f"  +t{i}:\n    sh>: 'true'\n" for i in range(args.per_session)
            )
            run(
                Bench(plane, tmp, 1000),
                f"{args.sessions:,} sessions x {args.per_session}",
                dig,
                args.per_session,
                args.sessions,
            )
        if "kill" in only:
            n = args.kill_tasks
            run(
                Bench(plane, tmp, n + 10),
                f"fan-out {n:,}, ctl killed",
                fan_out_dig(n, args.limit),
                n,
                kill_at=1 / 3,
            )
        if "history" in only:
            dig = "+p:\n  _parallel: true\n" + "".join(
                f"  +t{i}:\n    sh>: 'true'\n" for i in range(args.per_session)
            )
            run(
                Bench(plane, tmp, 1000, args.rss_every),
                f"{args.waves} x {args.sessions:,} x {args.per_session}, keep {args.keep}",
                dig,
                args.per_session,
                args.sessions,
                spec={"history": {"keep": args.keep}},
                waves=args.waves,
                samples=True,
            )
    finally:
        print(
            f"\nKWOK plane: API server peak RSS {max((r.api_rss_mib for r in results), default=0):.0f} MiB, "
            f"etcd {max((r.etcd_rss_mib for r in results), default=0):.0f} MiB; logs in {plane.logs}"
        )
        print("\n" + HEADER + "\n" + "\n".join(r.row() for r in results))
        if not args.keep_plane:
            plane.down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
