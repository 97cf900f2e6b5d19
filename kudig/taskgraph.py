"""A compiled workflow's task DAG as text, Graphviz DOT or a standalone SVG (`kudig show`).

Pure: it reads the compiler's task table (`TaskSpec` rows: parent, children, upstreams), so a
picture shows exactly what would run. In DOT a group is a cluster and an edge between two
siblings is drawn between them (`compound=true`, from the upstream's last task into the
downstream's first). The SVG needs no Graphviz: one row per task in definition order, indented
by depth, each dependency an arc on the right from the upstream's row down to the downstream's.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from kudig.compiler import TaskSpec


def short_name(spec: TaskSpec) -> str:
    """`+child` of `+wf+group+child` (the root keeps its full name)."""
    cut = max(spec.name.rfind("+"), spec.name.rfind("^"))
    return spec.name[cut:] if cut > 0 else spec.name


def operator_label(spec: TaskSpec, width: int = 60) -> str:
    """`sh>: echo hi` (the first line of the command, cut to `width`), or `(group)`."""
    op = spec.config.get("_type")
    if not op:
        return "(group)"
    command = str(spec.config.get("_command", "")).strip()
    head = command.splitlines()[0] if command else ""
    if len(head) > width or head != command:
        head = head[:width] + " ..."
    return f"{op}>: {head}".rstrip()


def depth(spec: TaskSpec, tasks: Sequence[TaskSpec]) -> int:
    d, node = 0, spec.parent
    while node is not None:
        d, node = d + 1, tasks[node].parent
    return d


def text_tree(tasks: Sequence[TaskSpec]) -> str:
    """One line per task, indented by depth, with its operator and the siblings it waits for."""
    lines = []
    for spec in tasks:
        ups = ", ".join(short_name(tasks[u]) for u in spec.upstreams)
        after = f"  (after {ups})" if ups else ""
        lines.append(f"{'  ' * depth(spec, tasks)}{short_name(spec)}  {operator_label(spec)}{after}")
    return "\n".join(lines)


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _leaf(i: int, tasks: Sequence[TaskSpec], last: bool) -> int:
    """The task an edge into (`last` False) or out of (`last` True) task `i` attaches to: the
    first (last) leaf of a group, the task itself otherwise."""
    while tasks[i].children:
        i = tasks[i].children[-1 if last else 0]
    return i


def dot(tasks: Sequence[TaskSpec], title: str) -> str:
    """Graphviz DOT: groups as clusters, tasks as boxes, dependencies as edges."""
    out = [
        f"digraph {_quote(title)} {{",
        "  compound=true;",
        "  rankdir=TB;",
        '  node [shape=box, style="rounded", fontname="Helvetica", fontsize=10];',
        '  graph [fontname="Helvetica", fontsize=11];',
    ]

    def emit(i: int, indent: str) -> None:
        spec = tasks[i]
        if spec.children:
            out.append(f"{indent}subgraph cluster_{i} {{")
            out.append(f"{indent}  label={_quote(short_name(spec))};")
            for child in spec.children:
                emit(child, indent + "  ")
            out.append(f"{indent}}}")
        else:
            out.append(
                f"{indent}t{i} [label={_quote(short_name(spec) + chr(10) + operator_label(spec, 40))}];"
            )

    if tasks:
        emit(0, "  ")
    for i, spec in enumerate(tasks):
        for u in spec.upstreams:
            attrs = []
            if tasks[u].children:
                attrs.append(f"ltail=cluster_{u}")
            if spec.children:
                attrs.append(f"lhead=cluster_{i}")
            suffix = f" [{', '.join(attrs)}]" if attrs else ""
            out.append(f"  t{_leaf(u, tasks, True)} -> t{_leaf(i, tasks, False)}{suffix};")
    out.append("}")
    return "\n".join(out) + "\n"


ROW, INDENT, CHAR, PAD, ARC = 30, 22, 7.2, 10, 14


def svg(tasks: Sequence[TaskSpec], title: str) -> str:
    """A standalone SVG: a row per task (groups dashed), an arc per dependency."""
    boxes = []
    for row, spec in enumerate(tasks):
        label = f"{short_name(spec)}  {operator_label(spec, 50)}"
        x = PAD + depth(spec, tasks) * INDENT
        boxes.append((x, PAD + 24 + row * ROW, len(label) * CHAR + 2 * PAD, label, bool(spec.children)))
    edges = [(u, i) for i, spec in enumerate(tasks) for u in spec.upstreams]
    right = max((x + w for x, _, w, _, _ in boxes), default=100.0) + PAD
    width = right + ARC * (max((i - u for u, i in edges), default=0) + 1) + PAD
    height = PAD + 24 + len(tasks) * ROW + PAD
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height}" '
        f'viewBox="0 0 {width:.0f} {height}" font-family="Helvetica, Arial, sans-serif" font-size="12">',
        f"<title>{escape(title)}</title>",
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#555"/></marker></defs>',
        f'<text x="{PAD}" y="{PAD + 10}" font-weight="bold">{escape(title)}</text>',
    ]
    for x, y, w, label, group in boxes:
        dash = ' stroke-dasharray="4,3"' if group else ""
        parts.append(
            f'<rect x="{x:.0f}" y="{y}" width="{w:.0f}" height="{ROW - 8}" rx="5" fill="#f4f6fb" '
            f'stroke="#3b5b9a"{dash}/><text x="{x + PAD:.0f}" y="{y + 15}">{escape(label)}</text>'
        )
    for u, i in edges:
        y1 = boxes[u][1] + (ROW - 8) / 2
        y2 = boxes[i][1] + (ROW - 8) / 2
        x1 = boxes[u][0] + boxes[u][2]
        x2 = boxes[i][0] + boxes[i][2]
        bend = right + ARC * (i - u)
        parts.append(
            f'<path d="M{x1:.0f},{y1:.0f} C{bend:.0f},{y1:.0f} {bend:.0f},{y2:.0f} {x2:.0f},{y2:.0f}" '
            'fill="none" stroke="#555" marker-end="url(#arrow)"/>'
        )
    parts.append("</svg>")
    return "\n".join(parts) + "\n"
