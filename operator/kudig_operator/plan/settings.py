"""The controller's own configuration, as far as plans depend on it."""

from __future__ import annotations

from dataclasses import dataclass

from kudig.api import PodDefaults
from kudig.engine.core import (
    Evaluator,
)


@dataclass(frozen=True)
class Settings:
    """The controller's own configuration, as far as plans depend on it."""

    runner_image: str
    controller_id: str
    evaluator: Evaluator
    # every task pod's defaults (KUDIG_TASK_POD, Helm's `taskPod`), under the Workflow's `spec.pod`
    task_pod: PodDefaults | None = None
    # which finished task pods stay once their logs are stored (KUDIG_POD_RETENTION): all, failed, none
    pod_retention: str = "all"
