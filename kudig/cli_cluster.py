"""The CLI's cluster commands: push, start, retry, kill, sessions, session, attempts, tasks, log.

They talk to the API server with the current kubeconfig (as `kubectl` does) and mirror digdag's
client commands. The Kubernetes client is imported lazily so `kudig run` never needs it.
"""

from __future__ import annotations

import argparse
import base64
import json
import re
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from kudig.errors import KudigError
from kudig.naming import dns_label, session_name

GROUP = "kudig.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
CONFIGMAP_LIMIT = 900 * 1024  # stay well under the 1 MiB object limit
_KEY_OK = re.compile(r"^[-._a-zA-Z0-9]+$")
TERMINAL = ("Succeeded", "Failed", "Killed")


# --------------------------------------------------------------------------- project -> objects


def project_files(root: Path) -> list[Path]:
    """Every file digdag would push: dot files and `.digdag/` excluded."""
    files = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if any(part.startswith(".") for part in rel.parts) or "__pycache__" in rel.parts:
            continue
        if path.is_file():
            files.append(path)
    return files


def encode_key(rel: str) -> str:
    """Same encoding as kudig_runner.prepare (which decodes it in the pod)."""
    from kudig_runner.prepare import encode_key as encode

    key = encode(rel)
    if not _KEY_OK.match(key) or len(key) > 253:
        raise KudigError(f"{rel}: file names may only use letters, digits, '-', '_' and '.' (and be short)")
    return key


def build_objects(
    root: Path, project: str, namespace: str, image: str | None = None, *, validate: bool = True
) -> list[dict[str, Any]]:
    """ConfigMaps with the project files and one Workflow per top-level `.dig` file.

    `validate` compiles each workflow first, so `kudig push` reports file:line here rather than
    in a status condition (tests turn it off to exercise the controller's own reporting)."""
    from kudig.workflow import load_workflow

    root = root.resolve()
    if not root.is_dir():
        raise KudigError(f"{root}: not a directory")
    digs = sorted(p for p in root.glob("*.dig"))
    if not digs:
        raise KudigError(f"{root}: no .dig workflow file at the top of the project")
    for dig in digs if validate else []:
        load_workflow(dig, root)
    chunks: list[tuple[dict[str, str], dict[str, str]]] = [({}, {})]
    size = 0
    for path in project_files(root):
        rel = path.relative_to(root).as_posix()
        key = encode_key(rel)
        raw = path.read_bytes()
        if size + len(raw) > CONFIGMAP_LIMIT and (chunks[-1][0] or chunks[-1][1]):
            chunks.append(({}, {}))
            size = 0
        size += len(raw)
        try:
            chunks[-1][0][key] = raw.decode("utf-8")
        except UnicodeDecodeError:
            chunks[-1][1][key] = base64.b64encode(raw).decode()
    base = dns_label(project)
    labels = {"app.kubernetes.io/managed-by": "kudig", "kudig.io/project": base}
    objects: list[dict[str, Any]] = []
    cm_names = []
    for i, (data, binary) in enumerate(chunks):
        name = f"{base}-files" if i == 0 else f"{base}-files-{i}"
        cm_names.append(name)
        cm: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "data": data,
        }
        if binary:
            cm["binaryData"] = binary
        objects.append(cm)
    for dig in digs:
        spec: dict[str, Any] = {
            "name": dig.stem,
            "dig": dig.read_text(encoding="utf-8"),
            "project": {"configMaps": cm_names},
        }
        if image:
            spec["pod"] = {"image": image}
        objects.append(
            {
                "apiVersion": API_VERSION,
                "kind": "Workflow",
                "metadata": {"name": dns_label(dig.stem), "namespace": namespace, "labels": labels},
                "spec": spec,
            }
        )
    return objects


# --------------------------------------------------------------------------- API helpers


