"""s3_wait> in pods: the runner image's standard-library S3 client reaches moto's S3 server on this
machine (tests/s3peer.py) over the pod network through the node's IP (the host is the cluster's
only node). The credentials come from the namespace's Secret and are nowhere else."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from kubernetes.client.exceptions import ApiException

from tests.s3peer import ACCESS_KEY, SECRET_KEY, S3Server, s3, s3_project  # noqa: F401  (the fixture)

from .conftest import Kube
from .operator_fixtures import Operator, engine_state, pod_log_of, push, start, task_pods, wait_session
from .test_pg import node_ip

pytestmark = pytest.mark.e2e


def _log(kube: Kube, namespace: str, name: str, task: str) -> str:
    try:
        return pod_log_of(kube, namespace, name, task)
    except ApiException:  # the pod is not running yet
        return ""


def test_s3_wait_in_pods(
    kube: Kube,
    namespace: str,
    operator: Operator,
    s3: S3Server,  # noqa: F811
    tmp_path: Path,
) -> None:
    kube.core.create_namespaced_secret(
        namespace,
        {
            "metadata": {"name": "kudig-secrets"},
            "stringData": {"aws.s3.access_key_id": ACCESS_KEY, "aws.s3.secret_access_key": SECRET_KEY},
        },
    )
    bucket = f"e2e-{namespace}"[:63]
    s3.create_bucket(bucket)
    root = s3_project(tmp_path / "s3wf", s3.endpoint(node_ip(kube)), bucket)
    push(kube, namespace, root, "s3wf")

    name = start(kube, namespace, "s3", "2024-01-30T00:00:00+00:00")
    deadline = time.monotonic() + 180
    while "does not exist yet" not in _log(kube, namespace, name, "+s3+wait"):
        assert time.monotonic() < deadline, "the s3_wait> pod never started polling"
        time.sleep(1)
    s3.put(bucket, "data/2024-01-30/done.csv", "a,b\n1,2\n", {"owner": "etl"})
    obj = wait_session(kube, operator, namespace, name, timeout=300)
    assert obj["status"]["phase"] == "Succeeded", obj["status"].get("failedTasks")
    assert "s3-ok size=8 type=text/plain owner=etl modified=number" in pod_log_of(
        kube, namespace, name, "+s3+use"
    )

    failed = start(kube, namespace, "missing", "2024-01-30T00:00:00+00:00")
    fobj = wait_session(kube, operator, namespace, failed, timeout=300)
    assert fobj["status"]["phase"] == "Failed", fobj["status"]
    assert "Timeout happened" in str(fobj["status"]), fobj["status"]
    assert f"bucket 'no-such-bucket-{bucket}' does not exist" in str(fobj["status"])

    # The credentials: not in the pod specs, the pods' logs, the Sessions, their state, events.
    for session_name, session_obj in ((name, obj), (failed, fobj)):
        for pod in task_pods(kube, namespace, session_name):
            text = str(kube.api.sanitize_for_serialization(pod))
            assert SECRET_KEY not in text and ACCESS_KEY not in text
            log = kube.core.read_namespaced_pod_log(pod.metadata.name, namespace, container="task")
            assert SECRET_KEY not in log and ACCESS_KEY not in log
        assert SECRET_KEY not in str(session_obj)
        assert SECRET_KEY not in str(engine_state(session_obj, kube))
    events = kube.core.list_namespaced_event(namespace).items
    assert SECRET_KEY not in str([kube.api.sanitize_for_serialization(e) for e in events])
