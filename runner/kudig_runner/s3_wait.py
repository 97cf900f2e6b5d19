"""`s3_wait>`: digdag's S3WaitOperatorFactory, on the standard library (AWS Signature Version 4).

* Target: `s3_wait>: bucket/key` (split at the first `/`) or the `bucket` and `key` parameters;
  `version_id`. Parameters: the task's, with the `aws.s3` map then the `aws` map as defaults.
* `endpoint`: the secret `aws.s3.endpoint`, else the parameter (no scheme: https); default
  `s3.amazonaws.com` (`s3.<region>.amazonaws.com` for another region). `region`: the secret
  `aws.s3.region`, `aws.region`, else the parameter; default `us-east-1`.
* `path_style_access` (false): `endpoint/bucket/key`; otherwise `bucket.endpoint/key`, except for
  an IP address or `localhost` endpoint or a bucket name that is not a DNS label (path style then,
  as the AWS SDK does).
* Credentials (required): the secrets `aws.s3.access_key_id` / `aws.s3.secret_access_key`, else
  `aws.access_key_id` / `aws.secret_access_key`. SSE-C: the secrets `aws.s3.sse_c_key` (base64),
  `aws.s3.sse_c_key_algorithm` (AES256), `aws.s3.sse_c_key_md5` (computed when absent).
* Probe: a signed `HEAD` of the object. 404: not yet. Other 4xx except 408 and 429 fail the task
  at once; 408, 429, 5xx and connection errors are retried after 1, 2, 4 ... 30 s.
* Waiting (digdag's PollingWaiter): 5, 10, 20 ... 300 s between probes, never less than 5 s,
  capped by what is left of `timeout`; the timeout is checked after each probe.
* `timeout` (none: wait forever) fails with `Timeout happened` (and says whether the bucket
  exists); `continue_on_timeout: true` succeeds instead, with `s3.last_object` left absent.
* Stores `s3.last_object.metadata` (the object's headers: `Content-Length` a number,
  `Last-Modified` epoch milliseconds, `ETag` without quotes) and `s3.last_object.user_metadata`
  (the `x-amz-meta-*` headers without the prefix), `s3.last_object` reset first.

Secret values (keys, the SSE-C key) are never printed nor part of a message.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import http.client
import ipaddress
import math
import os
import re
import socket
import ssl
import time
import urllib.parse
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from typing import Any, NamedTuple

from .durations import show_seconds, timeout_seconds
from .protocol import RunnerError, TaskInput, TaskOutput, empty_output, merged_params
from .secrets import SecretNotFoundError, get_secret

SECRET_KEYS = tuple(
    f"aws.{k}"
    for k in (
        "s3.access_key_id",
        "s3.secret_access_key",
        "access_key_id",
        "secret_access_key",
        "s3.endpoint",
        "s3.region",
        "region",
        "s3.sse_c_key",
        "s3.sse_c_key_algorithm",
        "s3.sse_c_key_md5",
    )
)
POLL_MIN, POLL_MAX = 5.0, 300.0
RETRY_MIN, RETRY_MAX = 1.0, 30.0
REQUEST_TIMEOUT = 60.0
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_sleep = time.sleep  # tests replace it
_DNS_BUCKET = re.compile(r"[a-z0-9][a-z0-9-]{1,61}[a-z0-9]\Z")
# Headers the AWS SDK leaves out of an object's metadata (and hop-by-hop ones).
_IGNORED = frozenset(
    {"date", "server", "x-amz-request-id", "x-amz-id-2", "connection", "keep-alive", "transfer-encoding"}
)
_SPELLING = {
    h.lower(): h
    for h in (
        "Accept-Ranges",
        "Cache-Control",
        "Content-Disposition",
        "Content-Encoding",
        "Content-Language",
        "Content-Length",
        "Content-MD5",
        "Content-Range",
        "Content-Type",
        "ETag",
        "Expires",
        "Last-Modified",
    )
}


class Target(NamedTuple):
    bucket: str
    key: str
    version_id: str | None

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


class Client(NamedTuple):
    scheme: str
    host: str  # host[:port] of the request (with the bucket for virtual-hosted style)
    path_prefix: str  # "/bucket" in path style, "" otherwise
    region: str
    access_key: str
    secret_key: str
    extra_headers: dict[str, str]  # SSE-C


class Probe(NamedTuple):
    status: int
    reason: str
    headers: list[tuple[str, str]]


class TransientError(Exception):
    """A probe that may succeed if repeated (408, 429, 5xx, connection errors)."""


def _optional_secret(key: str, task_input: TaskInput) -> str | None:
    try:
        return get_secret(key, task_input["secrets"])
    except SecretNotFoundError:
        return None


def _bool(params: Mapping[str, Any], key: str) -> bool:
    value = params.get(key, False)
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise RunnerError(f"Expected 'true' or 'false' for parameter '{key}' but got {value!r}", "ConfigError")


def _string(params: Mapping[str, Any], key: str) -> str | None:
    value = params.get(key)
    if value is None or value == "":
        return None
    if isinstance(value, (dict, list, bool)):
        raise RunnerError(f"Parameter '{key}' must be a string but got {value!r}", "ConfigError")
    return str(value)


def s3_params(task_input: TaskInput) -> dict[str, Any]:
    """The task's params with `aws.s3` then `aws` as defaults (digdag's mergeDefault)."""
    params = merged_params(task_input)
    aws = params.get("aws")
    if isinstance(aws, dict):
        s3 = aws.get("s3")
        for defaults in (s3 if isinstance(s3, dict) else {}, aws):
            for key, value in defaults.items():
                params.setdefault(key, value)
    return params


def parse_target(params: Mapping[str, Any]) -> Target:
    command = _string(params, "_command")
    version_id = _string(params, "version_id")
    if command is not None:
        bucket, slash, key = command.partition("/")
        if not slash:
            raise RunnerError(f"Illegal s3 path: {command}", "ConfigError")
        if not bucket or not key:
            raise RunnerError(f"Illegal s3 path: {command} (expected bucket/key)", "ConfigError")
        return Target(bucket, key, version_id)
    bucket_param, key_param = _string(params, "bucket"), _string(params, "key")
    if bucket_param is None or key_param is None:
        raise RunnerError(
            "Either the s3_wait operator command or both 'bucket' and 'key' parameters must be set",
            "ConfigError",
        )
    return Target(bucket_param, key_param, version_id)


def _is_ip_or_localhost(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def make_client(task_input: TaskInput, params: Mapping[str, Any], bucket: str) -> Client:
    endpoint = _optional_secret("aws.s3.endpoint", task_input) or _string(params, "endpoint")
    region = (
        _optional_secret("aws.s3.region", task_input)
        or _optional_secret("aws.region", task_input)
        or _string(params, "region")
        or "us-east-1"
    )
    if endpoint is None:
        endpoint = "s3.amazonaws.com" if region == "us-east-1" else f"s3.{region}.amazonaws.com"
    if "://" not in endpoint:
        endpoint = "https://" + endpoint
    url = urllib.parse.urlsplit(endpoint)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise RunnerError(f"Invalid endpoint: {endpoint} (expected [http[s]://]host[:port])", "ConfigError")
    netloc = url.netloc.rpartition("@")[2]
    path_style = (
        _bool(params, "path_style_access")
        or _is_ip_or_localhost(url.hostname)
        or _DNS_BUCKET.match(bucket) is None
    )
    access_key = _optional_secret("aws.s3.access_key_id", task_input) or _optional_secret(
        "aws.access_key_id", task_input
    )
    secret_key = _optional_secret("aws.s3.secret_access_key", task_input) or _optional_secret(
        "aws.secret_access_key", task_input
    )
    if not access_key:
        raise RunnerError("The secret aws.s3.access_key_id (or aws.access_key_id) is required", "ConfigError")
    if not secret_key:
        raise RunnerError(
            "The secret aws.s3.secret_access_key (or aws.secret_access_key) is required", "ConfigError"
        )
    extra: dict[str, str] = {}
    sse_key = _optional_secret("aws.s3.sse_c_key", task_input)
    if sse_key:
        try:
            raw = base64.b64decode(sse_key, validate=True)
        except ValueError:
            raise RunnerError("The secret aws.s3.sse_c_key must be base64", "ConfigError") from None
        extra["x-amz-server-side-encryption-customer-algorithm"] = (
            _optional_secret("aws.s3.sse_c_key_algorithm", task_input) or "AES256"
        )
        extra["x-amz-server-side-encryption-customer-key"] = sse_key
        extra["x-amz-server-side-encryption-customer-key-md5"] = _optional_secret(
            "aws.s3.sse_c_key_md5", task_input
        ) or base64.b64encode(hashlib.md5(raw).digest()).decode("ascii")
    return Client(
        scheme=url.scheme,
        host=netloc if path_style else f"{bucket}.{netloc}",
        path_prefix="/" + _quote(bucket) if path_style else "",
        region=region,
        access_key=access_key,
        secret_key=secret_key,
        extra_headers=extra,
    )


def _quote(text: str) -> str:
    return urllib.parse.quote(text, safe="-_.~")


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode("utf-8"), hashlib.sha256).digest()


def signed_headers(
    client: Client,
    method: str,
    path: str,
    query: str,
    now: datetime.datetime,
    payload_sha256: str = EMPTY_SHA256,
) -> dict[str, str]:
    """The headers of a SigV4-signed request (`path` and `query` already encoded) whose body has
    the hex sha256 `payload_sha256` (default: no body). kudig's log store signs its PUTs here too."""
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    day = amz_date[:8]
    headers = {"host": client.host, "x-amz-content-sha256": payload_sha256, "x-amz-date": amz_date}
    headers.update({k.lower(): v for k, v in client.extra_headers.items()})
    names = sorted(headers)
    canonical = "\n".join(
        [
            method,
            path,
            query,
            "".join(f"{n}:{headers[n].strip()}\n" for n in names),
            ";".join(names),
            payload_sha256,
        ]
    )
    scope = f"{day}/{client.region}/s3/aws4_request"
    to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode("utf-8")).hexdigest()]
    )
    key = _hmac(
        _hmac(_hmac(_hmac(("AWS4" + client.secret_key).encode("utf-8"), day), client.region), "s3"),
        "aws4_request",
    )
    signature = hmac.new(key, to_sign.encode("utf-8"), hashlib.sha256).hexdigest()
    headers["authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={client.access_key}/{scope}, "
        f"SignedHeaders={';'.join(names)}, Signature={signature}"
    )
    return headers


