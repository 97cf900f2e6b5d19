"""Leader election on a `coordination.k8s.io/v1` Lease: two replicas, one active.

The Kubernetes convention (client-go's `leaderelection`, controller-runtime's manager): one Lease
object names the active replica (`holderIdentity`, here the pod name) and when it last renewed.

* The leader renews every `renew_period` (5 s). A renewal that keeps failing (API server
  unreachable, or someone else's write won) for `renew_deadline` (10 s) since the last success
  means the lease is lost: the process exits non-zero (client-go's pattern; the kubelet restarts it
  as a standby), so two replicas never act at once. A renewal that finds another holder loses at
  once.
* A standby reads the lease every `retry_period` (2 s). A lease is expired when its record has not
  changed for `leaseDurationSeconds` (15 s) **on the standby's own clock** since it first saw that
  record — client-go's rule, immune to clock skew between nodes: `renewTime` is written for humans
  and never compared with the local clock. A free (released or never held) lease is taken at once.
* Every write carries the resourceVersion read (optimistic concurrency): of two standbys taking an
  expired lease, one gets 409 Conflict and stays a standby.
* On SIGTERM the leader releases the lease (holder cleared): the standby takes over at its next
  read, not after the lease duration.
* A process that finds the lease naming its own identity without having written it (the container
  restarted inside the same pod) treats it as anyone else's and waits for it to expire.

`decide` is the whole decision, pure (lease, identity, observation, `now` -> action): unit-tested
with time as an input. `LeaseElector` is the thin shell: read, decide, write, sleep.
"""

from __future__ import annotations

import copy
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from typing import Any

from kudig.cluster.kube import AlreadyExists, Conflict, KubeApi

log = logging.getLogger("kudig.leader")

LEASE_NAME = "kudig-operator"


@dataclass(frozen=True)
class Timings:
    """client-go's defaults, shortened for renewals (renew_period) and as in controller-runtime."""

    lease_duration: float = 15.0  # a standby takes over a record unchanged this long
    renew_period: float = 5.0  # the leader renews this often
    renew_deadline: float = 10.0  # the leader gives up (exits) when no renewal succeeded this long
    retry_period: float = 2.0  # a standby reads again, a failed renewal retries, this often


class Action(Enum):
    CREATE = "create"  # no Lease yet: create it naming me
    ACQUIRE = "acquire"  # free, released or expired: write it naming me (a new term)
    RENEW = "renew"  # mine: write a new renewTime
    WAIT = "wait"  # someone else holds a live lease


@dataclass(frozen=True)
class Observed:
    """A lease record as this process last saw it, and when (its clock) it first saw it so."""

    record: str  # the spec, canonical JSON
    since: float


@dataclass(frozen=True)
class Decision:
    action: Action
    spec: dict[str, Any] | None  # the spec to write (CREATE, ACQUIRE, RENEW)
    holder: str | None  # the current holder as read (None: free or no lease)
    observed: Observed | None
    expires_in: float = 0.0  # WAIT: how long until the holder's lease expires, as I see it


