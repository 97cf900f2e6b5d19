"""kudig's log store in an S3-compatible bucket (moto's real server, tests/s3peer.py): what the
controller stores when it releases a pod, `kudig log` and the UI list and read back."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # tests/unit has no __init__.py: make `tests.s3peer` importable
    sys.path.insert(0, str(ROOT))

from kudig.cluster.logstore import S3LogStore, StoredLog, log_store  # noqa: E402
from kudig.errors import KudigError  # noqa: E402
from tests.s3peer import ACCESS_KEY, SECRET_KEY, S3Server, s3  # noqa: E402, F401  (the fixture)

CREDS = {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
SESSION = {"metadata": {"name": "etl-20240130t000000", "uid": "u1"}}


def test_logs_round_trip_through_a_bucket(s3: S3Server) -> None:  # noqa: F811
    s3.create_bucket("kudig-logs")
    url = f"s3://kudig-logs/team-a?endpoint={s3.endpoint()}&region=us-east-1"
    store = log_store(None, {"KUDIG_LOG_STORE": url, **CREDS})  # type: ignore[arg-type]
    assert isinstance(store, S3LogStore) and store.where == "s3://kudig-logs/team-a/"
    first = StoredLog("+etl+extract", "etl-20240130t000000-aaaa", "2024-01-30T00:00:01Z")
    second = StoredLog("+etl+load.v2", "etl-20240130t000000-bbbb", "2024-01-30T00:00:05Z")
    store.put("data", SESSION, second, "loaded 19 rows\n")
    store.put("data", SESSION, first, "extracted 20 rows\nünïcode ✓\n")
    assert store.list("data", "etl-20240130t000000") == [first, second]
    assert store.get("data", "etl-20240130t000000", first.pod) == "extracted 20 rows\nünïcode ✓\n"
    assert store.get("data", "etl-20240130t000000", "missing") is None
    assert store.list("other", "etl-20240130t000000") == []


def test_a_store_without_credentials_or_bucket_is_a_clear_error() -> None:
    with pytest.raises(KudigError, match="AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY must be set"):
        log_store(None, {"KUDIG_LOG_STORE": "s3://b/p?endpoint=http://127.0.0.1:1"})  # type: ignore[arg-type]
    with pytest.raises(KudigError, match="expected 'configmap' or s3://"):
        log_store(None, {"KUDIG_LOG_STORE": "ftp://x"})  # type: ignore[arg-type]


def test_an_unreachable_store_says_where() -> None:
    store = S3LogStore("s3://b/p?endpoint=http://127.0.0.1:9", CREDS)
    with pytest.raises(KudigError, match=r"cannot reach 127\.0\.0\.1:9"):
        store.put("ns", SESSION, StoredLog("+t", "p", "2024"), "x")