def head(client: Client, path: str, query: str = "") -> Probe:
    """One signed HEAD; TransientError for a connection error, 408, 429 or 5xx."""
    headers = signed_headers(client, "HEAD", path, query, datetime.datetime.now(datetime.timezone.utc))  # noqa: UP017 (Python 3.8)
    conn: http.client.HTTPConnection
    if client.scheme == "https":
        conn = http.client.HTTPSConnection(
            client.host, timeout=REQUEST_TIMEOUT, context=ssl.create_default_context()
        )
    else:
        conn = http.client.HTTPConnection(client.host, timeout=REQUEST_TIMEOUT)
    try:
        conn.request("HEAD", path + ("?" + query if query else ""), headers=headers)
        response = conn.getresponse()
        response.read()
        probe = Probe(response.status, response.reason, list(response.getheaders()))
    except (OSError, http.client.HTTPException) as e:
        reason = "timed out" if isinstance(e, socket.timeout) else str(e) or type(e).__name__
        raise TransientError(f"cannot reach {client.scheme}://{client.host}: {reason}") from None
    finally:
        conn.close()
    if probe.status in (408, 429) or probe.status >= 500:
        raise TransientError(f"HTTP {probe.status} {probe.reason}")
    return probe


def _epoch_millis(value: str) -> int | str:
    """An HTTP date as epoch milliseconds (the AWS SDK's Date, as JSON); the text if not a date."""
    try:
        return int(parsedate_to_datetime(value).timestamp() * 1000)
    except (TypeError, ValueError):
        return value


