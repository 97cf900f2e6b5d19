"""kudig's Kubernetes API, in one place: what the CLI and the controller both speak.

* group/version, plurals and kinds; the labels and annotations kudig puts on objects; the
  Session phases;
* a Session's manifest, as every creator of one writes it;
* the ConfigMap key codec and the safe-path check for project files (defined in the runner's
  standard-library `projectfiles`, which task pods also run; re-exported here).

Pure data: no Kubernetes client and no pydantic import (the core, local mode and every CLI call
import this module); the resources' pydantic models, the CRDs' source, are `kudig.schema`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from kudig_runner.projectfiles import UnsafePath as UnsafePath
from kudig_runner.projectfiles import check_relpath as check_relpath
from kudig_runner.projectfiles import decode_key as decode_key
from kudig_runner.projectfiles import encode_key as encode_key
from kudig_runner.projectfiles import key_path as key_path
from kudig_runner.projectfiles import project_digest as project_digest

from kudig.naming import session_name

GROUP = "kudig.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
WORKFLOWS = "workflows"
SESSIONS = "sessions"
KINDS = {WORKFLOWS: "Workflow", SESSIONS: "Session"}

# Labels and annotations (label values are cut to 63 characters by `label_value`).
MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGER = "kudig"
LABEL_PROJECT = "kudig.io/project"
LABEL_WORKFLOW = "kudig.io/workflow"
# On a Workflow (kudig push): its digdag name as a label value (kudig.workflowref.name_label), for
# server-side lookups by digdag name, and the exact digdag and project names as annotations.
LABEL_WORKFLOW_NAME = "kudig.io/workflow-name"
ANNOTATION_WORKFLOW_NAME = "kudig.io/workflow-name"
ANNOTATION_PROJECT_NAME = "kudig.io/project-name"
LABEL_SESSION = "kudig.io/session"
LABEL_ATTEMPT = "kudig.io/attempt"
LABEL_TASK_ID = "kudig.io/task-id"
LABEL_RESULT = "kudig.io/result"
LABEL_FINISHED = "kudig.io/finished"  # on a finished Session: when it ended (Unix seconds)
ANNOTATION_TASK = "kudig.io/task"
ANNOTATION_REQUIRED_BY = "kudig.io/required-by"  # on a Session a require> task created: session/task
TASK_CONTAINER = "task"

# Session phases. "Error" (an invalid Session or a missing Workflow) is not terminal: the Session
# starts once the problem is fixed.
PENDING, RUNNING, SUCCEEDED, FAILED, KILLED, ERROR = (
    "Pending",
    "Running",
    "Succeeded",
    "Failed",
    "Killed",
    "Error",
)
TERMINAL = frozenset({SUCCEEDED, FAILED, KILLED})


def label_value(text: str) -> str:
    """A label value (at most 63 characters; kudig's names are DNS labels already)."""
    return text[:63].rstrip("-_.")


def session_manifest(workflow: str, session_time: datetime, **spec: Any) -> dict[str, Any]:
    """A Session of Workflow `workflow` (its object name) at `session_time`. Its name is derived
    from both, so whoever creates it — `kudig start`, the scheduler, a backfill, a trigger — the
    API server lets it exist once (AlreadyExists). `spec` adds fields (camelCase, as on the wire)."""
    return {
        "apiVersion": API_VERSION,
        "kind": "Session",
        "metadata": {
            "name": session_name(workflow, session_time),
            "labels": {MANAGED_BY: MANAGER, LABEL_WORKFLOW: label_value(workflow)},
        },
        "spec": {"workflow": workflow, "sessionTime": session_time.isoformat(), **spec},
    }
