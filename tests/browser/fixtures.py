"""Fixture directories for `kudig ui --fixtures`, generated with the real compiler and engine.

A `.dig` text is compiled (`kudig.compiler`) and its session driven by the real `Engine` on a
simulated clock: every work task gets a pod that is created, starts and finishes after
deterministic (name-seeded) delays, `sh>: fail...` fails, and a session can be stopped mid-run
(`until=`) to leave tasks running. The engine's own task rows (`SessionState.to_json()`, what the
controller stores) get the pod time stamps the controller adds (`ready_at`, `pod_created_at`,
`running_at`, `pod`), and are stored as the controller stores them (gzip'd JSON, base64) in a
Session object; Workflow objects, task Pods and their logs complete the directory
(`DIR/NAMESPACE/{sessions,workflows,pods}/NAME.json`, `DIR/NAMESPACE/logs/POD.log`).
"""

from __future__ import annotations

import base64
import gzip
import heapq
import json
import random
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from kudig.compiler import compile_workflow
from kudig.engine.core import Engine, Event, SessionContext, StartTask, TaskFailed, TaskSucceeded
from kudig.expr import TemplateEngine
from kudig.yamlload import load_dig_text

XSS = "<script>alert(1)</script>"

ETL_DIG = f"""\
timezone: Asia/Tokyo
schedule:
  daily>: 02:00:00
_export:
  orders: 30
  db_password: hunter2-not-shown
+extract:
  sh>: echo extract ${{session_date}} ${{orders}}
+transform:
  _parallel: true
  +clean:
    sh>: echo clean
  +probe:
    sh>: echo "{XSS}"
  +enrich:
    sh>: echo enrich
+load:
  sh>: echo load
+report:
  sh>: echo report
"""

FAILING_DIG = """\
timezone: Asia/Tokyo
+extract:
  sh>: echo extract
+load:
  _retry: 1
  sh>: 'fail "load: connection refused (db.example:5432) <img src=x onerror=alert(2)>"'
+report:
  sh>: echo report
"""

REPORT_DIG = """\
timezone: UTC
schedule:
  hourly>: 00:00
+query:
  sh>: echo query
+publish:
  sh>: echo publish
"""


def fanout_dig(n: int) -> str:
    """A for_range> fan-out of `n` tasks (the engine expands it into groups of children)."""
    return f"""\
timezone: UTC
+prepare:
  sh>: echo prepare
+fan:
  for_range>:
    from: 0
    to: {n}
    step: 1
  _parallel: true
  _do:
    sh>: echo ${{range.index}}
+finish:
  sh>: echo finish
"""


_EVALUATOR: TemplateEngine | None = None


def _evaluator() -> TemplateEngine:
    global _EVALUATOR
    if _EVALUATOR is None:
        _EVALUATOR = TemplateEngine()
    return _EVALUATOR


@dataclass
class Simulated:
    rows: list[dict[str, Any]]
    state: dict[str, Any]
    done: bool
    success: bool
    start: float
    end: float
    logs: dict[int, list[str]] = field(default_factory=dict)


