"""`mail>`: digdag's MailOperatorFactory, on smtplib.

The params are the task's with the `mail:` map as defaults (`_export: {mail: {host: ...}}`).

* Body: `mail>: body.txt` (a project file, `${...}`-rendered by the engine when the task starts,
  which passes it as `_command_text`: the runner has no JavaScript engine), `mail>: {data: text}`,
  or `body: text` (rendered like every parameter).
* `subject` and `from` (also the `Sender`) are required; `to` (required), `cc`, `bcc`: an address
  or a list; `html: true` sends `text/html; charset=utf-8`, else `text/plain`.
* `attach_files`: a list of `{path, filename?, content_type?}` (path relative to the task's
  working directory, content type `application/octet-stream` by default): the message is then
  multipart/mixed, the body first.
* SMTP: `host`, `port`, `tls` (true: STARTTLS when the server offers it, as digdag's
  `mail.smtp.starttls.enable`; a server that does not offer it gets the mail in clear, and the log
  says so), `ssl` (false: true connects with TLS from the start, SMTPS), `username`, each from the
  secret `mail.<name>` first, then the param; the password only from the secret `mail.password` (a
  `password` param is ignored, as in digdag). The server's certificate and host name are verified
  (the system's CA certificates or the bundle `SSL_CERT_FILE` names: tlscheck.py). Connection and
  command timeout: 60 s. No internal retry, nothing stored.
"""

from __future__ import annotations

import contextlib
import email.utils
import os
import smtplib
import ssl
from collections.abc import Mapping
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from .protocol import RunnerError, TaskInput, TaskOutput, empty_output, merged_params
from .secrets import SecretNotFoundError, get_secret
from .shell import task_cwd
from .tlscheck import TRUST_HINT, untrusted_certificate

SECRET_KEYS = ("mail.host", "mail.port", "mail.tls", "mail.ssl", "mail.username", "mail.password")
SMTP_TIMEOUT = 60.0
# The engine puts the rendered content of a command file here (kudig.engine: templated files).
COMMAND_TEXT_KEY = "_command_text"


def _secret(key: str, task_input: TaskInput) -> str | None:
    try:
        return get_secret(key, task_input["secrets"])
    except SecretNotFoundError:
        return None


def _required(params: Mapping[str, Any], key: str) -> str:
    value = params.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        raise RunnerError(f"Parameter '{key}' is required but not set", "ConfigError")
    if not isinstance(value, str):
        raise RunnerError(f"Parameter '{key}' must be a string, got {value!r}", "ConfigError")
    return value


