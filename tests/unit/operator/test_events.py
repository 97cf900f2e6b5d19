"""Event names and the outbox a status write records (events.py): names are valid, the same on
every controller, unique per commit; the outbox round-trips through the Session's status."""

from __future__ import annotations

import re

from kudig_operator.events import (
    MAX_MESSAGE_CHARS,
    NORMAL,
    STARTED,
    WARNING,
    Outbox,
    SessionEvent,
    event_name,
    outbox_id,
)

from kudig.schema import SessionStatus

DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
T = 1_706_572_800.25
EVENTS = (SessionEvent(NORMAL, STARTED, "Attempt 1 started"), SessionEvent(WARNING, "TaskFailed", "x"))


def test_names_are_dns_subdomains_of_at_most_253_characters() -> None:
    oid = outbox_id("uid", "12", EVENTS, T)
    # (cut short right after a dash or a dot, the name would not be one)
    for session in ["s1", "a" * 253, "a" * 233 + "-" + "b" * 19, "a" * 232 + "." + "b" * 20, "wf.2024-01-30"]:
        for index in (0, 13):
            name = event_name(session, oid, index)
            assert len(name) <= 253 and DNS_SUBDOMAIN.fullmatch(name), name
            assert name.startswith(session[:200])
    assert event_name("s1", oid, 0) == f"s1.{oid}-00"
    assert event_name("s1", oid, 13) == f"s1.{oid}-0d"


def test_names_sort_in_time_order() -> None:
    """As client-go's (`<object>.<nanoseconds, hex>`): `kubectl get events` lists by name."""
    names = [
        event_name("s1", outbox_id(uid, "12", EVENTS, at), i)
        for at, uid in [(T, "z"), (T + 0.001, "a"), (T + 1, "m")]
        for i in range(12)
    ]
    assert names == sorted(names)


def test_ids_are_unique_per_commit_and_the_same_on_every_controller() -> None:
    assert outbox_id("uid", "12", EVENTS, T) == outbox_id("uid", "12", list(EVENTS), T)
    assert outbox_id("uid", "12", EVENTS, T) != outbox_id("uid", "13", EVENTS, T), "another write"
    assert outbox_id("uid", "12", EVENTS, T) != outbox_id("other", "12", EVENTS, T), "another Session"
    assert outbox_id("uid", "12", EVENTS, T) != outbox_id("uid", "12", EVENTS[:1], T), "other Events"


def test_the_outbox_round_trips_through_the_status() -> None:
    long = SessionEvent(WARNING, "TaskFailed", "y" * 5000)
    box = Outbox(outbox_id("uid", "12", EVENTS, T), T, (*EVENTS, long))
    status = SessionStatus.model_validate({"phase": "Running", "lastEvents": box.record()})
    assert status.last_events is not None
    again = Outbox.of(status.last_events)
    assert again.id == box.id and again.at == int(box.at) and again.events[:2] == EVENTS
    assert len(again.events[2].message) == MAX_MESSAGE_CHARS, "kept as the Event says it: cut short"
    assert again.named("s1") == [(f"s1.{box.id}-{i:02x}", e) for i, e in enumerate(again.events)]
    assert [n for n, _ in again.named("s1")] == [n for n, _ in box.named("s1")], "the same names"
