"""pg> and param_set>/param_get> in pods: the runner image's psycopg reaches a PostgreSQL on this
machine (tests/postgres.py) over the pod network through the node's IP (the host is the
cluster's only node). The passwords come from the namespace's Secret and are nowhere else."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.postgres import PgServer, pg_project, postgres  # noqa: F401  (the fixture)

from .conftest import Kube
from .operator_fixtures import Operator, engine_state, pod_log_of, push, start, task_pods, wait_session

pytestmark = pytest.mark.e2e


def node_ip(kube: Kube) -> str:
    for node in kube.core.list_node().items:
        for address in node.status.addresses or []:
            if address.type == "InternalIP":
                return str(address.address)
    raise AssertionError("no node with an InternalIP")


def test_pg_workflow_in_pods(
    kube: Kube,
    namespace: str,
    operator: Operator,
    postgres: PgServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    kube.core.create_namespaced_secret(
        namespace,
        {
            "metadata": {"name": "kudig-secrets"},
            "stringData": {"pg.password": postgres.password, "param_server.password": postgres.password},
        },
    )
    table = f"orders_{namespace.replace('-', '_')}"
    root = pg_project(tmp_path / "pgwf", node_ip(kube), postgres.port, table)
    push(kube, namespace, root, "pgwf")
    name = start(kube, namespace, "pg", "2024-01-30T00:00:00+00:00")
    obj = wait_session(kube, operator, namespace, name, timeout=300)
    assert obj["status"]["phase"] == "Succeeded", obj["status"].get("failedTasks")
    logs = ""
    for pod in task_pods(kube, namespace, name):
        logs += kube.core.read_namespaced_pod_log(pod.metadata.name, namespace, container="task")
    assert "pg-count-ok cnt=4" in logs
    assert "pg-all-ok rows=2" in logs
    assert "wrote 4 rows" in pod_log_of(kube, namespace, name, "+pg+download")
    assert f"param-ok [value-{table}] [42] []" in pod_log_of(kube, namespace, name, "+pg+show")
    rows = postgres.sql(f"SELECT id, amount FROM {table} ORDER BY id")
    assert rows == [(1, 10), (2, 20), (3, 30), (4, None)]
    # The password: not in the pod specs, the pods' logs, the Session, its engine state, events.
    for pod in task_pods(kube, namespace, name):
        assert postgres.password not in str(kube.api.sanitize_for_serialization(pod))
    assert postgres.password not in logs
    assert postgres.password not in str(obj)
    assert postgres.password not in str(engine_state(obj, kube))
    events = kube.core.list_namespaced_event(namespace).items
    assert postgres.password not in str([kube.api.sanitize_for_serialization(e) for e in events])
