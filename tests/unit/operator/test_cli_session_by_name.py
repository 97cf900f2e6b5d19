"""A Session may name its Workflow by the digdag name (`every_minute`, `My_Flow`), not only by the
Workflow object's name: the controller resolves it as the CLI does (kudig.workflowref), through
the label `kudig push` sets, and says so on the Session when the name is in two projects."""

from __future__ import annotations

from pathlib import Path

from test_controller import NS, Harness

from kudig.api import WORKFLOWS
from kudig.cluster.project import build_objects


def push(h: Harness, root: Path, project: str) -> None:
    """What `kudig push` applies, into the fake API server (and the controller's watch)."""
    for obj in build_objects(root, project, NS):
        if obj["kind"] == "ConfigMap":
            h.kube.add_config_map(NS, obj["metadata"]["name"], obj["data"])
            h.kube.config_maps[(NS, obj["metadata"]["name"])]["metadata"]["labels"] = obj["metadata"][
                "labels"
            ]
        else:
            added = h.kube.add(WORKFLOWS, NS, obj)
            h.ctl.on_workflow_event(NS, added["metadata"]["name"], added)


def project(tmp_path: Path, name: str, *digs: str) -> Path:
    root = tmp_path / name
    root.mkdir()
    for dig in digs:
        (root / f"{dig}.dig").write_text("+hello:\n  sh>: echo hi\n")
    return root


def test_a_session_names_its_workflow_by_digdag_name(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    push(h, project(tmp_path, "p", "My_Flow", "every_minute"), "My_Project")
    assert "My_Flow" not in {k[2] for k in h.kube.objects}, "the object name is DNS-safe"
    h.session("s1", workflow="My_Flow")
    assert [h.task_of(p) for p in h.pods()] == ["+My_Flow+hello"]
    assert h.status("s1")["phase"] == "Running"
    h.session("s2", workflow="every_minute")
    assert "+every_minute+hello" in [h.task_of(p) for p in h.pods()]


def test_a_digdag_name_in_two_projects_is_a_clear_error(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    push(h, project(tmp_path, "a", "etl_daily"), "alpha")
    # the same workflow name in another project: its object gets another name
    root = project(tmp_path, "b", "etl_daily")
    for obj in build_objects(root, "beta", NS):
        if obj["kind"] == "Workflow":
            obj["metadata"]["name"] += "-beta"
            obj["spec"]["project"]["configMaps"] = ["alpha-files"]
            added = h.kube.add(WORKFLOWS, NS, obj)
            h.ctl.on_workflow_event(NS, added["metadata"]["name"], added)
    h.session("s1", workflow="etl_daily")
    status = h.status("s1")
    assert status["phase"] == "Error"
    assert "Workflow 'etl_daily' is in several projects in namespace data: alpha, beta" in status["message"]
    assert h.pods() == []
