"""The one exception type users see.

Every error that reaches a user (CLI, Workflow status condition, task error) is a `KudigError`
carrying the file and line it came from, so messages read like a compiler's: `wf.dig:12: ...`.
Anything else escaping to the top is a bug in kudig, not in the user's project.
"""

from __future__ import annotations


class KudigError(Exception):
    """A user-facing error: message plus optional file and line."""

    def __init__(self, message: str, file: str | None = None, line: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.file = file
        self.line = line

    def __str__(self) -> str:
        if self.file and self.line:
            return f"{self.file}:{self.line}: {self.message}"
        if self.file:
            return f"{self.file}: {self.message}"
        return self.message

    def at(self, file: str | None, line: int | None) -> KudigError:
        """Fill in a location the raiser did not know (keeps an existing one)."""
        if self.file is None:
            self.file = file
        if self.line is None:
            self.line = line
        return self


class ConfigError(KudigError):
    """A .dig file (or a parameter) is not what digdag accepts."""
