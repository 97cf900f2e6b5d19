"""What a Session plan says to do (the controller carries it out)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kudig_operator.events import Outbox, SessionEvent
from kudig_operator.plan.pods import PodView
from kudig_operator.plan.view import Decoded


@dataclass
class SessionPlan:
    status: dict[str, Any] | None = None  # the status to write (None: unchanged)
    create_config_maps: list[dict[str, Any]] = field(default_factory=list)
    create_pods: list[dict[str, Any]] = field(default_factory=list)
    delete_pods: list[str] = field(default_factory=list)  # after the commit
    release_pods: list[PodView] = field(default_factory=list)  # after the commit: log stored, then deleted
    delete_config_maps: list[str] = field(default_factory=list)  # after the commit: replaced row chunks
    sweep: bool = False  # after the commit, delete every running pod of the Session (killed)
    wakeup: float | None = None
    finished: bool = False  # the Session needs nothing more (caches can be dropped)
    waiting_for_workflow: str | None = None  # retry when this Workflow compiles
    waiting_for_session: str | None = None  # retry when this Session finishes
    waiting_for_sessions: list[str] = field(default_factory=list)  # require>: re-plan when each ends
    patch_sessions: dict[str, dict[str, Any]] = field(default_factory=dict)  # require> reruns (spec)
    create_sessions: list[dict[str, Any]] = field(default_factory=list)  # triggered (before the commit)
    labels: dict[str, str | None] | None = None  # metadata labels to set (None: remove), after the commit
    decoded: Decoded | None = None  # the state the written status holds, to skip decoding it next time
    # What this plan's status write commits, for metrics and Events (the controller reports them
    # only once the write succeeded, so a plan dropped on a 409 reports nothing):
    started_attempt: int | None = None  # a new attempt starts
    outcome: str | None = None  # the attempt ends: succeeded | failed | killed
    duration: float | None = None  # of the attempt that ends (seconds from its start)
    runs: list[TaskRun] = field(default_factory=list)  # work-task tries that reported
    step_origins: dict[str, float] = field(default_factory=dict)  # pod -> its upstream seen done
    consumed_pods: list[str] = field(default_factory=list)  # pods whose result the status commits
    sla_missed: bool = False  # the `sla:` deadline passed in this plan
    running: int | None = None  # task pods the committed state runs (None: unknown, unchanged)
    events: list[SessionEvent] = field(default_factory=list)  # Kubernetes Events to create
    # (plan/outbox.py) the same, named and as the status write records them; and the Events the
    # Session's last write recorded that this plan must create again (before its write drops them)
    outbox: Outbox | None = None
    owed: Outbox | None = None


@dataclass(frozen=True)
class TaskRun:
    """One try of a work task that reported in a plan (each retry is another run)."""

    operator: str  # the task's operator (sh, py, require, ...): a bounded set
    outcome: str  # succeeded | failed
    seconds: float  # from the try's start (its plan) to its result (this plan)
    retried: bool = False  # the failure is retried by the task's own `_retry`