def simulate(
    text: str,
    name: str,
    session_time: datetime,
    *,
    t0: float,
    until: float | None = None,
    max_tasks: int = 20_000,
    rename: dict[str, str] | None = None,
    pods: str | None = None,
) -> Simulated:
    """Run `text`'s session with the real engine; work tasks take name-seeded times. `rename`
    renames stored rows afterwards (a task name no compiler accepts, e.g. `<script>`, to show
    that the UI treats every stored name as text)."""
    definition = load_dig_text(text, f"{name}.dig", Path("."))
    specs = compile_workflow(name, definition, max_tasks)
    tz = str(definition.get("timezone", "UTC"))
    st = session_time.astimezone(ZoneInfo(tz))
    ctx = SessionContext(
        workflow_name=name,
        timezone=tz,
        session_params={
            "session_time": st.isoformat(),
            "session_date": st.date().isoformat(),
            "timezone": tz,
        },
        attempt_params={},
        evaluator=_evaluator(),
        max_tasks=max_tasks,
    )
    engine = Engine.new(ctx, specs)
    times: dict[int, dict[str, Any]] = {}
    logs: dict[int, list[str]] = {}
    heap: list[tuple[float, int, Event]] = []
    seq = 0
    now = t0
    events: list[Event] = []
    for _ in range(10 * max_tasks + 100):
        for action in engine.step(events, now):
            if not isinstance(action, StartTask):
                continue
            rnd = random.Random(f"{action.name}/{action.retry_count}")
            ready = now - rnd.uniform(0.02, 0.3)
            created = now + rnd.uniform(0.08, 0.25)
            running = created + rnd.uniform(0.4, 1.2)
            finished = running + rnd.uniform(0.5, 6.0)
            pod = f"{pods or name}-{action.task_id}-{action.retry_count}".lower()
            times[action.task_id] = {
                "ready_at": ready,
                "pod_created_at": created,
                "running_at": running,
                "pod": pod,
                "_finish": finished,
            }
            command = str(action.config.get("_command", ""))
            logs[action.task_id] = [f"+ {command}"] + [f"{action.name}: step {i}" for i in range(1, 4)]
            if command.startswith("fail"):
                message = command.split(" ", 1)[1].strip('"') if " " in command else "failed"
                logs[action.task_id].append(f"ERROR: {message}")
                ev: Event = TaskFailed(action.task_id, message)
            else:
                ev = TaskSucceeded(action.task_id)
            seq += 1
            heapq.heappush(heap, (finished, seq, ev))
        events = []
        if engine.state.done:
            break
        wake = engine.next_wakeup()
        nxt = min([t for t in (heap[0][0] if heap else None, wake) if t is not None], default=None)
        if nxt is None or (until is not None and nxt > until):
            break
        now = max(now, nxt)
        while heap and heap[0][0] <= now:
            events.append(heapq.heappop(heap)[2])
    end = until if until is not None and not engine.state.done else now
    rows = []
    for task in engine.state.tasks:
        row = task.to_json()
        extra = times.get(task.id)
        if extra is not None and not task.is_group:
            for key in ("ready_at", "pod_created_at", "running_at"):
                if extra[key] <= end:
                    row[key] = extra[key]
            row["pod"] = extra["pod"]
        for old, new in (rename or {}).items():
            if row["name"].endswith(old):
                row["name"] = row["name"][: -len(old)] + new
        rows.append(row)
    for tid in list(logs):
        if (times[tid]["running_at"]) > end:
            del logs[tid]
    return Simulated(rows, engine.state.to_json(), engine.state.done, engine.state.success, t0, end, logs)


def _iso(t: float, tz: str = "UTC") -> str:
    return datetime.fromtimestamp(t, UTC).astimezone(ZoneInfo(tz)).isoformat()


