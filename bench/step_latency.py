"""Step latency of the operator on a real cluster: a sequential chain of trivial tasks.

Starts the controller (as a local process against KUBECONFIG, like the e2e tests), pushes a
workflow of N sequential `sh>: true` tasks and watches its pods. For each step it measures the
gap between the moment a pod is seen finished and the moment the next pod is seen created (one
watch, one clock, millisecond resolution), and the session's makespan divided by the sum of pod
run times (1.0 would be no overhead at all).

    KUBECONFIG=~/.cache/kudig/cluster/kubeconfig python bench/step_latency.py [--tasks 30]

Targets (issue #4): median gap under 200 ms, p95 under 1 s.
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", type=int, default=30)
    parser.add_argument("--image", default="localhost/kudig/runner:dev", help="runner image")
    parser.add_argument("--task-image", default=None, help="image of the chain's tasks (default: runner)")
    args = parser.parse_args()

    from benchcluster import Cluster
    from kubernetes import watch

    from kudig.cluster.project import build_objects
    from kudig.naming import session_name

    cluster = Cluster()
    core, custom = cluster.core, cluster.custom
    ns = cluster.namespace()
    tmp = Path(tempfile.mkdtemp(prefix="kudig-bench-"))
    image = f"_export:\n  docker:\n    image: {args.task_image}\n" if args.task_image else ""
    (tmp / "chain.dig").write_text(image + "".join(f"+t{i:03d}:\n  sh>: 'true'\n" for i in range(args.tasks)))
    env = dict(
        os.environ,
        KUDIG_RUNNER_IMAGE=args.image,
        KUDIG_NAMESPACE=ns,
        KUDIG_CACHE_DIR=str(tmp / "cache"),
        KUDIG_HEALTH_ADDRESS="127.0.0.1:0",
        PYTHONPATH=os.pathsep.join([str(ROOT / "operator"), str(ROOT / "runner"), str(ROOT)]),
    )
    log = (tmp / "operator.log").open("wb")
    operator = subprocess.Popen([sys.executable, "-m", "kudig_operator"], env=env, stdout=log, stderr=log)
    seen_created: dict[str, float] = {}
    seen_done: dict[str, float] = {}
    stop = threading.Event()

    def watch_pods() -> None:
        w = watch.Watch()
        for event in w.stream(core.list_namespaced_pod, ns, timeout_seconds=600):
            now = time.monotonic()
            pod = event["object"]
            name = pod.metadata.name
            seen_created.setdefault(name, now)
            if pod.status.phase in ("Succeeded", "Failed") and name not in seen_done:
                seen_done[name] = now
            if stop.is_set():
                w.stop()

    watcher = threading.Thread(target=watch_pods, daemon=True)
    watcher.start()
    try:
        for obj in build_objects(tmp, "chain", ns):
            if obj["kind"] == "ConfigMap":
                core.create_namespaced_config_map(ns, obj)
            else:
                custom.create_namespaced_custom_object("kudig.io", "v1alpha1", ns, "workflows", obj)
        from datetime import datetime

        when = "2024-01-30T00:00:00+00:00"
        name = session_name("chain", datetime.fromisoformat(when))
        t0 = time.monotonic()
        custom.create_namespaced_custom_object(
            "kudig.io",
            "v1alpha1",
            ns,
            "sessions",
            {
                "apiVersion": "kudig.io/v1alpha1",
                "kind": "Session",
                "metadata": {"name": name},
                "spec": {"workflow": "chain", "sessionTime": when},
            },
        )
        deadline = time.monotonic() + 60 + 10 * args.tasks
        phase = None
        while time.monotonic() < deadline:
            obj: Any = custom.get_namespaced_custom_object("kudig.io", "v1alpha1", ns, "sessions", name)
            phase = (obj.get("status") or {}).get("phase")
            if phase in ("Succeeded", "Failed", "Killed"):
                break
            time.sleep(0.05)
        makespan = time.monotonic() - t0
        stop.set()
        if phase != "Succeeded":
            print(f"session ended {phase}; operator log: {tmp / 'operator.log'}")
            return 1
        time.sleep(0.5)  # let the watcher catch the last event
        pods = sorted(core.list_namespaced_pod(ns).items, key=lambda p: seen_created.get(p.metadata.name, 0))
        order = [p.metadata.name for p in pods]
        gaps = [seen_created[b] - seen_done[a] for a, b in itertools.pairwise(order)]
        runtimes = [seen_done[n] - seen_created[n] for n in order]
        gaps_ms = sorted(g * 1000 for g in gaps)
        p95 = gaps_ms[max(0, round(0.95 * len(gaps_ms)) - 1)]
        print(
            f"tasks={len(order)}  gap median={statistics.median(gaps_ms):.0f}ms  p95={p95:.0f}ms  "
            f"max={gaps_ms[-1]:.0f}ms  pod runtime median={statistics.median(runtimes) * 1000:.0f}ms  "
            f"makespan={makespan:.1f}s  makespan/sum(pod runtimes)={makespan / sum(runtimes):.2f}"
        )
        return 0
    finally:
        stop.set()
        operator.terminate()
        try:
            operator.wait(timeout=20)
        except subprocess.TimeoutExpired:
            operator.kill()
        core.delete_namespace(ns)


if __name__ == "__main__":
    sys.exit(main())
