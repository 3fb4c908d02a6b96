"""Stage 6 (write): rendered text -> generated/, all or nothing.

Consumes the complete set of output files (path relative to generated/ -> bytes); produces the
new generated/ tree and a report of each file as created, updated, unchanged or removed. The new
tree is assembled in a staging directory beside generated/ (unchanged files are hard-linked, so
their inode and mtime are kept) and swapped in with one atomic rename exchange; a build that fails
before the swap leaves generated/ exactly as it was. ``stale_files`` is the same comparison
without writing, for ``build --check``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


@dataclass
class WriteReport:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.created or self.updated or self.removed)


def _mode(content: bytes) -> int:
    """Scripts (a ``#!`` line) are executable, so `generated/<id>/rollback.sh` runs as written."""
    return 0o755 if content.startswith(b"#!") else 0o644


def _current_mode(path: Path) -> int:
    return 0o755 if os.access(path, os.X_OK) else 0o644


def existing_files(directory: Path) -> list[str]:
    if not directory.is_dir():
        return []
    return sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file())


def compare(directory: Path, outputs: dict[str, bytes]) -> WriteReport:
    report = WriteReport()
    for path in sorted(outputs):
        target = directory / path
        if not target.is_file():
            report.created.append(path)
        elif target.read_bytes() != outputs[path] or _mode(outputs[path]) != _current_mode(target):
            report.updated.append(path)
        else:
            report.unchanged.append(path)
    report.removed = [p for p in existing_files(directory) if p not in outputs]
    return report


def stale_files(directory: Path, outputs: dict[str, bytes]) -> list[str]:
    """Files of generated/ that a build would create, change or remove."""
    report = compare(directory, outputs)
    return sorted(report.created + report.updated + report.removed)


def _exchange(first: Path, second: Path) -> bool:
    """Atomically swap two directories (Linux renameat2); False where unsupported."""
    libc_name = ctypes.util.find_library("c")
    if not libc_name:
        return False
    libc = ctypes.CDLL(libc_name, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    result = renameat2(
        _AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE
    )
    if result == 0:
        return True
    if ctypes.get_errno() in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()), str(first))


def _fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def write_tree(directory: Path, outputs: dict[str, bytes]) -> WriteReport:
    """Make ``directory`` hold exactly ``outputs``; untouched when nothing differs."""
    report = compare(directory, outputs)
    if not report.changed:
        return report
    staging = directory.with_name(f".{directory.name}.staging-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        staging.mkdir(parents=True)
        made = {staging}
        for path in sorted(outputs):
            target = staging / path
            if target.parent not in made:
                target.parent.mkdir(parents=True, exist_ok=True)
                made.add(target.parent)
            if path in report.unchanged:
                os.link(directory / path, target)
                continue
            # no fsync per file: generated/ is derived from committed inputs, so a power cut can
            # at worst ask for a rebuild; the swap below already makes a failed build harmless
            target.write_bytes(outputs[path])
            target.chmod(_mode(outputs[path]))
        if directory.exists():
            if not _exchange(staging, directory):
                # no atomic exchange here: two renames, with a window where only the backup exists
                backup = directory.with_name(f".{directory.name}.previous-{os.getpid()}")
                os.rename(directory, backup)
                os.rename(staging, directory)
                staging = backup
        else:
            os.rename(staging, directory)
        _fsync_directory(directory.parent)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return report
