"""Fixtures for the runner tests (helpers live in runner_helpers.py)."""

from runner_helpers import project, run_task

__all__ = ["project", "run_task"]
