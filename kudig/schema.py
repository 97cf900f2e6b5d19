"""The Workflow and Session resources as pydantic models: the single source of the CRDs (`crds/` is
generated from them by `python -m kudig_operator.crdgen`, and a test fails when the files are
stale) and the typed view the controller reads and writes. Field names are camelCase on the wire
as Kubernetes expects; `kubectl get`'s columns are here too.

Apart from `kudig.api` (names, labels, phases) because pydantic costs a command-line call a third
of a second to import and only the controller and the CRD generator need the models: the CLI
speaks the API through names and plain dicts.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel


class Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


class FreeForm(Model):
    """Marker: an object whose keys are the user's (params, resources, ...)."""


class Toleration(Model):
    key: str | None = None
    operator: str | None = None
    value: str | None = None
    effect: str | None = None
    toleration_seconds: int | None = None


class PodDefaults(Model):
    """Defaults for every task pod of the workflow; a task's `docker: image:` overrides `image`."""

    image: str | None = Field(None, description="Task image (default: the controller's runner image)")
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = None
    service_account_name: str | None = Field(
        None, description="Service account for task pods; its token is still not mounted"
    )
    resources: dict[str, dict[str, str]] | None = Field(
        None, description="Container resources, e.g. {requests: {cpu: 100m}}"
    )
    node_selector: dict[str, str] | None = None
    tolerations: list[Toleration] | None = None
    affinity: dict[str, Any] | None = Field(None, description="The pod's affinity (Kubernetes' own form)")
    priority_class_name: str | None = None
    labels: dict[str, str] | None = Field(None, description="Extra labels (kudig's own labels win)")
    annotations: dict[str, str] | None = Field(None, description="Extra annotations (kudig's own win)")
    automount_service_account_token: bool | None = Field(
        None, description="Mount the service account's token (default: never)"
    )
    env: dict[str, str] | None = Field(None, description="Extra environment variables for every task")


class History(Model):
    """How long finished Sessions (and their pods, logs and results) are kept."""

    ttl_seconds_after_finished: int | None = Field(
        None, ge=0, description="Delete a finished Session this many seconds after it ended"
    )
    keep: int | None = Field(None, ge=0, description="Keep at most this many finished Sessions (the newest)")
    pods: Literal["all", "failed", "none"] | None = Field(
        None,
        description="Which finished task pods stay once their results are committed and their logs "
        "stored (default: the controller's KUDIG_POD_RETENTION)",
    )


class ProjectFiles(Model):
    config_maps: list[str] = Field(
        default_factory=list,
        description="ConfigMaps holding the project files; keys are paths with '_' written '__' and '/' written '_.'",
    )
    digest: str | None = Field(
        None,
        description="sha256 of the project files (kudig push sets it): a changed file is a new revision, "
        "and the controller waits until the ConfigMaps hold exactly these files",
    )


class WorkflowSpec(Model):
    name: str | None = Field(None, description="digdag workflow name (default: metadata.name)")
    dig: str = Field(..., description="The .dig file's text")
    project: ProjectFiles = Field(default_factory=lambda: ProjectFiles.model_validate({}))
    params: dict[str, Any] = Field(default_factory=dict, description="Default params for every session")
    pod: PodDefaults = Field(default_factory=lambda: PodDefaults.model_validate({}))
    secret_name: str | None = Field(
        None, description="Secret that ${secret:key} reads (default: kudig-secrets)"
    )
    suspend: bool = Field(False, description="Do not create scheduled sessions (kudig disable)")
    schedule_from: str | None = Field(
        None,
        description="Restart the schedule from the first slot at or after this ISO time (kudig enable, "
        "kudig reschedule); applied once per distinct value",
    )
    history: History = Field(
        default_factory=lambda: History.model_validate({}), description="Cleaning of finished Sessions"
    )


class Condition(Model):
    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str
    message: str = ""
    last_transition_time: str
    observed_generation: int | None = None


class WorkflowStatus(Model):
    revision: int | None = Field(None, description="metadata.generation of the spec that compiled")
    workflow_name: str | None = None
    tasks: int | None = None
    timezone: str | None = None
    project_digest: str | None = Field(None, description="Digest of the project files that compiled")
    schedule: str | None = None
    next_session_time: str | None = Field(None, description="The next scheduled session's session_time")
    next_run_time: str | None = Field(None, description="When the next scheduled session is created")
    last_scheduled_session_time: str | None = None
    schedule_key: str | None = Field(None, description="The schedule the times above belong to")
    applied_schedule_from: str | None = Field(None, description="The last spec.scheduleFrom applied")
    error: str | None = None
    conditions: list[Condition] = Field(default_factory=list)


