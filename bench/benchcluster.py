"""What the cluster benchmarks share: the repository's packages on the path, a connection to the
cluster of KUBECONFIG with kudig's CRDs installed, and fresh namespaces."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "operator"), str(ROOT / "runner"), str(ROOT / "bench")]


class Cluster:
    """The typed APIs of the official client (`api`, `core`, `custom`), CRDs installed."""

    def __init__(self) -> None:
        from kubernetes import client, config
        from kudig_operator.crdgen import install

        config.load_kube_config()
        self.api: Any = client.ApiClient()
        self.core: Any = client.CoreV1Api(self.api)
        self.custom: Any = client.CustomObjectsApi(self.api)
        install(self.api)

    def namespace(self) -> str:
        ns = f"bench-{uuid.uuid4().hex[:6]}"
        self.core.create_namespace({"metadata": {"name": ns}})
        return ns
