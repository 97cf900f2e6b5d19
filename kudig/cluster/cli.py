"""The CLI's cluster commands: push, start, retry, kill, sessions, session, attempts, attempt, tasks, log.

They talk to the API server with the current kubeconfig (as `kubectl` does) through the one
Kubernetes wrapper (`kudig.cluster.kube`), and mirror digdag's client commands. The Kubernetes
client is imported only when a cluster command runs, so `kudig run` never needs it.
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from kudig.api import (
    ANNOTATION_TASK,
    LABEL_RESULT,
    LABEL_SESSION,
    SESSIONS,
    TASK_CONTAINER,
    TERMINAL,
    WORKFLOWS,
    label_value,
    session_manifest,
)
from kudig.cluster.kube import AlreadyExists, Kube
from kudig.cluster.logstore import LogStore, StoredLog, log_store
from kudig.cluster.project import build_objects
from kudig.engine.core import resume_from
from kudig.engine.state import SessionState
from kudig.errors import KudigError
from kudig.naming import session_name
from kudig.params import deep_merge, parse_param_args
from kudig.workflowref import WorkflowRef, in_project, resolve, selector, workflow_ref


class Cluster:
    """The namespace a command works in, and the API."""

    def __init__(self, namespace: str | None) -> None:
        try:
            import kubernetes  # noqa: F401
        except ImportError:
            raise KudigError(
                "the cluster commands need the 'kubernetes' package: pip install 'kudig[operator]'"
            ) from None
        self.api, self.namespace = Kube.from_kubeconfig(namespace)

    def get(self, plural: str, name: str) -> dict[str, Any]:
        obj = self.api.get(plural, self.namespace, name)
        if obj is None:
            raise KudigError(f"{plural[:-1].capitalize()} '{name}' not found in namespace {self.namespace}")
        return obj

    def list(self, plural: str) -> list[dict[str, Any]]:
        return self.api.list_objects(plural, self.namespace)

    def workflow(self, workflow: str, project: str | None = None) -> tuple[dict[str, Any], WorkflowRef]:
        """The Workflow `workflow` (its digdag name, or its object name) of `project`: found by the
        label `kudig push` sets (the API server filters), else among every Workflow of the
        namespace (those pushed by an older kudig, or written by hand)."""
        ns = self.namespace
        found = resolve(
            workflow,
            map(workflow_ref, self.api.list_metadata(WORKFLOWS, ns, selector(workflow, project))),
            project,
            ns,
        )
        if found is None:
            obj = self.api.get(WORKFLOWS, ns, workflow)
            if obj is not None and (project is None or in_project(workflow_ref(obj), project)):
                return obj, workflow_ref(obj)
            found = resolve(workflow, map(workflow_ref, self.list(WORKFLOWS)), project, ns)
        if found is None:
            of = f" of project '{project}'" if project is not None else ""
            raise KudigError(f"Workflow '{workflow}'{of} not found in namespace {ns}")
        obj = self.get(WORKFLOWS, found.object_name)
        return obj, workflow_ref(obj)

    def catalog(self) -> dict[str, WorkflowRef]:
        """Every Workflow of the namespace: object name -> what it is."""
        return {r.object_name: r for r in map(workflow_ref, self.list(WORKFLOWS))}

    def patch_spec(self, plural: str, name: str, spec: dict[str, Any]) -> None:
        self.api.patch(plural, self.namespace, name, {"spec": spec})

    def apply(self, obj: dict[str, Any]) -> str:
        """Create, or replace keeping the resourceVersion (last writer wins, as kubectl replace)."""
        meta = obj["metadata"]
        meta["namespace"] = self.namespace
        if obj["kind"] == "ConfigMap":
            return self.api.apply_config_map(self.namespace, obj)
        plural = obj["kind"].lower() + "s"
        try:
            self.api.create(plural, self.namespace, obj)
            return "created"
        except AlreadyExists:
            pass
        current = self.get(plural, meta["name"])
        annotations = current["metadata"].get("annotations") or {}
        if (
            current.get("spec") == obj.get("spec")
            and (current["metadata"].get("labels") or {}) == (meta.get("labels") or {})
            and (meta.get("annotations") or {}).items() <= annotations.items()
        ):
            return "unchanged"
        if annotations or meta.get("annotations"):  # others' annotations stay; ours are set
            meta["annotations"] = {**annotations, **(meta.get("annotations") or {})}
        meta["resourceVersion"] = current["metadata"]["resourceVersion"]
        self.api.replace(plural, obj)
        return "configured"


def session_blobs(cluster: Cluster, session: dict[str, Any]) -> dict[str, bytes]:
    """The ConfigMaps holding a Session's task rows (one list by label; a name it misses, one get)."""
    from kudig import sessionread

    names = sessionread.blob_refs(session)
    if not names:
        return {}
    selector = f"{LABEL_SESSION}={label_value(str(session['metadata']['name']))},{LABEL_RESULT}=true"
    listed = {
        str(cm["metadata"]["name"]): cm for cm in cluster.api.list_config_maps(cluster.namespace, selector)
    }
    blobs: dict[str, bytes] = {}
    for name in names:
        cm = listed.get(name) or cluster.api.get_config_map(cluster.namespace, name)
        if cm is not None:
            blobs[name] = sessionread.blob_of(cm)
    return blobs


def read_session(cluster: Cluster, name: str) -> tuple[dict[str, Any], dict[str, bytes]]:
    """A Session and the ConfigMaps of its task rows, read again if the controller replaced
    some between the two reads."""
    from kudig import sessionread

    for _ in range(5):
        session = cluster.get(SESSIONS, name)
        blobs = session_blobs(cluster, session)
        if all(n in blobs for n in sessionread.blob_refs(session)):
            return session, blobs
    raise KudigError(f"Session {name}: the ConfigMaps of its task rows are missing (deleted by hand?)")


