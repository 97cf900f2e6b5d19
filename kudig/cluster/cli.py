"""The CLI's cluster commands: push, start, retry, kill, sessions, session, attempts, tasks, log.

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
    API_VERSION,
    LABEL_SESSION,
    LABEL_WORKFLOW,
    SESSIONS,
    TASK_CONTAINER,
    TERMINAL,
    WORKFLOWS,
    label_value,
)
from kudig.cluster.kube import AlreadyExists, Kube
from kudig.cluster.project import build_objects
from kudig.errors import KudigError
from kudig.naming import dns_label, session_name
from kudig.params import deep_merge, parse_param_args


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
        if current.get("spec") == obj.get("spec") and (current["metadata"].get("labels") or {}) == (
            meta.get("labels") or {}
        ):
            return "unchanged"
        meta["resourceVersion"] = current["metadata"]["resourceVersion"]
        self.api.replace(plural, obj)
        return "configured"


def decode_engine(session: dict[str, Any]) -> dict[str, Any] | None:
    from kudig.engine.state import decode_state_json

    blob = ((session.get("status") or {}).get("engine") or {}).get("data")
    return decode_state_json(blob) if blob else None


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


def _workflow_tz(cluster: Cluster, workflow: str) -> tuple[str, Any]:
    from kudig.timezones import parse_timezone
    from kudig.yamlload import load_dig_text

    obj = cluster.get(WORKFLOWS, workflow)
    tz_name = (obj.get("status") or {}).get("timezone")
    if not tz_name:
        definition = load_dig_text(obj["spec"]["dig"], f"{workflow}.dig", Path("."))
        tz_name = str(definition.get("timezone", "UTC"))
    return tz_name, parse_timezone(tz_name)


def cmd_start(args: argparse.Namespace) -> int:
    from kudig.session_vars import local_session_time

    cluster = Cluster(args.namespace)
    _, tz = _workflow_tz(cluster, args.workflow)
    spec_text = "daily" if args.session == "now" else args.session
    when = (
        datetime.now(tz)
        if args.session == "now"
        else local_session_time(spec_text, timezone=tz, schedule=None, now=datetime.now(tz))
    )
    name = session_name(args.workflow, when)
    body = {
        "apiVersion": API_VERSION,
        "kind": "Session",
        "metadata": {
            "name": name,
            "namespace": cluster.namespace,
            "labels": {LABEL_WORKFLOW: label_value(dns_label(args.workflow))},
        },
        "spec": {
            "workflow": args.workflow,
            "sessionTime": when.isoformat(),
            "params": parse_param_args(args.param or []),
        },
    }
    try:
        cluster.api.create(SESSIONS, cluster.namespace, body)
    except AlreadyExists:
        raise KudigError(
            f"A session for the requested session_time already exists (session={name}, session_time={when.isoformat()})\n"
            f"hint: use `kudig retry {name} --all` to run it again"
        ) from None
    print(f"Started a session: {name}")
    print(f"  workflow: {args.workflow}\n  session time: {when.isoformat()}")
    print(f"  * use `kudig session {name}` to show the session")
    return 0


def cmd_sessions(args: argparse.Namespace) -> int:
    cluster = Cluster(args.namespace)
    rows = []
    for s in sorted(cluster.list(SESSIONS), key=lambda o: o["metadata"]["creationTimestamp"]):
        spec, status = s.get("spec") or {}, s.get("status") or {}
        if args.workflow and spec.get("workflow") != args.workflow:
            continue
        rows.append(
            [
                s["metadata"]["name"],
                spec.get("workflow", ""),
                spec.get("sessionTime", ""),
                status.get("phase", "Pending"),
                status.get("progress", ""),
                str(status.get("attempt", "")),
            ]
        )
    print(_table(rows, ["NAME", "WORKFLOW", "SESSION TIME", "STATE", "PROGRESS", "ATTEMPT"]))
    return 0


def cmd_session(args: argparse.Namespace) -> int:
    cluster = Cluster(args.namespace)
    s = cluster.get(SESSIONS, args.session)
    spec, status = s.get("spec") or {}, s.get("status") or {}
    print(
        f"  session: {args.session}\n  workflow: {spec.get('workflow')}\n  session time: {spec.get('sessionTime')}"
    )
    print(
        f"  state: {status.get('phase', 'Pending')}\n  progress: {status.get('progress', '')}\n  attempt: {status.get('attempt', '')}"
    )
    if status.get("message"):
        print(f"  message: {status['message']}")
    for f in status.get("failedTasks") or []:
        print(f"  * {f['name']}: {f['message']}")
    return 0


def cmd_attempts(args: argparse.Namespace) -> int:
    cluster = Cluster(args.namespace)
    s = cluster.get(SESSIONS, args.session)
    rows = [
        [
            str(a.get("index")),
            str(a.get("revision", "")),
            a.get("phase", ""),
            a.get("startedAt", ""),
            a.get("finishedAt") or "",
        ]
        for a in (s.get("status") or {}).get("attempts") or []
    ]
    print(_table(rows, ["ATTEMPT", "REVISION", "STATE", "STARTED", "FINISHED"]))
    return 0


def cmd_tasks(args: argparse.Namespace) -> int:
    cluster = Cluster(args.namespace)
    state = decode_engine(cluster.get(SESSIONS, args.session))
    if state is None:
        print("no tasks yet")
        return 0
    rows = []
    for t in state["tasks"]:
        if t.get("superseded"):
            continue
        err = (t.get("error") or {}).get("message", "") if t["state"] in ("error", "group_error") else ""
        rows.append([t["name"], t["state"], str(t.get("retry_count", 0)), err[:80]])
    print(_table(rows, ["TASK", "STATE", "RETRIES", "ERROR"]))
    return 0


def cmd_retry(args: argparse.Namespace) -> int:
    cluster = Cluster(args.namespace)
    s = cluster.get(SESSIONS, args.session)
    status = s.get("status") or {}
    if status.get("phase") not in TERMINAL:
        raise KudigError(
            f"Session {args.session} is still {status.get('phase', 'Pending')}; kill it or wait before a retry"
        )
    if not args.all and status.get("phase") == "Succeeded":
        raise KudigError(
            f"Session {args.session} succeeded: nothing to resume (use --all to run everything again)"
        )
    params = dict((s.get("spec") or {}).get("params") or {})
    deep_merge(params, parse_param_args(args.param or []))
    attempt = int(status.get("attempt") or 1) + 1
    cluster.patch_spec(
        SESSIONS,
        args.session,
        {"attempt": attempt, "retryMode": "all" if args.all else "failed", "kill": False, "params": params},
    )
    print(
        f"Started attempt {attempt} of session {args.session} ({'all tasks' if args.all else 'failed tasks'})"
    )
    return 0


def cmd_kill(args: argparse.Namespace) -> int:
    cluster = Cluster(args.namespace)
    s = cluster.get(SESSIONS, args.session)
    if (s.get("status") or {}).get("phase") in TERMINAL:
        raise KudigError(f"Session {args.session} already finished ({s['status']['phase']})")
    cluster.patch_spec(SESSIONS, args.session, {"kill": True})
    print(f"Kill requested for session {args.session}")
    return 0


def cmd_log(args: argparse.Namespace) -> int:
    from kudig_runner.protocol import strip_frames

    cluster = Cluster(args.namespace)
    session = cluster.get(SESSIONS, args.session)
    state = decode_engine(session) or {"tasks": []}
    pods = cluster.api.list_pods(cluster.namespace, f"{LABEL_SESSION}={label_value(args.session)}")
    by_task: dict[str, list[dict[str, Any]]] = {}
    for pod in pods:
        task = ((pod.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION_TASK, "")
        by_task.setdefault(task, []).append(pod)
    for t in state["tasks"]:
        if t.get("superseded") or t.get("group"):
            continue
        if args.task and not (t["name"] == args.task or t["name"].endswith(args.task)):
            continue
        echo = (t.get("state_params") or {}).get("log")
        for pod in sorted(by_task.get(t["name"], []), key=lambda p: p["metadata"]["creationTimestamp"]):
            pod_name = pod["metadata"]["name"]
            print(f"--- {t['name']} (pod {pod_name})")
            text = cluster.api.pod_log(cluster.namespace, pod_name, TASK_CONTAINER)
            # a result too large for the termination message travels at the end of the log
            print("(no log)" if text is None else strip_frames(text), end="" if text else "\n")
        if echo:
            print(f"--- {t['name']}")
            print(echo, end="")
    return 0


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
    start.add_argument("workflow")
    start.add_argument(
        "--session",
        required=True,
        help="now|hourly|daily|YYYY-MM-DD|'YYYY-MM-DD HH:MM:SS' (workflow time zone)",
    )
    start.add_argument("-p", "--param", action="append", metavar="KEY=VALUE")
    common(start)
    start.set_defaults(func=cmd_start)

    sessions = sub.add_parser("sessions", help="list sessions")
    sessions.add_argument("workflow", nargs="?")
    common(sessions)
    sessions.set_defaults(func=cmd_sessions)

    for cmd, func, text in (
        ("session", cmd_session, "show a session"),
        ("attempts", cmd_attempts, "list a session's attempts"),
        ("tasks", cmd_tasks, "list a session's tasks"),
        ("kill", cmd_kill, "kill a running session"),
    ):
        p = sub.add_parser(cmd, help=text)
        p.add_argument("session")
        common(p)
        p.set_defaults(func=func)

    retry = sub.add_parser("retry", help="start a new attempt of a finished session")
    retry.add_argument("session")
    mode = retry.add_mutually_exclusive_group()
    mode.add_argument("--all", action="store_true", help="rerun every task")
    mode.add_argument("--resume", action="store_true", help="rerun failed tasks only (default)")
    retry.add_argument("-p", "--param", action="append", metavar="KEY=VALUE")
    common(retry)
    retry.set_defaults(func=cmd_retry)

    logc = sub.add_parser("log", help="show task logs of a session")
    logc.add_argument("session")
    logc.add_argument("task", nargs="?", help="+task (default: all)")
    common(logc)
    logc.set_defaults(func=cmd_log)
