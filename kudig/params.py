"""digdag's parameter merge order: what `${...}` sees when a task starts.

Users rely on the exact order (reference §2.1): export and store interleave by position, later
tasks win, store params flow only to *downstream* tasks (parallel siblings do not see each
other, a join sees every branch in task-id order), a task's own `_export` beats any store, and
built-ins are merged last so they cannot be overridden.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from kudig.engine.state import SessionState, Task
from kudig.errors import ConfigError


def deep_merge(base: dict[str, Any], other: Mapping[str, Any]) -> dict[str, Any]:
    """digdag's Config.merge: objects merge recursively, arrays and scalars replace."""
    for key, value in other.items():
        current = base.get(key)
        if isinstance(current, dict) and isinstance(value, Mapping):
            deep_merge(current, value)
        else:
            base[key] = copy.deepcopy(value) if isinstance(value, dict | list) else value
    return base


def reset_key(params: dict[str, Any], key: str) -> None:
    path = key.split(".")
    node: Any = params
    for part in path[:-1]:
        node = node.get(part) if isinstance(node, dict) else None
        if node is None:
            return
    if isinstance(node, dict):
        node.pop(path[-1], None)


def apply_store(params: dict[str, Any], task: Task) -> None:
    for key in task.reset_store_params:
        reset_key(params, key)
    if task.store_params:
        deep_merge(params, task.store_params)


def _apply_subtree_stores(state: SessionState, task: Task, params: dict[str, Any]) -> None:
    if not task.stores_below:
        return
    apply_store(params, task)
    for child_id in sorted(task.children):
        _apply_subtree_stores(state, state.tasks[child_id], params)


def transitive_upstreams(state: SessionState, task: Task) -> list[int]:
    seen: set[int] = set()
    stack = list(task.upstreams)
    while stack:
        tid = stack.pop()
        if tid in seen:
            continue
        seen.add(tid)
        stack.extend(state.tasks[tid].upstreams)
    return sorted(seen)


def ancestors(state: SessionState, task: Task) -> list[Task]:
    """Root first, `task` last."""
    chain = [task]
    while chain[-1].parent is not None:
        chain.append(state.tasks[chain[-1].parent])
    chain.reverse()
    return chain


def static_export(task: Task) -> Mapping[str, Any]:
    export = task.config.get("_export")
    return export if isinstance(export, Mapping) else {}


def collect_params(state: SessionState, task: Task, base: Mapping[str, Any]) -> dict[str, Any]:
    """Params for `task` before its local keys and built-ins (steps 1-5 of reference §2.1)."""
    params: dict[str, Any] = copy.deepcopy(dict(base))
    for node in ancestors(state, task):
        if node.parent is not None and state.tasks[node.parent].stores_below:
            for up in transitive_upstreams(state, node):
                _apply_subtree_stores(state, state.tasks[up], params)
        if node is not task:
            deep_merge(params, static_export(node))
            if node.export_params:
                deep_merge(params, node.export_params)
            apply_store(params, node)
    deep_merge(params, static_export(task))
    return params


def collect_error_params(state: SessionState, task: Task) -> tuple[dict[str, Any], dict[str, Any]]:
    """For a failed group's `^error`: merged error objects and store params of all descendants."""
    error: dict[str, Any] = {}
    stores: dict[str, Any] = {}
    stack = list(reversed(task.children))
    order: list[Task] = []
    while stack:
        t = state.tasks[stack.pop()]
        order.append(t)
        stack.extend(reversed(t.children))
    for t in sorted(order, key=lambda x: x.id):
        if t.error:
            deep_merge(error, t.error)
        apply_store(stores, t)
    return error, stores


# --------------------------------------------------------------------------- -p / -P


def parse_param_args(values: Sequence[str]) -> dict[str, Any]:
    """digdag's `-p k=v`: dotted keys nest; a value without `=` continues the previous one."""
    params: dict[str, Any] = {}
    last: list[str] | None = None
    for item in values:
        if "=" not in item:
            if last is None:
                raise ConfigError(f"Invalid -p '{item}': expected key=value")
            node = params
            for part in last[:-1]:
                node = node[part]
            node[last[-1]] = f"{node[last[-1]]},{item}"
            continue
        key, value = item.split("=", 1)
        path = key.split(".")
        node = params
        for part in path[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
                node[part] = child
            node = child
        node[path[-1]] = value
        last = path
    return params


def load_params_file(path: str) -> dict[str, Any]:
    from kudig.yamlload import Loader, YMap, plain

    p = Path(path)
    data = Loader(p.parent).load_file(p)
    if not isinstance(data, YMap):
        raise ConfigError("A params file must hold a YAML map", path, 1)
    result = plain(data)
    assert isinstance(result, dict)
    return result
