"""A real S3-compatible server for the s3_wait> tests: moto's server (`python -m moto.server`,
PyPI `moto[server]`, pinned in hack/moto, which installs it into a venv of its own), started on
0.0.0.0 and a free port, one per test run (the `s3` pytest fixture). Objects are created with that
venv's boto3, i.e. AWS's own client, in a subprocess.

moto accepts any credentials by default (it does not check signatures); `sigv4_reference` asks
botocore for the signature of a request so the runner's own SigV4 signing is checked against it.

Without moto (no network for pip) the tests skip, except under `CI=true` or `KUDIG_E2E=1`.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ACCESS_KEY = "AKIAKUDIGTEST0000001"
SECRET_KEY = "s3-secret-9d2e7b41c0"  # a test secret: never in logs, status or events
REGION = "us-east-1"

_PUT = """
import json, sys, boto3
from botocore.config import Config
a = json.loads(sys.argv[1])
s3 = boto3.client("s3", endpoint_url=a["endpoint"], region_name=a["region"],
                  aws_access_key_id=a["access_key"], aws_secret_access_key=a["secret_key"],
                  config=Config(s3={"addressing_style": "path"}))
if a.get("bucket_only"):
    s3.create_bucket(Bucket=a["bucket"])
else:
    s3.put_object(Bucket=a["bucket"], Key=a["key"], Body=a["body"].encode(),
                  Metadata=a.get("metadata") or {}, ContentType=a.get("content_type") or "text/plain")
"""

_OBJECTS = """
import base64, json, sys, boto3
from botocore.config import Config
a = json.loads(sys.argv[1])
s3 = boto3.client("s3", endpoint_url=a["endpoint"], region_name=a["region"],
                  aws_access_key_id=a["access_key"], aws_secret_access_key=a["secret_key"],
                  config=Config(s3={"addressing_style": "path"}))
if a["op"] == "put":
    s3.put_object(Bucket=a["bucket"], Key=a["key"], Body=base64.b64decode(a["data"]))
elif a["op"] == "get":
    print(base64.b64encode(s3.get_object(Bucket=a["bucket"], Key=a["key"])["Body"].read()).decode())
else:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=a["bucket"], Prefix=a["prefix"])
    print(json.dumps([o["Key"] for p in pages for o in p.get("Contents", [])]))
"""

_SIGN = """
import json, sys, datetime
from unittest import mock
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
a = json.loads(sys.argv[1])
req = AWSRequest(method="HEAD", url=a["url"], headers={"x-amz-content-sha256": a["payload"]})
now = datetime.datetime.strptime(a["amz_date"], "%Y%m%dT%H%M%SZ")
with mock.patch("botocore.auth.get_current_datetime", return_value=now):
    S3SigV4Auth(Credentials(a["access_key"], a["secret_key"]), "s3", a["region"]).add_auth(req)
print(req.headers["Authorization"])
"""


def _required() -> bool:
    return os.environ.get("CI") == "true" or os.environ.get("KUDIG_E2E") == "1"


def moto_python() -> str | None:
    proc = subprocess.run([str(ROOT / "hack" / "moto")], capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        if _required():
            raise AssertionError(f"hack/moto failed:\n{proc.stderr}")
        return None
    return proc.stdout.strip().splitlines()[-1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return int(s.getsockname()[1])


@dataclass
class S3Server:
    python: str
    port: int
    process: subprocess.Popen[bytes]

    def endpoint(self, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}"

    def _client(self, **args: object) -> None:
        data = {
            "endpoint": self.endpoint(),
            "region": REGION,
            "access_key": ACCESS_KEY,
            "secret_key": SECRET_KEY,
            **args,
        }
        subprocess.run(
            [self.python, "-c", _PUT, json.dumps(data)], check=True, timeout=120, capture_output=True
        )

    def create_bucket(self, bucket: str) -> None:
        self._client(bucket=bucket, bucket_only=True)

    def put(self, bucket: str, key: str, body: str, metadata: dict[str, str] | None = None) -> None:
        self._client(bucket=bucket, key=key, body=body, metadata=metadata or {})

    def _objects(self, **args: object) -> str:
        data = {
            "endpoint": self.endpoint(),
            "region": REGION,
            "access_key": ACCESS_KEY,
            "secret_key": SECRET_KEY,
        }
        proc = subprocess.run(
            [self.python, "-c", _OBJECTS, json.dumps({**data, **args})],
            check=True,
            timeout=120,
            capture_output=True,
            text=True,
        )
        return proc.stdout.strip()

    def put_bytes(self, bucket: str, key: str, data: bytes) -> None:
        self._objects(op="put", bucket=bucket, key=key, data=base64.b64encode(data).decode())

    def get(self, bucket: str, key: str) -> bytes:
        return base64.b64decode(self._objects(op="get", bucket=bucket, key=key))

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        keys: list[str] = json.loads(self._objects(op="list", bucket=bucket, prefix=prefix))
        return keys

    def sigv4_reference(self, url: str, amz_date: str, payload: str) -> str:
        data = {
            "url": url,
            "amz_date": amz_date,
            "payload": payload,
            "region": REGION,
            "access_key": ACCESS_KEY,
            "secret_key": SECRET_KEY,
        }
        proc = subprocess.run(
            [self.python, "-c", _SIGN, json.dumps(data)],
            check=True,
            timeout=60,
            capture_output=True,
            text=True,
        )
        return proc.stdout.strip()


@pytest.fixture(scope="session")
def s3() -> Iterator[S3Server]:
    python = moto_python()
    if python is None:
        pytest.skip("moto's S3 server is not available (hack/moto failed: no network for pip?)")
    port = _free_port()
    process = subprocess.Popen(
        [python, "-m", "moto.server", "-H", "0.0.0.0", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server = S3Server(python, port, process)
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(server.endpoint() + "/moto-api/", timeout=2):
                break
        except (urllib.error.URLError, OSError):
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise AssertionError("moto's server did not start") from None
            time.sleep(0.2)
    try:
        yield server
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def s3_project(root: Path, endpoint: str, bucket: str) -> Path:
    """A project whose `s3.dig` waits for `<bucket>/data/<session_date>/done.csv` and uses
    `s3.last_object` in the next task; `missing.dig` waits 1 s for an object of a missing bucket."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "s3.dig").write_text(
        f"""
_export:
  aws:
    s3:
      endpoint: {endpoint}
      path_style_access: true

+wait:
  s3_wait>: {bucket}/data/${{session_date}}/done.csv
  timeout: 5m

+use:
  sh>: echo "s3-ok size=${{s3.last_object.metadata['Content-Length']}} type=${{s3.last_object.metadata['Content-Type']}} owner=${{s3.last_object.user_metadata.owner}} modified=${{typeof s3.last_object.metadata['Last-Modified']}}"
""",
        encoding="utf-8",
    )
    (root / "missing.dig").write_text(
        f"""
+wait:
  s3_wait>:
  bucket: no-such-bucket-{bucket}
  key: x.csv
  endpoint: {endpoint}
  timeout: 1s

+never:
  sh>: echo never-here
""",
        encoding="utf-8",
    )
    (root / "cont.dig").write_text(
        f"""
+wait:
  s3_wait>: {bucket}/not/there.csv
  endpoint: {endpoint}
  timeout: 1s
  continue_on_timeout: true

+after:
  sh>: echo "cont-ok [${{typeof s3}}]"
""",
        encoding="utf-8",
    )
    return root
