"""The dependency edges of a session's rows: a `_parallel: {limit: N}` batch waits for the N tasks
of the batch before it, so a fan-out of T tasks has about T x N edges. Rows keep them compact (a
`range`, one shared block of downstreams per batch), and what the engine sees is unchanged."""

from __future__ import annotations

import json
from collections.abc import Sequence

from hypothesis import given
from hypothesis import strategies as st

from kudig.engine.state import SessionState, Task, compact_ids, downstream_ids, link

from .driver import drive

LIMIT_FAN_OUT = "+fan:\n  for_range>:\n    from: 0\n    to: 60\n    step: 1\n  _parallel: {limit: 20}\n  _do:\n    sh>: x\n"


@given(st.lists(st.integers(0, 50)))
def test_compact_ids_keep_every_id_in_order(ids: list[int]) -> None:
    compact = compact_ids(ids)
    assert list(compact) == ids
    assert isinstance(compact, range | tuple)


def test_an_even_run_of_ids_is_a_range() -> None:
    assert compact_ids(range(40, 1040)) == range(40, 1040)
    assert compact_ids([3, 7, 11, 15]) == range(3, 16, 4)  # a batch of groups: ids step by subtree
    assert compact_ids([1, 2]) == (1, 2) and compact_ids([1, 3, 4]) == (1, 3, 4)


@given(st.lists(st.lists(st.integers(0, 11), max_size=6, unique=True), min_size=12, max_size=12))
def test_downstreams_are_every_waiting_task_in_id_order(upstreams: list[list[int]]) -> None:
    tasks = [
        Task(id=i, name=f"+t{i}", parent=None, upstreams=compact_ids(u), is_group=False, config={})
        for i, u in enumerate(upstreams)
    ]
    blocks: dict[Sequence[int], list[int]] = {}
    for task in tasks:
        link(tasks, task, blocks)
    for task in tasks:
        expected = [t.id for t in tasks if task.id in t.upstreams]
        assert list(downstream_ids(task)) == expected


def test_a_limited_fan_out_shares_its_edges_and_runs_in_batches() -> None:
    run = drive(LIMIT_FAN_OUT)
    assert run.state == "success"
    subs = [
        t
        for t in run.engine.state.tasks
        if t.parent is not None and "^sub" in run.engine.state.tasks[t.parent].name
    ]
    assert len(subs) == 60, [t.name for t in run.engine.state.tasks]
    second = subs[20:40]
    assert all(
        isinstance(t.upstreams, range) and list(t.upstreams) == [s.id for s in subs[:20]] for t in second
    )
    assert len({id(t.upstreams) for t in second}) == 1  # one object for the batch
    first = subs[:20]
    assert all(len(t.downstreams) == 1 for t in first) and len({id(t.downstreams[0]) for t in first}) == 1
    # the state as stored (JSON) decodes to the same edges, compact again
    decoded = SessionState.from_json(json.loads(json.dumps(run.engine.state.to_json())))
    again = decoded.tasks[second[0].id]
    assert again.upstreams == second[0].upstreams and isinstance(again.upstreams, range)
    assert list(downstream_ids(decoded.tasks[first[0].id])) == [t.id for t in second]