def micro_time(at: float | None = None) -> str:
    """A Kubernetes MicroTime (RFC 3339 with microseconds, UTC)."""
    moment = datetime.now(UTC) if at is None else datetime.fromtimestamp(at, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _record(spec: dict[str, Any]) -> str:
    return json.dumps(spec, sort_keys=True, separators=(",", ":"))


def decide(
    lease: dict[str, Any] | None,
    *,
    me: str,
    claimed: bool,
    observed: Observed | None,
    now: float,
    stamp: str,
    timings: Timings = Timings(),
) -> Decision:
    """What to do with the Lease as read (None: there is none).

    `claimed`: this process has written a record naming itself (so a record naming `me` is its
    own); `observed`: the record as last seen and since when; `now`: this process's clock (only
    compared with `observed.since`); `stamp`: the wall-clock MicroTime to write."""
    duration = int(timings.lease_duration)
    if lease is None:
        spec = {
            "holderIdentity": me,
            "leaseDurationSeconds": duration,
            "acquireTime": stamp,
            "renewTime": stamp,
            "leaseTransitions": 0,
        }
        return Decision(Action.CREATE, spec, None, None)
    current: dict[str, Any] = dict(lease.get("spec") or {})
    record = _record(current)
    if observed is None or observed.record != record:
        observed = Observed(record, now)
    holder = current.get("holderIdentity") or None
    mine = holder == me and claimed
    if holder is not None and not mine:
        held_for = float(current.get("leaseDurationSeconds") or timings.lease_duration)
        expires_in = observed.since + held_for - now
        if expires_in > 0:
            return Decision(Action.WAIT, None, holder, observed, expires_in)
    spec = {**current, "holderIdentity": me, "leaseDurationSeconds": duration, "renewTime": stamp}
    if mine:
        return Decision(Action.RENEW, spec, holder, observed)
    spec["acquireTime"] = stamp
    spec["leaseTransitions"] = int(current.get("leaseTransitions") or 0) + 1
    return Decision(Action.ACQUIRE, spec, holder, observed)


def released(spec: dict[str, Any], stamp: str) -> dict[str, Any]:
    """The spec a leader writes on shutdown: no holder (a standby takes it at its next read)."""
    out = {k: v for k, v in spec.items() if k not in ("holderIdentity", "acquireTime")}
    out["leaseDurationSeconds"] = 1
    out["renewTime"] = stamp
    return out


def renewal_lost(renewed_at: float | None, now: float, timings: Timings = Timings()) -> bool:
    """A leader whose last successful renewal (the time its request was sent) is this old must stop:
    a standby, whose clock started when it saw that renewal, waits `lease_duration` >
    `renew_deadline` before taking over."""
    return renewed_at is None or now - renewed_at >= timings.renew_deadline


def lease_body(
    name: str, namespace: str, spec: dict[str, Any], read: dict[str, Any] | None
) -> dict[str, Any]:
    """The Lease to write: `read`'s metadata (its resourceVersion: optimistic concurrency) or new."""
    if read is None:
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": name, "namespace": namespace},
            "spec": spec,
        }
    body = copy.deepcopy(read)
    body["spec"] = spec
    return body


