"""The Session reaction: observe a Session and its pods, plan, commit."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from kudig.api import LABEL_FINISHED, LABEL_SESSION, SESSIONS, TERMINAL, label_value
from kudig.cluster.kube import Conflict
from kudig.cluster.logstore import StoredLog
from kudig_operator import results
from kudig_operator.events import Outbox, event_body
from kudig_operator.plan.budget import garbage_after, write_deferred_until
from kudig_operator.plan.conditions import iso
from kudig_operator.plan.outbox import settle
from kudig_operator.plan.pods import PodView, frame_complete, log_lines_needed, pod_view
from kudig_operator.plan.session import invalid_plan, plan_session, waiting_plan
from kudig_operator.plan.sessionplan import SessionPlan
from kudig_operator.plan.view import SessionView, Warm, prepare
from kudig_operator.plumbing import Key
from kudig_operator.reactions import history, schedule

log = logging.getLogger("kudig.controller")
MAX_CONFLICTS = 8
LOG_TAIL_MARGIN = 50

if TYPE_CHECKING:
    from kudig_operator.controller import Controller


def reconcile(
    ctl: Controller, namespace: str, name: str, *, fresh: bool = False, news_only: bool = False
) -> None:
    """Reconcile a Session; `fresh` reads it from the API server first (the resync does);
    `news_only`: only if pod news came since the last plan began (else it saw them already)."""
    key = (namespace, name)
    with ctl.locks.hold(("session", key)):
        if news_only:
            with ctl.guard:
                bucket = ctl.sessions.get(key)
                if bucket is None or not bucket.dirty:
                    ctl.stats["coalesced"] += 1
                    return
        _reconcile(ctl, key, fresh)


def _reconcile(ctl: Controller, key: Key, fresh: bool) -> None:
    namespace, name = key
    with ctl.metrics.reconcile("session"):
        for _ in range(MAX_CONFLICTS):
            try:
                reconcile_once(ctl, key, fresh)
                return
            except Conflict:
                ctl.stats["conflicts"] += 1
                fresh = True
        log.warning("session %s/%s: gave up after %d conflicting writes", namespace, name, MAX_CONFLICTS)
        ctl.metrics.reconcile_errors.labels("session").inc()


def session_body(ctl: Controller, key: Key, fresh: bool) -> dict[str, Any] | None:
    bucket = ctl.bucket(key)
    if not fresh and bucket.body is not None:
        return bucket.body
    obj = ctl.api.get(SESSIONS, *key)
    if obj is None:
        return None
    ctl.remember_body(key, obj)
    return obj


def observe_pod(ctl: Controller, key: Key, name: str, seen: Mapping[str, PodView]) -> PodView | None:
    """Task pod `name` as `seen` in the pod cache (read from the API server when it is not)."""
    bucket = ctl.bucket(key)
    view = seen.get(name)
    if view is None:
        ctl.stats["pod_reads"] += 1
        pod = ctl.api.get_pod(key[0], name)
        if pod is None:
            return None
        view = pod_view(pod, ctl.clock())
        with ctl.guard:
            if bucket.pods is None:
                bucket.pods = {}
            bucket.pods[name] = view
    tail = log_lines_needed(view)
    if tail is not None and view.log is None:
        # The result is too large for a termination message: it is in the log, at the end
        # unless the task's own background processes wrote after it.
        ctl.stats["log_reads"] += 1
        text = ctl.api.pod_log(key[0], name, tail_lines=tail + LOG_TAIL_MARGIN)
        if text is not None and not frame_complete(view, text):
            ctl.stats["log_reads"] += 1
            text = ctl.api.pod_log(key[0], name)
        view = replace(view, log=text)
    return view


def refresh_pods(ctl: Controller, key: Key, session: str) -> None:
    """Forget cached pod views the API server has newer versions of (a lost watch event)."""
    listed = {
        str(p["metadata"]["name"]): str(p["metadata"].get("resourceVersion", ""))
        for p in ctl.api.list_pod_metadata(key[0], f"{LABEL_SESSION}={label_value(session)}")
    }
    bucket = ctl.bucket(key)
    with ctl.guard:
        for name, view in list((bucket.pods or {}).items()):
            if listed.get(name) != view.rv:
                del bucket.pods[name]  # type: ignore[union-attr]


def fetch_blobs(ctl: Controller, key: Key, names: list[str]) -> dict[str, bytes]:
    bucket = ctl.bucket(key)
    have = dict(bucket.blobs or {})
    for cm_name in names:
        if cm_name in have:
            continue
        ctl.stats["result_reads"] += 1
        cm = ctl.api.get_config_map(key[0], cm_name)
        if cm is not None:
            have[cm_name] = results.blob_of(cm)
    with ctl.guard:
        bucket.blobs = {n: have[n] for n in names if n in have}
    return bucket.blobs


def fetch_state(ctl: Controller, key: Key, data: Mapping[str, Any]) -> dict[str, bytes]:
    """The ConfigMaps a stored state refers to: its chunks, then what their rows refer to."""
    names = results.refs(data)
    while True:
        fetched = fetch_blobs(ctl, key, names)
        more = results.refs(data, fetched)
        if more == names:
            return fetched
        names = more


def reconcile_once(ctl: Controller, key: Key, fresh: bool) -> None:
    ctl.stats["reconciles"] += 1
    obj = session_body(ctl, key, fresh)
    if obj is None:
        ctl.forget_session(key)
        return
    bucket = ctl.bucket(key)
    with ctl.guard:
        cached, bucket.decoded = bucket.decoded, None  # consumed: the plan mutates it
    rv = str(obj["metadata"].get("resourceVersion", ""))
    warm = cached is not None and cached[0] == rv
    if not warm:
        with ctl.guard:  # a held (deferred) state is dropped: its task runs are derived again
            bucket.held_runs = bucket.held_garbage = None
    view = prepare(obj, cached[1] if cached is not None and warm else None)
    if view.data is not None and results.chunked(view.data):
        # the rows are in chunks: read them to know which pods to observe
        fetched = fetch_state(ctl, key, view.data)
        with contextlib.suppress(results.MissingResult):  # (the plan says so)
            view = prepare(obj, Warm.decoded(obj, results.decode(view.data, fetched)))
    if fresh and view.pods:
        refresh_pods(ctl, key, view.name)
    with ctl.guard:  # one snapshot of the pod cache: the suspects and the observed pods agree
        seen = dict(bucket.pods or {})
        uncommitted = set(bucket.uncommitted or ())
        news, bucket.news, bucket.dirty = bucket.news or set(), None, False
    try:
        _plan_and_commit(ctl, key, obj, view, fresh, seen, uncommitted, news)
    except BaseException:
        with ctl.guard:  # not planned after all: the next reconcile takes the news in
            bucket.news, bucket.dirty = (bucket.news or set()) | news, True
        raise


def _plan_and_commit(
    ctl: Controller,
    key: Key,
    obj: dict[str, Any],
    view: SessionView,
    fresh: bool,
    seen: dict[str, PodView],
    uncommitted: set[str],
    news: set[str],
) -> None:
    plan, now = _plan(ctl, key, view, fresh, seen, uncommitted, news)
    carry_out(ctl, key, obj, settle(view, plan, now))  # every plan: its Events named and recorded
    if view.finished:
        history.expire(ctl, key, view)


def _plan(
    ctl: Controller,
    key: Key,
    view: SessionView,
    fresh: bool,
    seen: dict[str, PodView],
    uncommitted: set[str],
    news: set[str],
) -> tuple[SessionPlan, float]:
    """The plan for the Session as observed now, and the time it was made at."""
    suspects = [*seen.values(), *(PodView(name, owner_uid=view.uid) for name in uncommitted)]
    if view.finished:
        now = ctl.clock()
        return plan_session(view, None, {}, suspects, {}, now, ctl.settings), now
    if view.spec is not None and view.spec.after and view.data is None and view.decoded is None:
        after = ctl.phase_of((key[0], view.spec.after))
        if after not in TERMINAL:
            now = ctl.clock()
            return waiting_plan(view, view.spec.after, now, ctl.settings), now
    workflow = ctl.workflow(key[0], view.spec.workflow) if view.spec is not None else None
    if view.decoded is None or view.decoded.cold or fresh or (view.spec is not None and view.spec.kill):
        observe = view.pods  # cold, a resync or a kill: every running task's pod
    else:  # warm: only the pods with news (or never seen), the others said nothing new
        observe = [name for name in view.pods if name in news or name not in seen]
    pods = {name: observe_pod(ctl, key, name, seen) for name in observe}
    fetched = fetch_blobs(ctl, key, view.refs)
    now = ctl.clock()
    triggered = ctl.workflows.dependents(key[0], workflow) if workflow is not None else []
    required = {name: ctl.api.get(SESSIONS, key[0], name) for name in view.required}
    project = workflow.project if workflow is not None else None

    def resolve(name: str, in_project: str | None) -> str | None:
        return ctl.workflows.find(key[0], name, in_project if in_project is not None else project)

    try:
        plan = plan_session(
            view, workflow, pods, suspects, fetched, now, ctl.settings, triggered, required, resolve
        )
    except Exception as e:  # a bug of ours: say so on the Session instead of retrying forever
        log.exception("planning session %s/%s failed", *key)
        ctl.metrics.reconcile_errors.labels("session").inc()
        message = f"kudig internal error while planning this session: {type(e).__name__}: {e}"
        plan = invalid_plan(view, message, now, ctl.settings)
    return plan, now


def carry_out(ctl: Controller, key: Key, obj: dict[str, Any], plan: SessionPlan) -> None:
    namespace = key[0]
    bucket = ctl.bucket(key)
    if plan.owed is not None:  # committed by an earlier write: before this one drops them
        emit(ctl, key, obj, plan.owed)
    due = write_deferred_until(plan, bucket.last_write, ctl.clock(), ctl.settings.status_write_interval)
    if due is not None:
        hold(ctl, key, obj, plan, due)
        return
    for cm in plan.create_config_maps:
        if ctl.api.create_config_map(namespace, cm):
            ctl.stats["results_written"] += 1
    create_pods(ctl, key, obj, plan)
    rv = str(obj["metadata"].get("resourceVersion", ""))
    written = obj
    schedule.create_sessions(ctl, namespace, plan.create_sessions, f"for {key[1]}")
    for other, spec in plan.patch_sessions.items():
        log.info("session %s/%s: new attempt %s, required by %s", namespace, other, spec["attempt"], key[1])
        ctl.api.patch(SESSIONS, namespace, other, {"spec": spec})
    if plan.status is not None:
        if log.isEnabledFor(logging.DEBUG):
            old = obj.get("status") or {}
            changed = sorted(k for k in set(old) | set(plan.status) if old.get(k) != plan.status.get(k))
            log.debug("session %s/%s: status write (%s changed)", *key, ", ".join(changed))
        written = ctl.api.replace_status(SESSIONS, {**obj, "status": plan.status})  # Conflict: retry
        ctl.remember_body(key, written)
        with ctl.guard:
            bucket.last_write = ctl.clock()
            held, bucket.held_runs = bucket.held_runs or [], None
            garbage, bucket.held_garbage = bucket.held_garbage, None
        if held:  # deferred plans' task runs: committed now
            plan.runs = [*held, *plan.runs]
        if garbage and plan.decoded is not None:  # and the chunks they replaced can go now
            plan.delete_config_maps = garbage_after(
                garbage, plan.delete_config_maps, plan.decoded.memo.names()
            )
        rv = str(written["metadata"].get("resourceVersion", ""))
        # committed: count what it did (once; a plan dropped on a 409 never got here)
        ctl.metrics.observe_session_plan(namespace, str((obj.get("spec") or {}).get("workflow")), plan)
    if plan.outbox is not None:
        # before this version is remembered as ours (a warm plan takes its Events as created),
        # and before the label (a finished Session without it gets them again)
        emit(ctl, key, written, plan.outbox)
    with ctl.guard:
        bucket.uncommitted = None  # committed: the state knows them, or the plan deletes them
        if plan.decoded is not None and not plan.finished:
            bucket.decoded = (rv, plan.decoded)
        if plan.running is not None:
            bucket.running = plan.running
        if plan.status is not None and bucket.pods:
            for name in plan.consumed_pods:  # committed: their views are not needed any more
                bucket.pods.pop(name, None)
    delete_pods(ctl, key, plan.delete_pods)
    if plan.status is not None:
        for name in plan.delete_config_maps:
            ctl.api.delete_config_map(namespace, name)
    if plan.sweep:
        sweep(ctl, key, obj, set(plan.delete_pods))
    release(ctl, key, written, plan.release_pods)
    if plan.labels:
        ctl.api.patch(SESSIONS, namespace, key[1], {"metadata": {"labels": plan.labels}})
        workflow = (obj.get("spec") or {}).get("workflow")
        if plan.labels.get(LABEL_FINISHED) and workflow:
            history.keep_history(ctl, namespace, str(workflow))
    if plan.waiting_for_workflow is not None:
        with ctl.guard:
            ctl.waiting.setdefault((namespace, plan.waiting_for_workflow), set()).add(key)
    waits = [plan.waiting_for_session] if plan.waiting_for_session is not None else []
    for other in [*waits, *plan.waiting_for_sessions]:
        with ctl.guard:
            ctl.after.setdefault((namespace, other), set()).add(key)
    if plan.finished:
        ctl.forget_session(key)
        with ctl.guard:
            waiters = ctl.after.pop(key, set())
        for waiter in sorted(waiters):
            ctl.reconcile_session(*waiter)
    elif ctl.wakeups is not None:
        if plan.wakeup is not None:
            ctl.wakeups.set(("session", key), plan.wakeup)
        else:
            ctl.wakeups.cancel(("session", key))


def create_pods(ctl: Controller, key: Key, obj: Mapping[str, Any], plan: SessionPlan) -> None:
    """Create the plan's pods, side by side (`Controller.creates`), before its status commit. Each
    is named uncommitted first: should the commit fail, the next plan adopts or deletes them."""
    bucket = ctl.bucket(key)
    names = [str(pod["metadata"]["name"]) for pod in plan.create_pods]
    with ctl.guard:
        bucket.uncommitted = (bucket.uncommitted or set()) | set(names)

    def create(pod: dict[str, Any]) -> tuple[bool, float]:
        return ctl.api.create_pod(key[0], pod), ctl.clock()

    for name, (created, at) in zip(names, ctl.creates.map(create, plan.create_pods), strict=True):
        if not created:
            with ctl.guard:
                ctl.stats["pods_adopted"] += 1
            continue
        # We know it exists and has not run yet: no need to ask before the watch says more.
        view = PodView(name, owner_uid=obj["metadata"].get("uid"), phase="Pending")
        with ctl.guard:
            ctl.stats["pods_created"] += 1
            if bucket.pods is None:
                bucket.pods = {}
            bucket.pods.setdefault(name, view)
            if bucket.created is None:
                bucket.created = {}
            bucket.created[name] = at
        origin = plan.step_origins.get(name)
        if origin is not None:
            ctl.metrics.step_gap.observe(max(0.0, at - origin))


def hold(ctl: Controller, key: Key, obj: dict[str, Any], plan: SessionPlan, due: float) -> None:
    """The write budget (plan/budget.py): keep a bookkeeping-only plan's state in memory, to be
    written by the next plan or at `due`. Its pod views stay cached (the next plan releases
    them); a 409 or a restart re-derives its news from those pods, which are still there."""
    bucket = ctl.bucket(key)
    for cm in plan.create_config_maps:  # content-addressed: the held state refers to them
        if ctl.api.create_config_map(key[0], cm):
            ctl.stats["results_written"] += 1
    rv = str(obj["metadata"].get("resourceVersion", ""))
    with ctl.guard:
        ctl.stats["writes_deferred"] += 1
        assert plan.decoded is not None  # (write_deferred_until says so)
        bucket.decoded = (rv, plan.decoded)
        bucket.held_runs = [*(bucket.held_runs or []), *plan.runs]
        bucket.held_garbage = (bucket.held_garbage or set()) | set(plan.delete_config_maps)
    if ctl.wakeups is not None:
        ctl.wakeups.set(("session", key), due if plan.wakeup is None else min(due, plan.wakeup))


def emit(ctl: Controller, key: Key, session: Mapping[str, Any], outbox: Outbox) -> None:
    """Create the Events of a committed outbox (events.py). One that exists already was created
    before a crash or by another controller: not an error, not a duplicate. A failure is logged,
    never raised (an Event is worth less than the reconcile that reports it)."""
    for name, event in outbox.named(key[1]):
        body = event_body(session, name, event, outbox.at, ctl.settings.controller_id)
        try:
            created = ctl.api.create_event(key[0], body)
        except Exception as e:
            log.warning("session %s/%s: event %s not created: %s", *key, event.reason, e)
            continue
        ctl.stats["events" if created else "events_existing"] += 1


def sweep(ctl: Controller, key: Key, obj: Mapping[str, Any], done: set[str]) -> None:
    """Delete every still-running pod of a killed Session, seen by this controller or not."""
    uid = obj["metadata"].get("uid")
    for pod in ctl.api.list_pods(key[0], f"{LABEL_SESSION}={label_value(key[1])}"):
        view = pod_view(pod)
        if view.active and view.owner_uid == uid and view.name not in done:
            delete_pods(ctl, key, [view.name])


def release(ctl: Controller, key: Key, session: Mapping[str, Any], pods: list[PodView]) -> None:
    """Finished pods whose results are committed: copy each log to the log store, then delete the
    pod. A pod whose log cannot be stored stays (and is named again by the next plan): no log is
    lost for the sake of a deletion."""
    for p in pods:
        text = ctl.api.pod_log(key[0], p.name)
        if text is None:
            if ctl.api.get_pod(key[0], p.name) is not None:
                log.warning("session %s/%s: no log from pod %s yet; kept", *key, p.name)
                continue
        else:
            try:
                ctl.logs.put(
                    key[0],
                    session,
                    StoredLog(p.task, p.name, iso(p.created_at) if p.created_at is not None else ""),
                    text,
                )
            except Exception as e:
                log.warning("session %s/%s: log of %s not stored (%s); pod kept", *key, p.name, e)
                continue
        ctl.stats["pods_released"] += 1
        delete_pods(ctl, key, [p.name])


def delete_pods(ctl: Controller, key: Key, names: list[str]) -> None:
    for name in names:
        ctl.api.delete_pod(key[0], name)
        ctl.stats["pods_deleted"] += 1
