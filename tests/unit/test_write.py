"""generated/ is replaced all at once: unchanged files keep their inode, failures change nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from qcompile.compiler import write
from qcompile.compiler.write import stale_files, write_tree


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


def test_a_failure_while_staging_leaves_generated_untouched(tmp_path: Path) -> None:
    target = tmp_path / "generated"
    write_tree(target, {"keep.txt": b"old", "b.txt": b"old"})
    before = _tree(target)
    # a file where the next one needs a directory: a real error, raised by the writer process
    with pytest.raises(write.WriteError) as raised:
        write_tree(target, {"a.txt": b"new", "a.txt/inner.txt": b"new", "b.txt": b"new"})
    assert str(raised.value) == (
        "cannot write generated/a.txt/inner.txt: File exists; generated/ is unchanged"
    )
    assert _tree(target) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["generated"]


def test_an_unchanged_tree_is_left_alone(tmp_path: Path) -> None:
    target = tmp_path / "generated"
    write_tree(target, {"a/x.txt": b"1", "b.txt": b"2"})
    inode = target.stat().st_ino
    report = write_tree(target, {"a/x.txt": b"1", "b.txt": b"2"})
    assert not report.changed and report.unchanged == ["a/x.txt", "b.txt"]
    assert target.stat().st_ino == inode  # no staged copy was swapped in
    assert sorted(p.name for p in tmp_path.iterdir()) == ["generated"]


def test_a_build_that_only_removes_files_still_swaps(tmp_path: Path) -> None:
    target = tmp_path / "generated"
    write_tree(target, {"a.txt": b"1", "gone/b.txt": b"2"})
    report = write_tree(target, {"a.txt": b"1"})
    assert (report.unchanged, report.removed) == (["a.txt"], ["gone/b.txt"])
    assert _tree(target) == {"a.txt": b"1"}


def test_files_added_while_rendering_and_at_commit_make_one_tree(tmp_path: Path) -> None:
    target = tmp_path / "generated"
    write_tree(target, {"s1/a.txt": b"old", "s1/b.txt": b"same", "s2/c.txt": b"drop"})
    with write.StagedWrite(target) as staged:
        staged.add("s1/a.txt", b"new")
        staged.add("s1/b.txt", b"same")
        report = staged.commit({"s1/a.txt": b"new", "s1/b.txt": b"same", "index.md": b"i"})
    assert (report.created, report.updated, report.unchanged, report.removed) == (
        ["index.md"],
        ["s1/a.txt"],
        ["s1/b.txt"],
        ["s2/c.txt"],
    )
    assert _tree(target) == {"s1/a.txt": b"new", "s1/b.txt": b"same", "index.md": b"i"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["generated"]


def test_an_error_while_rendering_discards_what_was_staged(tmp_path: Path) -> None:
    target = tmp_path / "generated"
    write_tree(target, {"a.txt": b"old"})
    before = _tree(target)
    with pytest.raises(RuntimeError, match="template failed"), write.StagedWrite(target) as staged:
        staged.add("a.txt", b"new")
        staged.add("b.txt", b"new")
        raise RuntimeError("template failed")
    assert _tree(target) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["generated"]


def test_a_file_added_but_missing_from_the_outputs_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "generated"
    write_tree(target, {"a.txt": b"old"})
    with pytest.raises(ValueError, match=r"stray\.txt"), write.StagedWrite(target) as staged:
        staged.add("stray.txt", b"x")
        staged.commit({"a.txt": b"new"})
    assert _tree(target) == {"a.txt": b"old"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["generated"]
