"""The schedule's side of the shell: creating the Sessions a plan asks for, whether an attempt runs."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from kudig.api import SESSIONS, TERMINAL
from kudig.cluster.kube import AlreadyExists

log = logging.getLogger("kudig.controller")
MAX_CONFLICTS = 8

if TYPE_CHECKING:
    from kudig_operator.controller import Controller


def create_sessions(
    ctl: Controller,
    namespace: str,
    sessions: list[dict[str, Any]],
    why: str,
    run_times: Mapping[str, float] | None = None,
) -> None:
    """Create Sessions a plan asks for; one that exists already was started before (another
    replica, an earlier try that did not commit, or by hand): its name makes it once only.
    `run_times`: the scheduled slots' run times, by Session name (for the schedule lag)."""
    for session in sessions:
        try:
            ctl.api.create(SESSIONS, namespace, session)
            ctl.stats["sessions_started"] += 1
            run_time = (run_times or {}).get(session["metadata"]["name"])
            if run_time is not None:
                ctl.metrics.schedule_lag.observe(max(0.0, ctl.clock() - run_time))
            log.info("started session %s/%s (%s)", namespace, session["metadata"]["name"], why)
        except AlreadyExists:
            pass


def attempt_running(ctl: Controller, namespace: str, workflow: str) -> bool:
    """Whether a Session of `workflow` is still running (for `skip_on_overtime`)."""
    for obj in ctl.api.list_objects(SESSIONS, namespace):
        if (obj.get("spec") or {}).get("workflow") != workflow:
            continue
        phase = (obj.get("status") or {}).get("phase")
        if phase not in TERMINAL:
            return True
    return False
