"""Task pod placement on a real cluster: the controller's defaults, the Workflow's `spec.pod` and a
task's `_pod:` reach the pod the scheduler places; a bad `_pod:` fails its task, not the controller."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import Kube
from .operator_fixtures import (
    E2E_DEFAULT_LABEL,
    Operator,
    push,
    start,
    task_pods,
    wait_session,
)

pytestmark = pytest.mark.e2e


@pytest.fixture
def priority_class(kube: Kube) -> Iterator[str]:
    from kubernetes import client

    name = f"kudig-e2e-{uuid.uuid4().hex[:6]}"
    scheduling = client.SchedulingV1Api(kube.api)
    scheduling.create_priority_class({"metadata": {"name": name}, "value": 1000})
    try:
        yield name
    finally:
        with contextlib.suppress(Exception):
            scheduling.delete_priority_class(name)


def test_pod_settings_from_three_layers(
    kube: Kube, namespace: str, operator: Operator, tmp_path: Path, priority_class: str
) -> None:
    node = kube.core.list_node().items[0]
    hostname = node.metadata.labels["kubernetes.io/hostname"]
    root = tmp_path / "placed"
    root.mkdir()
    (root / "placed.dig").write_text(
        "+placed:\n"
        "  sh>: echo placed\n"
        "  _pod:\n"
        f"    nodeSelector: {{kubernetes.io/hostname: {hostname}}}\n"
        f"    priorityClassName: {priority_class}\n"
        "    resources: {requests: {cpu: 10m, memory: 16Mi}, limits: {memory: 128Mi}}\n"
        "    labels: {tier: batch}\n"
        "    annotations: {cost-center: '42'}\n"
        "    tolerations: [{key: dedicated, operator: Equal, value: etl, effect: NoSchedule}]\n"
        "+bad:\n"
        "  sh>: echo never\n"
        "  _pod: {nodeSelecter: {zone: a}}\n"
    )
    # the Workflow's spec.pod: one more label, overridden per key by the task's own
    objects = push(
        kube, namespace, root, "placed", spec={"pod": {"labels": {"team": "data", "tier": "default"}}}
    )
    wf = next(o for o in objects if o["kind"] == "Workflow")
    name = start(kube, namespace, wf["metadata"]["name"], "2024-01-30T00:00:00+00:00")
    obj = wait_session(kube, operator, namespace, name)
    assert obj["status"]["phase"] == "Failed"
    failed = {f["name"]: f["message"] for f in obj["status"]["failedTasks"]}
    assert "_pod: unknown key 'nodeSelecter'" in failed["+placed+bad"], failed
    (pod,) = task_pods(kube, namespace, name)
    assert pod.status.phase == "Succeeded"
    assert pod.spec.node_selector == {"kubernetes.io/hostname": hostname}
    assert pod.spec.priority_class_name == priority_class and pod.spec.priority == 1000
    main = pod.spec.containers[0]
    assert main.resources.requests == {"cpu": "10m", "memory": "16Mi"}
    assert main.resources.limits == {"memory": "128Mi"}
    labels = pod.metadata.labels
    assert labels["tier"] == "batch" and labels["team"] == "data"
    assert labels[E2E_DEFAULT_LABEL] == "from-controller"
    assert pod.metadata.annotations["cost-center"] == "42"
    assert any(t.key == "dedicated" and t.value == "etl" for t in pod.spec.tolerations)
    assert pod.spec.automount_service_account_token is False
