"""The per-session status write budget: may this plan's status write wait for the next one?

A fan-out whose pods finish at 100/s would otherwise write its Session at the rate its plans run
(each write: a full status, an etcd revision, a watch event to every watcher). A write is deferred
-- its state kept in memory, written by the next plan or by a wake-up when the interval is over --
only when it is pure bookkeeping: the plan creates no pod (a chain's next pod is never delayed),
and it has no effect that must follow its commit or be reported once (Events, labels, finished,
kills, pod deletions, new attempts, triggered Sessions). What a deferred plan leaves undone is
re-derived by the next plan from the state it holds (finished pods to release stay in the pod
cache until a write commits them) or carried to the next write: the row chunks it replaced
(`garbage_after`) and its task runs (metrics).
"""

from __future__ import annotations

from kudig_operator.plan.sessionplan import SessionPlan

# KUDIG_STATUS_WRITE_INTERVAL's default: at most 2 status writes per second per Session
DEFAULT_WRITE_INTERVAL = 0.5


def write_deferred_until(
    plan: SessionPlan, last_write: float | None, now: float, interval: float
) -> float | None:
    """When `plan`'s status write should happen instead of now (None: now)."""
    if plan.status is None or plan.decoded is None or interval <= 0 or last_write is None:
        return None
    due = last_write + interval
    if now >= due or (plan.wakeup is not None and plan.wakeup <= now):
        return None
    if (
        plan.create_pods
        or plan.delete_pods
        or plan.sweep
        or plan.finished
        or plan.events
        or plan.labels is not None
        or plan.create_sessions
        or plan.patch_sessions
        or plan.started_attempt is not None
        or plan.outcome is not None
        or plan.sla_missed
        or plan.waiting_for_workflow is not None
        or plan.waiting_for_session is not None
        or plan.waiting_for_sessions
    ):
        return None
    return due


def garbage_after(held: set[str], planned: list[str], committed: set[str]) -> list[str]:
    """The chunk ConfigMaps to delete after a write: those this plan replaced and those deferred
    plans replaced (`held`), but never one the committed state names (a chunk whose content came
    back is the same ConfigMap)."""
    return sorted((held | set(planned)) - committed)
