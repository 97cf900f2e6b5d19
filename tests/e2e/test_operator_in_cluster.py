"""The operator image, deployed as users deploy it (deploy/operator.yaml), runs a session.

This checks what the host-process tests cannot: the image builds without a registry and starts,
the in-cluster config and its RBAC are enough, and the health endpoint answers.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import Kube, wait_for
from .operator_fixtures import (
    ROOT,
    Operator,
    operator_fixture,  # noqa: F401 - the `operator` fixture
    push,
    start,
    wait_session,
)

pytestmark = pytest.mark.e2e


def apply(kube: Kube, doc: dict[str, Any]) -> None:
    from kubernetes import utils
    from kubernetes.client.exceptions import ApiException

    try:
        utils.create_from_dict(kube.api, doc)
    except (ApiException, utils.FailToCreateError) as e:
        if "AlreadyExists" not in str(e) and "409" not in str(e):
            raise


def test_operator_image_in_cluster(kube: Kube, namespace: str, operator: Operator, tmp_path: Path) -> None:
    subprocess.run([str(ROOT / "hack" / "kudig-images"), "operator"], check=True)
    operator.stop()  # one controller at a time
    try:
        for doc in yaml.safe_load_all((ROOT / "deploy" / "operator.yaml").read_text()):
            apply(kube, doc)

        def available() -> bool:
            dep = kube.apps.read_namespaced_deployment("kudig-operator", "kudig-system")
            return bool(dep.status.available_replicas)

        wait_for(available, 180, "the operator Deployment to be available")
        (tmp_path / "proj").mkdir()
        (tmp_path / "proj" / "incluster.dig").write_text(
            "+hello:\n  sh>: echo from-pod\n+done:\n  echo>: ok\n"
        )
        push(kube, namespace, tmp_path / "proj", "incluster")
        name = start(kube, namespace, "incluster", "2024-01-30T00:00:00+00:00")
        obj = wait_session(kube, operator, namespace, name)
        assert obj["status"]["phase"] == "Succeeded", obj["status"]
    finally:
        kube.apps.delete_namespaced_deployment("kudig-operator", "kudig-system")
        wait_for(
            lambda: (
                not kube.core.list_namespaced_pod(
                    "kudig-system", label_selector="app.kubernetes.io/name=kudig-operator"
                ).items
            ),
            120,
            "the in-cluster operator to stop",
        )
        operator.start()