class LeaseElector:
    """The loop around `decide`: `tick()` makes one attempt and says how long to sleep; `start()`
    runs ticks in a thread. `became_leader` is set when the lease is first won; `on_lost` is called
    (from the thread) when it is lost, and must end the process."""

    def __init__(
        self,
        api: KubeApi,
        *,
        namespace: str,
        identity: str,
        name: str = LEASE_NAME,
        timings: Timings = Timings(),
        clock: Callable[[], float] = time.monotonic,
        stamp: Callable[[], str] = micro_time,
        on_change: Callable[[bool], None] | None = None,
    ) -> None:
        self.api = api
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.timings = timings
        self.clock = clock
        self.stamp = stamp
        self.on_change = on_change
        self.leader = False
        self.lost = False
        self.claimed = False
        self.observed: Observed | None = None
        self.lease: dict[str, Any] | None = None  # as last read or written (a leader renews from it)
        self.holder: str | None = None
        self.renewed_at: float | None = None
        self.started_at = clock()
        self.last_attempt: float | None = None
        self.last_read_ok: float | None = None
        self.last_error: str | None = None
        self.became_leader = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def where(self) -> str:
        return f"{self.namespace}/{self.name}"

    # ----- one attempt

    def tick(self) -> float:
        """Read (a leader renews from its own last write: no read), decide, write. Returns the
        seconds to wait before the next tick."""
        t = self.timings
        if self.lost:
            return t.retry_period
        now = self.clock()
        self.last_attempt = now
        if self.leader and renewal_lost(self.renewed_at, now, t):
            self._lose(now)  # past the deadline (a stalled process): never write as leader again
            return t.retry_period
        try:
            written = self._attempt(now)
            self.last_error = None
        except Exception as e:  # the API server failed us: as a failed renewal, or retry later
            written = False
            self.lease = None
            self.last_error = f"{type(e).__name__}: {e}"
            log.warning("lease %s: %s", self.where, self.last_error)
        if not self.leader:
            return t.retry_period
        if written:
            return t.renew_period
        later = self.clock()
        if (self.holder is not None and self.holder != self.identity) or renewal_lost(
            self.renewed_at, later, t
        ):
            self._lose(later)
            return t.retry_period
        return max(0.0, min(t.retry_period, (self.renewed_at or later) + t.renew_deadline - later))

    def _attempt(self, now: float) -> bool:
        read = self.lease if self.leader and self.lease is not None else None
        if read is None:
            read = self.api.get_lease(self.namespace, self.name)
            self.last_read_ok = now
        decision = decide(
            read,
            me=self.identity,
            claimed=self.claimed,
            observed=self.observed,
            now=now,
            stamp=self.stamp(),
            timings=self.timings,
        )
        self.observed = decision.observed
        self.holder = decision.holder
        self.lease = read
        if decision.action is Action.WAIT:
            return False
        assert decision.spec is not None
        self.claimed = True  # from now on a record naming me may be my own write
        body = lease_body(self.name, self.namespace, decision.spec, read)
        try:
            if decision.action is Action.CREATE:
                result = self.api.create_lease(self.namespace, body)
            else:
                result = self.api.replace_lease(body)
        except (Conflict, AlreadyExists):
            self.lease = None  # someone else wrote first: read again next time
            log.info("lease %s: another replica wrote it first", self.where)
            return False
        self.lease = result
        self.holder = self.identity
        self.renewed_at = now
        self.observed = Observed(_record(dict(result.get("spec") or {})), now)
        if not self.leader:
            self.leader = True
            log.info(
                "lease %s acquired by %s (%s)",
                self.where,
                self.identity,
                f"from {decision.holder}" if decision.holder else "it was free",
            )
            self.became_leader.set()
            if self.on_change is not None:
                self.on_change(True)
        return True

    def _lose(self, now: float) -> None:
        self.lost = True
        self.leader = False
        since = now - (self.renewed_at or self.started_at)
        log.error(
            "lease %s lost by %s (holder now %s, last renewal %.1fs ago%s)",
            self.where,
            self.identity,
            self.holder,
            since,
            f", {self.last_error}" if self.last_error else "",
        )
        if self.on_change is not None:
            self.on_change(False)

    # ----- the loop

    def start(self, on_lost: Callable[[], None]) -> None:
        def loop() -> None:
            while not self._stop.is_set():
                delay = self.tick()
                if self.lost:
                    on_lost()
                    return
                self._stop.wait(delay)

        self._thread = threading.Thread(target=loop, name="kudig-leader-election", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def release(self) -> bool:
        """Stop the loop and, if leading, give the lease up for a fast hand-over. True if released."""
        self.stop()
        if not self.leader or self.lease is None:
            return False
        spec = released(dict(self.lease.get("spec") or {}), self.stamp())
        try:
            self.api.replace_lease(lease_body(self.name, self.namespace, spec, self.lease))
        except Conflict:
            log.info("lease %s changed meanwhile: nothing to release", self.where)
            return False
        except Exception as e:
            log.warning("lease %s: release failed (%s); it expires on its own", self.where, e)
            return False
        finally:
            self.leader = False
            if self.on_change is not None:
                self.on_change(False)
        log.info("lease %s released by %s", self.where, self.identity)
        return True

    # ----- health of a standby

    def healthy(self) -> tuple[bool, str]:
        """The election loop keeps making attempts (each request has a timeout, so a stuck loop
        means a stuck process)."""
        now = self.clock()
        last = self.last_attempt if self.last_attempt is not None else self.started_at
        if now - last > max(30.0, 5 * self.timings.renew_period):
            return False, f"leader election: no attempt for {now - last:.0f}s"
        return True, "ok"

    def ready(self) -> tuple[bool, str]:
        """A standby is ready when it can read the lease (API server, RBAC): it could take over."""
        ok, why = self.healthy()
        if not ok:
            return ok, why
        if self.last_error is not None or self.last_read_ok is None:
            return False, f"standby: cannot read lease {self.where} ({self.last_error or 'starting'})"
        if self.leader:
            return False, "leader: controller starting"
        return True, f"ok (standby; lease {self.where} held by {self.holder or 'nobody'})"
