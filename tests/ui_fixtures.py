"""Session objects for the UI's tests and benchmarks, in the shape the controller writes them.

`hack/ui-record` records real ones from a cluster (tests/fixtures/ui/recorded); this module builds
Sessions of any size with the controller's status layout (the engine state's task rows, gzip'd
JSON, base64) for what a recording cannot give cheaply: 10,000 tasks, chosen times, a task named
`<script>alert(1)</script>`. `write_fixtures` lays them out as `kudig ui --fixtures DIR` reads.
"""

from __future__ import annotations

import base64
import gzip
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

T0 = 1_706_572_800.0  # 2024-01-30T00:00:00Z


def task(
    id: int,
    name: str,
    parent: int | None,
    upstreams: Iterable[int] = (),
    *,
    group: bool = False,
    state: str = "success",
    config: dict[str, Any] | None = None,
    **times: float | str | None,
) -> dict[str, Any]:
    """One engine task row (`SessionState.to_json()["tasks"][i]`); times as keyword arguments
    (`ready_at=`, `started_at=`, `pod_created_at=`, `running_at=`, `finished_at=`, `pod=`)."""
    row: dict[str, Any] = {
        "id": id,
        "name": name,
        "parent": parent,
        "upstreams": list(upstreams),
        "group": group,
        "config": config or ({} if group else {"sh>": "echo hi"}),
        "state": state,
    }
    row.update({k: v for k, v in times.items() if v is not None})
    return row


def engine_data(tasks: list[dict[str, Any]]) -> str:
    raw = json.dumps({"tasks": tasks, "killed": False}, separators=(",", ":")).encode()
    return base64.b64encode(gzip.compress(raw, mtime=0)).decode()


def session(
    namespace: str,
    name: str,
    workflow: str,
    session_time: str,
    tasks: list[dict[str, Any]],
    *,
    phase: str = "Succeeded",
    params: dict[str, Any] | None = None,
    spec: dict[str, Any] | None = None,
    attempt: int = 1,
) -> dict[str, Any]:
    done = sum(1 for t in tasks if t["state"] == "success" and not t["group"])
    return {
        "apiVersion": "kudig.io/v1alpha1",
        "kind": "Session",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "creationTimestamp": session_time,
            "labels": {"kudig.io/workflow": workflow},
        },
        "spec": {"workflow": workflow, "sessionTime": session_time, "params": params or {}, **(spec or {})},
        "status": {
            "phase": phase,
            "attempt": attempt,
            "progress": f"{done}/{sum(1 for t in tasks if not t['group'])}",
            "attempts": [{"index": attempt, "phase": phase, "startedAt": session_time}],
            "engine": {"encoding": "gzip+base64", "data": engine_data(tasks)},
        },
    }


def chain(
    workflow: str, names: list[str], t0: float = T0, step: float = 10.0, gap: float = 2.0
) -> list[dict[str, Any]]:
    """A root group `+workflow` with tasks run one after another, each `step` s long with the
    given pod start overhead and a `gap` before the next one is ready."""
    rows = [
        task(0, f"+{workflow}", None, group=True, started_at=t0, finished_at=t0 + len(names) * (step + gap))
    ]
    t = t0
    for i, n in enumerate(names, start=1):
        rows.append(
            task(
                i,
                f"+{workflow}+{n}",
                0,
                [i - 1] if i > 1 else [],
                ready_at=t,
                started_at=t + 0.1,
                pod_created_at=t + 0.3,
                running_at=t + 1.0,
                finished_at=t + step,
                pod=f"{workflow}-{i}",
            )
        )
        t += step + gap
    return rows


