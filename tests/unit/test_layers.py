"""The import contracts (`lint-imports` in `make lint`) cover every core module: a new module of
the core cannot dodge the "never imports Kubernetes" rule by not being listed."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHELL = {"kudig.cli", "kudig.cluster", "kudig.ui"}  # the command line, its cluster side, the web UI
# (kudig.ui's pure modules have their own contract)


def test_every_core_module_is_under_contract() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    contract = next(c for c in config["contracts"] if "never imports Kubernetes" in c["name"])
    listed = set(contract["source_modules"])
    assert {"kubernetes", "kopf"} <= set(contract["forbidden_modules"])
    top = set()
    for path in (ROOT / "kudig").iterdir():
        if path.name.startswith(("_", ".")) or path.name in ("js", "py.typed"):
            continue
        top.add("kudig." + path.name.removesuffix(".py"))
    assert top - SHELL == listed, f"list these in pyproject's contract: {sorted(top - SHELL - listed)}"
