"""Task pods: one per work task, named deterministically, least-privileged.

Pure functions from (session, task, evaluated config, workflow defaults) to a Pod manifest. The
name depends only on the session, attempt, the task's full name and the retry counts of the task
and its ancestors, so a controller that restarts and repeats a `StartTask` meets AlreadyExists
and adopts the pod instead of running the task twice.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from kudig_runner.dispatch import operator_secret_keys
from kudig_runner.durations import timeout_seconds
from kudig_runner.protocol import INPUT_PART_KEY, split_input
from kudig_runner.shell import env_value, fits_exec, is_valid_env_key
from pydantic import ValidationError

from kudig.api import (
    ANNOTATION_TASK,
    API_VERSION,
    LABEL_ATTEMPT,
    LABEL_SESSION,
    LABEL_TASK_ID,
    LABEL_WORKFLOW,
    MANAGED_BY,
    MANAGER,
    TASK_CONTAINER,
    label_value,
)
from kudig.engine.core import StartTask
from kudig.schema import PodDefaults
from kudig.taskio import task_input

WORKSPACE = "/workspace"
KUDIG_DIR = "/kudig"
PROJECT_MOUNT = "/kudig-project"
INPUT_MOUNT = "/kudig-input"
INPUT_INLINE_MAX = 96 * 1024
RUNNER_GRACE_SECONDS = 60  # pod start and the runner's own stop, on top of a task's timeout  # larger task inputs travel in ConfigMaps, not in the pod spec
MAX_TERMINATION_MESSAGE = 4096
_SECRET_RE = re.compile(r"\$\{secret:([A-Za-z0-9_.\-]+)\}")
_DNS = re.compile(r"[^a-z0-9-]+")


def pod_name(session: str, attempt: int, task_name: str, generation: str) -> str:
    digest = hashlib.sha256(f"{session}\0{attempt}\0{task_name}\0{generation}".encode()).hexdigest()[:10]
    base = _DNS.sub("-", session.lower()).strip("-")[:52].rstrip("-")
    return f"{base}-{digest}"


def secret_keys(value: Any) -> list[str]:
    """Every `${secret:key}` the task config mentions (the pod gets only those)."""
    found: list[str] = []

    def walk(v: Any) -> None:
        if isinstance(v, str):
            found.extend(m.group(1) for m in _SECRET_RE.finditer(v))
        elif isinstance(v, Mapping):
            for item in v.values():
                walk(item)
        elif isinstance(v, list):
            for item in v:
                walk(item)

    walk(value)
    return sorted(set(found))


def k8s_escape(text: str) -> str:
    """Kubernetes expands `$(VAR)` in env values and commands; `$$(` keeps a literal `$(`."""
    return text.replace("$(", "$$(")


def secret_env_name(index: int) -> str:
    return f"KUDIG_SECRET_{index}"


# A task's own pod settings: `_pod:` in its config (or `_export`ed from a group), digdag-style
# camelCase keys as in Kubernetes. Only placement: the image is `docker: image:`, env is `_env`.
POD_KEY = "_pod"
TASK_POD_FIELDS = (
    "nodeSelector",
    "tolerations",
    "affinity",
    "resources",
    "priorityClassName",
    "labels",
    "annotations",
    "serviceAccountName",
    "automountServiceAccountToken",
)
_MERGED_MAPS = ("node_selector", "labels", "annotations")


class PodSettingsError(ValueError):
    """A task's `_pod:` is not what Kubernetes takes (the task fails with this message)."""


def task_pod(config: Mapping[str, Any]) -> PodDefaults | None:
    """The task's `_pod:` settings, validated; None when it has none."""
    raw = config.get(POD_KEY)
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise PodSettingsError(f"{POD_KEY}: expected a map of {', '.join(TASK_POD_FIELDS)}, got {raw!r}")
    unknown = [k for k in raw if k not in TASK_POD_FIELDS]
    if unknown:
        raise PodSettingsError(
            f"{POD_KEY}: unknown key {unknown[0]!r} (expected one of {', '.join(TASK_POD_FIELDS)})"
        )
    try:
        return PodDefaults.model_validate(dict(raw))
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise PodSettingsError(f"{POD_KEY}.{where}: {first['msg']}") from None


TASK_POD_ENV = "KUDIG_TASK_POD"


