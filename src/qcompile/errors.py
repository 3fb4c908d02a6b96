"""Errors and diagnostics shared by every compiler stage.

Stages never print and never exit: they collect :class:`Diagnostic` records and raise one
:class:`DiagnosticsError` carrying all of them. The CLI renders that list at a single boundary.
"""

from __future__ import annotations

from dataclasses import dataclass, field

COMMAND_LINE = "<command line>"


class QcompileError(Exception):
    """Base class of every error qcompile raises on purpose."""


@dataclass(frozen=True, order=True)
class Diagnostic:
    """One problem found in the user's configuration.

    ``file`` is relative to the project root (or ``<command line>`` for an override); ``line``
    is 1-based, 0 when unknown. ``code`` is stable so that docs can list every error.
    """

    file: str
    line: int
    key: str
    message: str
    code: str
    hint: str = ""
    severity: str = field(default="error", compare=False)

    def render(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        key = f"{self.key}: " if self.key else ""
        text = f"{where}: {self.severity}: {key}{self.message} [{self.code}]"
        if self.hint:
            text += f"\n    hint: {self.hint}"
        return text


class DiagnosticsError(QcompileError):
    """The configuration has problems; ``diagnostics`` lists all of them, sorted."""

    def __init__(self, diagnostics: list[Diagnostic]):
        self.diagnostics = sorted(set(diagnostics))
        super().__init__(f"{len(self.diagnostics)} problem(s) in the configuration")

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "error"]


class ProjectNotFoundError(QcompileError):
    """No ``conf/qcompile.yaml`` above the working directory."""


class StaleError(QcompileError):
    """A ``--check`` found files out of date; ``paths`` names them relative to the root."""

    def __init__(self, paths: list[str], remedy: str = "run `qcompile build`"):
        self.paths = paths
        self.remedy = remedy
        super().__init__(f"{len(paths)} file(s) out of date")
