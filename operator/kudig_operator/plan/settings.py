"""The controller's own configuration, as far as plans depend on it."""

from __future__ import annotations

from dataclasses import dataclass

from kudig.engine.core import (
    Evaluator,
)


@dataclass(frozen=True)
class Settings:
    """The controller's own configuration, as far as plans depend on it."""

    runner_image: str
    controller_id: str
    evaluator: Evaluator
