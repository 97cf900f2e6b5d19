"""Which Events a Session plan creates: those its status write commits (recorded in that write,
`status.lastEvents`), and those a write of another controller, or of this one before a restart,
committed and may not have created (`owed`). See events.py for why this converges."""

from __future__ import annotations

from kudig.api import LABEL_FINISHED, TERMINAL
from kudig_operator.events import Outbox, outbox_id
from kudig_operator.plan.sessionplan import SessionPlan
from kudig_operator.plan.view import SessionView


def owed(view: SessionView) -> Outbox | None:
    """The Events the Session's last status write recorded, unless this controller is sure they
    were created: it holds its own plan of this very version (`view.decoded`, warm: kept only after
    its write and the Events' creation), or the Session is finished and labelled (the label is
    patched after the Events)."""
    record = view.status.last_events
    if record is None or not record.events:
        return None
    if view.decoded is not None and not view.decoded.cold:
        return None
    labels = view.obj["metadata"].get("labels") or {}
    if view.status.phase in TERMINAL and LABEL_FINISHED in labels:
        return None
    return Outbox.of(record)


def settle(view: SessionView, plan: SessionPlan, now: float) -> SessionPlan:
    """`plan` with the Events it owes (`owed`, created before its write drops them) and the outbox
    of its own (`plan.events`, recorded in its status write, created after it)."""
    plan.owed = owed(view)
    if plan.events:
        rv = str(view.obj["metadata"].get("resourceVersion", ""))
        plan.outbox = Outbox(outbox_id(view.uid, rv, plan.events, now), now, tuple(plan.events))
    else:
        plan.outbox = None
    if plan.status is not None:
        if plan.outbox is not None:
            plan.status["lastEvents"] = plan.outbox.record()
        else:
            plan.status.pop("lastEvents", None)
    return plan
