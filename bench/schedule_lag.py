"""Schedule lag and idle cost of the controller on a real cluster.

Runs the controller as a local process against KUBECONFIG (watching one fresh namespace) with
N scheduled Workflows (default 1,000; `daily>`, so they are idle) plus a few `minutes_interval>: 1`
Workflows whose task is a pod. It prints:

* the controller's idle CPU (% of one core) while it holds the N schedules;
* for each scheduled run of the minute Workflows: the lag from the run time to the moment the
  Session appeared (a watch, this process's clock) and to the moment its first pod appeared,
  p50/p95 over all runs.

    KUBECONFIG=~/.cache/kudig/cluster/kubeconfig python bench/schedule_lag.py [--workflows 1000] [--minutes 2]

Targets (issue #8): p95 lag under 1 s; idle CPU under 2 % of a core at 1,000 Workflows.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workflows", type=int, default=1000, help="idle scheduled Workflows")
    parser.add_argument("--minute-workflows", type=int, default=5, help="Workflows scheduled every minute")
    parser.add_argument("--minutes", type=int, default=2, help="minutes of scheduled runs to measure")
    parser.add_argument("--image", default="localhost/kudig/runner:dev", help="runner image")
    args = parser.parse_args()

    from benchcluster import Cluster
    from controller_cost import Controller
    from kubernetes import watch

    from kudig.api import encode_key, project_digest

    cluster = Cluster()
    core, custom = cluster.core, cluster.custom
    ns = cluster.namespace()
    tmp = Path(tempfile.mkdtemp(prefix="kudig-lag-"))

    def workflow(name: str, dig: str) -> None:
        key = encode_key(f"{name}.dig")
        core.create_namespaced_config_map(ns, {"metadata": {"name": f"{name}-files"}, "data": {key: dig}})
        custom.create_namespaced_custom_object(
            "kudig.io",
            "v1alpha1",
            ns,
            "workflows",
            {
                "apiVersion": "kudig.io/v1alpha1",
                "kind": "Workflow",
                "metadata": {"name": name},
                "spec": {
                    "name": name,
                    "dig": dig,
                    "project": {
                        "configMaps": [f"{name}-files"],
                        "digest": project_digest([(key, dig.encode())]),
                    },
                },
            },
        )

    seen_sessions: dict[str, float] = {}
    seen_pods: dict[str, float] = {}
    stop = threading.Event()

    def watch_objects(kind: str) -> None:
        w = watch.Watch()
        stream: Any
        if kind == "sessions":
            stream = w.stream(
                custom.list_namespaced_custom_object,
                "kudig.io",
                "v1alpha1",
                ns,
                "sessions",
                timeout_seconds=3600,
            )
        else:
            stream = w.stream(core.list_namespaced_pod, ns, timeout_seconds=3600)
        for event in stream:
            now = time.time()
            obj = event["object"]
            if kind == "sessions":
                seen_sessions.setdefault(obj["metadata"]["name"], now)
            else:
                session = (obj.metadata.labels or {}).get("kudig.io/session")
                if session:
                    seen_pods.setdefault(session, now)
            if stop.is_set():
                w.stop()

    ctl = None
    try:
        t0 = time.monotonic()
        for i in range(args.workflows):
            workflow(f"idle{i:04d}", "schedule:\n  daily>: 07:00:00\n+t:\n  echo>: ${session_date}\n")
        print(
            f"created {args.workflows} idle scheduled Workflows in {time.monotonic() - t0:.0f}s", flush=True
        )
        ctl = Controller(ns, tmp, args.image, "lag")
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:  # every Workflow compiled and scheduled
            items = custom.list_namespaced_custom_object("kudig.io", "v1alpha1", ns, "workflows")["items"]
            if sum(1 for o in items if (o.get("status") or {}).get("nextRunTime")) >= args.workflows:
                break
            time.sleep(2)
        time.sleep(5)
        cpu0, wall0 = ctl.cpu_ms(), time.monotonic()
        time.sleep(60)
        idle = (ctl.cpu_ms() - cpu0) / ((time.monotonic() - wall0) * 1000) * 100
        print(f"idle CPU with {args.workflows} scheduled Workflows: {idle:.2f} % of a core", flush=True)

        for kind in ("sessions", "pods"):
            threading.Thread(target=watch_objects, args=(kind,), daemon=True).start()
        time.sleep(2)
        for i in range(args.minute_workflows):
            workflow(f"minute{i}", "schedule:\n  minutes_interval>: 1\n+t:\n  sh>: 'true'\n")
        now = datetime.now(UTC)
        end = now.timestamp() - now.second - now.microsecond / 1e6 + 60 * (args.minutes + 1) + 20
        while time.time() < end:
            time.sleep(1)
        stop.set()
        session_lags, pod_lags = [], []
        for name, seen in seen_sessions.items():
            if not name.startswith("minute"):
                continue
            stamp = datetime.strptime(name.rsplit("-", 1)[1], "%Y%m%dt%H%M%S").replace(tzinfo=UTC).timestamp()
            session_lags.append(seen - stamp)
            if name in seen_pods:
                pod_lags.append(seen_pods[name] - stamp)

        def p95(values: list[float]) -> float:
            return sorted(values)[max(0, round(0.95 * len(values)) - 1)]

        if session_lags:
            print(
                f"schedule lag over {len(session_lags)} runs: run time -> Session p50 "
                f"{statistics.median(session_lags) * 1000:.0f} ms, p95 {p95(session_lags) * 1000:.0f} ms; "
                f"-> first pod p50 {statistics.median(pod_lags) * 1000:.0f} ms, p95 {p95(pod_lags) * 1000:.0f} ms"
            )
        else:
            print("no scheduled run seen")
            return 1
        return 0
    finally:
        stop.set()
        if ctl is not None:
            ctl.stop()
        core.delete_namespace(ns)


if __name__ == "__main__":
    sys.exit(main())
