"""Properties of the engine over generated workflows (hypothesis).

For any tree of groups (sequential, parallel, limited, background children) and any set of
failing tasks with any retry limits: no task starts before its upstreams succeed, the session
always terminates, and no task runs more often than its retry limit allows.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .driver import drive


@dataclass
class Node:
    name: str
    children: list[Node]
    parallel: str | None = None  # None | "true" | "{limit: N}"
    background: bool = False
    fail: int = 0  # failing tries before success; 99 = always
    retry: int = 0


def render(node: Node, indent: int = 0) -> str:
    pad = "  " * indent
    lines = []
    for child in node.children:
        lines.append(f"{pad}+{child.name}:")
        inner = "  " * (indent + 1)
        if child.background and node.parallel is None:
            lines.append(f"{inner}_background: true")
        if child.retry:
            lines.append(f"{inner}_retry: {child.retry}")
        if child.children:
            if child.parallel:
                lines.append(f"{inner}_parallel: {child.parallel}")
            lines.append(render(child, indent + 1))
        else:
            lines.append(f"{inner}sh>: {'fail:' + str(child.fail) if child.fail else 'ok'}")
    return "\n".join(lines)


counter = iter(range(10**9))


def leaf() -> st.SearchStrategy[Node]:
    return st.builds(
        lambda fail, retry, bg: Node(f"t{next(counter)}", [], fail=fail, retry=retry, background=bg),
        st.sampled_from([0, 0, 0, 1, 2, 99]),
        st.sampled_from([0, 0, 1, 3]),
        st.booleans(),
    )


def group(children: st.SearchStrategy[list[Node]]) -> st.SearchStrategy[Node]:
    return st.builds(
        lambda kids, par, bg, retry: Node(
            f"g{next(counter)}", kids, parallel=par, background=bg, retry=retry
        ),
        children,
        st.sampled_from([None, None, "true", "{limit: 1}", "{limit: 2}"]),
        st.booleans(),
        st.sampled_from([0, 0, 1]),
    )


trees = st.recursive(leaf(), lambda inner: group(st.lists(inner, min_size=1, max_size=4)), max_leaves=12)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(trees, min_size=1, max_size=4), st.booleans())
def test_engine_invariants(roots: list[Node], batch: bool) -> None:
    text = render(Node("root", roots)) + "\n"
    run = drive(text, max_steps=5000, batch=batch)
    assert not run.violations, text
    assert run.engine.state.done, f"session did not terminate:\n{text}\n{run.states()}"
    # Each leaf's starts are bounded by its retry limit times the number of times its
    # enclosing groups may rerun it.
    limits: dict[str, int] = {}

    def walk(node: Node, prefix: str, reruns: int) -> None:
        for child in node.children:
            name = f"{prefix}+{child.name}"
            if child.children:
                walk(child, name, reruns * (child.retry + 1))
            else:
                limits[name] = reruns * (child.retry + 1)

    walk(Node("root", roots), "+wf", 1)
    for name, count in Counter(run.started).items():
        assert count <= limits[name], (name, count, limits[name], text)
    # success means every current row succeeded; failure means some leaf failed for good
    states = run.states()
    if run.engine.state.success:
        assert set(states.values()) == {"success"}, states
    else:
        assert "error" in states.values(), states
