"""The DAG of a session, laid out on the server in one pass.

digdag workflows are series-parallel trees: a group's children run in the order their `upstreams`
(siblings only) say. So the layout is nested boxes: inside each group its children are placed in
layers by their upstream depth among their siblings (left to right), each layer a column stacked
top to bottom; a group is a box (a header and padding) around its children's columns. A collapsed
group is drawn as a leaf and hides its descendants; edges to them end on it.

Every step is linear in the number of tasks (sizes bottom-up, positions top-down, no crossing
minimisation), so 10,000 tasks lay out in milliseconds (bench/ui_layout.py). Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

LEAF_W = 180
LEAF_H = 32
GAP_X = 40
GAP_Y = 12
PAD = 12
HEADER = 24


class Task(Protocol):
    """What the layout needs of a task row (`kudig.sessionread.TaskRow` has it)."""

    @property
    def id(self) -> int: ...
    @property
    def name(self) -> str: ...
    @property
    def parent(self) -> int | None: ...
    @property
    def upstreams(self) -> tuple[int, ...]: ...
    @property
    def is_group(self) -> bool: ...
    @property
    def state(self) -> str: ...


@dataclass
class _Box:
    w: float = LEAF_W
    h: float = LEAF_H
    x: float = 0.0
    y: float = 0.0
    # child id -> (dx, dy) from this box's top-left
    offsets: dict[int, tuple[float, float]] | None = None


def label(name: str, parent_name: str | None) -> str:
    """A task's name relative to its parent's (`+wf+load+a` under `+wf+load` is `+a`)."""
    if parent_name and name.startswith(parent_name) and len(name) > len(parent_name):
        return name[len(parent_name) :]
    return name


def _layers(children: list[int], upstreams: dict[int, tuple[int, ...]]) -> list[list[int]]:
    """Siblings in layers: a task's layer is one more than its deepest sibling upstream (Kahn's
    algorithm, so the order of `children` does not matter; a cycle, impossible in digdag, lands in
    a last layer instead of looping)."""
    siblings = set(children)
    indeg = {c: 0 for c in children}
    downs: dict[int, list[int]] = {c: [] for c in children}
    for c in children:
        for u in set(upstreams.get(c, ())):
            if u in siblings and u != c:
                indeg[c] += 1
                downs[u].append(c)
    layer = dict.fromkeys(children, 0)
    ready = [c for c in children if indeg[c] == 0]
    done = 0
    while ready:
        nxt: list[int] = []
        for c in ready:
            done += 1
            for d in downs[c]:
                layer[d] = max(layer[d], layer[c] + 1)
                indeg[d] -= 1
                if indeg[d] == 0:
                    nxt.append(d)
        ready = nxt
    if done < len(children):
        last = max(layer.values(), default=0) + 1
        for c in children:
            if indeg[c] > 0:
                layer[c] = last
    columns: list[list[int]] = [[] for _ in range(max(layer.values(), default=-1) + 1)]
    for c in sorted(children):
        columns[layer[c]].append(c)
    return [col for col in columns if col]


def layout(tasks: Iterable[Task], collapse: Collection[int] = ()) -> dict[str, Any]:
    """`{nodes: [{id, name, label, state, parent, group, x, y, w, h, collapsed}], edges: [[from, to]],
    width, height}` (docs/ui.md "API"). Nodes come parents first; ids in `collapse` that are not
    groups are ignored."""
    rows = {t.id: t for t in tasks}
    children: dict[int, list[int]] = {}
    roots: list[int] = []
    for t in rows.values():
        if t.parent is not None and t.parent in rows:
            children.setdefault(t.parent, []).append(t.id)
        else:
            roots.append(t.id)
    collapsed = {i for i in collapse if i in children}
    upstreams = {t.id: tuple(t.upstreams) for t in rows.values()}

    # visible nodes, parents first (breadth-first from the roots)
    order: list[int] = []
    queue = sorted(roots)
    while queue:
        order.extend(queue)
        nxt: list[int] = []
        for i in queue:
            if i not in collapsed:
                nxt.extend(sorted(children.get(i, ())))
        queue = nxt

    # sizes bottom-up
    boxes = {i: _Box() for i in order}
    for i in reversed(order):
        kids = children.get(i)
        if not kids or i in collapsed:
            continue
        box = boxes[i]
        box.offsets = {}
        columns = _layers(kids, upstreams)
        col_h = [sum(boxes[c].h for c in col) + GAP_Y * (len(col) - 1) for col in columns]
        inner_h = max(col_h)
        x = float(PAD)
        for col, h in zip(columns, col_h, strict=True):
            y = HEADER + PAD + (inner_h - h) / 2
            col_w = max(boxes[c].w for c in col)
            for c in col:
                box.offsets[c] = (x + (col_w - boxes[c].w) / 2, y)
                y += boxes[c].h + GAP_Y
            x += col_w + GAP_X
        box.w = x - GAP_X + PAD
        box.h = HEADER + PAD + inner_h + PAD

    # positions top-down; roots stacked
    y = 0.0
    width = 0.0
    for r in sorted(roots):
        boxes[r].x, boxes[r].y = 0.0, y
        y += boxes[r].h + GAP_Y
        width = max(width, boxes[r].w)
    for i in order:
        box = boxes[i]
        for c, (dx, dy) in (box.offsets or {}).items():
            boxes[c].x, boxes[c].y = box.x + dx, box.y + dy

    nodes = []
    for i in order:
        t, box = rows[i], boxes[i]
        parent = rows.get(t.parent) if t.parent is not None else None
        nodes.append(
            {
                "id": i,
                "name": t.name,
                "label": label(t.name, parent.name if parent else None),
                "state": t.state,
                "parent": t.parent if parent else None,
                "group": i in children or t.is_group,
                "x": box.x,
                "y": box.y,
                "w": box.w,
                "h": box.h,
                "collapsed": i in collapsed,
            }
        )

    # edges between visible nodes: an endpoint inside a collapsed group moves to the group
    shown: dict[int, int] = {}

    def visible(i: int) -> int:
        path = []
        while i not in boxes and i not in shown:
            path.append(i)
            i = rows[i].parent  # type: ignore[assignment]  # hidden nodes have a parent
        v = shown.get(i, i)
        for p in path:
            shown[p] = v
        return v

    edges: set[tuple[int, int]] = set()
    for t in rows.values():
        to = visible(t.id)
        for u in upstreams[t.id]:
            if u in rows:
                frm = visible(u)
                if frm != to:
                    edges.add((frm, to))
    return {
        "nodes": nodes,
        "edges": [list(e) for e in sorted(edges)],
        "width": width,
        "height": max(0.0, y - GAP_Y),
    }
