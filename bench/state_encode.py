"""What persisting a Session's engine state costs per reconcile, before and after chunking (#18).

A fan-out session of N tasks (100, 1,000, 10,000) where every task stored 1 KiB of params
(random letters: close to the worst case for gzip), in one process, no cluster:

* after (today's `kudig_operator.results`): the first write (every row), then a reconcile that
  changes one row (a random one each time): encode ms, decode ms (a controller that did not
  write the state itself: cold, parsing every chunk), the Session status bytes
  (`status.engine.data`), the live chunk ConfigMap bytes, ConfigMap bytes written per
  reconcile, and what `kudig tasks` spends on its side (decoding the list of chunk ConfigMaps
  as the API server sends it, turning them into rows: cold, then with the chunks parsed before;
  the API server's time to send ~10 MiB is not in it);
* before (`results.py` of commit BEFORE, read with git): the same reconcile, which serialised
  and gzip'd every row each time;
* the chunk size: the same reconcile at 10,000 tasks with 16 to 128 rows a chunk.

Times are CPU ms of this process (the machine may be shared).

    python bench/state_encode.py [--sizes 100,1000,10000] [--seconds 1.0] [--no-before]
    KUBECONFIG=~/.cache/kudig/cluster/kubeconfig python bench/state_encode.py --cluster 10000

`--cluster N` also times the real `kudig tasks` (a fresh process, wall time) on a Session of N
such tasks written into a scratch namespace of the cluster (no controller needed; the namespace
is deleted afterwards). Run it holding the e2e lock on the shared test cluster.

The issue's budgets: the Session < 1 MiB at 10,000 tasks of 1 KiB each, and an encode with one
changed row at 10,000 tasks within ~1.5x of that at 100.
"""

from __future__ import annotations

import argparse
import base64
import json
import random
import statistics
import string
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "operator")]

from kudig_operator import results  # noqa: E402

from kudig import sessionread  # noqa: E402
from kudig.engine.state import SessionState, Task, TaskState  # noqa: E402

BEFORE = "06d0233"  # main before chunking: the whole state gzip'd into the status each time
SESSION = "bench-session"


def fan_out(n: int, seed: int = 7) -> SessionState:
    rnd = random.Random(seed)
    root = Task(
        id=0, name="+wf", parent=None, upstreams=[], is_group=True, config={}, state=TaskState.PLANNED
    )
    loop = Task(
        id=1, name="+wf+loop", parent=0, upstreams=[], is_group=True, config={}, state=TaskState.PLANNED
    )
    tasks = [root, loop]
    for i in range(2, n):
        tasks.append(
            Task(
                id=i,
                name=f"+wf+loop^sub+for-0={i}",
                parent=1,
                upstreams=[],
                is_group=False,
                config={"sh>": f"echo {i}", "_type": "sh", "_command": f"echo {i}"},
                state=TaskState.SUCCESS,
                batch=2,
                state_params={"_retry": None},
                store_params={"out": "".join(rnd.choices(string.ascii_letters, k=1024))},
                ready_at=1.7e9 + i * 0.01,
                started_at=1.7e9 + i * 0.01,
                finished_at=1.7e9 + i * 0.01 + 0.2,
            )
        )
        loop.children.append(i)
    root.children.append(1)
    return SessionState(tasks)


