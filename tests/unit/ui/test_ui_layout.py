"""kudig.ui.layout: the DAG laid out in one pass (nested group boxes, layers by upstream depth)."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from kudig.sessionread import TaskRow
from kudig.ui.layout import GAP_X, LEAF_H, LEAF_W, layout


def row(
    id: int, name: str, parent: int | None, upstreams: tuple[int, ...] = (), group: bool = False
) -> TaskRow:
    return TaskRow(
        id=id,
        name=name,
        parent=parent,
        upstreams=upstreams,
        is_group=group,
        state="success",
        retries=0,
        error="",
        operator=None,
        file=None,
        line=None,
        superseded=False,
        started_at=None,
        finished_at=None,
    )


def by_id(result: dict[str, Any]) -> dict[int, dict[str, Any]]:
    return {n["id"]: n for n in result["nodes"]}


def test_sequence_runs_left_to_right_and_parallel_stacks():
    rows = [
        row(0, "+wf", None, group=True),
        row(1, "+wf+a", 0),
        row(2, "+wf+p", 0, (1,), group=True),
        row(3, "+wf+p+x", 2),
        row(4, "+wf+p+y", 2),
        row(5, "+wf+c", 0, (2,)),
    ]
    out = layout(rows)
    n = by_id(out)
    assert n[1]["x"] < n[2]["x"] < n[5]["x"]  # a -> p -> c, left to right
    assert n[3]["x"] == n[4]["x"] and n[3]["y"] < n[4]["y"]  # x and y in parallel: one column
    assert n[2]["group"] and not n[3]["group"]
    assert n[3]["label"] == "+x" and n[0]["label"] == "+wf"
    assert (n[1]["w"], n[1]["h"]) == (LEAF_W, LEAF_H)
    assert out["edges"] == [[1, 2], [2, 5]]
    assert out["width"] == n[0]["w"] and out["height"] == n[0]["h"]
    assert n[5]["x"] - (n[2]["x"] + n[2]["w"]) >= GAP_X


def test_a_collapsed_group_hides_its_tasks_and_takes_their_edges():
    rows = [
        row(0, "+wf", None, group=True),
        row(1, "+wf+g", 0, group=True),
        row(2, "+wf+g+a", 1),
        row(3, "+wf+g+b", 1, (2,)),
        row(4, "+wf+c", 0, (1,)),
    ]
    full = by_id(layout(rows))
    out = layout(rows, collapse={1, 99, 4})  # unknown ids and leaves are ignored
    n = by_id(out)
    assert set(n) == {0, 1, 4}
    assert n[1]["collapsed"] and not n[4]["collapsed"]
    assert (n[1]["w"], n[1]["h"]) == (LEAF_W, LEAF_H) and full[1]["w"] > LEAF_W
    assert out["edges"] == [[1, 4]]


def test_order_of_rows_does_not_matter():
    rows = [
        row(0, "+wf", None, group=True),
        row(3, "+wf+c", 0, (2,)),
        row(1, "+wf+a", 0),
        row(2, "+wf+b", 0, (1,)),
    ]
    n = by_id(layout(rows))
    assert n[1]["x"] < n[2]["x"] < n[3]["x"]


@st.composite
def trees(draw: st.DrawFn) -> list[TaskRow]:
    """Random task trees: each new task goes under an existing group, after some of its siblings."""
    rows = [row(0, "+wf", None, group=True)]
    groups = [0]
    for i in range(1, draw(st.integers(1, 60))):
        parent = draw(st.sampled_from(groups))
        siblings = [r.id for r in rows if r.parent == parent]
        ups = tuple(draw(st.lists(st.sampled_from(siblings), max_size=3, unique=True))) if siblings else ()
        group = draw(st.booleans())
        rows.append(row(i, f"{rows[parent].name}+t{i}", parent, ups, group))
        if group:
            groups.append(i)
    return rows


@settings(max_examples=150, deadline=None)
@given(trees(), st.data())
def test_boxes_nest_siblings_never_overlap_and_edges_go_right(rows: list[TaskRow], data: st.DataObject):
    groups = [r.id for r in rows if any(c.parent == r.id for c in rows)]
    collapse = set(data.draw(st.lists(st.sampled_from(groups), max_size=3))) if groups else set()
    out = layout(rows, collapse)
    n = by_id(out)
    hidden = set()
    for r in rows:
        p = r.parent
        while p is not None:
            if p in collapse:
                hidden.add(r.id)
            p = next(x.parent for x in rows if x.id == p)
    assert set(n) == {r.id for r in rows} - hidden
    for node in n.values():
        p = node["parent"]
        if p is not None:  # inside its parent's box
            q = n[p]
            assert q["x"] <= node["x"] and node["x"] + node["w"] <= q["x"] + q["w"] + 1e-6
            assert q["y"] <= node["y"] and node["y"] + node["h"] <= q["y"] + q["h"] + 1e-6
    nodes = list(n.values())
    for i, a in enumerate(nodes):
        for b in nodes[i + 1 :]:
            if a["parent"] == b["parent"]:  # siblings never overlap
                assert (
                    a["x"] + a["w"] <= b["x"]
                    or b["x"] + b["w"] <= a["x"]
                    or a["y"] + a["h"] <= b["y"]
                    or b["y"] + b["h"] <= a["y"]
                )
    for frm, to in out["edges"]:  # an upstream ends left of its downstream
        assert n[frm]["x"] + n[frm]["w"] <= n[to]["x"]
        assert frm in n and to in n
