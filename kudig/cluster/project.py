"""What `kudig push` sends: a digdag project directory as ConfigMaps plus one Workflow per `.dig`.

Pure (no API calls): `kudig push --dry-run -o yaml` prints exactly these objects for GitOps, and
`kudig push` applies them. Every file path is checked with the same safe-path rules the
controller and the task pods apply (`kudig.api.check_relpath`), and a symbolic link that leaves
the project is refused rather than followed, so a push never ships a file from elsewhere on the
machine. The Workflow carries the digest of the files (`spec.project.digest`): a changed file is
a new Workflow revision, and the controller waits until the ConfigMaps hold exactly those files.
Each Workflow carries its digdag and project names (label and annotations, `kudig.workflowref`),
so commands find it by the name the user knows.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from kudig.api import (
    ANNOTATION_PROJECT_NAME,
    ANNOTATION_WORKFLOW_NAME,
    API_VERSION,
    LABEL_PROJECT,
    LABEL_WORKFLOW_NAME,
    MANAGED_BY,
    MANAGER,
    UnsafePath,
    check_relpath,
    encode_key,
    project_digest,
)
from kudig.errors import KudigError
from kudig.naming import dns_label
from kudig.workflowref import name_label

CONFIGMAP_LIMIT = 900 * 1024  # stay well under the 1 MiB object limit


def project_files(root: Path) -> list[Path]:
    """Every file digdag would push: dot files, `.digdag/` and `__pycache__` excluded."""
    root = root.resolve()
    files = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if any(part.startswith(".") for part in rel.parts) or "__pycache__" in rel.parts:
            continue
        if path.is_symlink():
            target = path.resolve()
            if not target.is_relative_to(root):
                raise KudigError(
                    f"{rel.as_posix()}: a symbolic link to {target}, outside the project; "
                    "kudig push only sends files inside the project"
                )
        if path.is_file():
            files.append(path)
    return files


def _key(rel: str) -> str:
    try:
        check_relpath(rel)
    except UnsafePath as e:
        raise KudigError(f"{rel}: {e}") from None
    key = encode_key(rel)
    if len(key) > 253 or not all(c.isascii() and (c.isalnum() or c in "-._") for c in key):
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
    contents: list[tuple[str, bytes]] = []
    for path in project_files(root):
        rel = path.relative_to(root).as_posix()
        key = _key(rel)
        raw = path.read_bytes()
        contents.append((key, raw))
        if size + len(raw) > CONFIGMAP_LIMIT and (chunks[-1][0] or chunks[-1][1]):
            chunks.append(({}, {}))
            size = 0
        size += len(raw)
        try:
            chunks[-1][0][key] = raw.decode("utf-8")
        except UnicodeDecodeError:
            chunks[-1][1][key] = base64.b64encode(raw).decode()
    base = dns_label(project)
    labels = {MANAGED_BY: MANAGER, LABEL_PROJECT: base}
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
    digest = project_digest(contents)
    for dig in digs:
        spec: dict[str, Any] = {
            "name": dig.stem,
            "dig": dig.read_text(encoding="utf-8"),
            "project": {"configMaps": cm_names, "digest": digest},
        }
        if image:
            spec["pod"] = {"image": image}
        objects.append(
            {
                "apiVersion": API_VERSION,
                "kind": "Workflow",
                "metadata": {
                    "name": dns_label(dig.stem),
                    "namespace": namespace,
                    "labels": {**labels, LABEL_WORKFLOW_NAME: name_label(dig.stem)},
                    "annotations": {ANNOTATION_WORKFLOW_NAME: dig.stem, ANNOTATION_PROJECT_NAME: project},
                },
                "spec": spec,
            }
        )
    return objects
