"""A Workflow object as the controller compiled it."""

from __future__ import annotations

from dataclasses import dataclass

from kudig.schema import WorkflowSpec
from kudig.workflow import Workflow


@dataclass(frozen=True)
class CompiledWorkflow:
    """A Workflow object as the controller compiled it (the shell's WorkflowStore builds it)."""

    name: str
    uid: str
    generation: int
    spec: WorkflowSpec | None
    workflow: Workflow | None = None
    digest: str | None = None
    error: str | None = None
    reason: str = "CompileError"
    project: str | None = None  # the `kudig.io/project` label (a trigger may name the project)

    @property
    def ok(self) -> bool:
        return self.workflow is not None and self.spec is not None and self.error is None
