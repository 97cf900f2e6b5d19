"""Which Workflow object a user's workflow reference means.

Users name workflows as digdag does, by their digdag name (`every_minute`, `MyFlow`), optionally
with their project (`kudig start PROJECT WORKFLOW`); the Workflow object's name (`every-minute-
7ab9c9`, DNS-safe) is an implementation detail that still works. `kudig push` labels each
Workflow with a label-safe form of its digdag name (`LABEL_WORKFLOW_NAME`, so the API server
filters by it) and annotates it with the exact names (`ANNOTATION_WORKFLOW_NAME`,
`ANNOTATION_PROJECT_NAME`), which a metadata-only listing carries. Pure: the CLI and the
controller list the candidates and call `resolve`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from kudig.api import ANNOTATION_PROJECT_NAME, ANNOTATION_WORKFLOW_NAME, LABEL_PROJECT, LABEL_WORKFLOW_NAME
from kudig.errors import KudigError
from kudig.naming import dns_label

_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def name_label(name: str) -> str:
    """A digdag name as a label value: itself when Kubernetes allows it (letters, digits, `-_.`,
    at most 63 characters), else its DNS-safe form with a short hash."""
    return name if len(name) <= 63 and _LABEL_VALUE.match(name) else dns_label(name)


def project_label(project: str) -> str:
    """The `kudig.io/project` label value of a project (as `kudig push` sets it)."""
    return dns_label(project)


@dataclass(frozen=True)
class WorkflowRef:
    """What a Workflow object says it is."""

    object_name: str
    name: str  # the digdag name
    project: str | None  # the project's name (None: not pushed by kudig push)


def workflow_ref(obj: Mapping[str, Any]) -> WorkflowRef:
    """A Workflow (a full object or only its metadata) as a reference: the digdag name is the
    annotation, else spec.name, else status.workflowName, else the object's name."""
    meta = obj.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    labels = meta.get("labels") or {}
    name = (
        annotations.get(ANNOTATION_WORKFLOW_NAME)
        or (obj.get("spec") or {}).get("name")
        or (obj.get("status") or {}).get("workflowName")
        or meta["name"]
    )
    project = annotations.get(ANNOTATION_PROJECT_NAME) or labels.get(LABEL_PROJECT)
    return WorkflowRef(str(meta["name"]), str(name), str(project) if project else None)


def selector(name: str, project: str | None = None) -> str:
    """The label selector of the Workflows that may be `name` (of `project`)."""
    out = f"{LABEL_WORKFLOW_NAME}={name_label(name)}"
    return out if project is None else f"{out},{LABEL_PROJECT}={project_label(project)}"


def in_project(ref: WorkflowRef, project: str) -> bool:
    return ref.project is not None and (ref.project == project or ref.project == project_label(project))


def resolve(
    workflow: str, candidates: Iterable[WorkflowRef], project: str | None = None, namespace: str = ""
) -> WorkflowRef | None:
    """The Workflow that `workflow` (of `project`, when given) names among `candidates`: by digdag
    name first, then by object name. None when none matches; a KudigError when the digdag name
    is in several projects and no project was given."""
    refs = sorted(set(candidates), key=lambda r: r.object_name)
    if project is not None:
        refs = [r for r in refs if in_project(r, project)]
    by_name = [r for r in refs if r.name == workflow]
    if len(by_name) == 1:
        return by_name[0]
    if len(by_name) > 1:
        where = f" in namespace {namespace}" if namespace else ""
        projects = sorted({r.project or "(no project)" for r in by_name})
        if len(projects) == len(by_name):
            raise KudigError(
                f"Workflow '{workflow}' is in several projects{where}: {', '.join(projects)}; "
                f"name one: PROJECT {workflow}"
            )
        objects = ", ".join(r.object_name for r in by_name)
        raise KudigError(f"Workflow '{workflow}' is defined by several Workflow objects{where}: {objects}")
    by_object = [r for r in refs if r.object_name == workflow]
    return by_object[0] if by_object else None


def display_names(refs: Iterable[WorkflowRef]) -> dict[str, str]:
    """Object name -> digdag name, for listings that show what a Session's spec.workflow means."""
    return {r.object_name: r.name for r in refs}
