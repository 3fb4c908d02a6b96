"""generated/ is replaced all at once: unchanged files keep their inode, failures change nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from qcompile import write
from qcompile.write import stale_files, write_tree


def _tree(directory: Path) -> dict[str, bytes]:
    return {
        p.relative_to(directory).as_posix(): p.read_bytes()
        for p in directory.rglob("*")
        if p.is_file()
    }


def test_write_reports_each_file_and_keeps_unchanged_inodes(tmp_path: Path) -> None:
    target = tmp_path / "generated"
    first = write_tree(target, {"a/x.txt": b"1", "b.txt": b"2", "old.txt": b"3"})
    assert first.created == ["a/x.txt", "b.txt", "old.txt"]
    inode = (target / "a/x.txt").stat().st_ino
    second = write_tree(target, {"a/x.txt": b"1", "b.txt": b"changed", "c.txt": b"new"})
    assert (second.created, second.updated, second.unchanged, second.removed) == (
        ["c.txt"],
        ["b.txt"],
        ["a/x.txt"],
        ["old.txt"],
    )
    assert (target / "a/x.txt").stat().st_ino == inode
    assert _tree(target) == {"a/x.txt": b"1", "b.txt": b"changed", "c.txt": b"new"}
    assert stale_files(target, {"a/x.txt": b"1"}) == ["b.txt", "c.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["generated"]  # no staging left behind


def test_without_an_atomic_exchange_two_renames_give_the_same_result(
    tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setattr(write, "_exchange", lambda first, second: False)
    target = tmp_path / "generated"
    write_tree(target, {"x.txt": b"1"})
    write_tree(target, {"x.txt": b"2", "y.txt": b"3"})
    assert _tree(target) == {"x.txt": b"2", "y.txt": b"3"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["generated"]


def test_a_failure_while_staging_leaves_generated_untouched(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "generated"
    write_tree(target, {"keep.txt": b"old", "b.txt": b"old"})
    before = _tree(target)
    real = Path.write_bytes
    calls = []

    def failing(self: Path, data: bytes) -> int:
        calls.append(self.name)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real(self, data)

    monkeypatch.setattr(Path, "write_bytes", failing)
    with pytest.raises(OSError):
        write_tree(target, {"a.txt": b"new", "b.txt": b"new", "c.txt": b"new"})
    assert _tree(target) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["generated"]
