"""How a Session's engine state is persisted (kudig_operator.results): an index in the status,
rows in immutable content-addressed chunks, rewritten only where they changed."""

from __future__ import annotations

import base64
import gzip
import json
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kudig_operator import results

from kudig import sessionread
from kudig.compiler import compile_workflow
from kudig.engine.core import Engine, Event, SessionContext, StartTask, TaskFailed, TaskResult, TaskSucceeded
from kudig.engine.state import SessionState, Task, TaskState
from kudig.expr import TemplateEngine
from kudig.yamlload import load_dig_text

SESSION = "s1"
EVALUATOR = TemplateEngine()


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    # small chunks and a small inline budget, so small states exercise every path
    monkeypatch.setattr(results, "CHUNK_ROWS", 4)
    monkeypatch.setattr(results, "INLINE_BYTES", 700)


def state_of(n: int, seed: int = 1) -> SessionState:
    rnd = random.Random(seed)
    tasks = [
        Task(id=0, name="+wf", parent=None, upstreams=[], is_group=True, config={}, state=TaskState.PLANNED)
    ]
    for i in range(1, n):
        tasks.append(
            Task(
                id=i,
                name=f"+wf+t{i}",
                parent=0,
                upstreams=[],
                is_group=False,
                config={"sh>": f"echo {i}"},
                state=rnd.choice([TaskState.SUCCESS, TaskState.RUNNING, TaskState.BLOCKED]),
                store_params={"v": "x" * rnd.randrange(0, 300)},
                state_params={"_retry": None},
            )
        )
        tasks[0].children.append(i)
    return SessionState(tasks)


class Store:
    """The ConfigMaps written so far, as the API server would keep them (deletes applied)."""

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}

    def commit(self, blobs: list[results.Blob], garbage: tuple[str, ...] | list[str] = ()) -> None:
        for b in blobs:
            assert self.blobs.get(b.name, b.data) == b.data, "a name must always hold the same bytes"
            self.blobs.setdefault(b.name, b.data)
        for name in garbage:
            del self.blobs[name]

    def decode(self, blob: str) -> SessionState:
        data = results.decode_json(blob)
        # what the controller does: fetch what `refs` names until nothing new
        names = results.refs(data)
        while (more := results.refs(data, {n: self.blobs[n] for n in names})) != names:
            names = more
        results.forget_parsed()  # decode from the bytes, not the memo of parsed chunks
        state, _ = results.decode(data, {n: self.blobs[n] for n in names})
        return state


@settings(max_examples=25, deadline=None)
@given(st.integers(min_value=1, max_value=70), st.integers(min_value=0, max_value=10**6))
def test_round_trip_and_an_unchanged_state_writes_nothing(n: int, seed: int) -> None:
    state = state_of(n, seed)
    store = Store()
    blob, blobs, memo = results.encode(state, SESSION)
    store.commit(blobs)
    assert store.decode(blob).to_json() == state.to_json()
    again, more, memo2 = results.encode(state, SESSION, memo)
    assert again == blob and more == [] and results.garbage(memo, memo2) == []
    # decoded by another controller: the same bytes again, nothing to write
    data = results.decode_json(blob)
    decoded, memo3 = results.decode(data, store.blobs)
    third, blobs3, _ = results.encode(decoded, SESSION, memo3)
    assert third == blob and blobs3 == []


@settings(max_examples=40, deadline=None)
@given(st.integers(min_value=1, max_value=59), st.sampled_from(["state", "finished_at", "store", "in_place"]))
def test_a_changed_row_changes_only_its_chunk(row: int, what: str) -> None:
    state = state_of(60)
    state.tasks[row].state = TaskState.RUNNING
    _, _, memo = results.encode(state, SESSION)
    entries = list(memo.entries)
    task = state.tasks[row]
    if what == "state":
        task.state = TaskState.SUCCESS
    elif what == "finished_at":
        task.finished_at = 12.5
    elif what == "store":
        task.store_params = {"v": "changed"}
    else:  # a running row mutated in place (require> updates its record so)
        task.state_params["record"] = {"n": 1}
    blob, blobs, after = results.encode(state, SESSION, memo)
    chunk = row // results.CHUNK_ROWS
    # the changed chunk is inline now, or under a new name when over the inline budget; other
    # entries change only when the budget moves an inline chunk out: no other chunk is rewritten
    assert after.entries[chunk] is None or after.entries[chunk] != entries[chunk]
    for c, (a, b) in enumerate(zip(entries, after.entries, strict=True)):
        assert c == chunk or a == b or (a is None and isinstance(b, str)), (c, a, b)
    assert all("-c-" in b.name for b in blobs) and len(blobs) <= 2
    assert results.garbage(memo, after) == ([entries[chunk]] if isinstance(entries[chunk], str) else [])
    if after.entries[chunk] is None:
        assert task.to_json() in results.decode_json(blob)["chunks"][chunk]["rows"]
    store = Store()
    full_blob, full_blobs, _ = results.encode(state, SESSION)
    store.commit(full_blobs)
    assert store.decode(full_blob).to_json() == state.to_json()


