"""`param_set>` / `param_get>`: digdag's parameter store, PostgreSQL backend.

* The server: the `param_server` parameter map (digdag has it in the server's system config;
  kudig has none, so set it with `_export:` or a workflow/`-p` parameter): `type: postgresql`
  (required; `redis` is not supported by kudig), `host`, `port` (5432), `database`, `user`,
  `ssl`, `connect_timeout`, `schema`; each from the secret `param_server.<key>` first. The password
  is the secret `param_server.password` only.
* Keys: the task's own config keys (digdag's `getLocalConfig()`; the engine passes them as
  `_local_keys`), none -> "no key is set.".
* `param_set>`: `key: value` pairs; null values and maps/lists are skipped, numbers and booleans are
  stored as text. Rows of digdag's `params` table (created if absent) with the value as the JSON
  text `{"value": "<str>"}`, `value_type` 0, `site_id` 0 (digdag's local mode), upserted in one
  transaction.
* `param_get>`: `key: dest_key` pairs; stores the value under the literal top-level store key
  `dest_key` (a dot does not nest), `""` when the key is missing or older than 90 days (digdag's
  TTL; expired rows are not deleted).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from .pg import ConnectionConfig, DbError, _message, _require_psycopg
from .protocol import RunnerError, TaskInput, TaskOutput, empty_output, merged_params

SITE_ID = 0
TTL_SECONDS = 7_776_000  # ParamServerClient.DEFAULT_TTL_IN_SEC: 90 days

CREATE_TABLE = (
    "CREATE TABLE IF NOT EXISTS params (key text NOT NULL, value text NOT NULL, value_type int NOT NULL, "
    "site_id integer, updated_at timestamptz NOT NULL, created_at timestamptz NOT NULL, "
    "CONSTRAINT params_site_id_key_uniq UNIQUE(site_id, key))"
)
UPSERT = (
    "INSERT INTO params (key, value, value_type, site_id, updated_at, created_at) "
    "VALUES (%s, %s, 0, %s, now(), now()) "
    "ON CONFLICT ON CONSTRAINT params_site_id_key_uniq DO UPDATE SET value = %s, updated_at = now()"
)
SELECT = (
    "SELECT value FROM params WHERE key = %s AND site_id = %s "
    f"AND updated_at + INTERVAL '{TTL_SECONDS} seconds' >= now()"
)


def _server(task_input: TaskInput) -> tuple[dict[str, Any], ConnectionConfig]:
    params = merged_params(task_input)
    server = params.get("param_server")
    server = dict(server) if isinstance(server, Mapping) else {}
    server_type = server.get("type")
    if not server_type:
        raise RunnerError("param_server.type is required to use this operator.", "ConfigError")
    if server_type != "postgresql":
        raise RunnerError(
            f"Unsupported param_server.type : {server_type} (kudig supports postgresql)", "ConfigError"
        )
    _require_psycopg()
    try:
        config = ConnectionConfig(server, task_input, prefix="param_server")
    except RunnerError as e:
        raise RunnerError(
            e.message.replace("Parameter '", "Parameter 'param_server."), e.error_class
        ) from None
    return params, config


def _local_pairs(params: Mapping[str, Any]) -> list[tuple[str, Any]]:
    keys = params.get("_local_keys")
    if not isinstance(keys, list):
        raise RunnerError("the task input lacks _local_keys (the task's own config keys)", "ProtocolError")
    pairs = [(str(k), params.get(k)) for k in keys]
    if not pairs:
        raise RunnerError("no key is set.", "ConfigError")
    return pairs


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, (dict, list)):
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def run_param_set(task_input: TaskInput, cwd: str | os.PathLike[str]) -> TaskOutput:
    params, config = _server(task_input)
    pairs = _local_pairs(params)
    import psycopg

    try:
        with config.connect() as conn:
            conn.execute(CREATE_TABLE.encode())
            with conn.transaction():
                for key, value in pairs:
                    text = _text(value)
                    if text is None:
                        continue
                    doc = json.dumps({"value": text}, ensure_ascii=False, separators=(",", ":"))
                    conn.execute(UPSERT.encode(), (key, doc, SITE_ID, doc))
    except psycopg.Error as e:
        raise DbError(config.scrub(f"Failed to set params [{_message(e)}]")) from None
    except DbError as e:
        raise DbError(config.scrub(e.message)) from None
    return empty_output()


def run_param_get(task_input: TaskInput, cwd: str | os.PathLike[str]) -> TaskOutput:
    params, config = _server(task_input)
    pairs = _local_pairs(params)
    import psycopg

    stored: dict[str, Any] = {}
    try:
        with config.connect() as conn:
            conn.execute(CREATE_TABLE.encode())
            for key, dest in pairs:
                if _text(dest) is None:
                    continue
                row = conn.execute(SELECT.encode(), (key, SITE_ID)).fetchone()
                value = ""
                if row is not None:
                    try:
                        value = str(json.loads(row[0]).get("value", ""))
                    except (ValueError, AttributeError):
                        value = ""
                stored[str(dest)] = value
    except psycopg.Error as e:
        raise DbError(config.scrub(f"Failed to get params [{_message(e)}]")) from None
    except DbError as e:
        raise DbError(config.scrub(e.message)) from None
    output = empty_output()
    output["store_params"] = stored
    return output
