"""`notify>` (and `^sla^alert`, which is `notify>: SLA violation`): digdag's NotifyOperatorFactory
and its notifier (digdag-core's DefaultNotifier, MailNotificationSender, HttpNotificationSender),
on the standard library (smtplib through mail>'s sender, urllib).

The notifier is configured once, outside the workflow, with digdag's system config keys, given to
the runner as the JSON object in the environment variable `KUDIG_NOTIFICATION` (`kudig run` and
`kudig scheduler` put the `notification.*` keys of their system config there; on the cluster the
operator's Helm values do, through the task pod's spec):

* `notification.type`: `mail` or `http`; unset: the message is only logged (digdag: nothing sent).
* mail: `notification.mail.host`, `.port` (required), `.tls` (true: STARTTLS when offered),
  `.ssl` (false), `.username`, `.password`, `.from`, `.to`, `.cc`, `.bcc` (an address, a list or
  a comma-separated text), `.subject` ("Digdag Notification"), `.html` (false),
  `.body_template_file` (a file) or `.body_template` (kudig: the text itself), digdag's default
  body otherwise. `${name}` in the body is a field of the notification.
* http: `notification.http.url`, `.method` (POST), `.headers.<Name>: value`; the body is the
  notification as JSON (digdag's), or `.body_template` (kudig: a JSON text with `${name}`
  replaced by the field, JSON-escaped: `{"text": "${message} (${workflow_name})"}` for Slack).
* `notification.retries` (10), `.min_retry_wait` (1000 ms), `.max_retry_wait` (30000 ms), as
  digdag's DefaultNotifier.

Secrets (`notification.mail.password`, `notification.http.url`: a Slack webhook's URL is its
credential) may also come from the task's secrets under those keys, which win over the config.

**Difference from digdag:** a notifier that fails (after its retries) is logged and `notify>`
succeeds: an alert that cannot be delivered never fails the session (digdag fails the task).
"""

from __future__ import annotations

import datetime
import email.utils
import json
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from .mail_op import SmtpConfig, send
from .protocol import RunnerError, TaskInput, TaskOutput, empty_output, merged_params
from .secrets import ReadSecrets

ENV = "KUDIG_NOTIFICATION"
SECRET_KEYS = ("notification.mail.password", "notification.http.url")
HTTP_TIMEOUT = 30.0
DEFAULT_SUBJECT = "Digdag Notification"
DEFAULT_BODY = "\n".join(
    [
        "Digdag Notification",
        "",
        "Message: ${message}",
        "Date: ${timestamp}",
        "",
        "Site Id: ${site_id}",
        "Project Name: ${project_name}",
        "Project Id: ${project_id}",
        "Workflow Name: ${workflow_name}",
        "Revision: ${revision}",
        "Attempt Id: ${attempt_id}",
        "Session Id: ${session_id}",
        "Task Name: ${task_name}",
        "Time Zone: ${timezone}",
        "Session Uuid: ${session_uuid}",
        "Session Time: ${session_time}",
    ]
)
_FIELD = re.compile(r"\$\{\s*([A-Za-z_][A-Za-z_0-9]*)\s*\}")


class NotifierError(Exception):
    """The notifier could not deliver (its message names no secret)."""


class Misconfigured(NotifierError):
    """The notifier's settings are wrong: trying again cannot help."""


def notification(task_input: TaskInput, now: datetime.datetime) -> dict[str, Any]:
    """digdag's Notification: the message and where it comes from."""
    params = merged_params(task_input)
    command = params.get("_command", params.get("message"))
    message = "" if command is None else command if isinstance(command, str) else json.dumps(command)
    return {
        "timestamp": now.astimezone(datetime.UTC).isoformat().replace("+00:00", "Z"),
        "message": message,
        "site_id": 0,
        "project_id": params.get("project_id"),
        "project_name": params.get("project_name"),
        "workflow_name": params.get("workflow_name") or _workflow_of(task_input["task_name"]),
        "revision": params.get("revision") or "",
        "attempt_id": params.get("attempt_id"),
        "session_id": params.get("session_id"),
        "task_name": task_input["task_name"] or params.get("task_name"),
        "timezone": params.get("timezone"),
        "session_uuid": params.get("session_uuid"),
        "session_time": params.get("session_time"),
    }