class SessionSpec(Model):
    workflow: str = Field(..., description="Name of the Workflow in this namespace")
    session_time: str = Field(..., description="ISO-8601 time with offset, e.g. 2024-01-30T00:00:00+00:00")
    params: dict[str, Any] = Field(default_factory=dict)
    attempt: int = Field(1, ge=1, description="Raise to start a new attempt (kudig retry)")
    retry_mode: Literal["all", "failed", "from"] = Field(
        "failed", description="What a new attempt reruns: all, the failed tasks, or from resumeFrom on"
    )
    resume_from: str | None = Field(
        None, description="retryMode from: the task (+name, matching the end of one full name) to rerun from"
    )
    kill: bool = Field(False, description="Cancel the running attempt (kudig kill)")
    scheduled: bool = Field(False, description="Created by the scheduler or a backfill")
    last_executed_session_time: str | None = Field(
        None, description="The previous scheduled session's time (last_executed_session_time)"
    )
    after: str | None = Field(
        None, description="Start only once this Session (same namespace) has finished (kudig backfill chains)"
    )
    triggered_by: str | None = Field(
        None, description="The Session whose success started this one (trigger:)"
    )


class FailedTask(Model):
    name: str
    message: str


class Attempt(Model):
    index: int
    revision: int | None = None
    phase: str
    started_at: str | None = None
    finished_at: str | None = None


class EngineBlob(Model):
    encoding: Literal["gzip+base64"] = "gzip+base64"
    data: str


class EventRecord(Model):
    type: str
    reason: str
    message: str


class LastEvents(Model):
    """The Events one status write committed to report (created right after it)."""

    id: str = Field(description="Unique per status write: the Events' names derive from it")
    at: str = Field(description="When the write was planned (the Events' timestamps)")
    events: list[EventRecord] = Field(default_factory=list)


class SessionStatus(Model):
    phase: Literal["Pending", "Running", "Succeeded", "Failed", "Killed", "Error"] | None = None
    attempt: int | None = None
    workflow_revision: int | None = None
    progress: str | None = Field(None, description="done/total tasks")
    started_at: str | None = None
    finished_at: str | None = None
    next_wakeup: str | None = None
    message: str | None = None
    failed_tasks: list[FailedTask] = Field(default_factory=list)
    attempts: list[Attempt] = Field(default_factory=list)
    engine: EngineBlob | None = None
    controller: str | None = Field(None, description="The controller instance that last wrote this status")
    conditions: list[Condition] = Field(default_factory=list)
    last_events: LastEvents | None = Field(
        None,
        description="The Events the last status write reported: a controller that died before "
        "creating them creates them on restart (same names: never twice); the next write drops them",
    )


SESSION_COLUMNS: list[dict[str, Any]] = [
    {"name": "Workflow", "type": "string", "jsonPath": ".spec.workflow"},
    {"name": "Session Time", "type": "string", "jsonPath": ".spec.sessionTime"},
    {"name": "State", "type": "string", "jsonPath": ".status.phase"},
    {"name": "Progress", "type": "string", "jsonPath": ".status.progress"},
    {"name": "Attempt", "type": "integer", "jsonPath": ".status.attempt"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]
WORKFLOW_COLUMNS: list[dict[str, Any]] = [
    {"name": "Workflow", "type": "string", "jsonPath": ".status.workflowName"},
    {"name": "Compiled", "type": "string", "jsonPath": ".status.conditions[?(@.type=='Compiled')].status"},
    {"name": "Revision", "type": "integer", "jsonPath": ".status.revision"},
    {"name": "Tasks", "type": "integer", "jsonPath": ".status.tasks"},
    {"name": "Schedule", "type": "string", "jsonPath": ".status.schedule"},
    {"name": "Next Session", "type": "string", "jsonPath": ".status.nextSessionTime"},
    {"name": "Next Run", "type": "string", "jsonPath": ".status.nextRunTime"},
    {"name": "Suspended", "type": "boolean", "jsonPath": ".spec.suspend", "priority": 1},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]