def decode_engine(cluster: Cluster, session: dict[str, Any]) -> dict[str, Any] | None:
    from kudig import sessionread

    return sessionread.state_json(session, session_blobs(cluster, session))


class _BlockDumper(yaml.SafeDumper):
    """Multi-line strings (the .dig text, scripts) as readable `|` blocks, for GitOps diffs."""


def _str_representer(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value and all(line == line.rstrip() for line in value.splitlines()) else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockDumper.add_representer(str, _str_representer)


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=False)]
    lines = [
        "  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=False)).rstrip()
        for row in [header, *rows]
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------- commands


def cmd_push(args: argparse.Namespace) -> int:
    root = Path(args.project)
    project = args.name or root.resolve().name
    namespace = args.namespace or "default"
    objects = build_objects(root, project, namespace, args.image)
    if args.dry_run:
        if args.output == "json":
            print(json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}, indent=2))
        else:
            print(yaml.dump_all(objects, Dumper=_BlockDumper, sort_keys=False, width=120), end="")
        return 0
    cluster = Cluster(args.namespace)
    for obj in objects:
        result = cluster.apply(obj)
        print(f"{obj['kind'].lower()}/{obj['metadata']['name']} {result}")
    return 0


def workflow_args(names: list[str]) -> tuple[str | None, str]:
    """`WORKFLOW` or `PROJECT WORKFLOW` (digdag's form) -> (project, workflow)."""
    if len(names) == 1:
        return None, names[0]
    if len(names) == 2:
        return names[0], names[1]
    raise KudigError(f"expected WORKFLOW or PROJECT WORKFLOW, got {len(names)} names: {' '.join(names)}")


def _target(cluster: Cluster, args: argparse.Namespace) -> tuple[dict[str, Any], WorkflowRef]:
    project, workflow = workflow_args(args.names)
    return cluster.workflow(workflow, project)


def _workflow_tz(obj: dict[str, Any]) -> tuple[str, Any]:
    from kudig.timezones import parse_timezone
    from kudig.yamlload import load_dig_text

    tz_name = (obj.get("status") or {}).get("timezone")
    if not tz_name:
        definition = load_dig_text(obj["spec"]["dig"], f"{obj['metadata']['name']}.dig", Path("."))
        tz_name = str(definition.get("timezone", "UTC"))
    return tz_name, parse_timezone(tz_name)


def cmd_start(args: argparse.Namespace) -> int:
    from kudig.session_vars import local_session_time

    cluster = Cluster(args.namespace)
    obj, ref = _target(cluster, args)
    _, tz = _workflow_tz(obj)
    spec_text = "daily" if args.session == "now" else args.session
    when = (
        datetime.now(tz)
        if args.session == "now"
        else local_session_time(spec_text, timezone=tz, schedule=None, now=datetime.now(tz))
    )
    name = session_name(ref.object_name, when)
    body = session_manifest(ref.object_name, when, params=parse_param_args(args.param or []))
    try:
        cluster.api.create(SESSIONS, cluster.namespace, body)
    except AlreadyExists:
        raise KudigError(
            f"A session for the requested session_time already exists (session={name}, session_time={when.isoformat()})\n"
            f"hint: use `kudig retry {name} --all` to run it again"
        ) from None
    print(f"Started a session: {name}")
    print(f"  workflow: {ref.name}\n  session time: {when.isoformat()}")
    print(f"  * use `kudig session {name}` to show the session")
    return 0


class _Names:
    """What a Session's spec.workflow (an object name, or a digdag name) means, for listings: the
    object of that name first, as the controller looks it up."""

    def __init__(self, cluster: Cluster) -> None:
        self.catalog = cluster.catalog()
        self.namespace = cluster.namespace
        self._memo: dict[str, WorkflowRef | None] = {}

    def of(self, workflow: str) -> WorkflowRef | None:
        if workflow not in self._memo:
            try:
                found = self.catalog.get(workflow) or resolve(workflow, self.catalog.values())
            except KudigError:  # ambiguous: the controller reports it on the Session
                found = None
            self._memo[workflow] = found
        return self._memo[workflow]


def cmd_sessions(args: argparse.Namespace) -> int:
    cluster = Cluster(args.namespace)
    target = _target(cluster, args)[1] if args.names else None
    names = _Names(cluster)
    selected = []
    for s in sorted(cluster.list(SESSIONS), key=lambda o: o["metadata"]["creationTimestamp"]):
        spec, status = s.get("spec") or {}, s.get("status") or {}
        phase = status.get("phase") or "Pending"
        ref = names.of(str(spec.get("workflow", "")))
        if target is not None and ref != target:
            continue
        if args.running and phase in TERMINAL:
            continue
        if args.failed and phase != "Failed":
            continue
        selected.append(
            {
                "name": s["metadata"]["name"],
                "project": ref.project if ref is not None else None,
                "workflow": ref.name if ref is not None else spec.get("workflow", ""),
                "sessionTime": spec.get("sessionTime", ""),
                "phase": phase,
                "progress": status.get("progress", ""),
                "attempt": status.get("attempt"),
                "scheduled": bool(spec.get("scheduled")),
            }
        )
    if args.last:
        selected = selected[-args.last :]
    _print(
        selected,
        args.output,
        lambda: _table(
            [
                [
                    r["name"],
                    r["workflow"],
                    r["sessionTime"],
                    r["phase"],
                    r["progress"],
                    str(r["attempt"] or ""),
                ]
                for r in selected
            ],
            ["NAME", "WORKFLOW", "SESSION TIME", "STATE", "PROGRESS", "ATTEMPT"],
        ),
    )
    return 0


