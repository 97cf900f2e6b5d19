"""`http>` and `http_call>`: digdag's HttpOperatorFactory and HttpCallOperatorFactory, on urllib.

Request (both operators; the params are the task's with the `http:` map as defaults):

* URI: the command (`http>: https://...`), `${secret:key}` substituted; for `http>` the secret
  `http.uri` replaces it. The log shows the URI as written (a secret URI as `scheme://***`).
* `method` (GET), `timeout` (30 s per request), `follow_redirects` (true, at most 8),
  `insecure` (false: true skips TLS verification). HTTPS certificates are verified against the
  system's CA certificates or the bundle `SSL_CERT_FILE` names (tlscheck.py).
* `headers`: a list of single-key maps (anything else: "Invalid header"), names and values
  `${secret:}`-substituted; `query`: a map or an urlencoded string, appended to the URI.
* Auth: the secret `http.authorization` is sent as the `Authorization` header; else the secrets
  `http.user` + `http.password` as preemptive Basic auth.
* Body: `content` with `content_format` (`text`, `json`, `form`) and `content_type`, with digdag's
  defaults (an object or array: json, `application/json`; a scalar: text, `plain/text` (sic)).

Response and retry (digdag's `execute`): 2xx (and 3xx when redirects are not followed) succeed;
4xx other than 408/429 fail at once; 408 and 429 are always retried; 5xx, other statuses and
errors without a response (DNS, connect, timeout) are retried when `retry` is true (the default
for GET, HEAD, OPTIONS, TRACE), waiting 1, 2, 4, 8, 16, 30, 30... seconds, with no limit but
the task's own (`_retry` does not apply to these; the pod or `kudig run` goes on until success).
A TLS certificate that fails verification is never retried: it fails at once, naming why (a
difference from digdag, whose retry of a GET would never end).

`http>` stores `http.last_status` and, with `store_content: true`, `http.last_content` (the body
as a string, at most 65536 characters), each reset first; without `store_content` the
`http.last_content` an earlier `http>` stored stays (digdag's HttpOperatorFactory resets only
what it stores). `http_call>` turns the body into the task's subtasks (see `run_http_call`).

Secret values are never printed and never part of an error message.
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from email.message import Message
from typing import Any, NamedTuple

from .durations import timeout_seconds
from .protocol import WORKFLOW_TEXT_KEY, RunnerError, TaskInput, TaskOutput, empty_output, merged_params
from .secrets import SecretNotFoundError, get_secret, substitute_secrets
from .tlscheck import TRUST_HINT, untrusted_certificate

SECRET_KEYS = ("http.authorization", "http.user", "http.password", "http.uri")
CALL_SECRET_KEYS = ("http.authorization", "http.user", "http.password")
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
DEFAULT_TIMEOUT = 30.0
MAX_REDIRECTS = 8
MAX_STORED_CONTENT = 65536  # characters (config.http.max_stored_response_content_size)
MAX_CALL_CONTENT = 65536  # characters (config.http_call.max_response_content_size)
USER_AGENT = "Digdag/kudig"
RETRY_MIN, RETRY_MAX = 1.0, 30.0
_sleep = time.sleep  # tests replace it


class Response(NamedTuple):
    status: int
    reason: str
    headers: Message
    body: bytes


class Request(NamedTuple):
    method: str
    uri: str  # with secrets and query: never printed
    shown: str  # the URI as the log and errors show it
    headers: list[tuple[str, str]]
    body: bytes | None
    timeout: float
    follow_redirects: bool
    insecure: bool
    retry: bool


def optional_secret(key: str, task_input: TaskInput) -> str | None:
    try:
        return get_secret(key, task_input["secrets"])
    except SecretNotFoundError:
        return None


def _bool(params: Mapping[str, Any], key: str, default: bool) -> bool:
    value = params.get(key, default)
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise RunnerError(f"Expected 'true' or 'false' for parameter '{key}' but got {value!r}", "ConfigError")


def _deep_secrets(value: Any, secrets: Mapping[str, str]) -> Any:
    if isinstance(value, str):
        return substitute_secrets(value, secrets)
    if isinstance(value, dict):
        return {k: _deep_secrets(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_secrets(v, secrets) for v in value]
    return value


def _scalar_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    return str(value)


def request_body(params: Mapping[str, Any], secrets: Mapping[str, str]) -> tuple[bytes | None, str | None]:
    """The body and its default content type (digdag's `contentProvider`)."""
    if "content" not in params or params["content"] is None:
        return None, None
    content = _deep_secrets(params["content"], secrets)
    fmt = params.get("content_format")
    kind = "object" if isinstance(content, dict) else "array" if isinstance(content, list) else "scalar"
    if fmt is not None and not isinstance(fmt, str):
        raise RunnerError(f"Invalid content format for {kind}s: '{fmt}'", "ConfigError")
    if kind == "scalar":
        if fmt in (None, "text"):
            return _scalar_text(content).encode("utf-8"), "plain/text"
        if fmt == "json":
            return json.dumps(content, ensure_ascii=False).encode("utf-8"), "application/json"
    elif fmt in (None, "json"):
        return json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode(
            "utf-8"
        ), "application/json"
    elif fmt == "form" and kind == "object":
        fields = []
        for key, value in content.items():
            if isinstance(value, (dict, list)):
                raise RunnerError(f"Invalid form content field value: {key}", "ConfigError")
            fields.append((str(key), _scalar_text(value)))
        return urllib.parse.urlencode(fields).encode("ascii"), "application/x-www-form-urlencoded"
    raise RunnerError(f"Invalid content format for {kind}s: '{fmt}'", "ConfigError")


def _headers(params: Mapping[str, Any], secrets: Mapping[str, str]) -> list[tuple[str, str]]:
    raw = params.get("headers")
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise RunnerError(
            f"Invalid header: 'headers' must be a list of single-key maps, got {raw!r}", "ConfigError"
        )
    out = []
    for item in raw:
        if not isinstance(item, dict) or len(item) != 1:
            raise RunnerError(f"Invalid header: {item!r} (expected a single-key map)", "ConfigError")
        ((name, value),) = item.items()
        out.append((substitute_secrets(str(name), secrets), substitute_secrets(_scalar_text(value), secrets)))
    return out


def _with_query(uri: str, params: Mapping[str, Any], secrets: Mapping[str, str]) -> str:
    query = params.get("query")
    if query is None:
        return uri
    if isinstance(query, dict):
        text = urllib.parse.urlencode(
            [
                (substitute_secrets(str(k), secrets), substitute_secrets(_scalar_text(v), secrets))
                for k, v in query.items()
            ]
        )
    elif isinstance(query, str):
        text = substitute_secrets(query, secrets)
    else:
        raise RunnerError(f"Invalid query: expected a map or a string, got {query!r}", "ConfigError")
    if not text:
        return uri
    return uri + ("&" if "?" in uri else "?") + text


def build_request(task_input: TaskInput, op: str, *, uri_secret: bool) -> Request:
    params = merged_params(task_input, "http")
    secrets = task_input["secrets"]
    command = params.get("_command")
    secret_uri = optional_secret("http.uri", task_input) if uri_secret else None
    if secret_uri is not None:
        uri = secret_uri
        scheme = urllib.parse.urlsplit(uri).scheme
        shown = f"{scheme}://***" if scheme else "***"
    else:
        if not isinstance(command, str) or not command.strip():
            raise RunnerError(f"{op}> requires a URI (e.g. {op}>: https://example.com/path)", "ConfigError")
        shown = command.strip()
        uri = substitute_secrets(shown, secrets)
    if urllib.parse.urlsplit(uri).scheme not in ("http", "https"):
        raise RunnerError(f"{op}> URI must be http:// or https://: {shown}", "ConfigError")
    method = str(params.get("method") or "GET").upper()
    try:
        timeout = timeout_seconds(params.get("timeout"))
    except ValueError as e:
        raise RunnerError(str(e), "ConfigError") from None
    headers = _headers(params, secrets)
    body, default_type = request_body(params, secrets)
    content_type = params.get("content_type")
    if content_type is not None:
        default_type = str(content_type)
    if default_type is not None and body is not None:
        headers.append(("Content-Type", default_type))
    authorization = optional_secret("http.authorization", task_input)
    if authorization is not None:
        headers.append(("Authorization", authorization))
    else:
        user = optional_secret("http.user", task_input)
        if user is not None:
            password = optional_secret("http.password", task_input) or ""
            token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
            headers.append(("Authorization", "Basic " + token))
    retry_default = method in IDEMPOTENT_METHODS
    return Request(
        method=method,
        uri=_with_query(uri, params, secrets),
        shown=shown,
        headers=headers,
        body=body,
        timeout=timeout if timeout is not None else DEFAULT_TIMEOUT,
        follow_redirects=_bool(params, "follow_redirects", True),
        insecure=_bool(params, "insecure", False),
        retry=_bool(params, "retry", retry_default),
    )


class _Redirects(urllib.request.HTTPRedirectHandler):
    max_redirections = MAX_REDIRECTS

    def __init__(self, follow: bool) -> None:
        self.follow = follow

    def redirect_request(  # type: ignore[no-untyped-def]
        self, req, fp, code, msg, headers, newurl
    ):
        if not self.follow:
            return None  # urllib then raises HTTPError with the 3xx response: a success here
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def send(request: Request) -> Response:
    """One exchange. Raises OSError (URLError, timeouts, connection errors) without a response."""
    handlers: list[urllib.request.BaseHandler] = [_Redirects(request.follow_redirects)]
    if request.insecure:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        handlers.append(urllib.request.HTTPSHandler(context=context))
    opener = urllib.request.build_opener(*handlers)
    req = urllib.request.Request(request.uri, data=request.body, method=request.method)
    merged: dict[str, list[str]] = {}
    names: dict[str, str] = {}
    for name, value in request.headers:
        names.setdefault(name.lower(), name)
        merged.setdefault(name.lower(), []).append(value)
    req.add_header("User-Agent", USER_AGENT)
    for lower, values in merged.items():
        req.add_header(names[lower], ", ".join(values))  # urllib keeps one value per name
    try:
        with opener.open(req, timeout=request.timeout) as resp:
            return Response(resp.status, resp.reason or "", resp.headers, resp.read())
    except urllib.error.HTTPError as e:
        try:
            body = e.read()
        except OSError:
            body = b""
        return Response(e.code, str(e.reason or ""), e.headers, body)


def _text(response: Response) -> str:
    charset = response.headers.get_content_charset() if response.headers is not None else None
    try:
        return response.body.decode(charset or "utf-8", "replace")
    except LookupError:
        return response.body.decode("utf-8", "replace")


def _describe(request: Request, response: Response) -> str:
    text = _text(response)
    return f"{request.method} {request.shown} - {response.status} {response.reason}: {text[:200]}"


def execute(request: Request, log: Callable[[str], None] = print) -> Response:
    """The request with digdag's retry rules (see the module docstring)."""
    attempt = 0
    while True:
        log(f"Sending HTTP request: {request.method} {request.shown}")
        try:
            response = send(request)
        except (OSError, ValueError) as e:
            untrusted = untrusted_certificate(e)
            if untrusted is not None:
                raise RunnerError(
                    f"HTTP request failed: {request.method} {request.shown}: {untrusted}: {TRUST_HINT}; "
                    "insecure: true skips the check",
                    "HttpError",
                ) from None
            reason = getattr(e, "reason", None) or e
            message = f"HTTP request failed: {request.method} {request.shown}: {reason}"
            if not request.retry:
                raise RunnerError(message, "HttpError") from None
        else:
            status = response.status
            if 200 <= status < 300 or (300 <= status < 400 and not request.follow_redirects):
                return response
            if 400 <= status < 500 and status not in (408, 429):
                raise RunnerError(f"HTTP 4XX Client Error: {_describe(request, response)}", "HttpError")
            if 500 <= status < 600:
                message = f"HTTP 5XX Server Error: {_describe(request, response)}"
            else:
                message = f"Unexpected HTTP status: {_describe(request, response)}"
            if not request.retry and status not in (408, 429):
                raise RunnerError(message, "HttpError")
        wait = min(RETRY_MIN * 2**attempt, RETRY_MAX)
        log(f"{message}; retrying in {wait:g}s")
        sys.stdout.flush()
        _sleep(wait)
        attempt += 1


def run_http(task_input: TaskInput, cwd: str | os.PathLike[str]) -> TaskOutput:
    params = merged_params(task_input, "http")
    store_content = _bool(params, "store_content", False)
    request = build_request(task_input, "http", uri_secret=True)
    response = execute(request)
    print(f"HTTP response: {response.status} {response.reason}", flush=True)
    out = empty_output()
    stored: dict[str, Any] = {"last_status": response.status}
    if store_content:
        text = _text(response)
        if len(text) > MAX_STORED_CONTENT:
            raise RunnerError(f"Response content too large: {len(text)} > {MAX_STORED_CONTENT}", "HttpError")
        stored["last_content"] = text
    out["store_params"] = {"http": stored}
    # digdag's HttpOperatorFactory resets only what it stores: a body an earlier http> stored stays
    # readable after an http> without store_content.
    out["reset_store_params"] = ["http.last_status"] + (["http.last_content"] if store_content else [])
    return out


def run_http_call(task_input: TaskInput, cwd: str | os.PathLike[str]) -> TaskOutput:
    """`http_call>`: the response body is a workflow definition, run as the task's subtasks.

    Its type is `content_type_override` or the response's Content-Type: `application/json` is
    parsed (and must be an object), `application/x-yaml` is passed as is. The runner has no YAML
    parser, so the text goes back to the engine as the subtask config's only key
    `WORKFLOW_TEXT_KEY`, and the engine loads it as a `.dig` (kudig.taskio), like `call>`.
    """
    params = merged_params(task_input, "http")
    request = build_request(task_input, "http_call", uri_secret=False)
    response = execute(request)
    print(f"HTTP response: {response.status} {response.reason}", flush=True)
    override = params.get("content_type_override")
    if override is not None and str(override).strip():
        media = str(override).split(";")[0].strip().lower()
    else:
        header = response.headers.get("Content-Type") if response.headers is not None else None
        if not header:
            raise RunnerError("Content-Type must be set in the HTTP response but not set", "HttpError")
        media = header.split(";")[0].strip().lower()
    text = _text(response)
    if len(text) > MAX_CALL_CONTENT:
        raise RunnerError(f"Response content too large: {len(text)} > {MAX_CALL_CONTENT}", "HttpError")
    if media == "application/json":
        try:
            doc = json.loads(text)
        except ValueError as e:
            raise RunnerError(f"Failed to parse response as JSON: {e}", "HttpError") from None
        if not isinstance(doc, dict):
            raise RunnerError("Failed to parse response as JSON: a workflow must be an object", "HttpError")
        text = json.dumps(doc, ensure_ascii=True)  # JSON in this form is also YAML
    elif media != "application/x-yaml":
        raise RunnerError(
            f"Unsupported Content-Type (expected application/json or application/x-yaml): {media}",
            "HttpError",
        )
    out = empty_output()
    out["subtask_config"] = {WORKFLOW_TEXT_KEY: text}
    return out
