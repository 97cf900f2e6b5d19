"""Leader election on a Lease: the pure decision across time, then the loop against the in-memory
API with two (or three) electors and a fake clock — never two leaders, and the standby takes over
within the lease duration plus a retry period once the leader stops renewing."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fake_kube import FakeKube
from kudig_operator.leader import (
    Action,
    LeaseElector,
    Observed,
    Timings,
    decide,
    lease_body,
    micro_time,
    released,
    renewal_lost,
)

from kudig.cluster.kube import Conflict

T = Timings()
NS, NAME = "kudig-system", "kudig-operator"


def lease(holder: str | None, renew: str = "t0", transitions: int = 3, duration: int = 15) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "leaseDurationSeconds": duration,
        "acquireTime": "a0",
        "renewTime": renew,
        "leaseTransitions": transitions,
    }
    if holder is not None:
        spec["holderIdentity"] = holder
    return {"metadata": {"name": NAME, "namespace": NS, "resourceVersion": "7"}, "spec": spec}


# ----- the decision


def test_no_lease_is_created_naming_me() -> None:
    d = decide(None, me="a", claimed=False, observed=None, now=0.0, stamp="s1")
    assert d.action is Action.CREATE
    assert d.spec == {
        "holderIdentity": "a",
        "leaseDurationSeconds": 15,
        "acquireTime": "s1",
        "renewTime": "s1",
        "leaseTransitions": 0,
    }
    body = lease_body(NAME, NS, d.spec, None)
    assert body["kind"] == "Lease" and body["metadata"] == {"name": NAME, "namespace": NS}


def test_my_lease_is_renewed_keeping_its_term() -> None:
    d = decide(lease("a"), me="a", claimed=True, observed=None, now=100.0, stamp="s2")
    assert d.action is Action.RENEW
    assert d.spec is not None
    assert d.spec["renewTime"] == "s2"
    assert d.spec["acquireTime"] == "a0" and d.spec["leaseTransitions"] == 3
    body = lease_body(NAME, NS, d.spec, lease("a"))
    assert body["metadata"]["resourceVersion"] == "7", "the write carries the version read"


def test_another_holders_fresh_lease_waits_until_it_is_unchanged_for_its_duration() -> None:
    held = lease("b")
    d = decide(held, me="a", claimed=False, observed=None, now=100.0, stamp="x")
    assert d.action is Action.WAIT and d.holder == "b" and d.expires_in == 15.0
    # the same record, read again and again: expiry counts from when I first saw it
    d = decide(held, me="a", claimed=False, observed=d.observed, now=114.9, stamp="x")
    assert d.action is Action.WAIT and d.expires_in == pytest.approx(0.1)
    d = decide(held, me="a", claimed=False, observed=d.observed, now=115.0, stamp="s3")
    assert d.action is Action.ACQUIRE and d.holder == "b"
    assert d.spec is not None
    assert d.spec["holderIdentity"] == "a"
    assert d.spec["acquireTime"] == "s3" and d.spec["renewTime"] == "s3"
    assert d.spec["leaseTransitions"] == 4


def test_a_renewing_holder_never_expires() -> None:
    observed: Observed | None = None
    for i in range(10):  # renewed every 5 s, read every 2 s: never 15 s unchanged
        now = 100.0 + 2 * i
        d = decide(
            lease("b", renew=f"r{int(now) // 5}"),
            me="a",
            claimed=False,
            observed=observed,
            now=now,
            stamp="x",
        )
        assert d.action is Action.WAIT
        observed = d.observed


def test_expiry_uses_the_holders_stated_duration_and_my_clock_only() -> None:
    # renewTime is never compared with my clock (clock skew between nodes): only the record's change
    held = lease("b", renew="1999-01-01T00:00:00.000000Z", duration=40)
    d = decide(held, me="a", claimed=False, observed=None, now=100.0, stamp="x")
    assert d.action is Action.WAIT and d.expires_in == 40.0
    assert (
        decide(held, me="a", claimed=False, observed=d.observed, now=140.0, stamp="x").action
        is Action.ACQUIRE
    )


def test_a_released_lease_is_taken_at_once() -> None:
    free = lease(None)
    d = decide(free, me="a", claimed=False, observed=None, now=100.0, stamp="s4")
    assert d.action is Action.ACQUIRE and d.holder is None
    assert d.spec is not None and d.spec["holderIdentity"] == "a" and d.spec["leaseTransitions"] == 4


def test_a_record_naming_me_that_i_never_wrote_is_someone_elses() -> None:
    """The container restarted inside the same pod (same name): wait for the old term to expire."""
    d = decide(lease("a"), me="a", claimed=False, observed=None, now=100.0, stamp="x")
    assert d.action is Action.WAIT
    d = decide(lease("a"), me="a", claimed=False, observed=d.observed, now=115.0, stamp="s5")
    assert d.action is Action.ACQUIRE and d.spec is not None and d.spec["leaseTransitions"] == 4


def test_release_clears_the_holder_and_the_deadline_is_shorter_than_the_lease() -> None:
    spec = released(dict(lease("a")["spec"]), "s6")
    assert "holderIdentity" not in spec and spec["renewTime"] == "s6" and spec["leaseTransitions"] == 3
    assert not renewal_lost(100.0, 109.9) and renewal_lost(100.0, 110.0) and renewal_lost(None, 0.0)
    assert T.renew_deadline < T.lease_duration, "a leader stops before a standby may take over"
    assert micro_time(0.5) == "1970-01-01T00:00:00.500000Z"


# ----- the loop against the in-memory API


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t

    def stamp(self) -> str:
        return micro_time(self.t)


class Flaky:
    """A KubeApi for leases whose requests fail while `down()` says so (a network partition)."""

    def __init__(self, kube: FakeKube, down: Callable[[], bool]) -> None:
        self.kube, self.down = kube, down

    def _check(self) -> None:
        if self.down():
            raise ConnectionError("API server unreachable")

    def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        self._check()
        return self.kube.get_lease(namespace, name)

    def create_lease(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        self._check()
        return self.kube.create_lease(namespace, body)

    def replace_lease(self, body: dict[str, Any]) -> dict[str, Any]:
        self._check()
        return self.kube.replace_lease(body)


def elector(
    api: Any, name: str, clock: Clock, changes: list[tuple[float, str, bool]] | None = None
) -> LeaseElector:
    def note(leader: bool) -> None:
        if changes is not None:
            changes.append((clock.t, name, leader))

    return LeaseElector(api, namespace=NS, identity=name, clock=clock, stamp=clock.stamp, on_change=note)


class Sim:
    """Electors ticking on one fake clock, each at the time its last tick asked for; a process
    can be killed (stops ticking, releases nothing). Checks at every step that at most one live
    process believes it leads, and records who led when."""

    def __init__(self, clock: Clock, electors: list[LeaseElector]) -> None:
        self.clock = clock
        self.electors = {e.identity: e for e in electors}
        self.due = {name: clock.t for name in self.electors}
        self.leaders: list[tuple[float, str | None]] = []  # (time, who) at every change

    def kill(self, name: str) -> None:
        self.due.pop(name, None)

    def active(self) -> list[str]:
        return [n for n in self.due if self.electors[n].leader]

    def run(self, until: float) -> None:
        while self.due:
            name = min(self.due, key=lambda n: (self.due[n], n))
            if self.due[name] > until:
                break
            self.clock.t = self.due[name]
            e = self.electors[name]
            delay = e.tick()
            if e.lost:
                self.kill(name)  # on_lost: the process exits
            else:
                self.due[name] = self.clock.t + delay
            active = self.active()
            assert len(active) <= 1, f"two leaders at {self.clock.t}: {active}"
            who = active[0] if active else None
            if not self.leaders or self.leaders[-1][1] != who:
                self.leaders.append((self.clock.t, who))
        self.clock.t = until


def test_one_leader_and_the_standby_takes_over_when_it_dies() -> None:
    kube, clock = FakeKube(), Clock()
    a, b = elector(kube, "a", clock), elector(kube, "b", clock)
    sim = Sim(clock, [a, b])
    sim.run(until=1060.0)
    assert sim.leaders == [(1000.0, "a")], "the first to try creates the lease; the other waits"
    assert a.became_leader.is_set() and not b.became_leader.is_set()
    assert kube.leases[(NS, NAME)]["spec"]["holderIdentity"] == "a"
    # the leader renews from its own last write: one request per renewal, no reads
    assert kube.requests[("get", "leases")] == 1 + 31, "a read once; b every 2 s (1000..1060)"
    assert kube.requests[("update", "leases")] == 12, "a renews every 5 s"

    sim.kill("a")  # SIGKILL: no release
    died = clock.t
    sim.run(until=1120.0)
    (took_over, who) = sim.leaders[-1]
    assert who == "b"
    assert took_over - died <= T.lease_duration + T.retry_period
    assert took_over - died >= T.lease_duration - T.renew_period, "not before the lease could expire"
    spec = kube.leases[(NS, NAME)]["spec"]
    assert spec["holderIdentity"] == "b" and spec["leaseTransitions"] == 1


def test_release_on_shutdown_hands_over_at_the_next_read() -> None:
    kube, clock = FakeKube(), Clock()
    changes: list[tuple[float, str, bool]] = []
    a, b = elector(kube, "a", clock, changes), elector(kube, "b", clock, changes)
    sim = Sim(clock, [a, b])
    sim.run(until=1030.0)
    sim.kill("a")
    assert a.release() is True  # SIGTERM: kopf stopped, then the lease is given up
    assert "holderIdentity" not in kube.leases[(NS, NAME)]["spec"]
    assert changes[-1] == (1030.0, "a", False)
    sim.run(until=1040.0)
    assert sim.leaders[-1][1] == "b" and sim.leaders[-1][0] - 1030.0 <= T.retry_period
    assert b.release() is True and a.release() is False, "a is no longer the leader"


def interleave(kube: FakeKube, method: str, other: Callable[[], object]) -> None:
    """Run `other` (another elector's tick) right before the next call of `method`."""

    def hook() -> None:
        kube.before(method, lambda: None)  # `other`'s own call of `method` goes through
        other()

    kube.before(method, hook)


def test_of_two_standbys_taking_an_expired_lease_one_meets_409_and_waits() -> None:
    kube, clock = FakeKube(), Clock()
    kube.leases[(NS, NAME)] = lease("dead")
    kube.leases[(NS, NAME)]["metadata"]["resourceVersion"] = "1"
    b, c = elector(kube, "b", clock), elector(kube, "c", clock)
    assert b.tick() == T.retry_period and c.tick() == T.retry_period  # both see "dead" holding it
    clock.t += T.lease_duration
    interleave(kube, "replace_lease", c.tick)  # c's whole attempt lands between b's read and write
    b.tick()
    assert c.leader and not b.leader
    assert b.lease is None, "b reads again next time"
    clock.t += T.retry_period
    assert b.tick() == T.retry_period and b.holder == "c" and not b.leader


def test_create_race_is_lost_with_already_exists() -> None:
    kube, clock = FakeKube(), Clock()
    a, b = elector(kube, "a", clock), elector(kube, "b", clock)
    interleave(kube, "create_lease", b.tick)
    a.tick()
    assert b.leader and not a.leader and kube.leases[(NS, NAME)]["spec"]["holderIdentity"] == "b"


def test_a_leader_cut_off_from_the_api_server_stops_before_the_standby_takes_over() -> None:
    kube, clock = FakeKube(), Clock()
    cut = [False]
    changes: list[tuple[float, str, bool]] = []
    a = elector(Flaky(kube, lambda: cut[0]), "a", clock, changes)
    b = elector(kube, "b", clock, changes)
    sim = Sim(clock, [a, b])
    sim.run(until=1031.0)
    cut[0] = True
    sim.run(until=1080.0)
    assert a.lost and not a.leader
    lost_at = next(t for t, who, leader in changes if who == "a" and not leader)
    won_at = next(t for t, who, leader in changes if who == "b" and leader)
    assert lost_at - 1031.0 <= T.renew_deadline, "the leader gives up within its renew deadline"
    assert won_at - lost_at >= T.lease_duration - T.renew_deadline, "a margin of 5 s"
    assert won_at - 1031.0 <= T.lease_duration + T.retry_period
    writes = kube.requests[("update", "leases")]
    cut[0] = False
    assert a.tick() == T.retry_period and kube.requests[("update", "leases")] == writes, (
        "a lost elector does nothing more"
    )


def test_a_leader_whose_lease_was_taken_loses_at_once() -> None:
    kube, clock = FakeKube(), Clock()
    a = elector(kube, "a", clock)
    a.tick()
    assert a.leader
    current = kube.leases[(NS, NAME)]
    kube.replace_lease(lease_body(NAME, NS, {**current["spec"], "holderIdentity": "z"}, current))
    clock.t += T.renew_period
    a.tick()  # 409 on the renewal (stale resourceVersion): read again
    assert a.leader and not a.lost
    clock.t += T.retry_period
    a.tick()  # z holds it
    assert a.lost and not a.leader


def test_a_stalled_leader_never_writes_again() -> None:
    """A process frozen past its renew deadline (e.g. SIGSTOP) finds the deadline gone and stops,
    even if it could still write."""
    kube, clock = FakeKube(), Clock()
    a = elector(kube, "a", clock)
    a.tick()
    writes = kube.requests[("update", "leases")]
    clock.t += T.renew_deadline + 1
    a.tick()
    assert a.lost and kube.requests[("update", "leases")] == writes


def test_a_conflict_on_renewal_of_my_own_write_keeps_leading() -> None:
    """A renewal whose response was lost: the next one meets 409, reads, finds itself, renews."""
    kube, clock = FakeKube(), Clock()
    a = elector(kube, "a", clock)
    a.tick()
    kube.fail_next("replace_lease", Conflict("stale"))
    clock.t += T.renew_period
    assert a.tick() <= T.retry_period and a.leader
    clock.t += T.retry_period
    assert a.tick() == T.renew_period and a.leader and not a.lost


def test_standby_health_and_readiness() -> None:
    kube, clock = FakeKube(), Clock()
    a, b = elector(kube, "a", clock), elector(kube, "b", clock)
    assert b.ready()[0] is False, "not before the first read"
    a.tick()
    b.tick()
    assert b.healthy() == (True, "ok")
    ok, why = b.ready()
    assert ok and "held by a" in why
    assert a.ready() == (False, "leader: controller starting"), "the controller's own /readyz takes over"
    kube.fail_next("get_lease", ConnectionError("down"))
    clock.t += T.retry_period
    b.tick()
    assert b.ready()[0] is False and b.healthy()[0] is True
    clock.t += 60
    assert b.healthy()[0] is False, "a loop that stopped trying is not healthy"
