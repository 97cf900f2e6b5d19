#!/usr/bin/env python3
"""Pod start-up latency of the test cluster, and the memory of its control plane.

Creates N (default 50) busybox pods one after the other (``sh -c 'echo hello'``, restartPolicy Never;
``--command`` changes it) and,
from a watch, times for each:

* create -> Running    the pod create call until the first watch event with phase Running (or, for
                       a pod whose container exited before the kubelet reported Running, Succeeded)
* create -> Succeeded  the create call until the watch event with phase Succeeded

and prints p50/p95/max of both, then the resident memory (RSS) of the processes hack/cluster/up
started (from their pid files; shown only for that cluster).

    python3 bench/pod_latency.py [--pods 50] [--image docker.io/library/busybox:1.35] [--json]

Uses KUBECONFIG (default: hack/cluster's ~/.cache/kudig/cluster/kubeconfig).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

CLUSTER_DIR = Path.home() / ".cache" / "kudig" / "cluster"
COMPONENTS = [
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubelet",
    "kube-proxy",
    "containerd",
]


def percentile(values: list[float], p: float) -> float:
    s = sorted(values)
    k = (len(s) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def pss_kib(pid: int) -> int | None:
    """Proportional set size: shared pages (the one kube binary all components run) counted once."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def control_plane_memory(measure: object = rss_kib) -> dict[str, int]:
    """RSS (or PSS) in KiB of each component hack/cluster/up started (empty for other clusters)."""
    out: dict[str, int] = {}
    for comp in COMPONENTS:
        f = CLUSTER_DIR / "pids" / f"{comp}.pid"
        if f.exists():
            kib = measure(int(f.read_text().strip()))  # type: ignore[operator]
            if kib is not None:
                out[comp] = kib
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pods", type=int, default=50)
    ap.add_argument(
        "--image", default=os.environ.get("KUDIG_E2E_BUSYBOX_IMAGE", "docker.io/library/busybox:1.35")
    )
    ap.add_argument(
        "--command",
        default="echo hello",
        help="shell command of each pod (e.g. 'echo hello; sleep 1' to see phase Running)",
    )
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds one pod may take")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    args = ap.parse_args()

    from kubernetes import client, config, watch

    if not os.environ.get("KUBECONFIG") and (CLUSTER_DIR / "kubeconfig").exists():
        os.environ["KUBECONFIG"] = str(CLUSTER_DIR / "kubeconfig")
    config.load_kube_config(config_file=os.environ.get("KUBECONFIG"))
    core = client.CoreV1Api()

    ns = f"kudig-bench-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    deadline = time.monotonic() + 60
    while True:  # pods are refused until the namespace's default ServiceAccount exists
        try:
            core.read_namespaced_service_account("default", ns)
            break
        except client.ApiException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)

    running: list[float] = []
    succeeded: list[float] = []
    seen_running = 0
    try:
        for i in range(args.pods):
            name = f"p{i:03d}"
            body = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name},
                "spec": {
                    "restartPolicy": "Never",
                    "terminationGracePeriodSeconds": 0,
                    "automountServiceAccountToken": False,
                    "containers": [
                        {"name": "main", "image": args.image, "command": ["sh", "-c", args.command]}
                    ],
                },
            }
            t0 = time.monotonic()
            created = core.create_namespaced_pod(ns, body)
            t_run = t_done = None
            w = watch.Watch()
            for ev in w.stream(
                core.list_namespaced_pod,
                ns,
                field_selector=f"metadata.name={name}",
                resource_version=created.metadata.resource_version,
                timeout_seconds=int(args.timeout),
            ):
                phase = ev["object"].status.phase
                now = time.monotonic()
                if phase == "Running" and t_run is None:
                    t_run = now
                    seen_running += 1
                if phase == "Succeeded":
                    t_done = now
                    t_run = t_run or now
                    w.stop()
                elif phase == "Failed":
                    w.stop()
                    raise SystemExit(f"pod {ns}/{name} failed: {ev['object'].status}")
            if t_done is None:
                raise SystemExit(f"pod {ns}/{name} did not succeed within {args.timeout}s")
            running.append(t_run - t0)
            succeeded.append(t_done - t0)
            core.delete_namespaced_pod(name, ns, grace_period_seconds=0)
            if not args.json:
                print(
                    f"  {name}: running {running[-1]:.2f}s  succeeded {succeeded[-1]:.2f}s", file=sys.stderr
                )
    finally:
        core.delete_namespace(ns, grace_period_seconds=0)

    mem = control_plane_memory()
    pss = control_plane_memory(pss_kib)
    result = {
        "pods": args.pods,
        "create_to_running_s": {
            "p50": percentile(running, 50),
            "p95": percentile(running, 95),
            "max": max(running),
            "mean": statistics.fmean(running),
        },
        "create_to_succeeded_s": {
            "p50": percentile(succeeded, 50),
            "p95": percentile(succeeded, 95),
            "max": max(succeeded),
            "mean": statistics.fmean(succeeded),
        },
        "pods_seen_running": seen_running,
        "control_plane_rss_mib": {k: round(v / 1024, 1) for k, v in mem.items()},
        "control_plane_rss_total_mib": round(sum(mem.values()) / 1024, 1),
        "control_plane_pss_mib": {k: round(v / 1024, 1) for k, v in pss.items()},
        "control_plane_pss_total_mib": round(sum(pss.values()) / 1024, 1),
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    r, s = result["create_to_running_s"], result["create_to_succeeded_s"]
    print(f"{args.pods} sequential pods ({args.image}, `{args.command}`):")
    print(
        f"  create -> Running    p50 {r['p50']:.2f}s  p95 {r['p95']:.2f}s  max {r['max']:.2f}s"
        f"  ({seen_running} of {args.pods} seen in phase Running; the rest went straight to Succeeded)"
    )
    print(f"  create -> Succeeded  p50 {s['p50']:.2f}s  p95 {s['p95']:.2f}s  max {s['max']:.2f}s")
    if mem:
        print("control plane memory:            RSS        PSS (shared pages split)")
        for k, v in result["control_plane_rss_mib"].items():
            print(f"  {k:<24} {v:8.1f} MiB {result['control_plane_pss_mib'].get(k, 0.0):8.1f} MiB")
        print(
            f"  {'total':<24} {result['control_plane_rss_total_mib']:8.1f} MiB"
            f" {result['control_plane_pss_total_mib']:8.1f} MiB"
        )
    else:
        print("control plane memory: not a hack/cluster cluster (no pid files); not measured")
    return 0


if __name__ == "__main__":
    sys.exit(main())
