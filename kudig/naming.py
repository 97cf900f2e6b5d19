"""Names of Kubernetes objects derived from digdag identities.

A Session's name is a function of (workflow, session_time), so the API server itself rejects a
second Session for the same time (AlreadyExists) — digdag's "one session per time" rule with
no lock of our own. Kubernetes names are DNS-1123 subdomains, hence the normalisation.
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime

_NOT_DNS = re.compile(r"[^a-z0-9-]+")


def dns_label(text: str, limit: int = 63) -> str:
    """Lower-case, `-` for anything else; a short hash keeps distinct inputs distinct."""
    base = _NOT_DNS.sub("-", text.lower()).strip("-")
    if base == text and len(base) <= limit:
        return base
    digest = hashlib.sha256(text.encode()).hexdigest()[:6]
    return f"{base[: limit - 7].rstrip('-')}-{digest}" if base else digest


def session_name(workflow: str, session_time: datetime) -> str:
    """`<workflow>-<UTC yyyymmddThhmmss>`: same instant, same name, whatever the offset."""
    stamp = session_time.astimezone(UTC).strftime("%Y%m%dt%H%M%S")
    return f"{dns_label(workflow, 63 - len(stamp) - 1)}-{stamp}"
