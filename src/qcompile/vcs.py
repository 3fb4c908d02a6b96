"""Reading a project's files as git has them: a revision's commit, a file at a commit.

Shared by the release history (lifecycle) and the backtest report's "since the committed report"
(research): both compare what is on disk with what was committed.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from qcompile.errors import QcompileError


class VcsError(QcompileError):
    """git is missing or refused a command; the message quotes git."""


def git(root: Path, *args: str) -> bytes:
    """Run git in ``root``; a failure becomes a VcsError quoting git's message."""
    try:
        done = subprocess.run(["git", *args], cwd=root, capture_output=True, check=True, timeout=60)
    except FileNotFoundError as error:
        raise VcsError("git is not installed (or not on PATH)") from error
    except subprocess.CalledProcessError as error:
        message = error.stderr.decode(errors="replace").strip() or f"exit {error.returncode}"
        raise VcsError(f"`git {' '.join(args)}` failed: {message}") from error
    return done.stdout


def commit_of(root: Path, revision: str) -> str | None:
    """The full sha of a git revision, or None when git does not know it (or is missing)."""
    if revision.startswith("-"):
        return None  # never let a revision be read as an option
    try:
        found = git(root, "rev-parse", "--verify", "--quiet", f"{revision}^{{commit}}")
    except VcsError:
        return None
    return found.decode().strip()


def file_at(root: Path, commit: str, path: str) -> bytes | None:
    """``path`` (relative to ``root``) as committed in ``commit``; None where it is not."""
    try:
        return git(root, "cat-file", "blob", f"{commit}:./{path}")
    except VcsError:
        return None


def committed_file(root: Path, path: str, revision: str = "HEAD") -> tuple[str, bytes] | None:
    """(label, content) of ``path`` as committed at ``revision``; None outside a repository or
    where the file is not committed."""
    commit = commit_of(root, revision)
    if commit is None:
        return None
    content = file_at(root, commit, path)
    return None if content is None else (f"{revision} ({commit[:7]})", content)
