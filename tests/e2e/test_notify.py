"""notify> and `^sla^alert` on the cluster: the controller, configured once with a notifier (its
environment's KUDIG_NOTIFICATION, what the Helm chart's `notifications` values render), sends
nothing itself; each notify> task's pod delivers to a real SMTP or HTTP peer on the node (reached
through the node's IP). The mail password comes from the namespace's Secret and appears nowhere
else; a webhook that fails is logged and the session still succeeds."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.peers import SMTP_PASSWORD, SMTP_USER, HttpPeer, SmtpPeer

from .conftest import Kube
from .operator_fixtures import Operator, pod_log_of, push, start, task_pods, wait_session
from .test_http_mail import node_ip

pytestmark = pytest.mark.e2e

WORKFLOW = """timezone: UTC
sla:
  duration: 00:00:01
+hello:
  notify>: "hello ${session_date}"
+slow:
  sh>: sleep 5
"""


@pytest.fixture
def peers() -> Iterator[tuple[HttpPeer, SmtpPeer]]:
    http = HttpPeer(host="0.0.0.0").start()
    smtp = SmtpPeer(host="0.0.0.0").start()
    yield http, smtp
    http.stop()
    smtp.stop()


def _with_notifier(operator: Operator, monkeypatch: pytest.MonkeyPatch, settings: dict[str, object]) -> None:
    operator.stop()
    monkeypatch.setenv("KUDIG_NOTIFICATION", json.dumps(settings))
    operator.start()


@pytest.fixture
def restore(operator: Operator, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    yield
    operator.stop()
    monkeypatch.delenv("KUDIG_NOTIFICATION", raising=False)
    operator.start()


def test_mail_and_webhook_notifiers_in_pods(
    kube: Kube,
    namespace: str,
    operator: Operator,
    tmp_path: Path,
    peers: tuple[HttpPeer, SmtpPeer],
    monkeypatch: pytest.MonkeyPatch,
    restore: None,
) -> None:
    http, smtp = peers
    ip = node_ip(kube)
    kube.core.create_namespaced_secret(
        namespace,
        {"metadata": {"name": "kudig-secrets"}, "stringData": {"notification.mail.password": SMTP_PASSWORD}},
    )
    root = tmp_path / "notify"
    root.mkdir()
    (root / "n.dig").write_text(WORKFLOW)
    push(kube, namespace, root, "notify")

    _with_notifier(
        operator,
        monkeypatch,
        {
            "notification.type": "mail",
            "notification.mail.host": ip,
            "notification.mail.port": smtp.port,
            "notification.mail.tls": False,
            "notification.mail.from": "kudig@example.com",
            "notification.mail.to": ["ops@example.com"],
            "notification.mail.username": SMTP_USER,
        },
    )
    name = start(kube, namespace, "n", "2024-01-30T00:00:00+00:00")
    obj = wait_session(kube, operator, namespace, name, timeout=300)
    assert obj["status"]["phase"] == "Succeeded", obj["status"].get("failedTasks")
    bodies = sorted(str(m.get_content()).splitlines()[2] for _, _, m in smtp.messages)
    assert bodies == ["Message: SLA violation", "Message: hello 2024-01-30"], bodies
    assert smtp.logins == [SMTP_USER, SMTP_USER]
    assert "notify>: sent mail to 1 recipient(s)" in pod_log_of(kube, namespace, name, "+n+hello")
    for pod in task_pods(kube, namespace, name):
        assert SMTP_PASSWORD not in str(kube.api.sanitize_for_serialization(pod))

    # A webhook with a Slack-like template; then one that fails: logged, the session succeeds.
    _with_notifier(
        operator,
        monkeypatch,
        {
            "notification.type": "http",
            "notification.http.url": f"http://{ip}:{http.port}/seen",
            "notification.http.body_template": '{"text": "${message} (${workflow_name})"}',
        },
    )
    name = start(kube, namespace, "n", "2024-01-31T00:00:00+00:00")
    obj = wait_session(kube, operator, namespace, name, timeout=300)
    assert obj["status"]["phase"] == "Succeeded", obj["status"].get("failedTasks")
    texts = sorted(json.loads(r.body)["text"] for r in http.on("/seen"))
    assert texts == ["SLA violation (n)", "hello 2024-01-31 (n)"]

    _with_notifier(
        operator,
        monkeypatch,
        {
            "notification.type": "http",
            "notification.http.url": f"http://{ip}:{http.port}/status/503",
            "notification.retries": 1,
            "notification.min_retry_wait": 10,
        },
    )
    name = start(kube, namespace, "n", "2024-02-01T00:00:00+00:00")
    obj = wait_session(kube, operator, namespace, name, timeout=300)
    assert obj["status"]["phase"] == "Succeeded", obj["status"].get("failedTasks")
    assert "(2 tries), the session goes on" in pod_log_of(kube, namespace, name, "+n+hello")
