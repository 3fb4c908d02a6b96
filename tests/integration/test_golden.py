"""Golden files: every artefact the example conf/ generates, byte for byte.

A change to any output shows up as a diff of tests/golden/ in review. Rewrite them with
``pytest --update-golden`` and read the diff before committing it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.conftest import GOLDEN, REPO, cli, tree_digest


def _compare_with_golden(generated: Path, golden: Path, update: bool) -> None:
    if update:
        shutil.rmtree(golden, ignore_errors=True)
        shutil.copytree(generated, golden)
    produced, expected = tree_digest(generated), tree_digest(golden)
    assert sorted(produced) == sorted(expected), "a generated file was added or removed"
    for path in sorted(produced):
        assert (generated / path).read_text() == (golden / path).read_text(), f"{path} differs"


def test_example_conf_matches_golden_files(example: Path, update_golden: bool) -> None:
    result = cli(example, "build")
    assert result.exit_code == 0, result.output
    _compare_with_golden(example / "generated", GOLDEN / "example", update_golden)


def test_committed_generated_tree_is_the_build_of_committed_conf(example: Path) -> None:
    """The repository's own generated/ is what building its conf/ gives (what --check enforces)."""
    cli(example, "build")
    assert tree_digest(example / "generated") == tree_digest(REPO / "generated")