def before_module() -> types.ModuleType | None:
    try:
        src = subprocess.check_output(
            ["git", "show", f"{BEFORE}:operator/kudig_operator/results.py"],
            cwd=ROOT,
            stderr=subprocess.DEVNULL,
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    mod = types.ModuleType("results_before")
    sys.modules[mod.__name__] = mod
    exec(compile(src, "results_before.py", "exec"), mod.__dict__)
    return mod


def reconciles(
    encode: Any, state: SessionState, memo: Any, seconds: float, store: dict[str, bytes]
) -> tuple[float, str, int, Any]:
    """Mean ms of an encode after one row changed; the last blob, ConfigMap bytes written per
    reconcile (kept in `store`), and the memo."""
    rnd = random.Random(1)
    times: list[float] = []
    written = 0
    blob = ""
    deadline = time.process_time() + seconds
    while time.process_time() < deadline or len(times) < 3:
        task = state.tasks[rnd.randrange(2, len(state.tasks))]
        task.finished_at = (task.finished_at or 0) + 1.0
        t0 = time.process_time()
        blob, blobs, memo = encode(state, SESSION, memo)
        times.append((time.process_time() - t0) * 1000)
        written += sum(len(b.data) for b in blobs)
        store.update((b.name, b.data) for b in blobs)
    return statistics.mean(times), blob, written // len(times), memo


def after_row(n: int, seconds: float) -> dict[str, Any]:
    state = fan_out(n)
    t0 = time.process_time()
    blob, blobs, memo = results.encode(state, SESSION)
    first = (time.process_time() - t0) * 1000
    store = {b.name: b.data for b in blobs}
    mean, blob, written, memo = reconciles(results.encode, state, memo, seconds, store)
    data = results.decode_json(blob)
    live = {n: store[n] for n in results.refs(data)}  # (replaced chunks: deleted after the commit)
    results.forget_parsed()
    t0 = time.process_time()
    decoded, _ = results.decode(data, live)
    decode_ms = (time.process_time() - t0) * 1000
    assert decoded.to_json() == state.to_json()
    obj = {"status": {"engine": {"data": blob}}}
    # `kudig tasks`: the Session, one list of its ConfigMaps by label (the response decoded
    # here from JSON as the client does), the rows
    listed = json.dumps(
        {
            "items": [
                {"metadata": {"name": n}, "binaryData": {results.DATA_KEY: base64.b64encode(b).decode()}}
                for n, b in live.items()
            ]
        }
    ).encode()
    sessionread._CHUNKS.clear()
    t0 = time.process_time()
    cms = {cm["metadata"]["name"]: cm for cm in json.loads(listed)["items"]}
    rows = sessionread.task_rows(obj, {n: sessionread.blob_of(cms[n]) for n in sessionread.blob_refs(obj)})
    tasks_cold = (time.process_time() - t0) * 1000
    t0 = time.process_time()
    cms = {cm["metadata"]["name"]: cm for cm in json.loads(listed)["items"]}
    sessionread.task_rows(obj, {n: sessionread.blob_of(cms[n]) for n in sessionread.blob_refs(obj)})
    tasks_warm = (time.process_time() - t0) * 1000
    assert len(rows) == n
    return {
        "first": first,
        "encode": mean,
        "decode": decode_ms,
        "status": len(blob),
        "chunks": sum(map(len, live.values())),
        "chunk_cms": len(live),
        "written": written,
        "tasks_cold": tasks_cold,
        "tasks_warm": tasks_warm,
    }


def before_row(mod: types.ModuleType, n: int, seconds: float) -> dict[str, Any]:
    state = fan_out(n)
    blob, _blobs, memo = mod.encode(state, SESSION)
    mean, blob, _written, memo = reconciles(mod.encode, state, memo, seconds, {})
    return {
        "encode": mean,
        "status": len(blob),
        "cms": sum(len(b.data) for b in mod.encode(state, SESSION)[1]),
    }


def cluster_tasks(n: int) -> None:
    import os
    from datetime import UTC, datetime

    from kudig_operator.crdgen import install

    from kudig.api import (
        LABEL_RESULT,
        LABEL_SESSION,
        MANAGED_BY,
        MANAGER,
        SESSIONS,
        label_value,
        session_manifest,
    )
    from kudig.cluster.kube import Kube

    kube, _ = Kube.from_kubeconfig()
    install(kube.core.api_client)
    namespace = f"kudig-bench-state-{os.getpid()}"
    kube.core.create_namespace({"metadata": {"name": namespace}})
    try:
        body = session_manifest("bench", datetime(2024, 1, 30, tzinfo=UTC))
        name = body["metadata"]["name"]
        session = kube.create(SESSIONS, namespace, body)
        blob, blobs, _ = results.encode(fan_out(n), name)
        labels = {MANAGED_BY: MANAGER, LABEL_SESSION: label_value(name), LABEL_RESULT: "true"}
        for b in blobs:
            kube.create_config_map(
                namespace, results.config_map(b, namespace=namespace, owner=session, labels=labels)
            )
        kube.replace_status(SESSIONS, {**session, "status": {"phase": "Running", "engine": {"data": blob}}})
        walls = []
        for _ in range(3):
            t0 = time.perf_counter()
            out = subprocess.run(
                [sys.executable, "-m", "kudig.cli", "tasks", name, "-n", namespace],
                capture_output=True,
                text=True,
                check=True,
                cwd=ROOT,
            )
            walls.append(time.perf_counter() - t0)
            assert out.stdout.count("\n") >= n, out.stdout[-500:]
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import kudig.cli"], check=True, cwd=ROOT)
        start = time.perf_counter() - t0
        print(
            f"kudig tasks on the cluster, {n:,} tasks ({len(blobs)} ConfigMaps): {min(walls):.2f} s wall"
            f" (best of 3; {start:.2f} s of it starting Python and importing the CLI)"
        )
    finally:
        kube.core.delete_namespace(namespace)


def kib(n: float) -> str:
    return f"{n / 1024:,.0f} KiB" if n >= 1024 else f"{n:,.0f} B"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="100,1000,10000")
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--no-before", action="store_true")
    parser.add_argument("--cluster", type=int, metavar="N", help="time `kudig tasks` on a cluster")
    args = parser.parse_args()
    if args.cluster:
        cluster_tasks(args.cluster)
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    print(
        f"fan-out, 1 KiB stored per task; {results.CHUNK_ROWS} rows a chunk, {kib(results.INLINE_BYTES)} inline"
    )
    print("after: one changed row per reconcile")
    print(
        f"{'tasks':>7} {'encode ms':>10} {'first ms':>9} {'decode ms':>10} {'status':>10} {'chunks':>10}"
        f" {'chunk CMs':>9} {'CM B/rec':>9} {'tasks cold ms':>13} {'warm ms':>8}"
    )
    base = None
    for n in sizes:
        r = after_row(n, args.seconds)
        base = base or r["encode"]
        print(
            f"{n:>7,} {r['encode']:>10.2f} {r['first']:>9.0f} {r['decode']:>10.0f} {kib(r['status']):>10}"
            f" {kib(r['chunks']):>10} {r['chunk_cms']:>9} {kib(r['written']):>9}"
            f" {r['tasks_cold']:>13.0f} {r['tasks_warm']:>8.1f}   ({r['encode'] / base:.2f}x of {sizes[0]:,})"
        )
    mod = None if args.no_before else before_module()
    if mod is not None:
        print(f"before ({BEFORE}): one changed row per reconcile")
        print(f"{'tasks':>7} {'encode ms':>10} {'status':>10} {'result CMs':>10}")
        for n in sizes:
            r = before_row(mod, n, args.seconds)
            print(f"{n:>7,} {r['encode']:>10.2f} {kib(r['status']):>10} {kib(r['cms']):>10}")
    n = max(sizes)
    print(f"chunk size at {n:,} tasks: one changed row per reconcile")
    print(f"{'rows':>5} {'encode ms':>10} {'status':>10} {'CM B/rec':>9}")
    default = results.CHUNK_ROWS
    for rows in (16, 32, 64, 128):
        results.CHUNK_ROWS = rows
        r = after_row(n, args.seconds / 2)
        print(f"{rows:>5} {r['encode']:>10.2f} {kib(r['status']):>10} {kib(r['written']):>9}")
    results.CHUNK_ROWS = default


if __name__ == "__main__":
    main()
