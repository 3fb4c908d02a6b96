"""Stage 6 (write): rendered text -> generated/, all or nothing.

Consumes the output files (path relative to generated/ -> bytes), each as soon as it is rendered;
produces the new generated/ tree and a report of each file as created, updated, unchanged or
removed. The new tree is assembled in a staging directory beside generated/ (unchanged files are
hard-linked, so their inode and mtime are kept) and swapped in with one atomic rename exchange; a
build that fails before the swap leaves generated/ exactly as it was. ``stale_files`` is the same
comparison without writing, for ``build --check``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import shutil
import subprocess
import sys
from contextlib import suppress
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from qcompile.compiler import stager
from qcompile.errors import QcompileError

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100
_PIPE_SIZE = 1 << 20  # the largest a user may set by default (/proc/sys/fs/pipe-max-size)


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
    """Every file under ``directory`` as a relative POSIX path, sorted (os.walk: a no-change
    build lists generated/ on every run, and Path.rglob costs several times more)."""
    found = []
    for root, _, files in os.walk(directory):
        prefix = Path(root).relative_to(directory).as_posix()
        found.extend(f if prefix == "." else f"{prefix}/{f}" for f in files)
    return sorted(found)


def _change(current: Path, content: bytes) -> str:
    """ "created", "updated" or "unchanged": what writing ``content`` does to ``current``."""
    if not current.is_file():
        return "created"
    if current.read_bytes() != content or _mode(content) != _current_mode(current):
        return "updated"
    return "unchanged"


def compare(directory: Path, outputs: dict[str, bytes]) -> WriteReport:
    report = WriteReport()
    for path in sorted(outputs):
        getattr(report, _change(directory / path, outputs[path])).append(path)
    report.removed = [p for p in existing_files(directory) if p not in outputs]
    return report


def stale_files(directory: Path, outputs: dict[str, bytes]) -> list[str]:
    """Files of generated/ that a build would create, change or remove."""
    report = compare(directory, outputs)
    return sorted(report.created + report.updated + report.removed)


@cache
def _renameat2() -> Any:
    """libc's renameat2, or None; looked up once (find_library runs ldconfig)."""
    libc_name = ctypes.util.find_library("c")
    if not libc_name:
        return None
    return getattr(ctypes.CDLL(libc_name, use_errno=True), "renameat2", None)


def _exchange(first: Path, second: Path) -> bool:
    """Atomically swap two directories (Linux renameat2); False where unsupported."""
    renameat2 = _renameat2()
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


class WriteError(QcompileError):
    """A file of the new tree could not be written; generated/ is as it was."""