def object_metadata(headers: list[tuple[str, str]]) -> tuple[dict[str, Any], dict[str, str]]:
    """(metadata, user_metadata) as the AWS SDK's ObjectMetadata (raw metadata, user metadata)."""
    metadata: dict[str, Any] = {}
    user: dict[str, str] = {}
    for name, value in headers:
        lower = name.lower()
        if lower.startswith("x-amz-meta-"):
            user[lower[len("x-amz-meta-") :]] = value
            continue
        if lower in _IGNORED:
            continue
        key = _SPELLING.get(lower, lower if lower.startswith("x-amz-") else name)
        converted: Any = value
        if lower == "content-length" and value.strip().isdigit():
            converted = int(value)
        elif lower == "last-modified":
            converted = _epoch_millis(value)
        elif lower == "etag":
            converted = value.strip('"')
        metadata[key] = converted
    return metadata, user


def _probe(client: Client, target: Target, deadline: float | None) -> Probe | None:
    """The object's HEAD answer, None while it does not exist; transient errors are retried."""
    path = client.path_prefix + "/" + urllib.parse.quote(target.key, safe="/-_.~")
    query = "versionId=" + _quote(target.version_id) if target.version_id else ""
    retry = 0
    while True:
        try:
            probe = head(client, path, query)
        except TransientError as e:
            wait = min(RETRY_MIN * 2**retry, RETRY_MAX)
            if deadline is not None and time.monotonic() + wait > deadline:
                raise RunnerError(f"Timeout happened while checking {target}: {e}", "TimeoutError") from None
            print(f"s3_wait>: checking {target} failed ({e}); retrying in {wait:g}s", flush=True)
            _sleep(wait)
            retry += 1
            continue
        if probe.status == 404:
            return None
        if 200 <= probe.status < 300:
            return probe
        hint = " (check the aws.s3 credentials and region)" if probe.status in (400, 401, 403) else ""
        raise RunnerError(
            f"S3 request HEAD {target} failed: HTTP {probe.status} {probe.reason}{hint}", "AmazonS3Exception"
        )


