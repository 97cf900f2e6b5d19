"""crds/ must be what the pydantic models generate (a stale CRD is a silent API break)."""

from __future__ import annotations

from pathlib import Path

from kudig_operator.crdgen import all_crds, render

CRDS = Path(__file__).resolve().parents[3] / "crds"


def test_crds_are_up_to_date() -> None:
    for name, doc in all_crds().items():
        path = CRDS / name
        assert path.exists(), f"{path} missing: run python -m kudig_operator.crdgen"
        assert path.read_text() == render(doc), f"{path} is stale: run python -m kudig_operator.crdgen"


def test_schemas_are_structural() -> None:
    def walk(node: object, where: str) -> None:
        if isinstance(node, dict):
            assert "$ref" not in node and "anyOf" not in node, where
            if "properties" in node:
                assert node.get("type") == "object", where
            for key, value in node.items():
                walk(value, f"{where}.{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{where}[{i}]")

    for name, doc in all_crds().items():
        walk(doc["spec"]["versions"][0]["schema"], name)
        names = doc["spec"]["names"]
        assert not set(names["shortNames"]) & {"wf", "wfs", "cwf", "wftmpl", "cwftmpl", "wfeb", "wftpl"}