def task_pod_defaults(text: str | None) -> PodDefaults | None:
    """The controller's defaults for every task pod: `KUDIG_TASK_POD`, a JSON object with
    `spec.pod`'s keys (Helm's `taskPod` value). Raises PodSettingsError on a bad value."""
    if not text or not text.strip():
        return None
    try:
        raw = json.loads(text)
        if not isinstance(raw, dict):
            raise ValueError(f"expected a JSON object, got {type(raw).__name__}")
        return PodDefaults.model_validate(raw)
    except (ValueError, ValidationError) as e:
        raise PodSettingsError(f"{TASK_POD_ENV}: not valid pod defaults: {e}") from None


def merge_pod(*layers: PodDefaults | None) -> PodDefaults:
    """Pod settings, later layers winning field by field (the controller's defaults, then the
    Workflow's `spec.pod`, then the task's `_pod:`); node selectors, labels and annotations merge
    key by key, resources per requests/limits entry."""
    out: dict[str, Any] = {}
    for layer in layers:
        if layer is None:
            continue
        for field_name in layer.model_fields_set:
            value = getattr(layer, field_name)
            if value is None:
                continue
            if field_name in _MERGED_MAPS and isinstance(out.get(field_name), dict):
                value = {**out[field_name], **value}
            elif field_name == "resources" and isinstance(out.get(field_name), dict):
                value = {k: {**out[field_name].get(k, {}), **v} for k, v in value.items()} | {
                    k: v for k, v in out[field_name].items() if k not in value
                }
            out[field_name] = value
    return PodDefaults.model_validate(out)


NOTIFICATION_ENV = "KUDIG_NOTIFICATION"


def operator_notifier() -> str:
    """The notifier `notify>` sends through, as the operator was configured (Helm's
    `notifications` values, rendered into its environment as `KUDIG_NOTIFICATION`: a JSON object
    of digdag's `notification.*` keys); empty: none. docs/notifications.md."""
    return os.environ.get(NOTIFICATION_ENV, "")


@dataclass(frozen=True)
class PodContext:
    namespace: str
    session_name: str
    session_uid: str
    workflow: str
    attempt: int
    runner_image: str
    config_maps: list[str]
    defaults: PodDefaults
    secret_name: str
    # the controller's defaults for every task pod (Helm's `taskPod`), under the Workflow's `defaults`
    base: PodDefaults | None = None
    # notify>'s pod gets it: the controller itself never sends anything (no network I/O there)
    notification: str = field(default_factory=operator_notifier)


def _input_config_map(ctx: PodContext, name: str, part: bytes) -> dict[str, Any]:
    """One part of a large task input, owned by the Session (collected with it)."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": name,
            "namespace": ctx.namespace,
            "labels": {MANAGED_BY: MANAGER, LABEL_SESSION: label_value(ctx.session_name)},
            "ownerReferences": [_owner(ctx)],
        },
        "immutable": True,
        "binaryData": {INPUT_PART_KEY: base64.b64encode(part).decode()},
    }


def _owner(ctx: PodContext) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "Session",
        "name": ctx.session_name,
        "uid": ctx.session_uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _docker_image(config: Mapping[str, Any]) -> str | None:
    docker = config.get("docker")
    if isinstance(docker, Mapping) and isinstance(docker.get("image"), str) and docker["image"]:
        return str(docker["image"])
    return None


def _runner_command(interpreter: list[str], input_args: list[str]) -> list[str]:
    """The runner, its result written as the container's termination message."""
    return [
        *interpreter,
        "-m",
        "kudig_runner",
        *input_args,
        "--output",
        "/dev/termination-log",
        "--max-output-bytes",
        str(MAX_TERMINATION_MESSAGE),
        "--cwd",
        WORKSPACE,
    ]


def _init_container(
    ctx: PodContext,
    input_env: dict[str, Any] | None,
    mounts: list[dict[str, Any]],
    security: dict[str, Any],
    *,
    input_parts: bool = False,
) -> dict[str, Any]:
    """The container that lays out the workspace (and the input and runner for py>) for a task
    container in an image other than the runner's."""
    init: dict[str, Any] = {
        "name": "prepare",
        "image": ctx.runner_image,
        "command": [
            "python3",
            "-m",
            "kudig_runner.prepare",
            "--projects",
            PROJECT_MOUNT,
            "--workspace",
            WORKSPACE,
            "--kudig-dir",
            KUDIG_DIR,
            *(["--input-parts", INPUT_MOUNT] if input_parts else []),
        ],
        "env": [input_env] if input_env is not None else [],
        "volumeMounts": [
            {"name": "workspace", "mountPath": WORKSPACE},
            {"name": "kudig", "mountPath": KUDIG_DIR},
            *mounts,
        ],
        "securityContext": security,
    }
    if ctx.defaults.image_pull_policy:
        init["imagePullPolicy"] = ctx.defaults.image_pull_policy
    return init