class Cluster:
    def __init__(self, namespace: str | None) -> None:
        try:
            from kubernetes import client, config
        except ImportError:
            raise KudigError(
                "the cluster commands need the 'kubernetes' package: pip install 'kudig[operator]'"
            ) from None
        try:
            config.load_kube_config()
            _, active = config.list_kube_config_contexts()
            default_ns = (active or {}).get("context", {}).get("namespace") or "default"
        except Exception as e:  # no kubeconfig: maybe in a pod
            try:
                config.load_incluster_config()
                default_ns = "default"
            except Exception:
                raise KudigError(f"no Kubernetes cluster configured (KUBECONFIG): {e}") from None
        self.namespace = namespace or default_ns
        self.api_client = client.ApiClient()
        self.core = client.CoreV1Api(self.api_client)
        self.custom = client.CustomObjectsApi(self.api_client)
        from kubernetes.client.exceptions import ApiException

        self.ApiException = ApiException

    def get(self, plural: str, name: str) -> dict[str, Any]:
        try:
            obj: dict[str, Any] = self.custom.get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, plural, name
            )
            return obj
        except self.ApiException as e:
            if e.status == 404:
                raise KudigError(
                    f"{plural[:-1].capitalize()} '{name}' not found in namespace {self.namespace}"
                ) from None
            raise

    def list(self, plural: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.custom.list_namespaced_custom_object(
            GROUP, VERSION, self.namespace, plural
        )["items"]
        return items

    def patch_spec(self, plural: str, name: str, spec: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, self.namespace, plural, name, {"spec": spec}
        )

    def apply(self, obj: dict[str, Any]) -> str:
        """Create, or replace keeping the resourceVersion (last writer wins, as kubectl replace)."""
        meta = obj["metadata"]
        meta["namespace"] = self.namespace
        if obj["kind"] == "ConfigMap":
            try:
                self.core.create_namespaced_config_map(self.namespace, obj)
                return "created"
            except self.ApiException as e:
                if e.status != 409:
                    raise
            current = self.core.read_namespaced_config_map(meta["name"], self.namespace)
            meta["resourceVersion"] = current.metadata.resource_version
            self.core.replace_namespaced_config_map(meta["name"], self.namespace, obj)
            return "configured"
        plural = obj["kind"].lower() + "s"
        try:
            self.custom.create_namespaced_custom_object(GROUP, VERSION, self.namespace, plural, obj)
            return "created"
        except self.ApiException as e:
            if e.status != 409:
                raise
        current = self.get(plural, meta["name"])
        meta["resourceVersion"] = current["metadata"]["resourceVersion"]
        self.custom.replace_namespaced_custom_object(
            GROUP, VERSION, self.namespace, plural, meta["name"], obj
        )
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

    obj = cluster.get("workflows", workflow)
    tz_name = (obj.get("status") or {}).get("timezone")
    if not tz_name:
        definition = load_dig_text(obj["spec"]["dig"], f"{workflow}.dig", Path("."))
        tz_name = str(definition.get("timezone", "UTC"))
    return tz_name, parse_timezone(tz_name)


def cmd_start(args: argparse.Namespace) -> int:
    from kudig.cli import parse_param_args
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
            "labels": {"kudig.io/workflow": dns_label(args.workflow)},
        },
        "spec": {
            "workflow": args.workflow,
            "sessionTime": when.isoformat(),
            "params": parse_param_args(args.param or []),
        },
    }
    try:
        cluster.custom.create_namespaced_custom_object(GROUP, VERSION, cluster.namespace, "sessions", body)
    except cluster.ApiException as e:
        if e.status == 409:
            raise KudigError(
                f"A session for the requested session_time already exists (session={name}, session_time={when.isoformat()})\n"
                f"hint: use `kudig retry {name} --all` to run it again"
            ) from None
        raise
    print(f"Started a session: {name}")
    print(f"  workflow: {args.workflow}\n  session time: {when.isoformat()}")
    print(f"  * use `kudig session {name}` to show the session")
    return 0


def cmd_sessions(args: argparse.Namespace) -> int:
    cluster = Cluster(args.namespace)
    rows = []
    for s in sorted(cluster.list("sessions"), key=lambda o: o["metadata"]["creationTimestamp"]):
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
    s = cluster.get("sessions", args.session)
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
    s = cluster.get("sessions", args.session)
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
    state = decode_engine(cluster.get("sessions", args.session))
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
    from kudig.cli import parse_param_args
    from kudig.params import deep_merge

    cluster = Cluster(args.namespace)
    s = cluster.get("sessions", args.session)
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
        "sessions",
        args.session,
        {"attempt": attempt, "retryMode": "all" if args.all else "failed", "kill": False, "params": params},
    )
    print(
        f"Started attempt {attempt} of session {args.session} ({'all tasks' if args.all else 'failed tasks'})"
    )
    return 0


def cmd_kill(args: argparse.Namespace) -> int:
    cluster = Cluster(args.namespace)
    s = cluster.get("sessions", args.session)
    if (s.get("status") or {}).get("phase") in TERMINAL:
        raise KudigError(f"Session {args.session} already finished ({s['status']['phase']})")
    cluster.patch_spec("sessions", args.session, {"kill": True})
    print(f"Kill requested for session {args.session}")
    return 0


def cmd_log(args: argparse.Namespace) -> int:
    cluster = Cluster(args.namespace)
    session = cluster.get("sessions", args.session)
    state = decode_engine(session) or {"tasks": []}
    pods = cluster.core.list_namespaced_pod(
        cluster.namespace, label_selector=f"kudig.io/session={args.session[:63]}"
    ).items
    by_task: dict[str, list[Any]] = {}
    for pod in pods:
        by_task.setdefault((pod.metadata.annotations or {}).get("kudig.io/task", ""), []).append(pod)
    for t in state["tasks"]:
        if t.get("superseded") or t.get("group"):
            continue
        if args.task and not (t["name"] == args.task or t["name"].endswith(args.task)):
            continue
        echo = (t.get("state_params") or {}).get("log")
        for pod in sorted(by_task.get(t["name"], []), key=lambda p: p.metadata.creation_timestamp):
            print(f"--- {t['name']} (pod {pod.metadata.name})")
            try:
                print(
                    cluster.core.read_namespaced_pod_log(
                        pod.metadata.name, cluster.namespace, container="task"
                    ),
                    end="",
                )
            except cluster.ApiException as e:
                print(f"(no log: {e.reason})")
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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(1)