def cmd_session(args: argparse.Namespace) -> int:
    cluster = Cluster(args.namespace)
    s = cluster.get(SESSIONS, args.session)
    spec, status = s.get("spec") or {}, s.get("status") or {}
    ref = _Names(cluster).of(str(spec.get("workflow", "")))
    data = {
        "name": args.session,
        "project": ref.project if ref is not None else None,
        "workflow": ref.name if ref is not None else spec.get("workflow"),
        "sessionTime": spec.get("sessionTime"),
        "phase": status.get("phase", "Pending"),
        "progress": status.get("progress", ""),
        "attempt": status.get("attempt"),
        "startedAt": status.get("startedAt"),
        "finishedAt": status.get("finishedAt"),
        "message": status.get("message"),
        "failedTasks": status.get("failedTasks") or [],
    }

    def text() -> str:
        lines = [
            f"  session: {data['name']}",
            f"  project: {data['project'] or ''}",
            f"  workflow: {data['workflow']}",
            f"  session time: {data['sessionTime']}",
            f"  state: {data['phase']}",
            f"  progress: {data['progress']}",
            f"  attempt: {data['attempt'] or ''}",
        ]
        if data["message"]:
            lines.append(f"  message: {data['message']}")
        lines += [f"  * {f['name']}: {f['message']}" for f in data["failedTasks"]]
        return "\n".join(lines)

    _print(data, args.output, text)
    return 0


def cmd_attempts(args: argparse.Namespace) -> int:
    cluster = Cluster(args.namespace)
    s = cluster.get(SESSIONS, args.session)
    attempts = list((s.get("status") or {}).get("attempts") or [])
    rows = [
        [
            str(a.get("index")),
            str(a.get("revision", "")),
            a.get("phase", ""),
            a.get("startedAt", ""),
            a.get("finishedAt") or "",
        ]
        for a in attempts
    ]
    _print(
        attempts, args.output, lambda: _table(rows, ["ATTEMPT", "REVISION", "STATE", "STARTED", "FINISHED"])
    )
    return 0


def cmd_attempt(args: argparse.Namespace) -> int:
    """One attempt of a session (digdag's `attempt`): the latest, or the one numbered `index`."""
    cluster = Cluster(args.namespace)
    s = cluster.get(SESSIONS, args.session)
    status = s.get("status") or {}
    attempts = list(status.get("attempts") or [])
    if not attempts:
        raise KudigError(f"Session {args.session} has no attempt yet")
    index = args.index if args.index is not None else int(attempts[-1].get("index") or len(attempts))
    found = next((a for a in attempts if int(a.get("index") or 0) == index), None)
    if found is None:
        known = ", ".join(str(a.get("index")) for a in attempts)
        raise KudigError(f"Session {args.session} has no attempt {index} (attempts: {known})")
    spec = s.get("spec") or {}
    data = {
        "session": args.session,
        "workflow": spec.get("workflow", ""),
        "sessionTime": spec.get("sessionTime", ""),
        **found,
        "params": spec.get("params") or {},
    }
    if index == int(attempts[-1].get("index") or 0):
        data["progress"] = status.get("progress", "")
        data["failedTasks"] = status.get("failedTasks") or []

    def table() -> str:
        lines = [f"{k}: {json.dumps(v) if isinstance(v, dict | list) else v}" for k, v in data.items()]
        return "\n".join(lines)

    _print(data, args.output, table)
    return 0


def cmd_tasks(args: argparse.Namespace) -> int:
    from kudig import sessionread

    cluster = Cluster(args.namespace)
    rows_ = sessionread.task_rows(*read_session(cluster, args.session))
    tasks = [{"name": t.name, "state": t.state, "retries": t.retries, "error": t.error} for t in rows_]
    rows = [[t.name, t.state, str(t.retries), t.error[:80]] for t in rows_]
    _print(
        tasks,
        args.output,
        lambda: _table(rows, ["TASK", "STATE", "RETRIES", "ERROR"]) if rows else "no tasks yet",
    )
    return 0


def cmd_retry(args: argparse.Namespace) -> int:
    cluster = Cluster(args.namespace)
    s = cluster.get(SESSIONS, args.session)
    status = s.get("status") or {}
    if status.get("phase") not in TERMINAL:
        raise KudigError(
            f"Session {args.session} is still {status.get('phase', 'Pending')}; kill it or wait before a retry"
        )
    if not args.all and not args.resume_from and status.get("phase") == "Succeeded":
        raise KudigError(
            f"Session {args.session} succeeded: nothing to resume (use --all to run everything again)"
        )
    params = dict((s.get("spec") or {}).get("params") or {})
    deep_merge(params, parse_param_args(args.param or []))
    attempt = int(status.get("attempt") or 1) + 1
    patch: dict[str, Any] = {"attempt": attempt, "kill": False, "params": params, "resumeFrom": None}
    if args.resume_from:
        state = decode_engine(cluster, s)
        if state is None:
            raise KudigError(f"Session {args.session} has no task state to resume from")
        # the controller checks it again; here it fails before anything changes
        kept = resume_from(SessionState.from_json(state), args.resume_from)
        patch.update(retryMode="from", resumeFrom=args.resume_from)
        what = f"from {args.resume_from} on, keeping {len(kept)} tasks"
    else:
        patch["retryMode"] = "all" if args.all else "failed"
        what = "all tasks" if args.all else "failed tasks"
    cluster.patch_spec(SESSIONS, args.session, patch)
    print(f"Started attempt {attempt} of session {args.session} ({what})")
    return 0


def cmd_kill(args: argparse.Namespace) -> int:
    cluster = Cluster(args.namespace)
    s = cluster.get(SESSIONS, args.session)
    if (s.get("status") or {}).get("phase") in TERMINAL:
        raise KudigError(f"Session {args.session} already finished ({s['status']['phase']})")
    cluster.patch_spec(SESSIONS, args.session, {"kill": True})
    print(f"Kill requested for session {args.session}")
    return 0