def build_pod(ctx: PodContext, *, name: str, action: StartTask) -> dict[str, Any]:
    """The pod that runs `action` (a work task's StartTask), named `name` (see `build_task`)."""
    return build_task(ctx, name=name, action=action)[0]


def build_task(
    ctx: PodContext, *, name: str, action: StartTask
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The pod that runs `action`, and the ConfigMaps it needs created first: its input, when the
    input (every parameter the task sees) is too large to sit in the pod spec."""
    config = action.config
    op_type = action.op_type
    pod_settings = merge_pod(ctx.base, ctx.defaults, task_pod(config))
    ctx = replace(ctx, defaults=pod_settings, base=None)
    image = _docker_image(config) or pod_settings.image or ctx.runner_image
    own_runner = image == ctx.runner_image
    # `${secret:...}` in the config, and the secrets the operator reads itself (pg.password...).
    wanted = set(secret_keys(config))
    if op_type != "notify" or ctx.notification:  # notify> reads its secrets only to send
        wanted |= set(operator_secret_keys(op_type, config))
    keys = sorted(wanted)
    secret_map = {key: secret_env_name(i) for i, key in enumerate(keys)}
    the_input = task_input(action, secret_map)
    workdir = the_input["workdir"]
    input_text = json.dumps(the_input, separators=(",", ":"), default=str)
    input_parts = split_input(input_text) if len(input_text) > INPUT_INLINE_MAX else []
    env: list[dict[str, Any]] = [
        {
            "name": env_name,
            "valueFrom": {"secretKeyRef": {"name": ctx.secret_name, "key": key, "optional": True}},
        }
        for key, env_name in secret_map.items()
    ]
    for k, v in (pod_settings.env or {}).items():
        env.append({"name": k, "value": k8s_escape(v)})
    if op_type == "notify" and ctx.notification:
        env.append({"name": NOTIFICATION_ENV, "value": k8s_escape(ctx.notification)})
    if op_type == "sh" and not own_runner:
        # A plain image (busybox, alpine...): no Python, so the shell runs the script itself with
        # digdag's environment, and secrets come in as variables from secretKeyRef.
        script = k8s_escape(str(config.get("_command", "")))
        script = _SECRET_RE.sub(lambda m: "${" + secret_map[m.group(1)] + "}", script)
        for key, value in config.items():
            text = env_value(value)
            if (
                is_valid_env_key(str(key))
                and not str(key).startswith("KUDIG_SECRET_")
                and fits_exec(str(key), text)
            ):
                env.append({"name": str(key), "value": k8s_escape(text)})
        for key, value in the_input["env"].items():
            text = _SECRET_RE.sub(lambda m: "$(" + secret_map[m.group(1)] + ")", k8s_escape(value))
            env.append({"name": key, "value": text})
        command = ["/bin/sh", "-c", script]
    elif own_runner:
        # The runner image prepares its own workspace: one container start instead of two.
        source = ["--input-parts", INPUT_MOUNT] if input_parts else ["--input-env", "KUDIG_TASK_INPUT"]
        command = _runner_command(["python3"], [*source, "--prepare-from", PROJECT_MOUNT])
    else:
        python = config.get("py", {}).get("python") if isinstance(config.get("py"), Mapping) else None
        interpreter = python if isinstance(python, list) else [python or "python3"]
        command = _runner_command([str(p) for p in interpreter], ["--input", f"{KUDIG_DIR}/input.json"])
        env.append({"name": "PYTHONPATH", "value": f"{KUDIG_DIR}/lib"})
        env.append({"name": "PYTHONDONTWRITEBYTECODE", "value": "1"})
    volumes: list[dict[str, Any]] = [{"name": "workspace", "emptyDir": {}}]
    project_mounts: list[dict[str, Any]] = []
    for i, cm in enumerate(ctx.config_maps):
        volumes.append({"name": f"project-{i}", "configMap": {"name": cm}})
        project_mounts.append({"name": f"project-{i}", "mountPath": f"{PROJECT_MOUNT}/{i}", "readOnly": True})
    input_env = {"name": "KUDIG_TASK_INPUT", "value": k8s_escape(input_text)}
    input_mounts: list[dict[str, Any]] = []
    config_maps: list[dict[str, Any]] = []
    for i, part in enumerate(input_parts):
        cm_name = f"{name}-input-{i}"
        config_maps.append(_input_config_map(ctx, cm_name, part))
        volumes.append({"name": f"input-{i}", "configMap": {"name": cm_name}})
        input_mounts.append({"name": f"input-{i}", "mountPath": f"{INPUT_MOUNT}/{i}", "readOnly": True})
    container_security: dict[str, Any] = {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "runAsNonRoot": True,
    }
    resources = pod_settings.resources or {}
    main: dict[str, Any] = {
        "name": TASK_CONTAINER,
        "image": image,
        "command": command,
        "workingDir": WORKSPACE if own_runner else f"{WORKSPACE}/{workdir}".rstrip("/"),
        "env": env,
        "volumeMounts": [{"name": "workspace", "mountPath": WORKSPACE}],
        "securityContext": container_security,
        "terminationMessagePolicy": "File",
    }
    if resources:
        main["resources"] = resources
    if pod_settings.image_pull_policy:
        main["imagePullPolicy"] = pod_settings.image_pull_policy
    init_containers: list[dict[str, Any]] = []
    if own_runner:
        if not input_parts:
            env.append(input_env)
        main["volumeMounts"] += project_mounts + input_mounts
    elif op_type != "sh":
        # Another image: an init container (runner image) lays out the workspace, the task input
        # and a copy of the runner for py>, on volumes the task container then mounts.
        volumes.append({"name": "kudig", "emptyDir": {}})
        main["volumeMounts"].append({"name": "kudig", "mountPath": KUDIG_DIR, "readOnly": True})
        init_containers.append(
            _init_container(
                ctx,
                None if input_parts else input_env,
                project_mounts + input_mounts,
                container_security,
                input_parts=bool(input_parts),
            )
        )
    else:
        # sh> in a plain image: its input is the command and the environment; the init
        # container only lays out the workspace.
        volumes[:] = [v for v in volumes if not v["name"].startswith("input-")]
        volumes.append({"name": "kudig", "emptyDir": {}})
        init_containers.append(_init_container(ctx, None, project_mounts, container_security))
        config_maps = []
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": bool(pod_settings.automount_service_account_token),
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 65532,
            "runAsGroup": 65532,
            "fsGroup": 65532,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "initContainers": init_containers,
        "containers": [main],
        "volumes": volumes,
    }
    try:
        timeout = timeout_seconds(config.get("timeout"))
    except ValueError:
        timeout = None  # the runner reports it as the task's error
    if timeout is not None:
        # The kubelet's backstop: the runner stops the command itself at the timeout (with a clear
        # message); a plain-image shell has no runner, so the deadline is the timeout itself.
        runner_grace = 0 if op_type == "sh" and not own_runner else RUNNER_GRACE_SECONDS
        spec["activeDeadlineSeconds"] = math.ceil(timeout) + runner_grace
    if pod_settings.service_account_name:
        spec["serviceAccountName"] = pod_settings.service_account_name
    if pod_settings.node_selector:
        spec["nodeSelector"] = pod_settings.node_selector
    if pod_settings.tolerations:
        spec["tolerations"] = [
            t.model_dump(by_alias=True, exclude_none=True) for t in pod_settings.tolerations
        ]
    if pod_settings.affinity:
        spec["affinity"] = pod_settings.affinity
    if pod_settings.priority_class_name:
        spec["priorityClassName"] = pod_settings.priority_class_name
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": ctx.namespace,
            "labels": {
                **(pod_settings.labels or {}),
                MANAGED_BY: MANAGER,
                LABEL_SESSION: label_value(ctx.session_name),
                LABEL_WORKFLOW: label_value(ctx.workflow),
                LABEL_ATTEMPT: str(ctx.attempt),
                LABEL_TASK_ID: str(action.task_id),
            },
            "annotations": {**(pod_settings.annotations or {}), ANNOTATION_TASK: action.name},
            "ownerReferences": [_owner(ctx)],
        },
        "spec": spec,
    }
    return pod, config_maps