def session_object(
    namespace: str,
    name: str,
    workflow: str,
    session_time: datetime,
    sim: Simulated,
    *,
    killed: bool = False,
    spec: dict[str, Any] | None = None,
    params: dict[str, Any] | None = None,
) -> dict[str, Any]:
    # the engine's own state (what the controller stores), its rows with the pod time stamps
    raw = dict(sim.state)
    raw["tasks"] = sim.rows
    raw["killed"] = killed
    data = base64.b64encode(gzip.compress(json.dumps(raw, separators=(",", ":")).encode(), mtime=0)).decode()
    work = [r for r in sim.rows if not r["group"]]
    done = sum(1 for r in work if r["state"] == "success")
    phase = ("Succeeded" if sim.success else "Failed") if sim.done else "Running"
    failed = [
        {"name": r["name"], "message": (r.get("error") or {}).get("message", "")}
        for r in work
        if r["state"] == "error"
    ]
    status: dict[str, Any] = {
        "phase": phase,
        "attempt": 1,
        "workflowRevision": 1,
        "progress": f"{done}/{len(work)}",
        "startedAt": _iso(sim.start),
        "attempts": [{"index": 1, "revision": 1, "phase": phase, "startedAt": _iso(sim.start)}],
        "failedTasks": failed,
        "engine": {"encoding": "gzip+base64", "data": data},
    }
    if sim.done:
        status["finishedAt"] = _iso(sim.end)
        status["attempts"][0]["finishedAt"] = _iso(sim.end)
    if failed:
        status["message"] = f"{len(failed)} task(s) failed: {failed[0]['name']}"
    return {
        "apiVersion": "kudig.io/v1alpha1",
        "kind": "Session",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "creationTimestamp": _iso(sim.start),
            "labels": {"kudig.io/workflow": workflow},
            "uid": f"uid-{namespace}-{name}",
        },
        "spec": {
            "workflow": workflow,
            "sessionTime": session_time.isoformat(),
            "params": params or {},
            "attempt": 1,
            **(spec or {}),
        },
        "status": status,
    }


def project_config_map(namespace: str, name: str, files: dict[str, str]) -> dict[str, Any]:
    """A project ConfigMap as `kudig push` writes it (keys encoded by kudig_runner.projectfiles)."""
    from kudig_runner.projectfiles import encode_key

    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace},
        "data": {encode_key(path): text for path, text in files.items()},
    }


def workflow_object(
    namespace: str, name: str, dig: str, *, project: list[str] | None = None
) -> dict[str, Any]:
    definition = load_dig_text(dig, f"{name}.dig", Path("."))
    tz = str(definition.get("timezone", "UTC"))
    schedule = definition.get("schedule")
    status: dict[str, Any] = {
        "revision": 1,
        "workflowName": name,
        "timezone": tz,
        "tasks": len(compile_workflow(name, definition, 20_000)),
    }
    if isinstance(schedule, dict):
        status["schedule"] = json.dumps(schedule)  # as the controller writes it
    return {
        "apiVersion": "kudig.io/v1alpha1",
        "kind": "Workflow",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "generation": 1,
            "uid": f"uid-wf-{namespace}-{name}",
        },
        "spec": {"dig": dig, "project": {"configMaps": project or []}},
        "status": status,
    }


def pod_objects(namespace: str, session: str, sim: Simulated) -> tuple[list[dict[str, Any]], dict[str, str]]:
    pods, logs = [], {}
    for row in sim.rows:
        if row["group"] or "pod" not in row or row["id"] not in sim.logs:
            continue
        running = row.get("finished_at") is None
        pods.append(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": row["pod"],
                    "namespace": namespace,
                    "labels": {"kudig.io/session": session, "kudig.io/task-id": str(row["id"])},
                    "annotations": {"kudig.io/task": row["name"]},
                    "creationTimestamp": _iso(row["pod_created_at"]),
                },
                "status": {
                    "phase": "Running"
                    if running
                    else ("Succeeded" if row["state"] == "success" else "Failed")
                },
            }
        )
        logs[row["pod"]] = "\n".join(sim.logs[row["id"]]) + "\n"
    return pods, logs


def write(root: Path, objects: list[dict[str, Any]], logs: dict[tuple[str, str], str]) -> Path:
    kinds = {"Session": "sessions", "Workflow": "workflows", "Pod": "pods", "ConfigMap": "configmaps"}
    for obj in objects:
        meta = obj["metadata"]
        path = root / meta["namespace"] / kinds[obj["kind"]] / f"{meta['name']}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(obj, indent=1))
    for (ns, pod), text in logs.items():
        (root / ns / "logs").mkdir(parents=True, exist_ok=True)
        (root / ns / "logs" / f"{pod}.log").write_text(text)
    return root


TOKYO = ZoneInfo("Asia/Tokyo")


