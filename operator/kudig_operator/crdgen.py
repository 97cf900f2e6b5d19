"""Generate structural CustomResourceDefinitions from the pydantic models.

`python -m kudig_operator.crdgen [OUT_DIR]` writes `crds/*.yaml`. Kubernetes wants structural
OpenAPI v3 (no `$ref`, no `anyOf` for nullability, free-form maps marked with
`x-kubernetes-preserve-unknown-fields`), which is not what pydantic emits, so we translate.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from kudig.api import GROUP, VERSION
from kudig.schema import (
    SESSION_COLUMNS,
    WORKFLOW_COLUMNS,
    SessionSpec,
    SessionStatus,
    WorkflowSpec,
    WorkflowStatus,
)


def _structural(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in schema:
        target = defs[schema["$ref"].split("/")[-1]]
        merged = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
        return _structural(merged, defs)
    any_of = schema.get("anyOf")
    if any_of:
        non_null = [s for s in any_of if s.get("type") != "null"]
        nullable_schema: dict[str, Any] = (
            _structural(non_null[0], defs)
            if len(non_null) == 1
            else {"x-kubernetes-preserve-unknown-fields": True}
        )
        if len(non_null) < len(any_of):
            nullable_schema["nullable"] = True
        for key in ("description", "default"):
            if key in schema and schema[key] is not None:
                nullable_schema[key] = schema[key]
        return nullable_schema
    out: dict[str, Any] = {}
    kind = schema.get("type")
    if "enum" in schema:
        out["type"] = "string"
        out["enum"] = schema["enum"]
    elif "const" in schema:
        out["type"] = "string"
        out["enum"] = [schema["const"]]
    elif kind == "object" or "properties" in schema:
        out["type"] = "object"
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        if props:
            out["properties"] = {k: _structural(v, defs) for k, v in props.items()}
            if schema.get("required"):
                out["required"] = schema["required"]
        elif isinstance(extra, dict) and extra:
            out["additionalProperties"] = _structural(extra, defs)
        else:
            out["x-kubernetes-preserve-unknown-fields"] = True
    elif kind == "array":
        out["type"] = "array"
        out["items"] = _structural(schema.get("items", {}), defs)
    elif kind in ("string", "integer", "boolean", "number"):
        out["type"] = kind
        for key in ("minimum", "maximum"):
            if key in schema:
                out[key] = schema[key]
    elif not kind:
        out["x-kubernetes-preserve-unknown-fields"] = True
    if schema.get("description"):
        out["description"] = schema["description"]
    if "default" in schema and schema["default"] not in (None, [], {}):
        out["default"] = schema["default"]
    return out


def schema_of(model: type[BaseModel]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True)
    return _structural(raw, raw.get("$defs", {}))


def crd(
    kind: str,
    plural: str,
    short: list[str],
    spec: type[BaseModel],
    status: type[BaseModel],
    columns: list[dict[str, Any]],
) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": short,
                "categories": ["kudig"],
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": schema_of(spec),
                                "status": schema_of(status),
                            },
                            "required": ["spec"],
                        }
                    },
                }
            ],
        },
    }


def all_crds() -> dict[str, dict[str, Any]]:
    return {
        "workflows.kudig.io.yaml": crd(
            "Workflow", "workflows", ["kdwf"], WorkflowSpec, WorkflowStatus, WORKFLOW_COLUMNS
        ),
        "sessions.kudig.io.yaml": crd(
            "Session", "sessions", ["kds"], SessionSpec, SessionStatus, SESSION_COLUMNS
        ),
    }


def render(doc: dict[str, Any]) -> str:
    header = "# Generated by `python -m kudig_operator.crdgen` from operator/kudig_operator/models.py. Do not edit.\n"
    return header + str(yaml.safe_dump(doc, sort_keys=False, width=120))


def install(api_client: Any, timeout: float = 60.0) -> None:
    """Create or update the CRDs in a cluster and wait until they are Established."""
    import time

    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    ext = client.ApiextensionsV1Api(api_client)
    docs = all_crds()
    for doc in docs.values():
        try:
            ext.create_custom_resource_definition(doc)
        except ApiException as e:
            if e.status != 409:
                raise
            current = ext.read_custom_resource_definition(doc["metadata"]["name"])
            doc = {
                **doc,
                "metadata": {**doc["metadata"], "resourceVersion": current.metadata.resource_version},
            }
            ext.replace_custom_resource_definition(doc["metadata"]["name"], doc)
    deadline = time.monotonic() + timeout
    for doc in docs.values():
        while True:
            crd = ext.read_custom_resource_definition(doc["metadata"]["name"])
            if any(c.type == "Established" and c.status == "True" for c in (crd.status.conditions or [])):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"CRD {doc['metadata']['name']} not Established after {timeout:.0f}s")
            time.sleep(0.1)


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    out = Path(args[0]) if args else Path(__file__).resolve().parents[2] / "crds"
    out.mkdir(parents=True, exist_ok=True)
    for name, doc in all_crds().items():
        (out / name).write_text(render(doc), encoding="utf-8")
        print(f"wrote {out / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