@settings(max_examples=25, deadline=None)
@given(st.integers(min_value=4, max_value=40), st.integers(min_value=0, max_value=10**6))
def test_the_old_inline_format_still_decodes(n: int, seed: int) -> None:
    state = state_of(n, seed)
    state.tasks[3].store_params = {"big": "y" * 5000}
    rows = [t.to_json() for t in state.tasks]
    moved: list[results.Blob] = []
    rows[3]["ext"] = {"result": results._store(SESSION, {"store_params": rows[3].pop("store_params")}, moved)}
    raw = json.dumps({"tasks": rows, "killed": False}, separators=(",", ":")).encode()
    v1 = base64.b64encode(gzip.compress(raw, mtime=0)).decode()
    data = results.decode_json(v1)
    assert results.refs(data) == [moved[0].name]
    decoded, memo = results.decode(data, {b.name: b.data for b in moved})
    assert decoded.to_json() == state.to_json()
    # the next write is format 2, and nothing of the old one is deleted
    blob, blobs, after = results.encode(decoded, SESSION, memo)
    assert results.decode_json(blob)["v"] == 2 and results.garbage(memo, after) == []
    assert any("-c-" in b.name for b in blobs) or n < 10
    store = Store()
    store.commit(moved + blobs)
    assert store.decode(blob).to_json() == state.to_json()
    # sessionread reads both formats
    obj = {"status": {"engine": {"data": v1}}}
    assert [r.name for r in sessionread.task_rows(obj)] == [t.name for t in state.tasks]


def test_sessionread_reads_chunks_by_name() -> None:
    state = state_of(40)
    state.tasks[5].ready_at, state.tasks[5].pod_created_at, state.tasks[5].running_at = 1.0, 2.0, 3.0
    blob, blobs, _ = results.encode(state, SESSION)
    obj = {"status": {"engine": {"data": blob}}}
    names = sessionread.blob_refs(obj)
    assert sorted(names) == sorted(b.name for b in blobs if "-c-" in b.name) and names
    cms = {b.name: {"binaryData": {results.DATA_KEY: base64.b64encode(b.data).decode()}} for b in blobs}
    got = sessionread.task_rows(obj, {n: sessionread.blob_of(cms[n]) for n in names}, superseded=True)
    assert [(r.id, r.name, r.state) for r in got] == [(t.id, t.name, t.state.value) for t in state.tasks]
    assert (got[5].ready_at, got[5].pod_created_at, got[5].running_at) == (1.0, 2.0, 3.0)
    assert sessionread.state_json(obj, {n: sessionread.blob_of(cms[n]) for n in names})["tasks"] == [
        t.to_json() for t in state.tasks
    ]
    sessionread._CHUNKS.clear()
    with pytest.raises(sessionread.MissingBlob):
        sessionread.task_rows(obj, {})


def test_a_deleted_chunk_is_a_clear_error() -> None:
    blob, _blobs, _ = results.encode(state_of(40), SESSION)
    results.forget_parsed()
    with pytest.raises(results.MissingResult, match="missing"):
        results.decode(results.decode_json(blob), {})


def test_a_large_config_moves_out_and_the_row_keeps_its_operator() -> None:
    state = state_of(3)
    state.tasks[2].batch = 1
    state.tasks[2].config = {"py>": "m.f", "data": "z" * 6000}
    blob, blobs, _ = results.encode(state, SESSION)
    store = Store()
    store.commit(blobs)
    assert any("-r-" in b.name for b in blobs)
    assert store.decode(blob).to_json() == state.to_json()
    rows = sessionread.task_rows({"status": {"engine": {"data": blob}}}, store.blobs)
    assert rows[2].operator == "py>"


