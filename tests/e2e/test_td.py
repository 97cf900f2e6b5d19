"""td>, td_ddl>, td_run>, td_wait_table>, td_wait>, td_for_each>, td_load>, td_partial_delete>,
td_result_export> and td_table_export> in pods: the runner image's td-client reaches the local TD-API stand-in (tests/td_server.py,
the SQL run on DuckDB) on this machine over the pod network through the node's IP (the host is the
cluster's only node). The API key comes from the namespace's Secret and is nowhere else."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from tests.s3peer import ACCESS_KEY, SECRET_KEY, S3Server, s3  # noqa: F401  (the fixture)
from tests.td_server import (
    APIKEY,
    FAMILY_SAVED_QUERY,
    TdServer,
    td_data_project,
    td_data_session,
    td_project,
    td_server,  # noqa: F401  (the fixture)
)

from .conftest import Kube
from .operator_fixtures import (
    Operator,
    engine_state,
    pod_log_of,
    push,
    start,
    task_pods,
    tasks_by_name,
    wait_session,
)
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
    td_server.create_saved_query(f"daily_{database}", database, FAMILY_SAVED_QUERY)
    endpoint = td_server.endpoint(node_ip(kube))
    root = td_project(tmp_path / "tdwf", endpoint, database, "events", f"daily_{database}")
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
    # td_run>, td_wait_table>, td_wait>: each in its pod, checked by the if>s of the workflow.
    assert "td_run>: starting saved query name=daily_" in pod_log_of(kube, namespace, name, "+td+family_run")
    assert "has 4 rows (at least 4)" in pod_log_of(kube, namespace, name, "+td+family_wait_table")
    assert "the condition is true" in pod_log_of(kube, namespace, name, "+td+family_wait")
    # td_for_each>: its pod's result generated three subtasks, each with its row.
    tasks = tasks_by_name(obj, kube)
    rows = [tasks[f"+td+family_each^sub+td-for-each-{i}"] for i in range(3)]
    assert [t["config"]["_export"]["td"]["each"] for t in rows] == [
        {"id": 1, "name": "item-1"},
        {"id": 2, "name": "item-2"},
        {"id": 3, "name": "item-3"},
    ]
    assert all(tasks[f"+td+family_each^sub+td-for-each-{i}+row"]["state"] == "success" for i in range(3))
    assert "+td+family_each^sub+td-for-each-3" not in tasks
    # The API key: not in the pod specs, the pods' logs, the Session, its engine state, events.
    for pod in task_pods(kube, namespace, name):
        assert APIKEY not in str(kube.api.sanitize_for_serialization(pod))
    assert APIKEY not in logs
    assert APIKEY not in str(obj)
    assert APIKEY not in str(engine_state(obj, kube))
    events = kube.core.list_namespaced_event(namespace).items
    assert APIKEY not in str([kube.api.sanitize_for_serialization(e) for e in events])


def test_td_load_exports_and_partial_delete_in_pods(
    kube: Kube,
    namespace: str,
    operator: Operator,
    td_server: TdServer,  # noqa: F811
    s3: S3Server,  # noqa: F811
    tmp_path: Path,
) -> None:
    secrets = {
        "td.apikey": APIKEY,
        "aws.s3.access_key_id": ACCESS_KEY,
        "aws.s3.secret_access_key": SECRET_KEY,
    }
    kube.core.create_namespaced_secret(
        namespace, {"metadata": {"name": "kudig-secrets"}, "stringData": secrets}
    )
    database = f"data_{namespace.replace('-', '_')}"
    td_server.create_database(database)
    td_data_session(td_server, f"load_{database}", database)
    td_server.create_connection(f"out_{database}")
    bucket = f"td-{namespace}"[:63]
    s3.create_bucket(bucket)
    td_server.s3, td_server.s3_keys = s3, (ACCESS_KEY, SECRET_KEY)
    try:
        root = td_data_project(
            tmp_path / "tddata",
            td_server.endpoint(node_ip(kube)),
            database,
            f"load_{database}",
            f"out_{database}",
            bucket,
        )
        push(kube, namespace, root, "tddata")
        name = start(kube, namespace, "tddata", "2024-01-30T00:00:00+00:00")
        obj = wait_session(kube, operator, namespace, name, timeout=300)
    finally:
        td_server.s3, td_server.s3_keys = None, None
    assert obj["status"]["phase"] == "Succeeded", obj["status"].get("failedTasks")
    hours = [(0,), (3,), (4,), (5,)]
    assert td_server.query(f"SELECT hour FROM {database}.events ORDER BY hour") == hours  # partial delete
    assert td_server.query(f"SELECT hour FROM {database}.events_copy ORDER BY hour") == hours  # td_load> file
    assert td_server.query(f"SELECT n FROM {database}.events_session") == [(4,)]  # td_load> session
    assert td_server.query(f"SELECT hour FROM {database}.hours_out ORDER BY hour") == hours  # result export
    (key,) = s3.keys(bucket, "exports/2024-01-30/")
    rows = [json.loads(line) for line in gzip.decompress(s3.get(bucket, key)).decode().splitlines()]
    assert [r["hour"] for r in rows] == [0, 3]
    logs = "".join(
        kube.core.read_namespaced_pod_log(p.metadata.name, namespace, container="task")
        for p in task_pods(kube, namespace, name)
    )
    for secret in secrets.values():
        assert secret not in logs and secret not in str(obj)
        for pod in task_pods(kube, namespace, name):
            assert secret not in str(kube.api.sanitize_for_serialization(pod))