class StagedWrite:
    """The new tree, staged beside ``directory`` while the build is still producing it.

    ``add`` compares a file with the current tree and hands it to a writer process
    (``stager.py``), which writes it into the staging directory while the build renders the files
    that follow. ``commit`` adds whatever was not added yet, waits for the writer and swaps the
    staged tree in. Leaving the ``with`` block without a commit (an error anywhere) stops the
    writer, deletes the staging directory and changes nothing. The writer starts on the first
    file that differs, so a build whose output is unchanged never touches the tree.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.report = WriteReport()
        self._staging = directory.with_name(f".{directory.name}.staging-{os.getpid()}")
        self._writer: subprocess.Popen[bytes] | None = None
        self._pending_links: list[str] = []  # unchanged files, linked once the writer runs
        self._added: set[str] = set()

    def __enter__(self) -> StagedWrite:
        return self

    def __exit__(self, *_: object) -> None:
        if self._writer is not None:
            if self._writer.returncode is None:
                self._writer.kill()  # an error ended the block: what it staged is thrown away
            with suppress(BrokenPipeError):
                self._writer.__exit__(None, None, None)  # closes its pipes and reaps it
        shutil.rmtree(self._staging, ignore_errors=True)

    def add(self, path: str, content: bytes) -> None:
        if path in self._added:
            raise ValueError(f"{path} added twice")
        self._added.add(path)
        change = _change(self.directory / path, content)
        getattr(self.report, change).append(path)
        if change == "unchanged":
            if self._writer is None:
                self._pending_links.append(path)
            else:
                self._link(path)
            return
        self._start()
        # no fsync per file: generated/ is derived from committed inputs, so a power cut can at
        # worst ask for a rebuild; the swap in commit already makes a failed build harmless
        self._send(stager.WRITE, _mode(content), path, content)

    def commit(self, outputs: dict[str, bytes]) -> WriteReport:
        """Make ``directory`` hold exactly ``outputs`` (a superset of what was added)."""
        extra = sorted(self._added - outputs.keys())
        if extra:
            raise ValueError(f"added but not among the outputs: {', '.join(extra)}")
        for path in sorted(outputs.keys() - self._added):
            self.add(path, outputs[path])
        report = self.report
        report.removed = [p for p in existing_files(self.directory) if p not in outputs]
        for listed in (report.created, report.updated, report.unchanged):
            listed.sort()
        if not report.changed:
            return report
        self._start()  # a build that only removes files still swaps in a new tree
        self._finish()
        if self.directory.exists():
            if not _exchange(self._staging, self.directory):
                # no atomic exchange here: two renames, with a window where only the backup exists
                backup = self.directory.with_name(f".{self.directory.name}.previous-{os.getpid()}")
                os.rename(self.directory, backup)
                os.rename(self._staging, self.directory)
                os.rename(backup, self._staging)  # deleted on leaving the with block
        else:
            os.rename(self._staging, self.directory)
        _fsync_directory(self.directory.parent)
        return report

    def _start(self) -> None:
        if self._writer is None:
            shutil.rmtree(self._staging, ignore_errors=True)  # left by a killed build of this pid
            self._writer = subprocess.Popen(
                [sys.executable, "-I", "-S", stager.__file__, os.fsdecode(self._staging)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
            assert self._writer.stdin is not None
            with suppress(ImportError, OSError, AttributeError):  # Linux: render further ahead
                import fcntl

                fcntl.fcntl(self._writer.stdin.fileno(), fcntl.F_SETPIPE_SZ, _PIPE_SIZE)
        for path in self._pending_links:
            self._link(path)
        self._pending_links.clear()

    def _link(self, path: str) -> None:
        """Stage the current tree's file as it is (a hard link: its inode and mtime are kept)."""
        self._send(stager.LINK, 0, path, os.fsencode((self.directory / path).resolve()))

    def _send(self, operation: bytes, mode: int, path: str, payload: bytes) -> None:
        assert self._writer is not None and self._writer.stdin is not None
        name = os.fsencode(path)
        with suppress(BrokenPipeError):  # the writer stopped on an error: _finish reports it
            self._writer.stdin.write(
                stager.HEADER.pack(operation, mode, len(name), len(payload)) + name + payload
            )

    def _finish(self) -> None:
        assert self._writer is not None and self._writer.stdin is not None
        with suppress(BrokenPipeError):
            self._writer.stdin.close()
        output = self._writer.stdout.read().decode(errors="replace") if self._writer.stdout else ""
        if self._writer.wait() == 0:
            return
        lines = [line for line in output.splitlines() if line.strip()]
        fields = lines[-1].split("\t") if lines else []
        if len(fields) == 3 and fields[0].isdigit():
            message = fields[1]
            where = f"{self.directory.name}/{fields[2]}" if fields[2] else self._staging.name
        else:  # the writer died without its own report: say what it printed
            message = f"the file writer failed ({lines[-1] if lines else 'no output'})"
            where = self.directory.name
        raise WriteError(f"cannot write {where}: {message}; {self.directory.name}/ is unchanged")


def write_tree(directory: Path, outputs: dict[str, bytes]) -> WriteReport:
    """Make ``directory`` hold exactly ``outputs``; untouched when nothing differs."""
    with StagedWrite(directory) as staged:
        return staged.commit(outputs)
