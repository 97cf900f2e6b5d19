"""http>, http_call> and mail> in pods, reaching an HTTP and an SMTP server that this test runs
on the node (bound to 0.0.0.0, reached through the node's InternalIP over the pod network), with
secrets from the namespace's Secret that appear nowhere: not in logs, status, events or pod specs."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.peers import PROJECT_SECRETS, SMTP_USER, HttpPeer, SmtpPeer, project_files

from .conftest import Kube
from .operator_fixtures import (
    Operator,
    engine_state,
    pod_log_of,
    push,
    start,
    task_pods,
    wait_session,
)

pytestmark = pytest.mark.e2e


def node_ip(kube: Kube) -> str:
    for node in kube.core.list_node().items:
        for address in node.status.addresses or []:
            if address.type == "InternalIP":
                return str(address.address)
    raise AssertionError("no node with an InternalIP")


@pytest.fixture
def peers() -> Iterator[tuple[HttpPeer, SmtpPeer]]:
    http = HttpPeer(host="0.0.0.0").start()
    smtp = SmtpPeer(host="0.0.0.0").start()
    yield http, smtp
    http.stop()
    smtp.stop()


def test_http_http_call_and_mail_in_pods(
    kube: Kube, namespace: str, operator: Operator, tmp_path: Path, peers: tuple[HttpPeer, SmtpPeer]
) -> None:
    http, smtp = peers
    ip = node_ip(kube)
    kube.core.create_namespaced_secret(
        namespace, {"metadata": {"name": "kudig-secrets"}, "stringData": PROJECT_SECRETS}
    )
    root = tmp_path / "proj"
    for name, text in project_files(f"{ip}:{http.port}", ip, smtp.port).items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    push(kube, namespace, root, "work")
    name = start(kube, namespace, "work", "2024-01-30T00:00:00+00:00")
    obj = wait_session(kube, operator, namespace, name, timeout=300)
    assert obj["status"]["phase"] == "Succeeded", obj["status"].get("failedTasks")

    (post,) = http.on("/json")
    assert post.method == "POST" and json.loads(post.body) == {"greeting": "hello kudig"}
    assert post.headers["X-Token"] == PROJECT_SECRETS["api.token"]
    assert post.headers["Authorization"].startswith("Basic ")
    (seen,) = http.on("/seen")
    assert parse_qs(urlsplit(seen.path).query) == {"name": ["kudig"], "count": ["3"], "status": ["200"]}
    assert len(http.on("/flaky/session-2024-01-30")) == 3
    assert "fetched-yaml hi-from-export" in pod_log_of(kube, namespace, name, "+work+call^sub+first")
    assert "retrying in 1s" in pod_log_of(kube, namespace, name, "+work+flaky")

    ((mail_from, rcpts, msg),) = smtp.messages
    assert mail_from == "kudig@example.com" and smtp.logins == [SMTP_USER]
    assert sorted(rcpts) == ["audit@example.com", "ops@example.com", "team@example.com"]
    assert msg["Subject"] == "Done kudig 2024-01-30"
    body, attachment = msg.iter_parts()
    assert body.get_content().strip() == "<p>Status 200 for kudig on 2024-01-30</p>"
    assert attachment.get_filename() == "report.csv"

    # No secret value anywhere kudig writes: task logs, pod specs, the Session, events.
    pods = task_pods(kube, namespace, name)
    logs = "".join(
        kube.core.read_namespaced_pod_log(p.metadata.name, namespace, container="task") for p in pods
    )
    specs = json.dumps([kube.api.sanitize_for_serialization(p) for p in pods])
    events = json.dumps(kube.api.sanitize_for_serialization(kube.core.list_namespaced_event(namespace)))
    state = json.dumps(engine_state(obj, kube))
    for value in PROJECT_SECRETS.values():
        for where, text in (
            ("logs", logs),
            ("pods", specs),
            ("events", events),
            ("session", json.dumps(obj)),
            ("state", state),
        ):
            assert value not in text, f"a secret value is in the {where}"
    assert "Sending HTTP request: POST" in logs


def test_bad_mail_parameter_fails_the_task_in_its_pod(
    kube: Kube, namespace: str, operator: Operator, tmp_path: Path, peers: tuple[HttpPeer, SmtpPeer]
) -> None:
    _http, smtp = peers
    root = tmp_path / "proj"
    root.mkdir()
    (root / "bad.dig").write_text(
        f"+m:\n  mail>: {{data: hi}}\n  subject: s\n  from: a@example.com\n  host: {node_ip(kube)}\n  port: {smtp.port}\n"
    )
    push(kube, namespace, root, "bad")
    name = start(kube, namespace, "bad", "2024-01-30T00:00:00+00:00")
    obj = wait_session(kube, operator, namespace, name)
    assert obj["status"]["phase"] == "Failed"
    assert "Parameter 'to' is required but not set" in json.dumps(obj["status"])
    assert smtp.messages == []