def _bool(value: Any, key: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise RunnerError(f"Expected 'true' or 'false' for parameter '{key}' but got {value!r}", "ConfigError")


def _address(value: Any, key: str) -> str:
    if not isinstance(value, str):
        raise RunnerError(f"Invalid address in '{key}': {value!r}", "ConfigError")
    _, addr = email.utils.parseaddr(value)
    if not addr or "@" not in addr or addr.startswith("@") or addr.endswith("@"):
        raise RunnerError(f"Invalid address in '{key}': {value!r}", "ConfigError")
    return value.strip()


def addresses(params: Mapping[str, Any], key: str, required: bool = False) -> list[str]:
    value = params.get(key)
    if value is None or value == "" or value == []:
        if required:
            raise RunnerError(f"Parameter '{key}' is required but not set", "ConfigError")
        return []
    items = value if isinstance(value, list) else [value]
    return [_address(item, key) for item in items]


def mail_body(params: Mapping[str, Any]) -> str:
    if COMMAND_TEXT_KEY in params:
        return str(params[COMMAND_TEXT_KEY])
    command = params.get("_command")
    if isinstance(command, dict):
        if "data" not in command:
            raise RunnerError("mail> {data: ...} form requires 'data'", "ConfigError")
        return str(command["data"])
    if isinstance(command, str):
        raise RunnerError(f"mail> body file {command!r} was not read by the engine", "ConfigError")
    body = params.get("body")
    if body is None:
        raise RunnerError(
            "mail> requires a body: mail>: body_file, mail>: {data: text} or body: text", "ConfigError"
        )
    return str(body)


def attachments(params: Mapping[str, Any], workdir: Path) -> list[tuple[str, str, bytes]]:
    """(filename, content type, data) of each `attach_files` entry."""
    raw = params.get("attach_files")
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise RunnerError(
            "Parameter 'attach_files' must be a list of {path, filename, content_type}", "ConfigError"
        )
    out = []
    for item in raw:
        if not isinstance(item, dict) or not isinstance(item.get("path"), str) or not item["path"]:
            raise RunnerError(f"Invalid attach_files entry (needs a path): {item!r}", "ConfigError")
        path = item["path"]
        full = os.path.normpath(workdir / path)
        if os.path.isabs(path) or not full.startswith(str(workdir) + os.sep):
            raise RunnerError(f"attach_files path {path!r} is outside the project directory", "ConfigError")
        try:
            data = Path(full).read_bytes()
        except OSError as e:
            raise RunnerError(
                f"Cannot read attach_files path {path!r}: {e.strerror or e}", "ConfigError"
            ) from None
        filename = str(item.get("filename") or os.path.basename(path))
        content_type = str(item.get("content_type") or "application/octet-stream")
        out.append((filename, content_type, data))
    return out


class SmtpConfig:
    def __init__(
        self, host: str, port: int, tls: bool, ssl: bool, username: str | None, password: str | None
    ) -> None:
        self.host, self.port, self.tls, self.ssl = host, port, tls, ssl
        self.username, self.password = username, password


def smtp_config(params: Mapping[str, Any], task_input: TaskInput) -> SmtpConfig:
    """digdag's user SMTP config: each setting from the secret `mail.<name>`, else the param."""

    def setting(name: str) -> Any:
        secret = _secret(f"mail.{name}", task_input)
        return secret if secret is not None else params.get(name)

    host = setting("host")
    if host is None or host == "":
        raise RunnerError(
            "Missing SMTP configuration: set 'host' and 'port' (e.g. _export: {mail: {host: ..., port: ...}}) "
            "or the secrets mail.host and mail.port",
            "ConfigError",
        )
    port_value = setting("port")
    if port_value is None or port_value == "":
        raise RunnerError("Parameter 'port' is required but not set", "ConfigError")
    try:
        port = int(str(port_value).strip())
    except ValueError:
        raise RunnerError(
            f"Expected an integer for parameter 'port' but got {port_value!r}", "ConfigError"
        ) from None
    tls = _bool(setting("tls") if setting("tls") is not None else True, "tls")
    use_ssl = _bool(setting("ssl") if setting("ssl") is not None else False, "ssl")
    username = setting("username")
    if "password" in params:
        print(
            "Unsecure 'password' parameter is deprecated (ignored): use the secret mail.password", flush=True
        )
    password = _secret("mail.password", task_input)
    return SmtpConfig(str(host), port, tls, use_ssl, str(username) if username else None, password)


def build_message(params: Mapping[str, Any], workdir: Path) -> tuple[EmailMessage, list[str]]:
    subject = _required(params, "subject")
    sender = _address(_required(params, "from"), "from")
    to = addresses(params, "to", required=True)
    cc = addresses(params, "cc")
    bcc = addresses(params, "bcc")
    html = _bool(params.get("html", False), "html")
    body = mail_body(params)
    msg = EmailMessage()
    msg["Subject"] = subject
    msg["From"] = sender
    msg["Sender"] = sender
    msg["To"] = ", ".join(to)
    if cc:
        msg["Cc"] = ", ".join(cc)
    msg["Date"] = email.utils.formatdate(localtime=True)
    msg.set_content(body, subtype="html" if html else "plain", charset="utf-8")
    files = attachments(params, workdir)
    for filename, content_type, data in files:
        maintype, _, subtype = content_type.partition("/")
        if not subtype:
            maintype, subtype = "application", "octet-stream"
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    recipients = [email.utils.parseaddr(a)[1] for a in [*to, *cc, *bcc]]
    return msg, recipients


def run_mail(task_input: TaskInput, cwd: str | os.PathLike[str]) -> TaskOutput:
    params = merged_params(task_input, "mail")
    workdir = task_cwd(task_input, cwd)
    msg, recipients = build_message(params, Path(workdir))
    config = smtp_config(params, task_input)
    print(
        f"Sending mail {msg['Subject']!r} to {len(recipients)} recipient(s) via {config.host}:{config.port}",
        flush=True,
    )
    send(config, msg, recipients)
    print("Mail sent", flush=True)
    return empty_output()


def send(config: SmtpConfig, msg: EmailMessage, recipients: list[str]) -> None:
    """Deliver `msg` through the SMTP server of `config` (mail> and the mail notifier);
    failures are RunnerErrors (class MessagingException) naming the server, never a password."""
    where = f"{config.host}:{config.port}"
    client: smtplib.SMTP | None = None
    try:
        if config.ssl:
            client = smtplib.SMTP_SSL(
                config.host, config.port, timeout=SMTP_TIMEOUT, context=ssl.create_default_context()
            )
        else:
            client = smtplib.SMTP(config.host, config.port, timeout=SMTP_TIMEOUT)
        client.ehlo()
        if config.tls and not config.ssl:
            if client.has_extn("starttls"):
                client.starttls(context=ssl.create_default_context())
                client.ehlo()
            else:
                print(f"{where} offers no STARTTLS: sending without TLS", flush=True)
        if config.username:
            client.login(config.username, config.password or "")
        client.send_message(msg, from_addr=email.utils.parseaddr(str(msg["From"]))[1], to_addrs=recipients)
        with contextlib.suppress(smtplib.SMTPException, OSError):
            client.quit()  # the message was accepted: a failed goodbye changes nothing
    except smtplib.SMTPAuthenticationError as e:
        raise RunnerError(
            f"Failed to send mail: SMTP authentication failed ({e.smtp_code})", "MessagingException"
        ) from None
    except (smtplib.SMTPException, OSError) as e:
        untrusted = untrusted_certificate(e)
        if untrusted is not None:
            raise RunnerError(
                f"Failed to send mail via {where}: {untrusted}: {TRUST_HINT}", "MessagingException"
            ) from None
        raise RunnerError(
            f"Failed to send mail via {where}: {type(e).__name__}: {e}", "MessagingException"
        ) from None
    finally:
        if client is not None:
            client.close()  # no QUIT after a failure: the connection may be half-open (a TLS handshake)
