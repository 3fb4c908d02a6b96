"""Where a qcompile project's files live, found from any directory inside it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from qcompile.errors import ProjectNotFoundError

PRIMARY_CONFIG = "qcompile.yaml"
CONFIG_GROUPS = ("strategy", "universe", "costs", "data", "deployment")


@dataclass(frozen=True)
class Project:
    """A project root: the directory holding ``conf/qcompile.yaml``."""

    root: Path

    @property
    def conf_dir(self) -> Path:
        return self.root / "conf"

    @property
    def generated_dir(self) -> Path:
        return self.root / "generated"

    @property
    def reports_dir(self) -> Path:
        return self.root / "reports"

    @property
    def cache_dir(self) -> Path:
        return self.root / ".qcompile"

    def contains(self, path: Path) -> bool:
        """Whether ``path`` (symlinks followed) lies inside the project."""
        return path.resolve().is_relative_to(self.root.resolve())

    def rel(self, path: Path) -> str:
        """A path relative to the root, with forward slashes: artefacts never hold absolute paths."""
        return path.resolve().relative_to(self.root.resolve()).as_posix()

    def config_files(self) -> list[Path]:
        """Every YAML file under conf/, sorted so that all later stages iterate deterministically."""
        found = [
            p for p in self.conf_dir.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file()
        ]
        return sorted(found, key=lambda p: p.relative_to(self.conf_dir).as_posix())

    def strategy_files(self) -> list[Path]:
        directory = self.conf_dir / "strategy"
        if not directory.is_dir():
            return []
        return sorted(p for p in directory.iterdir() if p.suffix in (".yaml", ".yml"))

    def group_options(self, group: str) -> list[str]:
        directory = self.conf_dir / group
        if not directory.is_dir():
            return []
        return sorted(p.stem for p in directory.iterdir() if p.suffix in (".yaml", ".yml"))


def find_project(start: Path | None = None) -> Project:
    """Walk up from ``start`` (default: $QCOMPILE_PROJECT or the cwd) to the project root."""
    if start is None:
        env = os.environ.get("QCOMPILE_PROJECT")
        start = Path(env) if env else Path.cwd()
    start = start.resolve()
    for candidate in (start, *start.parents):
        if (candidate / "conf" / PRIMARY_CONFIG).is_file():
            return Project(candidate)
    raise ProjectNotFoundError(
        f"no conf/{PRIMARY_CONFIG} in {start} or any parent directory; "
        "run qcompile inside a project (or set QCOMPILE_PROJECT)"
    )


def user_cache_dir(name: str) -> Path:
    """``$XDG_CACHE_HOME/qcompile/<name>`` (default ~/.cache): what is worth keeping between
    projects and runs on one machine, never part of a project."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "qcompile" / name