def session_name(workflow: str, st: datetime) -> str:
    return f"{workflow}-{st:%Y%m%d}"


@dataclass(frozen=True)
class Demo:
    """What `demo` wrote: the directory, and the etl workflow's session times (Asia/Tokyo
    midnights, newest last) by role."""

    root: Path
    days: dict[str, datetime]


def demo(root: Path, now: float | None = None) -> Demo:
    """The browser tests' directory, relative to `now` so the schedule calendar has recent
    history: namespace `demo` holds workflow etl (daily at 02:00 Asia/Tokyo) with sessions 5, 3
    (backfilled), 2 and 1 days ago and today (running), none 4 days ago (a skipped slot), and
    workflow failing (one failed session with a retried task); namespace `analytics` holds
    workflow report (one session)."""
    now = time.time() if now is None else now
    today = datetime.fromtimestamp(now, TOKYO).replace(hour=0, minute=0, second=0, microsecond=0)
    day = {
        k: today - timedelta(days=n)
        for k, n in (
            ("first", 5),
            ("skipped", 4),
            ("backfill", 3),
            ("secret", 2),
            ("yesterday", 1),
            ("today", 0),
        )
    }
    objects: list[dict[str, Any]] = [
        workflow_object("demo", "etl", ETL_DIG, project=["etl-project"]),
        project_config_map(
            "demo",
            "etl-project",
            {"etl.dig": ETL_DIG, "scripts/load_data.py": f"print('{XSS}')  # loads ${{orders}} rows\n"},
        ),
        workflow_object("demo", "failing", FAILING_DIG),
        workflow_object("analytics", "report", REPORT_DIG),
    ]
    logs: dict[tuple[str, str], str] = {}

    def add(
        ns: str,
        wf: str,
        dig: str,
        st: datetime,
        *,
        t0: float | None = None,
        until: float | None = None,
        **kw: Any,
    ) -> None:
        name = session_name(wf, st)
        start = st.timestamp() + 2 * 3600 if t0 is None else t0
        sim = simulate(
            dig,
            wf,
            st,
            t0=start,
            until=None if until is None else start + until,
            rename={"+probe": "+" + XSS},
            pods=name,
        )
        objects.append(session_object(ns, name, wf, st, sim, **kw))
        pods, texts = pod_objects(ns, name, sim)
        objects.extend(pods)
        logs.update({(ns, p): t for p, t in texts.items()})

    sched = {"scheduled": True}
    add("demo", "etl", ETL_DIG, day["first"], spec=sched, params={"orders": 30})
    add(
        "demo",
        "etl",
        ETL_DIG,
        day["backfill"],
        spec={"scheduled": True, "after": session_name("etl", day["first"])},
    )
    add("demo", "etl", ETL_DIG, day["secret"], spec=sched, params={"db_password": "hunter2-not-shown"})
    add("demo", "etl", ETL_DIG, day["yesterday"], spec=sched)
    add("demo", "etl", ETL_DIG, day["today"], spec=sched, t0=now - 3.0, until=3.0)
    add("demo", "failing", FAILING_DIG, day["yesterday"].replace(hour=5))
    add("analytics", "report", REPORT_DIG, day["yesterday"].astimezone(UTC).replace(hour=9))
    return Demo(write(root, objects, logs), day)


def fanout(root: Path, n: int = 10_000, namespace: str = "bench", name: str = "fanout-20240130") -> Path:
    """One session of a `for_range>` fan-out of `n` tasks, run to the end by the engine."""
    st = datetime(2024, 1, 30, tzinfo=UTC)
    dig = fanout_dig(n)
    sim = simulate(dig, "fanout", st, t0=st.timestamp() + 60, max_tasks=n + 100)
    objects = [workflow_object(namespace, "fanout", dig), session_object(namespace, name, "fanout", st, sim)]
    return write(root, objects, {})