def _follow(cluster: Cluster, args: argparse.Namespace) -> int:
    """`kudig log -f`: each task pod's log as it is written, in the order the pods started, until
    the session has finished and every log is shown."""
    import time

    from kudig_runner.protocol import FRAME_PREFIX, strip_frames

    store = log_store(cluster.api)
    done: set[str] = set()
    while True:
        session = cluster.get(SESSIONS, args.session)
        finished = (session.get("status") or {}).get("phase") in TERMINAL
        pods = cluster.api.list_pods(cluster.namespace, f"{LABEL_SESSION}={label_value(args.session)}")
        pods.sort(key=lambda p: (p["metadata"]["creationTimestamp"], p["metadata"]["name"]))
        live = {p["metadata"]["name"] for p in pods}
        for gone in store.list(cluster.namespace, args.session):
            # released by the controller (its log stored) before this pass could follow it
            if gone.pod in done or gone.pod in live:
                continue
            if args.task and not (gone.task == args.task or gone.task.endswith(args.task)):
                continue
            print(f"--- {gone.task} (pod {gone.pod})", flush=True)
            print(
                strip_frames(store.get(cluster.namespace, args.session, gone.pod) or ""), end="", flush=True
            )
            done.add(gone.pod)
        waiting = False
        for pod in pods:
            name = pod["metadata"]["name"]
            task = ((pod.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION_TASK, "")
            if name in done or (args.task and not (task == args.task or task.endswith(args.task))):
                continue
            phase = (pod.get("status") or {}).get("phase")
            if phase not in ("Running", "Succeeded", "Failed"):
                waiting = True
                break  # not started yet: its log comes on a later pass, in order
            print(f"--- {task} (pod {name})", flush=True)
            for line in cluster.api.follow_pod_log(cluster.namespace, name, TASK_CONTAINER):
                if not line.startswith(FRAME_PREFIX):  # a large result, not the task's output
                    print(line, end="", flush=True)
            done.add(name)
        if finished and not waiting:
            return 0
        time.sleep(1)


def _task_logs(cluster: Cluster, store: LogStore, session: str) -> list[StoredLog]:
    """The session's task pods, live or released to the log store, in the order they started."""
    found = {s.pod: s for s in store.list(cluster.namespace, session)}
    for pod in cluster.api.list_pods(cluster.namespace, f"{LABEL_SESSION}={label_value(session)}"):
        meta = pod.get("metadata") or {}
        task = (meta.get("annotations") or {}).get(ANNOTATION_TASK, "")
        found[meta["name"]] = StoredLog(task, meta["name"], str(meta.get("creationTimestamp", "")))
    return sorted(found.values(), key=lambda s: (s.created, s.pod))


def cmd_log(args: argparse.Namespace) -> int:
    from kudig_runner.protocol import strip_frames

    cluster = Cluster(args.namespace)
    if args.follow:
        return _follow(cluster, args)
    session = cluster.get(SESSIONS, args.session)
    state = decode_engine(cluster, session) or {"tasks": []}
    store = log_store(cluster.api)
    by_task: dict[str, list[StoredLog]] = {}
    for pod in _task_logs(cluster, store, args.session):
        by_task.setdefault(pod.task, []).append(pod)
    for t in state["tasks"]:
        if t.get("superseded") or t.get("group"):
            continue
        if args.task and not (t["name"] == args.task or t["name"].endswith(args.task)):
            continue
        echo = (t.get("state_params") or {}).get("log")
        for pod in by_task.get(t["name"], []):
            print(f"--- {t['name']} (pod {pod.pod})")
            # the pod while it exists, kudig's log store once the controller released it
            text = cluster.api.pod_log(cluster.namespace, pod.pod, TASK_CONTAINER)
            if text is None:
                text = store.get(cluster.namespace, args.session, pod.pod)
            # a result too large for the termination message travels at the end of the log
            print("(no log)" if text is None else strip_frames(text), end="" if text else "\n")
        if echo:
            print(f"--- {t['name']}")
            print(echo, end="")
    return 0


# --------------------------------------------------------------------------- schedules


def _print(data: Any, output: str | None, table: Any) -> None:
    """`-o json|yaml` for scripts, else the readable table."""
    if output == "json":
        print(json.dumps(data, indent=2))
    elif output == "yaml":
        print(yaml.safe_dump(data, sort_keys=False), end="")
    else:
        print(table())


def _schedule_of(obj: dict[str, Any]) -> Any:
    """The workflow's parsed `schedule:` (None when it has none)."""
    from kudig.workflow import load_workflow_text

    spec = obj.get("spec") or {}
    name = spec.get("name") or obj["metadata"]["name"]
    return load_workflow_text(name, spec["dig"], Path("."), f"{name}.dig").schedule


def cmd_schedules(args: argparse.Namespace) -> int:
    cluster = Cluster(args.namespace)
    rows: list[dict[str, Any]] = []
    for obj in cluster.list(WORKFLOWS):
        status = obj.get("status") or {}
        if not status.get("schedule"):
            continue
        ref = workflow_ref(obj)
        rows.append(
            {
                "project": ref.project,
                "workflow": ref.name,
                "object": ref.object_name,
                "schedule": status.get("schedule"),
                "timezone": status.get("timezone"),
                "nextSessionTime": status.get("nextSessionTime"),
                "nextRunTime": status.get("nextRunTime"),
                "lastScheduledSessionTime": status.get("lastScheduledSessionTime"),
                "disabled": bool((obj.get("spec") or {}).get("suspend")),
            }
        )
    rows.sort(key=lambda r: (r["project"] or "", r["workflow"]))
    _print(
        rows,
        args.output,
        lambda: _table(
            [
                [
                    r["project"] or "",
                    r["workflow"],
                    r["schedule"] or "",
                    r["nextSessionTime"] or "-",
                    r["nextRunTime"] or "-",
                    "disabled" if r["disabled"] else "",
                ]
                for r in rows
            ],
            ["PROJECT", "WORKFLOW", "SCHEDULE", "NEXT SESSION TIME", "NEXT RUN TIME", ""],
        ),
    )
    return 0


def _scheduled_workflow(cluster: Cluster, args: argparse.Namespace) -> tuple[dict[str, Any], WorkflowRef]:
    obj, ref = _target(cluster, args)
    if _schedule_of(obj) is None:
        raise KudigError(f"Workflow '{ref.name}' has no schedule")
    return obj, ref


def cmd_disable(args: argparse.Namespace) -> int:
    cluster = Cluster(args.namespace)
    _, ref = _scheduled_workflow(cluster, args)
    cluster.patch_spec(WORKFLOWS, ref.object_name, {"suspend": True})
    print(f"Disabled the schedule of {ref.name}")
    return 0


def cmd_enable(args: argparse.Namespace) -> int:
    """digdag's enable runs every slot missed while disabled; kudig's skips them unless asked."""
    from datetime import UTC

    cluster = Cluster(args.namespace)
    _, ref = _scheduled_workflow(cluster, args)
    spec: dict[str, Any] = {"suspend": False}
    if not args.catch_up:
        spec["scheduleFrom"] = datetime.now(UTC).isoformat()
    cluster.patch_spec(WORKFLOWS, ref.object_name, spec)
    how = "runs the slots missed while disabled" if args.catch_up else "from now on (missed slots skipped)"
    print(f"Enabled the schedule of {ref.name}: {how}")
    return 0


def cmd_reschedule(args: argparse.Namespace) -> int:
    from kudig.session_vars import local_session_time

    cluster = Cluster(args.namespace)
    obj, ref = _scheduled_workflow(cluster, args)
    schedule = _schedule_of(obj)
    status = obj.get("status") or {}
    current = status.get("nextRunTime")
    if not current:
        raise KudigError(f"Workflow '{ref.name}' has no next run time yet (is it compiled?)")
    now_next = datetime.fromisoformat(current)
    if args.skip_to:
        _, tz = _workflow_tz(obj)
        target = local_session_time(args.skip_to, timezone=tz, schedule=None, now=datetime.now(tz))
        if target <= now_next:
            raise KudigError(
                f"Specified time to skip schedules is already past: {target.isoformat()} "
                f"(the next run is at {now_next.isoformat()})"
            )
    else:
        if args.skip < 1:
            raise KudigError("--skip must be at least 1")
        slot = schedule.next_schedule_time(datetime.fromisoformat(status["nextSessionTime"]))
        for _ in range(args.skip - 1):
            slot = schedule.next_schedule_time(slot.session_time)
        target = slot.run_time
    first = schedule.first_schedule_time(target)
    if args.dry_run:
        print(
            f"Would reschedule {ref.name}: next session {first.session_time.isoformat()}, runs at {first.run_time.isoformat()}"
        )
        return 0
    cluster.patch_spec(WORKFLOWS, ref.object_name, {"scheduleFrom": target.isoformat()})
    print(
        f"Rescheduled {ref.name}: next session {first.session_time.isoformat()}, runs at {first.run_time.isoformat()}"
    )
    return 0


def cmd_backfill(args: argparse.Namespace) -> int:
    """digdag's backfill: the scheduled sessions from --from up to the schedule's next one, chained
    (each starts after the previous has finished), with `last_executed_session_time` chained too."""
    from kudig.session_vars import local_session_time

    cluster = Cluster(args.namespace)
    obj, ref = _scheduled_workflow(cluster, args)
    schedule = _schedule_of(obj)
    status = obj.get("status") or {}
    if not status.get("nextSessionTime"):
        raise KudigError(f"Workflow '{ref.name}' has no next session time yet (is it compiled?)")
    until = datetime.fromisoformat(status["nextSessionTime"])
    _, tz = _workflow_tz(obj)
    start = local_session_time(args.from_time, timezone=tz, schedule=None, now=datetime.now(tz))
    slot = schedule.first_schedule_time(start)
    if slot.session_time < start:  # first_schedule_time goes by run time; backfill by session time
        slot = schedule.next_schedule_time(slot.session_time)
    times: list[datetime] = []
    while not slot.finished and slot.session_time < until and (args.count is None or len(times) < args.count):
        times.append(slot.session_time)
        slot = schedule.next_schedule_time(slot.session_time)
    if not times:
        raise KudigError(f"No scheduled session between {start.isoformat()} and {until.isoformat()}")
    names = [session_name(ref.object_name, t) for t in times]
    existing = [n for n in names if cluster.api.get(SESSIONS, cluster.namespace, n) is not None]
    if existing:
        raise KudigError(f"Sessions already exist for these times: {', '.join(existing)}")
    previous = status.get("lastScheduledSessionTime")
    bodies: list[dict[str, Any]] = []
    for i, when in enumerate(times):
        extra: dict[str, Any] = {"scheduled": True}
        if previous:
            extra["lastExecutedSessionTime"] = previous
        if i:
            extra["after"] = names[i - 1]
        bodies.append(session_manifest(ref.object_name, when, **extra))
        previous = when.isoformat()
    for body in bodies:
        print(f"  {body['metadata']['name']}  session time {body['spec']['sessionTime']}")
        if not args.dry_run:
            cluster.api.create(SESSIONS, cluster.namespace, body)
    verb = "Would start" if args.dry_run else "Started"
    print(f"{verb} {len(bodies)} session(s) of {ref.name}, one after another")
    return 0


WORKFLOW_HELP = "the workflow's digdag name (or its Workflow object's name), optionally after its project"


def add_commands(sub: Any) -> None:
    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("-n", "--namespace", help="namespace (default: the kubeconfig context's)")

    push = sub.add_parser(
        "push", help="create/update Workflows and project ConfigMaps from a project directory"
    )
    push.add_argument("project", nargs="?", default=".", help="project directory (default: .)")
    push.add_argument("--name", help="project name (default: the directory name)")
    push.add_argument("--image", help="default task image for these workflows")
    push.add_argument(
        "--dry-run",
        nargs="?",
        const="client",
        choices=["client"],
        help="print the objects instead of applying them",
    )
    push.add_argument("-o", "--output", choices=["yaml", "json"], default="yaml")
    common(push)
    push.set_defaults(func=cmd_push)

    start = sub.add_parser("start", help="start a session of a workflow on the cluster")
    start.add_argument("names", nargs="+", metavar="[PROJECT] WORKFLOW", help=WORKFLOW_HELP)
    start.add_argument(
        "--session",
        required=True,
        help="now|hourly|daily|YYYY-MM-DD|'YYYY-MM-DD HH:MM:SS' (workflow time zone)",
    )
    start.add_argument("-p", "--param", action="append", metavar="KEY=VALUE")
    common(start)
    start.set_defaults(func=cmd_start)

    sessions = sub.add_parser("sessions", help="list sessions (oldest first)")
    sessions.add_argument("names", nargs="*", metavar="[PROJECT] WORKFLOW", help="only this workflow's")
    state = sessions.add_mutually_exclusive_group()
    state.add_argument("--running", action="store_true", help="only sessions not finished")
    state.add_argument("--failed", action="store_true", help="only failed sessions")
    sessions.add_argument("--last", type=int, metavar="N", help="only the N newest")
    sessions.add_argument("-o", "--output", choices=["json", "yaml"])
    common(sessions)
    sessions.set_defaults(func=cmd_sessions)

    for cmd, func, text, aliases in (
        ("session", cmd_session, "show a session", []),
        ("attempts", cmd_attempts, "list a session's attempts", []),
        ("tasks", cmd_tasks, "list a session's tasks", ["task"]),
        ("kill", cmd_kill, "kill a running session (its running pods are stopped at once)", []),
    ):
        p = sub.add_parser(cmd, help=text, aliases=aliases)
        p.add_argument("session")
        if cmd != "kill":
            p.add_argument("-o", "--output", choices=["json", "yaml"])
        common(p)
        p.set_defaults(func=func)

    attempt = sub.add_parser("attempt", help="show one attempt of a session (default: the latest)")
    attempt.add_argument("session")
    attempt.add_argument("index", nargs="?", type=int, help="attempt number (1, 2, ...)")
    attempt.add_argument("-o", "--output", choices=["json", "yaml"])
    common(attempt)
    attempt.set_defaults(func=cmd_attempt)

    retry = sub.add_parser("retry", help="start a new attempt of a finished session")
    retry.add_argument("session")
    mode = retry.add_mutually_exclusive_group()
    mode.add_argument("--all", action="store_true", help="rerun every task")
    mode.add_argument("--resume", action="store_true", help="rerun failed tasks only (default)")
    mode.add_argument(
        "--resume-from",
        metavar="+TASK",
        help="rerun this task and everything after it; keep what came before",
    )
    retry.add_argument("-p", "--param", action="append", metavar="KEY=VALUE")
    common(retry)
    retry.set_defaults(func=cmd_retry)

    logc = sub.add_parser("log", aliases=["logs"], help="show task logs of a session (or of one task)")
    logc.add_argument("session")
    logc.add_argument("task", nargs="?", help="+task: only this task's log (default: all)")
    logc.add_argument(
        "-f", "--follow", action="store_true", help="follow running tasks until the session ends"
    )
    common(logc)
    logc.set_defaults(func=cmd_log)

    schedules = sub.add_parser(
        "schedules", aliases=["schedule"], help="list the scheduled workflows and their next times"
    )
    schedules.add_argument("-o", "--output", choices=["json", "yaml"])
    common(schedules)
    schedules.set_defaults(func=cmd_schedules)

    disable = sub.add_parser("disable", help="stop a workflow's schedule")
    disable.add_argument("names", nargs="+", metavar="[PROJECT] WORKFLOW", help=WORKFLOW_HELP)
    common(disable)
    disable.set_defaults(func=cmd_disable)

    enable = sub.add_parser("enable", help="resume a workflow's schedule (from now on)")
    enable.add_argument("names", nargs="+", metavar="[PROJECT] WORKFLOW", help=WORKFLOW_HELP)
    enable.add_argument(
        "--catch-up",
        action="store_true",
        help="also run the slots missed while disabled (digdag's behaviour)",
    )
    common(enable)
    enable.set_defaults(func=cmd_enable)

    reschedule = sub.add_parser("reschedule", help="move a workflow's next scheduled run forward")
    reschedule.add_argument("names", nargs="+", metavar="[PROJECT] WORKFLOW", help=WORKFLOW_HELP)
    what = reschedule.add_mutually_exclusive_group(required=True)
    what.add_argument("-s", "--skip", type=int, metavar="N", help="skip the next N sessions")
    what.add_argument(
        "-t", "--skip-to", metavar="TIME", help="'YYYY-MM-DD' or 'YYYY-MM-DD HH:MM:SS' (workflow time zone)"
    )
    reschedule.add_argument("-d", "--dry-run", action="store_true")
    common(reschedule)
    reschedule.set_defaults(func=cmd_reschedule)

    backfill = sub.add_parser(
        "backfill", help="run a workflow's scheduled sessions of the past, one after another"
    )
    backfill.add_argument("names", nargs="+", metavar="[PROJECT] WORKFLOW", help=WORKFLOW_HELP)
    backfill.add_argument(
        "-f",
        "--from",
        dest="from_time",
        required=True,
        metavar="TIME",
        help="'YYYY-MM-DD' or 'YYYY-MM-DD HH:MM:SS'",
    )
    backfill.add_argument("--count", type=int, help="at most this many sessions")
    backfill.add_argument("-d", "--dry-run", action="store_true")
    common(backfill)
    backfill.set_defaults(func=cmd_backfill)

    workflows = sub.add_parser(
        "workflows",
        aliases=["workflow"],
        help="list the workflows by project, or show one definition (PROJECT WORKFLOW)",
    )
    workflows.add_argument("names", nargs="*", metavar="[PROJECT] [WORKFLOW]")
    workflows.add_argument("-o", "--output", choices=["json", "yaml"])
    common(workflows)
    workflows.set_defaults(func=cmd_workflows)

    projects = sub.add_parser(
        "projects", aliases=["project"], help="list the projects (kudig push) and their workflows"
    )
    projects.add_argument("-o", "--output", choices=["json", "yaml"])
    common(projects)
    projects.set_defaults(func=cmd_projects)

    delete = sub.add_parser(
        "delete", help="delete a project: its Workflows and ConfigMaps (its finished Sessions stay)"
    )
    delete.add_argument("project")
    delete.add_argument("--force", action="store_true", help="skip the y/N prompt")
    common(delete)
    delete.set_defaults(func=cmd_delete)

    show = sub.add_parser(
        "show", help="a workflow's task tree, or its DAG as DOT or SVG (a local .dig needs no cluster)"
    )
    show.add_argument("names", nargs="+", metavar="[PROJECT] WORKFLOW|FILE.dig")
    show.add_argument("--format", choices=["text", "dot", "svg"], default="text")
    show.add_argument("--project", help="project directory of a local .dig (default: its directory)")
    common(show)
    show.set_defaults(func=cmd_show)


# --------------------------------------------------------------------------- projects and workflows


def _projects(cluster: Cluster) -> dict[str, list[dict[str, Any]]]:
    """Project name -> its Workflows (by digdag name); Workflows of no project under ''."""
    out: dict[str, list[dict[str, Any]]] = {}
    for obj in cluster.list(WORKFLOWS):
        out.setdefault(workflow_ref(obj).project or "", []).append(obj)
    for objs in out.values():
        objs.sort(key=lambda o: workflow_ref(o).name)
    return dict(sorted(out.items()))


def _workflow_row(obj: dict[str, Any]) -> dict[str, Any]:
    ref = workflow_ref(obj)
    status = obj.get("status") or {}
    compiled: dict[str, Any] = next(
        (c for c in status.get("conditions") or [] if c.get("type") == "Compiled"), {}
    )
    return {
        "project": ref.project,
        "workflow": ref.name,
        "object": ref.object_name,
        "revision": status.get("revision"),
        "compiled": compiled.get("status"),
        "timezone": status.get("timezone"),
        "schedule": status.get("schedule"),
        "suspended": bool((obj.get("spec") or {}).get("suspend")),
        "error": status.get("error"),
    }


def cmd_workflows(args: argparse.Namespace) -> int:
    """digdag's `workflows [project] [name]`: every workflow by project, a project's, or one
    workflow's definition (its .dig text)."""
    cluster = Cluster(args.namespace)
    if len(args.names) > 2:
        raise KudigError("expected at most PROJECT WORKFLOW")
    if len(args.names) == 2:
        obj, _ = cluster.workflow(args.names[1], args.names[0])
        row = {**_workflow_row(obj), "dig": (obj.get("spec") or {}).get("dig", "")}
        _print(row, args.output, lambda: str(row["dig"]).rstrip("\n"))
        return 0
    projects = _projects(cluster)
    if args.names:
        wanted = args.names[0]
        match = [p for p in projects if p and in_project(WorkflowRef("", "", p), wanted)]
        if not match:
            raise KudigError(f"Project '{wanted}' not found in namespace {cluster.namespace}")
        projects = {p: projects[p] for p in match}
    rows = [_workflow_row(o) for objs in projects.values() for o in objs]

    def text() -> str:
        lines = []
        for project, objs in projects.items():
            lines.append(f"  {project or '(no project)'}")
            lines += [f"    {workflow_ref(o).name}" for o in objs]
        lines.append("")
        lines.append("Use `kudig workflows <project-name> <name>` to show details.")
        return "\n".join(lines)

    _print(rows, args.output, text)
    return 0


def cmd_projects(args: argparse.Namespace) -> int:
    """digdag's `projects` (`td wf list`): the projects of the namespace and their workflows."""
    cluster = Cluster(args.namespace)
    rows: list[dict[str, Any]] = []
    for project, objs in _projects(cluster).items():
        digests = {((o.get("spec") or {}).get("project") or {}).get("digest") for o in objs}
        digest = next(iter(digests)) if len(digests) == 1 else None
        rows.append(
            {
                "project": project or None,
                "workflows": [workflow_ref(o).name for o in objs],
                "digest": digest,
                "updated": max(o["metadata"].get("creationTimestamp") or "" for o in objs),
            }
        )
    _print(
        rows,
        args.output,
        lambda: _table(
            [
                [r["project"] or "(no project)", str(len(r["workflows"])), (r["digest"] or "")[:19]]
                for r in rows
            ],
            ["PROJECT", "WORKFLOWS", "DIGEST"],
        ),
    )
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    """digdag's `delete <project>`: its Workflows and project ConfigMaps. Sessions are not
    deleted (their history, logs and results stay until `kubectl delete sessions`), and a
    project with a Session still running is refused: kill or wait first."""
    import sys

    from kudig.api import LABEL_PROJECT
    from kudig.workflowref import project_label

    cluster = Cluster(args.namespace)
    objs = [o for o in cluster.list(WORKFLOWS) if in_project(workflow_ref(o), args.project)]
    config_maps = cluster.api.list_config_map_names(
        cluster.namespace, f"{LABEL_PROJECT}={project_label(args.project)}"
    )
    if not objs and not config_maps:
        raise KudigError(f"Project '{args.project}' not found in namespace {cluster.namespace}")
    mine = {o["metadata"]["name"] for o in objs} | {workflow_ref(o).name for o in objs}
    running = [
        s["metadata"]["name"]
        for s in cluster.list(SESSIONS)
        if (s.get("spec") or {}).get("workflow") in mine
        and ((s.get("status") or {}).get("phase") or "Pending") not in TERMINAL
    ]
    if running:
        raise KudigError(
            f"Project '{args.project}' has unfinished sessions: {', '.join(sorted(running))}; "
            "kill them (kudig kill SESSION) or wait until they finish"
        )
    print("Project:")
    print(f"  name: {args.project}")
    print(f"  namespace: {cluster.namespace}")
    print(f"  workflows: {', '.join(sorted(workflow_ref(o).name for o in objs)) or '-'}")
    print(f"  config maps: {', '.join(sorted(config_maps)) or '-'}")
    if not args.force:
        print(f"Are you sure you want to delete project {args.project}? [y/N]: ", end="", flush=True)
        answer = sys.stdin.readline().strip().lower()
        if answer not in ("y", "yes"):
            print("Canceled.")
            return 1
    for obj in objs:
        cluster.api.delete(WORKFLOWS, cluster.namespace, obj["metadata"]["name"])
    for name in config_maps:
        cluster.api.delete_config_map(cluster.namespace, name)
    print(f"Project '{args.project}' is deleted.")
    return 0


def _compiled(cluster: Cluster, obj: dict[str, Any]) -> Any:
    """The Workflow compiled from its project files as pushed (call>, !include, ...), in a
    temporary directory."""
    import base64
    import tempfile

    from kudig.api import key_path
    from kudig.workflow import load_workflow, load_workflow_text

    ref = workflow_ref(obj)
    spec = obj.get("spec") or {}
    with tempfile.TemporaryDirectory(prefix="kudig-show-") as tmp:
        root = Path(tmp)
        for name in (spec.get("project") or {}).get("configMaps") or []:
            cm = cluster.api.get_config_map(cluster.namespace, name)
            if cm is None:
                raise KudigError(f"Project ConfigMap '{name}' not found in namespace {cluster.namespace}")
            files = [(k, str(v).encode("utf-8")) for k, v in (cm.get("data") or {}).items()]
            files += [(k, base64.b64decode(v)) for k, v in (cm.get("binaryData") or {}).items()]
            for key, raw in files:
                path = root / key_path(key)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(raw)
        dig = root / f"{ref.name}.dig"
        if dig.is_file():
            return load_workflow(dig, root)
        return load_workflow_text(ref.name, str(spec.get("dig", "")), root)


def cmd_show(args: argparse.Namespace) -> int:
    """digdag's `show`: a workflow's task tree, or its DAG as DOT or SVG. A `.dig` file (or an
    existing path) is compiled here with no cluster; else the workflow is read from the cluster."""
    from kudig import taskgraph
    from kudig.workflow import load_workflow

    project, name = workflow_args(args.names)
    path = Path(name)
    if project is None and (name.endswith(".dig") or path.is_file()):
        wf = load_workflow(path, Path(args.project) if args.project else None)
    else:
        cluster = Cluster(args.namespace)
        wf = _compiled(cluster, cluster.workflow(name, project)[0])
    if args.format == "dot":
        print(taskgraph.dot(wf.tasks, wf.name), end="")
    elif args.format == "svg":
        print(taskgraph.svg(wf.tasks, wf.name), end="")
    else:
        print(taskgraph.text_tree(wf.tasks))
    return 0


def cluster_secrets(args: argparse.Namespace, values: dict[str, str], delete: list[str]) -> int:
    """digdag's `secrets --project P`: the keys of the Secret the project's Workflows read
    (`spec.secretName`, default kudig-secrets), `--set` and `--delete` in it. Values are never
    printed."""
    from kudig.api import MANAGED_BY, MANAGER

    cluster = Cluster(args.namespace)
    objs = [o for o in cluster.list(WORKFLOWS) if in_project(workflow_ref(o), args.project)]
    if not objs:
        raise KudigError(
            f"Project '{args.project}' not found in namespace {cluster.namespace} (kudig push it first)"
        )
    names = sorted({(o.get("spec") or {}).get("secretName") or "kudig-secrets" for o in objs})
    if len(names) > 1:
        raise KudigError(
            f"The workflows of project '{args.project}' read different Secrets ({', '.join(names)}); "
            "give them one spec.secretName"
        )
    secret = names[0]
    where = f"Secret {secret} in namespace {cluster.namespace}"
    if values or delete:
        keys = cluster.api.secret_keys(cluster.namespace, secret) or []
        missing = [k for k in delete if k not in keys]
        if missing:
            raise KudigError(f"No secret '{missing[0]}' in {where}")
        cluster.api.update_secret(cluster.namespace, secret, values, delete, {MANAGED_BY: MANAGER})
        for key in values:
            print(f"Secret '{key}' set ({where})")
        for key in delete:
            print(f"Secret '{key}' deleted ({where})")
        return 0
    keys = cluster.api.secret_keys(cluster.namespace, secret) or []
    _print(
        {"secret": secret, "keys": keys},
        args.output,
        lambda: "\n".join(keys) if keys else f"(no secrets: {where} has no keys or does not exist)",
    )
    return 0