def _workflow_of(task_name: str) -> str:
    """The workflow's name: its root task is `+<name>` (`+wf+t`, `+wf^sla^alert`)."""
    m = re.match(r"\+([^+^]*)", task_name or "")
    return m.group(1) if m else ""


def render(template: str, fields: Mapping[str, Any], escape: Callable[[str], str] = str) -> str:
    """`${name}` replaced by the notification's field (unknown names: empty), through `escape`."""

    def value(m: re.Match[str]) -> str:
        v = fields.get(m.group(1))
        return escape("" if v is None else str(v))

    return _FIELD.sub(value, template)


def _json_escape(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)[1:-1]


def load_settings(environ: Mapping[str, str]) -> dict[str, Any]:
    """The notifier's settings (digdag's keys) from `KUDIG_NOTIFICATION`."""
    text = environ.get(ENV, "").strip()
    if not text:
        return {}
    try:
        settings = json.loads(text)
    except ValueError as e:
        raise Misconfigured(f"{ENV} is not a JSON object: {e}") from None
    if not isinstance(settings, dict):
        raise Misconfigured(f"{ENV} is not a JSON object")
    return {str(k): v for k, v in settings.items() if v is not None and v != ""}


def _flag(settings: Mapping[str, Any], key: str, default: bool) -> bool:
    value = settings.get(key, default)
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text not in ("true", "false"):
        raise Misconfigured(f"{key}: expected true or false, got {value!r}")
    return text == "true"


def _integer(settings: Mapping[str, Any], key: str, default: int) -> int:
    value = settings.get(key, default)
    try:
        return int(str(value).strip())
    except ValueError:
        raise Misconfigured(f"{key}: expected an integer, got {value!r}") from None


def _addresses(settings: Mapping[str, Any], key: str) -> list[str]:
    value = settings.get(key)
    items = value if isinstance(value, list) else str(value or "").split(",")
    out = [str(a).strip() for a in items if str(a).strip()]
    for a in out:
        if "@" not in email.utils.parseaddr(a)[1]:
            raise Misconfigured(f"{key}: invalid address {a!r}")
    return out


def _required(settings: Mapping[str, Any], key: str) -> str:
    value = settings.get(key)
    if value is None or str(value).strip() == "":
        raise Misconfigured(f"{key} is required for notification.type={settings.get('notification.type')}")
    return str(value).strip()


def send_mail(settings: Mapping[str, Any], fields: Mapping[str, Any], cwd: Path) -> str:
    host = _required(settings, "notification.mail.host")
    port = _integer(settings, "notification.mail.port", 0) if settings.get("notification.mail.port") else 0
    if not port:
        raise Misconfigured("notification.mail.port is required for notification.type=mail")
    sender = _required(settings, "notification.mail.from")
    to = _addresses(settings, "notification.mail.to")
    cc = _addresses(settings, "notification.mail.cc")
    bcc = _addresses(settings, "notification.mail.bcc")
    if not to and not cc and not bcc:
        raise Misconfigured("notification.mail.to is required for notification.type=mail")
    template = settings.get("notification.mail.body_template")
    template_file = settings.get("notification.mail.body_template_file")
    if template is None and template_file:
        try:
            template = (cwd / str(template_file)).read_text(encoding="utf-8")
        except OSError as e:
            raise Misconfigured(
                f"notification.mail.body_template_file {template_file}: {e.strerror or e}"
            ) from None
    msg = EmailMessage()
    msg["Subject"] = str(settings.get("notification.mail.subject") or DEFAULT_SUBJECT)
    msg["From"] = sender
    msg["Sender"] = sender
    if to:
        msg["To"] = ", ".join(to)
    if cc:
        msg["Cc"] = ", ".join(cc)
    msg["Date"] = email.utils.formatdate(localtime=True)
    html = _flag(settings, "notification.mail.html", False)
    msg.set_content(
        render(str(template or DEFAULT_BODY), fields), subtype="html" if html else "plain", charset="utf-8"
    )
    username = settings.get("notification.mail.username")
    config = SmtpConfig(
        host,
        port,
        _flag(settings, "notification.mail.tls", True),
        _flag(settings, "notification.mail.ssl", False),
        str(username) if username else None,
        str(settings.get("notification.mail.password") or "") or None,
    )
    recipients = [email.utils.parseaddr(a)[1] for a in [*to, *cc, *bcc]]
    try:
        send(config, msg, recipients)
    except RunnerError as e:
        raise NotifierError(e.message) from None
    return f"mail to {len(recipients)} recipient(s) via {host}:{port}"


