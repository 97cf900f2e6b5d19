"""The history reaction: a finished Session's TTL, and a Workflow's `history.keep`."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from kudig.api import LABEL_FINISHED, LABEL_WORKFLOW, SESSIONS, label_value
from kudig_operator.plan.view import prepare
from kudig_operator.plumbing import Key

log = logging.getLogger("kudig.controller")
MAX_CONFLICTS = 8

if TYPE_CHECKING:
    from kudig_operator.controller import Controller


def history_of(ctl: Controller, namespace: str, workflow: str) -> Any:
    compiled = ctl.workflow(namespace, workflow)
    return compiled.spec.history if compiled is not None and compiled.spec is not None else None


def expire(ctl: Controller, key: Key, view: Any) -> None:
    """A finished Session past its Workflow's `history.ttlSecondsAfterFinished` is deleted (its
    pods, logs and result ConfigMaps go with it); one not yet past it gets a timer."""
    if view.spec is None or not view.status.finished_at:
        return
    history = history_of(ctl, key[0], view.spec.workflow)
    ttl = history.ttl_seconds_after_finished if history is not None else None
    if ttl is None:
        return
    ended = datetime.fromisoformat(view.status.finished_at.replace("Z", "+00:00")).timestamp()
    if ctl.clock() >= ended + ttl:
        log.info("session %s/%s: deleted, %ss after it finished (history TTL)", *key, ttl)
        ctl.api.delete(SESSIONS, *key)
        ctl.forget_session(key)
        if ctl.wakeups is not None:
            ctl.wakeups.cancel(("ttl", key))
    elif ctl.wakeups is not None:
        ctl.wakeups.set(("ttl", key), ended + ttl)


def keep_history(ctl: Controller, namespace: str, workflow: str) -> None:
    """Delete the oldest finished Sessions of `workflow` beyond its `history.keep`."""
    history = history_of(ctl, namespace, workflow)
    keep = history.keep if history is not None else None
    if keep is None:
        return
    finished = ctl.api.list_metadata(
        SESSIONS, namespace, f"{LABEL_WORKFLOW}={label_value(workflow)},{LABEL_FINISHED}"
    )

    def ended(item: Mapping[str, Any]) -> int:
        try:
            return int(item["metadata"]["labels"][LABEL_FINISHED])
        except (KeyError, ValueError):
            return 0

    finished.sort(key=lambda item: (ended(item), item["metadata"]["name"]), reverse=True)
    for item in finished[keep:]:
        name = str(item["metadata"]["name"])
        current = ctl.api.get(SESSIONS, namespace, name)  # still finished? (a retry may run)
        if current is None or not prepare(current).finished:
            continue
        log.info("session %s/%s: deleted, beyond the newest %d kept (history limit)", namespace, name, keep)
        ctl.api.delete(SESSIONS, namespace, name)
        ctl.forget_session((namespace, name))
