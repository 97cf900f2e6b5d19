"""Reconcile as a plan: pure functions from what the controller observed to what it must do.

`session.plan_session(view, workflow, pods, suspects, fetched, now, settings)` takes a Session as the
API server sent it, its compiled Workflow, the task pods the controller observed and the result
ConfigMaps it fetched, and returns a `SessionPlan`: the status to write, the ConfigMaps and pods to
create, the pods to delete and when to wake up next. It does no I/O (but for the engine reading a
`call>`ed file of the compiled project), so every decision of the controller — first attempt,
retry, resume, kill, lost pods, image errors, timers — is unit-tested without a cluster; the
controller (`controller.py` and `reactions/`) only gathers the inputs and carries plans out.

The order the controller carries a plan out in is part of the design:
1. create the result ConfigMaps and the pods (names are deterministic, so a repeat adopts);
2. write the status with the resourceVersion it was planned from — the commit point; a 409 means
   the plan was made from a stale Session: it is dropped and made again from a fresh read;
3. only after a successful commit, delete pods (`delete_pods`): the pods of killed tasks and
   orphans — running pods of this Session that the committed state does not know (created by a
   plan that never committed, e.g. one made just before a `kudig kill`; the controller passes
   those it knows of as `suspects`). Deleting only after the commit means a plan made from a stale
   Session can never delete a pod the real state runs. A killed Session also asks for a `sweep`:
   every still-running pod of the Session is deleted, including ones this controller never saw
   (created before a restart by a plan that never committed).
4. the Events a plan reports are recorded in its status write and created right after it; those
   the Session's last write recorded, which this controller may not have created, are created
   again before its own write drops them (`outbox`: names derive from the commit, never twice).
"""
