"""`kudig secrets --local`: digdag's local secrets, for `kudig run` and `kudig scheduler`.

Kept in one JSON file, `$KUDIG_CONFIG_DIR/secrets.json` (default `~/.config/kudig/`), created with
mode 0600 and replaced atomically. Values are never printed: listing shows the keys. At run time
each value is handed to the runner the way a pod gets a Kubernetes Secret: in an environment
variable (`KUDIG_SECRET_<KEY>`, dots as `__`) that the task input only names and that task processes
never inherit. A `KUDIG_SECRET_<KEY>` already in the environment wins over the file.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import MutableMapping
from pathlib import Path

from kudig.errors import KudigError

PREFIX = "KUDIG_SECRET_"
_KEY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


def config_dir() -> Path:
    return Path(os.environ.get("KUDIG_CONFIG_DIR") or Path.home() / ".config" / "kudig")


def secrets_file() -> Path:
    return config_dir() / "secrets.json"


def check_key(key: str) -> str:
    if not _KEY.match(key):
        raise KudigError(f"Invalid secret key {key!r}: letters, digits, '_', '.' and '-' only")
    return key


def env_name(key: str) -> str:
    return PREFIX + key.replace(".", "__").replace("-", "_").upper()


def load(path: Path | None = None) -> dict[str, str]:
    path = path or secrets_file()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        raise KudigError(f"Cannot read the local secrets in {path}: {e}") from None
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise KudigError(f"{path}: not a map of secret keys to strings")
    return {str(k): v for k, v in data.items()}


def save(secrets: dict[str, str], path: Path | None = None) -> None:
    path = path or secrets_file()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(prefix=".secrets-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:  # mkstemp: mode 0600
            json.dump(dict(sorted(secrets.items())), f, indent=2)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def export(environ: MutableMapping[str, str], path: Path | None = None) -> dict[str, str]:
    """Put the stored secrets into `environ` (without overriding) and return the task-input map:
    secret key -> the variable holding its value, for the stored keys and `KUDIG_SECRET_*` ones."""
    out: dict[str, str] = {}
    for key, value in load(path).items():
        name = env_name(key)
        environ.setdefault(name, value)
        out[key] = name
    for name in list(environ):
        if name.startswith(PREFIX):
            out.setdefault(name[len(PREFIX) :].replace("__", ".").lower(), name)
    return out