# ---------------------------------------------------------------- the engine, step by step


def engine_steps(text: str, seed: int) -> Iterator[Engine]:
    """Drive a workflow to its end (tasks finish in a seeded order, storing results), yielding
    the engine after each step, with what a controller does between plans: pod times set,
    a running row's state_params updated in place."""
    definition = load_dig_text(text, "wf.dig", Path("."))
    ctx = SessionContext(
        workflow_name="wf",
        timezone="UTC",
        session_params={"session_time": "2024-01-30T00:00:00+00:00", "timezone": "UTC"},
        attempt_params={},
        evaluator=EVALUATOR,
        max_tasks=1000,
    )
    engine = Engine.new(ctx, compile_workflow("wf", definition, 1000))
    rnd = random.Random(seed)
    running: list[StartTask] = []
    events: list[Event] = []
    now = 0.0
    for _ in range(500):
        for action in engine.step(events, now):
            if isinstance(action, StartTask):
                running.append(action)
        yield engine
        if engine.state.done:
            return
        events = []
        rnd.shuffle(running)
        for action in running[: rnd.randint(1, 3)]:
            running.remove(action)
            task = engine.state.tasks[action.task_id]
            task.pod_created_at = now + 0.1
            if rnd.random() < 0.2:
                events.append(TaskFailed(action.task_id, "boom"))
            else:
                store = {f"k{action.task_id}": "v" * rnd.randrange(0, 400)}
                events.append(TaskSucceeded(action.task_id, TaskResult(store_params=store)))
        for action in running:
            engine.state.tasks[action.task_id].state_params["seen"] = now  # in place
        now += 1.0
        wake = engine.next_wakeup()
        if not events and not running and wake is not None:
            now = max(now, wake)


WORKFLOWS = [
    "+a:\n  sh>: a\n+b:\n  _parallel: true\n  +c:\n    sh>: c\n  +d:\n    sh>: d\n+e:\n  sh>: e\n",
    "+loop:\n  for_range>:\n    from: 0\n    to: 23\n    step: 1\n  _parallel: {limit: 5}\n  _do:\n    sh>: x\n",
    "+g:\n  _retry: 2\n  +x:\n    sh>: x\n  +y:\n    sh>: y\n+h:\n  _error:\n    sh>: cleanup\n  sh>: h\n",
]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(WORKFLOWS), st.integers(min_value=0, max_value=10**6))
def test_incremental_encodes_keep_the_state_at_every_step(text: str, seed: int) -> None:
    store = Store()
    memo: results.Memo | None = None
    for engine in engine_steps(text, seed):
        blob, blobs, after = results.encode(engine.state, SESSION, memo)
        store.commit(blobs, results.garbage(memo, after))
        memo = after
        assert store.decode(blob).to_json() == engine.state.to_json()
    assert memo is not None
    # only what the index names is kept (replaced chunks were deleted)
    index = results.decode_json(blob)
    assert {n for n in store.blobs if "-c-" in n} == {n for n in results.refs(index) if "-c-" in n}


def test_rows_record_assignments_only_once_tracked() -> None:
    state = state_of(3)
    _blob, _, memo = results.encode(state, SESSION)
    state.tasks[1].retry_count = 5
    assert memo.changes is not None and memo.changes.ids == {1}
    other = SessionState.from_json(state.to_json())
    other.tasks[1].retry_count = 6  # an untracked copy records nothing
    assert memo.changes.ids == {1}
    assert type(other.tasks[1]) is Task


def test_bookkeeping_and_unchanged_rewrites_write_nothing() -> None:
    state = state_of(20)
    state.tasks[6].state = TaskState.RUNNING
    state.tasks[6].store_params = {"big": "q" * 5000}  # a moved result on an active row
    blob, _, memo = results.encode(state, SESSION)
    state.tasks[0].active_children = 7  # derived, never stored
    state.tasks[3].finished_at = state.tasks[3].finished_at  # assigned, same value
    state.tasks[6].state_params["_retry"] = None  # re-checked (active), unchanged
    again, blobs, after = results.encode(state, SESSION, memo)
    assert (again, blobs, after.entries) == (blob, [], memo.entries)