def _bucket_note(client: Client, target: Target) -> str:
    try:
        probe = head(client, client.path_prefix + "/")
    except TransientError:
        return ""
    if probe.status == 404:
        return f" (bucket '{target.bucket}' does not exist)"
    return ""


def run_s3_wait(task_input: TaskInput, cwd: str | os.PathLike[str]) -> TaskOutput:
    params = s3_params(task_input)
    target = parse_target(params)
    try:
        timeout = timeout_seconds(params.get("timeout"))
    except ValueError as e:
        raise RunnerError(str(e), "ConfigError") from None
    continue_on_timeout = _bool(params, "continue_on_timeout")
    client = make_client(task_input, params, target.bucket)
    start = time.monotonic()
    deadline = None if timeout is None else start + timeout
    out = empty_output()
    out["reset_store_params"] = ["s3.last_object"]
    print(
        f"s3_wait>: waiting for {target}"
        + (f" (version {target.version_id})" if target.version_id else "")
        + f" at {client.scheme}://{client.host}"
        + (f", timeout {show_seconds(timeout)}" if timeout is not None else ""),
        flush=True,
    )
    iteration = 0
    while True:
        probe = _probe(client, target, deadline)
        if probe is not None:
            metadata, user = object_metadata(probe.headers)
            size = metadata.get("Content-Length")
            print(f"s3_wait>: {target} exists" + (f" ({size} bytes)" if size is not None else ""), flush=True)
            out["store_params"] = {"s3": {"last_object": {"metadata": metadata, "user_metadata": user}}}
            return out
        elapsed = time.monotonic() - start
        if timeout is not None and elapsed >= timeout:
            if continue_on_timeout:
                print(
                    f"s3_wait>: {target} did not appear within {show_seconds(timeout)}; continuing",
                    flush=True,
                )
                return out
            raise RunnerError(
                f"Timeout happened: {target} did not appear within {show_seconds(timeout)}"
                + _bucket_note(client, target),
                "PollingTimeoutException",
            )
        wait = min(POLL_MIN * 2**iteration, POLL_MAX)
        if timeout is not None:
            wait = min(wait, timeout - elapsed)
        wait = float(math.ceil(max(POLL_MIN, wait)))
        print(f"s3_wait>: {target} does not exist yet; checking again in {wait:g}s", flush=True)
        _sleep(wait)
        iteration += 1
