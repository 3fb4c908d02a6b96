"""Golden files: every artefact the example conf/ generates, byte for byte.

A change to any output shows up as a diff of tests/golden/ in review. Rewrite them with
``pytest --update-golden`` and read the diff before committing it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import GOLDEN, REPO, cli, tree_digest, without_production_example


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


# -- what the manifest pins: the version and the templates, not the compiler's Python source ------


def _qcompile_copy(tmp_path: Path) -> Path:
    """This checkout's qcompile package copied aside, to edit without touching the real one."""
    source = tmp_path / "src"
    shutil.copytree(
        REPO / "src/qcompile", source / "qcompile", ignore=shutil.ignore_patterns("__pycache__")
    )
    return source


def _build_with(source: Path, project: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "qcompile.cli", "build"],
        cwd=project,
        env={**os.environ, "PYTHONPATH": str(source), "QCOMPILE_PROJECT": str(project)},
        capture_output=True,
        text=True,
        timeout=300,
    )


def _differing(generated: Path, golden: Path) -> list[str]:
    produced, expected = tree_digest(generated), tree_digest(golden)
    assert sorted(produced) == sorted(expected)
    return sorted(path for path in produced if produced[path] != expected[path])


def test_a_comment_only_compiler_change_leaves_every_golden_file_unchanged(
    example: Path, tmp_path: Path
) -> None:
    source = _qcompile_copy(tmp_path)
    modules = sorted((source / "qcompile/compiler").rglob("*.py"))
    for module in modules:  # a comment and a docstring edit in every compiler module
        text = module.read_text(encoding="utf-8")
        text = text.replace('"""', '"""Edited. ', 1) if text.startswith('"""') else text
        module.write_text(text + "\n# a reviewer's comment\n", encoding="utf-8")
    built = _build_with(source, example)
    assert built.returncode == 0, built.stderr
    assert _differing(example / "generated", GOLDEN / "example") == []


def test_a_template_change_changes_exactly_its_outputs(example: Path, tmp_path: Path) -> None:
    source = _qcompile_copy(tmp_path)
    template = source / "qcompile/compiler/templates/runbook.md.j2"
    template.write_text(template.read_text(encoding="utf-8") + "\nOne more line.\n", "utf-8")
    built = _build_with(source, example)
    assert built.returncode == 0, built.stderr
    runbooks = sorted(f"{p.name}/runbook.md" for p in (GOLDEN / "example").glob("STR-*"))
    assert len(runbooks) >= 5
    assert _differing(example / "generated", GOLDEN / "example") == [*runbooks, "manifest.json"]
    assert all(
        (example / "generated" / runbook).read_text().endswith("One more line.\n")
        for runbook in runbooks
    )


def test_a_changed_compiler_in_a_development_install_is_never_hidden_by_the_fast_path(
    example: Path, tmp_path: Path
) -> None:
    """Same version, same templates, different code: the manifest cannot tell, the local record
    of the compiler source (.qcompile/, never committed) can, so everything is rendered again."""
    without_production_example(example)  # its signed checklist would go stale: another test
    assert cli(example, "build").exit_code == 0
    before = tree_digest(example / "generated")
    source = _qcompile_copy(tmp_path)
    plan = source / "qcompile/compiler/plan.py"
    text = plan.read_text(encoding="utf-8")
    assert text.count('REGENERATE = "qcompile build"') == 1
    plan.write_text(text.replace('REGENERATE = "qcompile build"', 'REGENERATE = "make"'), "utf-8")
    built = _build_with(source, example)
    assert built.returncode == 0, built.stderr
    after = tree_digest(example / "generated")
    changed = sorted(path for path in after if after[path] != before.get(path))
    assert "index.md" in changed and any(p.endswith("/runbook.md") for p in changed), changed
    again = _build_with(source, example)  # now recorded: the fast path applies again
    assert again.returncode == 0 and "up to date" in again.stdout, again.stdout
    assert cli(example, "build").exit_code == 0  # back to the real compiler: rendered again
    assert tree_digest(example / "generated") == before
