"""The import contracts (`lint-imports` in `make lint`) are structural: `kudig` and `kudig_operator`
are exhaustive stacks of layers (a new module cannot dodge them by not being listed: lint-imports
fails on an undeclared one), the shells are above the core, and only the shells may import the
Kubernetes client or kopf."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SHELL = {"kudig.cli", "kudig.cluster", "kudig.ui"}  # the command line, its cluster side, the web UI
# (kudig.ui's pure modules have their own contract)


def contracts() -> list[dict[str, Any]]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    return list(config["contracts"])


def layers_of(container: str) -> list[set[str]]:
    (contract,) = [c for c in contracts() if c["type"] == "layers" and c.get("containers") == [container]]
    assert contract.get("exhaustive") is True, f"the {container} layers must be exhaustive"
    return [{m.strip() for m in layer.replace(":", "|").split("|")} for layer in contract["layers"]]


def test_the_shells_are_the_top_layers_of_kudig() -> None:
    layers = layers_of("kudig")
    where = {m: i for i, layer in enumerate(layers) for m in layer}
    assert layers[0] == {"cli"}, "nothing may import the command line"
    core = min(where[m] for m in ("api", "engine", "compiler"))
    assert all(where[m] < core for m in ("cluster", "local", "ui")), (
        "nothing in the core may import the shells"
    )
    declared = set().union(*layers)
    on_disk = {
        p.name.removesuffix(".py")
        for p in (ROOT / "kudig").iterdir()
        if not p.name.startswith(("_", ".")) and p.name not in ("js", "py.typed")
    }
    assert on_disk == declared, f"declare these in a layer: {sorted(on_disk - declared)}"


def test_the_controller_plans_are_below_its_shell() -> None:
    layers = layers_of("kudig_operator")
    flat = [m for layer in layers for m in layer]
    for shell in ("main", "controller", "reactions"):
        assert flat.index(shell) < flat.index("plan")
    pure = next(
        c for c in contracts() if c["type"] == "forbidden" and "kudig_operator.plan" in c["source_modules"]
    )
    assert {"kubernetes", "kopf", "kudig.cluster"} <= set(pure["forbidden_modules"])
    plan = next(i for i, layer in enumerate(layers) if "plan" in layer)
    below_plan = set().union(*layers[plan + 1 :])
    assert {f"kudig_operator.{m}" for m in below_plan} <= set(pure["source_modules"])


def test_only_the_shells_import_kubernetes_or_kopf() -> None:
    (protected,) = [c for c in contracts() if c["type"] == "protected"]
    assert set(protected["protected_modules"]) == {"kubernetes", "kopf"}
    assert all(
        m.startswith(("kudig.cluster", "kudig.ui.", "kudig_operator."))
        for m in protected["allowed_importers"]
    )
    assert "kudig_operator.plan" not in protected["allowed_importers"]
