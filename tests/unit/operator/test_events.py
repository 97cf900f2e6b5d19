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

from kudig.api import SessionStatus

DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
EVENTS = (SessionEvent(NORMAL, STARTED, "Attempt 1 started"), SessionEvent(WARNING, "TaskFailed", "x"))


def test_names_are_dns_subdomains_of_at_most_253_characters() -> None:
    oid = outbox_id("uid", "12", EVENTS)
    # (cut short right after a dash or a dot, the name would not be one)
    for session in ["s1", "a" * 253, "a" * 233 + "-" + "b" * 19, "a" * 232 + "." + "b" * 20, "wf.2024-01-30"]:
        for index in (0, 13):
            name = event_name(session, oid, index)
            assert len(name) <= 253 and DNS_SUBDOMAIN.fullmatch(name), name
            assert name.startswith(session[:200])
    assert event_name("s1", oid, 0) == f"s1.{oid}-0"


def test_ids_are_unique_per_commit_and_the_same_on_every_controller() -> None:
    assert outbox_id("uid", "12", EVENTS) == outbox_id("uid", "12", list(EVENTS))
    assert outbox_id("uid", "12", EVENTS) != outbox_id("uid", "13", EVENTS), "another write"
    assert outbox_id("uid", "12", EVENTS) != outbox_id("other", "12", EVENTS), "another Session"
    assert outbox_id("uid", "12", EVENTS) != outbox_id("uid", "12", EVENTS[:1]), "other Events"


def test_the_outbox_round_trips_through_the_status() -> None:
    long = SessionEvent(WARNING, "TaskFailed", "y" * 5000)
    box = Outbox(outbox_id("uid", "12", EVENTS), 1_706_572_800.0, (*EVENTS, long))
    status = SessionStatus.model_validate({"phase": "Running", "lastEvents": box.record()})
    assert status.last_events is not None
    again = Outbox.of(status.last_events)
    assert again.id == box.id and again.at == box.at and again.events[:2] == EVENTS
    assert len(again.events[2].message) == MAX_MESSAGE_CHARS, "kept as the Event says it: cut short"
    assert again.named("s1") == [(f"s1.{box.id}-{i}", e) for i, e in enumerate(again.events)]