def send_http(settings: Mapping[str, Any], fields: Mapping[str, Any]) -> str:
    url = _required(settings, "notification.http.url")
    method = str(settings.get("notification.http.method") or "POST").upper()
    template = settings.get("notification.http.body_template")
    if template is not None:
        body = render(str(template), fields, _json_escape)
        try:
            json.loads(body)
        except ValueError as e:
            raise Misconfigured(f"notification.http.body_template is not JSON once filled in: {e}") from None
    else:
        body = json.dumps(dict(fields), ensure_ascii=False)
    headers = {"Content-Type": "application/json"}
    prefix = "notification.http.headers."
    headers.update({k[len(prefix) :]: str(v) for k, v in settings.items() if k.startswith(prefix)})
    request = urllib.request.Request(url, data=body.encode("utf-8"), method=method, headers=headers)
    host = urllib.parse.urlsplit(url).netloc.rpartition("@")[2]
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT) as res:
            status = res.status
    except urllib.error.HTTPError as e:
        raise NotifierError(
            f"Failed to send HTTP notification to {host}: status={e.code} {e.reason}"
        ) from None
    except (urllib.error.URLError, OSError) as e:
        reason = e.reason if isinstance(e, urllib.error.URLError) else e
        raise NotifierError(f"Failed to send HTTP notification to {host}: {reason}") from None
    return f"HTTP {method} to {host}: {status}"


def deliver(
    settings: Mapping[str, Any],
    fields: Mapping[str, Any],
    cwd: Path,
    sleep: Callable[[float], None] = time.sleep,
    log: Callable[[str], None] = print,
) -> bool:
    """Send through the configured notifier, retrying as digdag's DefaultNotifier (wait doubling
    from min_retry_wait to max_retry_wait); whether it was delivered. Never raises."""
    kind = str(settings.get("notification.type") or "").strip()
    try:
        retries = _integer(settings, "notification.retries", 10)
        wait = _integer(settings, "notification.min_retry_wait", 1000) / 1000
        max_wait = _integer(settings, "notification.max_retry_wait", 30000) / 1000
        if kind not in ("mail", "http"):
            raise Misconfigured(f"notification.type={kind}: kudig sends mail or http notifications")
    except NotifierError as e:
        log(f"notify>: the notifier is misconfigured, nothing sent: {e}")
        return False
    for attempt in range(retries + 1):
        try:
            what = send_mail(settings, fields, cwd) if kind == "mail" else send_http(settings, fields)
            log(f"notify>: sent {what}")
            return True
        except Misconfigured as e:
            log(f"notify>: the notifier is misconfigured, nothing sent: {e}")
            return False
        except NotifierError as e:
            if attempt >= retries:
                log(
                    f"notify>: sending the notification failed ({retries + 1} tries), the session goes on: {e}"
                )
                return False
            log(f"notify>: sending the notification failed: {e}; retry {attempt + 1} of {retries}")
            sleep(wait)
            wait = min(wait * 2, max_wait)
    return False


def run_notify(task_input: TaskInput, cwd: str | os.PathLike[str]) -> TaskOutput:
    fields = notification(task_input, datetime.datetime.now(datetime.UTC))
    print(f"notify: {fields['message']}", flush=True)
    secrets = ReadSecrets(task_input["secrets"])
    try:
        settings = load_settings(os.environ)
    except NotifierError as e:
        print(f"notify>: the notifier is misconfigured, nothing sent: {e}", flush=True)
        return empty_output()
    for key in SECRET_KEYS:
        value = secrets.get(key)
        if value is not None:
            settings[key] = value
    for key in SECRET_KEYS:
        if settings.get(key):
            secrets.remember(str(settings[key]))
    if not settings.get("notification.type"):
        return empty_output()  # digdag without a notifier: nothing sent

    def log(text: str) -> None:
        print(secrets.scrub(text), flush=True)

    deliver(settings, fields, Path(cwd), log=log)
    return empty_output()
