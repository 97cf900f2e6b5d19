"""td> and td_ddl> in pods: the runner image's td-client reaches the local TD-API stand-in (tests/td_server.py,
the SQL run on DuckDB) on this machine over the pod network through the node's IP (the host is the
cluster's only node). The API key comes from the namespace's Secret and is nowhere else."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.td_server import APIKEY, TdServer, td_project, td_server  # noqa: F401  (the fixture)

from .conftest import Kube
from .operator_fixtures import Operator, engine_state, pod_log_of, push, start, task_pods, wait_session
from .test_pg import node_ip

pytestmark = pytest.mark.e2e


def test_td_workflow_in_pods(
    kube: Kube,
    namespace: str,
    operator: Operator,
    td_server: TdServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    kube.core.create_namespaced_secret(
        namespace, {"metadata": {"name": "kudig-secrets"}, "stringData": {"td.apikey": APIKEY}}
    )
    database = f"db_{namespace.replace('-', '_')}"
    td_server.create_database(database)
    root = td_project(tmp_path / "tdwf", td_server.endpoint(node_ip(kube)), database, "events")
    push(kube, namespace, root, "tdwf")
    name = start(kube, namespace, "td", "2024-01-30T00:00:00+00:00")
    obj = wait_session(kube, operator, namespace, name, timeout=300)
    assert obj["status"]["phase"] == "Succeeded", obj["status"]
    logs = ""
    for pod in task_pods(kube, namespace, name):
        logs += kube.core.read_namespaced_pod_log(pod.metadata.name, namespace, container="task")
    assert "td-count-ok cnt=4 job=" in logs
    assert "wrote 4 rows to out/events.csv" in pod_log_of(kube, namespace, name, "+td+download")
    rows = td_server.query(f"SELECT id, amount FROM {database}.events ORDER BY id")
    assert rows == [(1, 10), (2, 20), (3, 30), (4, None)]
    assert any(j.database == database and j.type == "hive" for j in td_server.jobs.values())
    assert td_server.tables(database) == ["archived_events", "events"]  # td_ddl>
    assert f"{database}_extra" in td_server.databases()
    # The API key: not in the pod specs, the pods' logs, the Session, its engine state, events.
    for pod in task_pods(kube, namespace, name):
        assert APIKEY not in str(kube.api.sanitize_for_serialization(pod))
    assert APIKEY not in logs
    assert APIKEY not in str(obj)
    assert APIKEY not in str(engine_state(obj, kube))
    events = kube.core.list_namespaced_event(namespace).items
    assert APIKEY not in str([kube.api.sanitize_for_serialization(e) for e in events])
