"""Small shared pieces of status building: timestamps and conditions."""

from __future__ import annotations

from datetime import UTC, datetime

from kudig.schema import Condition


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def set_condition(conditions: list[Condition], new: Condition) -> list[Condition]:
    """Replace the condition of `new.type`, keeping its lastTransitionTime when nothing changed."""
    out = []
    replaced = False
    for c in conditions:
        if c.type == new.type:
            replaced = True
            if c.status == new.status and c.reason == new.reason and c.message == new.message:
                keep = c.model_copy()
                keep.observed_generation = new.observed_generation
                out.append(keep)
            else:
                out.append(new)
        else:
            out.append(c)
    if not replaced:
        out.append(new)
    return out
