"""Which of digdag's operators kudig refuses, and what each would need.

A workflow using one is rejected before any task runs (`kudig check`, `kudig run`, the
controller's compile), at the task's file and line, with the reason: the cloud service or tool the
operator drives, the credentials digdag reads for it, that kudig does not provide it, and what to
use instead. digdag's other operators are all implemented (kudig_runner.dispatch.OPERATORS and the
engine's control operators).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Refusal:
    service: str  # what the operator runs on
    needs: str  # what digdag reads to reach it
    instead: str  # what a kudig workflow can do instead


_GCP_NEEDS = (
    "a Google Cloud project and the secret 'gcp.credential' (a service account's JSON key) or "
    "Application Default Credentials"
)
_GCP_INSTEAD = (
    "a `py>` task with google-cloud-{lib} (or `sh>` with the `{cli}` CLI) in a `docker:` image that has it"
)
_REDSHIFT_NEEDS = (
    "an Amazon Redshift cluster: `host`/`port`/`user`/`database` and the secret 'redshift.password'{more}"
)
_REDSHIFT_INSTEAD = (
    "`pg>` (Redshift speaks PostgreSQL's protocol) for plain SQL, or `py>`/`sh>` in a `docker:` image"
)

REFUSED: dict[str, Refusal] = {
    "bq": Refusal(
        "Google BigQuery, a cloud service",
        _GCP_NEEDS,
        _GCP_INSTEAD.format(lib="bigquery", cli="bq"),
    ),
    "bq_ddl": Refusal(
        "Google BigQuery, a cloud service",
        _GCP_NEEDS,
        _GCP_INSTEAD.format(lib="bigquery", cli="bq"),
    ),
    "bq_load": Refusal(
        "Google BigQuery and Google Cloud Storage, cloud services",
        _GCP_NEEDS,
        _GCP_INSTEAD.format(lib="bigquery", cli="bq"),
    ),
    "bq_extract": Refusal(
        "Google BigQuery and Google Cloud Storage, cloud services",
        _GCP_NEEDS,
        _GCP_INSTEAD.format(lib="bigquery", cli="bq"),
    ),
    "gcs_wait": Refusal(
        "Google Cloud Storage, a cloud service",
        _GCP_NEEDS,
        _GCP_INSTEAD.format(lib="storage", cli="gsutil"),
    ),
    "emr": Refusal(
        "Amazon EMR, a cloud service",
        "an AWS account: the secrets 'aws.emr.access_key_id' and 'aws.emr.secret_access_key' (or "
        "'aws.access_key_id'/'aws.secret_access_key'), a region, and S3 for the staged files",
        "`sh>` with the `aws emr` CLI or `py>` with boto3 in a `docker:` image that has it",
    ),
    "redshift": Refusal(
        "Amazon Redshift, a cloud service",
        _REDSHIFT_NEEDS.format(more=""),
        _REDSHIFT_INSTEAD,
    ),
    "redshift_load": Refusal(
        "Amazon Redshift and Amazon S3, cloud services",
        _REDSHIFT_NEEDS.format(
            more=", plus AWS credentials for S3 ('aws.redshift_load.access_key_id'/'secret_access_key')"
        ),
        _REDSHIFT_INSTEAD,
    ),
    "redshift_unload": Refusal(
        "Amazon Redshift and Amazon S3, cloud services",
        _REDSHIFT_NEEDS.format(
            more=", plus AWS credentials for S3 ('aws.redshift_unload.access_key_id'/'secret_access_key')"
        ),
        _REDSHIFT_INSTEAD,
    ),
    "embulk": Refusal(
        "Embulk, a Java bulk-loading tool",
        "the `embulk` command (a JVM and Embulk's plugins) installed where the task runs",
        "`sh>: embulk run load.yml` in a `docker:` image that has Embulk",
    ),
}


def refusal_message(op_type: str) -> str | None:
    """Why kudig refuses `op_type>`, or None when it is not one of the refused operators."""
    refusal = REFUSED.get(op_type)
    if refusal is None:
        return None
    return (
        f"operator {op_type}> is not supported by kudig: it runs on {refusal.service}; it would need "
        f"{refusal.needs}, which kudig does not provide (no client for it, and nothing here to test "
        f"it against). Instead use {refusal.instead}."
    )
