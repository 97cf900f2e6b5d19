"""notify> and `^sla^alert` through the notifier of the system config (`kudig run -c`), against
real SMTP and HTTP peers (tests/peers.py); a notifier that fails never fails the session."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
if str(ROOT) not in sys.path:  # tests/unit has no __init__.py: make `tests.peers` importable
    sys.path.insert(0, str(ROOT))

from tests import peers  # noqa: E402
from tests.peers import SMTP_PASSWORD, SMTP_USER, HttpPeer, SmtpPeer, http_fixture, smtp_fixture  # noqa: E402, F401

WORKFLOW = """timezone: Asia/Tokyo
sla:
  duration: 00:00:01
+hello:
  notify>: "hello ${session_date}"
+slow:
  sh>: sleep 3
+after:
  echo>: after-ok
"""


def run(
    project: Path, config: str, secrets: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    (project / "notifier.properties").write_text(config)
    (project / "n.dig").write_text(WORKFLOW)
    return peers.kudig_run(
        project, "n.dig", "--session", "2024-01-30", "--no-save", "-c", "notifier.properties", secrets=secrets
    )


def test_mail_notifier_sends_notify_and_the_sla_alert(smtp: SmtpPeer, tmp_path: Path) -> None:
    proc = run(
        tmp_path,
        f"notification.type=mail\nnotification.mail.host=127.0.0.1\nnotification.mail.port={smtp.port}\n"
        "notification.mail.from=kudig@example.com\nnotification.mail.to=ops@example.com, oncall@example.com\n"
        f"notification.mail.username={SMTP_USER}\nnotification.mail.tls=false\n",
        secrets={"notification.mail.password": SMTP_PASSWORD},
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "after-ok" in out
    assert len(smtp.messages) == 2, out  # notify> and ^sla^alert
    bodies = {str(m.get_content()).splitlines()[2]: (sender, rcpt, m) for sender, rcpt, m in smtp.messages}
    sender, rcpt, msg = bodies["Message: hello 2024-01-30"]
    assert sender == "kudig@example.com" and rcpt == ["ops@example.com", "oncall@example.com"]
    assert msg["Subject"] == "Digdag Notification"
    text = str(msg.get_content()).replace("\r\n", "\n")
    assert (
        "Workflow Name: n\n" in text and "Task Name: +n+hello\n" in text and "Time Zone: Asia/Tokyo\n" in text
    )
    assert "Session Time: 2024-01-30T00:00:00+09:00" in text
    assert "Task Name: +n^sla^alert\r\n" in str(bodies["Message: SLA violation"][2].get_content())
    assert smtp.logins == [SMTP_USER, SMTP_USER]  # the password came from the local secret
    assert SMTP_PASSWORD not in out


def test_http_notifier_posts_the_template_with_headers(http: HttpPeer, tmp_path: Path) -> None:
    template = '{"text": "kudig: ${message} (${workflow_name} ${session_time})", "quote": "${task_name}"}'
    proc = run(
        tmp_path,
        f"notification.type=http\nnotification.http.url={http.url('/seen')}\n"
        "notification.http.headers.X-Token=t-123\n"
        f"notification.http.body_template={template}\n",
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    posts = http.on("/seen")
    assert len(posts) == 2, out
    bodies = [json.loads(r.body) for r in posts]
    assert {"text": "kudig: hello 2024-01-30 (n 2024-01-30T00:00:00+09:00)", "quote": "+n+hello"} in bodies
    assert all(r.method == "POST" and r.headers["X-Token"] == "t-123" for r in posts)
    assert all(r.headers["Content-Type"] == "application/json" for r in posts)


def test_default_http_body_is_digdags_notification(http: HttpPeer, tmp_path: Path) -> None:
    proc = run(tmp_path, f"notification.type=http\nnotification.http.url={http.url('/seen')}\n")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    body = next(json.loads(r.body) for r in http.on("/seen") if b"hello" in r.body)
    assert body["message"] == "hello 2024-01-30" and body["workflow_name"] == "n"
    assert body["task_name"] == "+n+hello" and body["timezone"] == "Asia/Tokyo"
    assert set(body) >= {"timestamp", "site_id", "project_name", "attempt_id", "session_uuid", "session_time"}


def test_a_failing_notifier_is_retried_logged_and_never_fails_the_session(
    http: HttpPeer, tmp_path: Path
) -> None:
    proc = run(
        tmp_path,
        f"notification.type=http\nnotification.http.url={http.url('/status/500')}\n"
        "notification.retries=1\nnotification.min_retry_wait=10\n",
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "after-ok" in out
    assert len(http.on("/status/500")) == 4  # two notifications, each tried twice
    assert "notify>: sending the notification failed: Failed to send HTTP notification to 127.0.0.1" in out
    assert "(2 tries), the session goes on" in out


def test_without_a_notifier_notify_only_logs(tmp_path: Path) -> None:
    proc = run(tmp_path, "")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "notify: hello 2024-01-30" in out and "notify: SLA violation" in out
    assert "notify>: sent" not in out


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ("notification.type=sms\n", "notification.type=sms: kudig sends mail or http notifications"),
        ("notification.type=mail\nnotification.mail.host=h\n", "notification.mail.port is required"),
        ("notification.type=http\n", "notification.http.url is required for notification.type=http"),
    ],
)
def test_a_misconfigured_notifier_is_logged(tmp_path: Path, config: str, message: str) -> None:
    proc = run(tmp_path, config)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert message in out