def big(workflow: str, n: int, width: int = 100, t0: float = T0) -> list[dict[str, Any]]:
    """About `n` tasks: groups run one after another, each of `width` parallel leaves."""
    rows = [task(0, f"+{workflow}", None, group=True, started_at=t0)]
    groups = max(1, n // (width + 1))
    next_id = 1
    prev: int | None = None
    for g in range(groups):
        gid = next_id
        next_id += 1
        rows.append(
            task(
                gid,
                f"+{workflow}+g{g}",
                0,
                [prev] if prev is not None else [],
                group=True,
                config={"_parallel": True},
                started_at=t0 + g * 5,
            )
        )
        for j in range(width):
            s = t0 + g * 5 + j * 0.01
            rows.append(
                task(
                    next_id,
                    f"+{workflow}+g{g}+t{j}",
                    gid,
                    ready_at=s,
                    started_at=s + 0.1,
                    pod_created_at=s + 0.2,
                    running_at=s + 1,
                    finished_at=s + 4,
                )
            )
            next_id += 1
        prev = gid
    return rows


def write_fixtures(
    root: Path, objects: Iterable[dict[str, Any]], logs: dict[tuple[str, str], str] | None = None
) -> Path:
    """Lay objects out as `kudig ui --fixtures` reads them (kind from `kind`)."""
    kinds = {"Session": "sessions", "Workflow": "workflows", "ConfigMap": "configmaps", "Pod": "pods"}
    for obj in objects:
        meta = obj["metadata"]
        path = root / meta["namespace"] / kinds[obj["kind"]] / f"{meta['name']}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(obj))
    for (ns, pod), text in (logs or {}).items():
        (root / ns / "logs").mkdir(parents=True, exist_ok=True)
        (root / ns / "logs" / f"{pod}.log").write_text(text)
    return root


def pod(
    namespace: str, name: str, session_name: str, task_name: str, phase: str = "Succeeded"
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"kudig.io/session": session_name},
            "annotations": {"kudig.io/task": task_name},
            "creationTimestamp": "2024-01-30T00:00:01Z",
        },
        "status": {"phase": phase},
    }


def demo(root: Path, big_tasks: int = 0) -> Path:
    """A small world for the UI's tests: namespace `team-a` with a scheduled `etl` workflow (its
    files and ten daily sessions, one failed, one running with a live pod and log), namespace
    `team-b` with a session whose task is named `<script>alert(1)</script>`, and with `big_tasks`
    a session `big-1` of that many tasks in `team-a`."""
    ns = "team-a"
    objs: list[dict[str, Any]] = []
    logs: dict[tuple[str, str], str] = {}
    for d in range(10, 20):
        name = f"etl-{d}"
        tasks = chain("etl", ["extract", "transform", "load"], t0=T0 + (d - 10) * 86400)
        for t in tasks[1:]:
            t["pod"] = f"{name}-{t['id']}"
        phase = "Succeeded"
        if d == 12:
            phase = "Failed"
            tasks[2].update(state="error", error={"message": "transform failed: exit code 1"})
            tasks[3].update(
                state="blocked", finished_at=None, running_at=None, pod_created_at=None, started_at=None
            )
        if d == 19:
            phase = "Running"
            tasks[2].update(state="running", finished_at=None)
            tasks[3].update(
                state="blocked", finished_at=None, running_at=None, pod_created_at=None, started_at=None
            )
        objs.append(
            session(
                ns,
                name,
                "etl",
                f"2024-01-{d}T00:00:00+09:00",
                tasks,
                phase=phase,
                params={"day": d, "db_password": "hunter2"},
                spec={"scheduled": True},
            )
        )
        for t in tasks[1:]:
            if t.get("started_at") is not None:
                running = phase == "Running" and t["state"] == "running"
                objs.append(pod(ns, t["pod"], name, t["name"], phase="Running" if running else "Succeeded"))
                logs[(ns, t["pod"])] = "".join(f"{t['name']} line {i}\n" for i in range(3))
    objs.append(
        {
            "apiVersion": "kudig.io/v1alpha1",
            "kind": "Workflow",
            "metadata": {"name": "etl", "namespace": ns, "generation": 3},
            "spec": {
                "dig": "timezone: Asia/Tokyo\nschedule:\n  daily>: 07:00:00\n\n+extract:\n  sh>: scripts/run.sh extract\n"
                "+transform:\n  py>: tasks.transform\n+load:\n  sh>: echo ${session_date}\n",
                "project": {"configMaps": ["etl-files"]},
            },
            "status": {
                "revision": 3,
                "workflowName": "etl",
                "timezone": "Asia/Tokyo",
                "schedule": "daily>: 07:00:00",
            },
        }
    )
    objs.append(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "etl-files", "namespace": ns},
            "data": {
                "etl.dig": "+extract:\n  sh>: echo hi\n",
                "scripts_.run.sh": '#!/bin/sh\necho run "$1"\n',
            },
        }
    )
    xss = "<script>alert(1)</script>"
    objs.append(
        session(
            "team-b", "other-1", "other", "2024-01-15T12:00:00+00:00", chain("other", [xss]), phase="Failed"
        )
    )
    if big_tasks:
        objs.append(session(ns, "big-1", "big", "2024-01-30T00:00:00+00:00", big("big", big_tasks)))
    return write_fixtures(root, objs, logs)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="write the UI's demo fixtures (kudig ui --fixtures DIR)")
    parser.add_argument("dir")
    parser.add_argument("--big", type=int, default=0, help="also a session of this many tasks")
    args = parser.parse_args()
    print(demo(Path(args.dir), args.big))
