"""`qcompile release`, `history` and `diff` in real temporary git repositories.

Each test copies a repository prepared once per module (the example project, built and committed)
so that no test builds more than it changes.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from qcompile.lifecycle.releases import release
from qcompile.project import Project
from tests.conftest import cli, copy_example_project, edit

STRATEGY = "STR-2026-0007"
CONF = "conf/strategy/ma_trend.yaml"
HISTORY = f"releases/{STRATEGY}.jsonl"
RELEASER = "releaser@example.com"
GIT_ENV = {
    "GIT_AUTHOR_NAME": "Test",
    "GIT_AUTHOR_EMAIL": "author@example.com",
    "GIT_COMMITTER_NAME": "Test",
    "GIT_COMMITTER_EMAIL": "author@example.com",
    "GIT_CONFIG_NOSYSTEM": "1",
}


def git(root: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "commit.gpgsign=false", *args],
        cwd=root,
        env={**os.environ, **GIT_ENV},
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def commit_all(root: Path, message: str) -> str:
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", message)
    return git(root, "rev-parse", "HEAD")


def build(root: Path) -> None:
    result = cli(root, "build")
    assert result.exit_code == 0, result.output


def bump(root: Path, fast: int = 30, version: str | None = "2.2.0") -> None:
    """Change a signal parameter (and the strategy version) and rebuild, without committing."""
    edit(root / CONF, "fast: 20", f"fast: {fast}")
    if version:
        edit(root / CONF, "version: 2.1.0", f"version: {version}")
    build(root)


def fixed_clock() -> dt.datetime:
    return dt.datetime(2026, 3, 2, 10, 15, 30, tzinfo=dt.timezone(dt.timedelta(hours=1)))


@pytest.fixture(scope="module")
def base_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example project, built and committed in a fresh git repository."""
    root = copy_example_project(tmp_path_factory.mktemp("base") / "project")
    build(root)
    (root / ".gitignore").write_text(".qcompile/\n")
    git(root, "init", "-q")
    git(root, "config", "user.email", RELEASER)
    commit_all(root, "initial")
    return root


@pytest.fixture(scope="module")
def two_releases_repo(base_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Releases 2.1.0 and 2.2.0 (fast 20 -> 30), each in its own commit."""
    root = tmp_path_factory.mktemp("two") / "project"
    shutil.copytree(base_repo, root, symlinks=True)
    first = cli(root, "release", STRATEGY, "--note", "first")
    assert first.exit_code == 0, first.output
    commit_all(root, "record release 2.1.0")
    bump(root)
    commit_all(root, "fast 30")
    second = cli(root, "release", STRATEGY)
    assert second.exit_code == 0, second.output
    commit_all(root, "record release 2.2.0")
    return root


@pytest.fixture
def repo(base_repo: Path, tmp_path: Path) -> Path:
    root = tmp_path / "project"
    shutil.copytree(base_repo, root, symlinks=True)
    return root


@pytest.fixture
def released(two_releases_repo: Path, tmp_path: Path) -> Path:
    root = tmp_path / "project"
    shutil.copytree(two_releases_repo, root, symlinks=True)
    return root


def records(root: Path) -> list[dict]:
    return [json.loads(line) for line in (root / HISTORY).read_text().splitlines()]


def test_release_records_version_pins_artefacts_and_commit(repo: Path) -> None:
    recorded = release(Project(repo), STRATEGY, note=None, clock=fixed_clock)
    head = git(repo, "rev-parse", "HEAD")
    folder = repo / "generated" / STRATEGY
    assert recorded.commit == head and recorded.version == "2.1.0" and recorded.phase == "research"
    assert recorded.released_at == "2026-03-02T09:15:30Z"
    assert recorded.released_by == RELEASER and recorded.previous is None
    assert recorded.artefacts == {
        f"generated/{STRATEGY}/{p.name}": hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.iterdir())
    }
    assert list(recorded.artefacts) == sorted(recorded.artefacts)
    assert recorded.pins["strategy"] == {"id": STRATEGY, "version": "2.1.0"}
    assert recorded.pins["signal"]["name"] == "ma_crossover"
    assert recorded.pins["signal"]["version"] == "1.4.0"
    assert len(recorded.pins["signal"]["source_sha256"]) == 64
    data = recorded.pins["data"]
    assert data["api_version"] == "pypi-snapshot-1" and data["protocol"] == "documented"
    assert data["timestamp"] == {"unit": "ms", "timezone": "UTC", "stamping": "session_date"}
    assert len(data["fingerprint"]) == 64
    # one canonical line: sorted keys, compact, newline-terminated
    text = (repo / HISTORY).read_text()
    assert text == json.dumps(recorded.to_dict(), sort_keys=True, separators=(",", ":")) + "\n"


def test_history_lists_a_release_with_its_commit(repo: Path) -> None:
    done = cli(repo, "release", STRATEGY, "--note", "go live", "--by", "ops@example.com")
    assert done.exit_code == 0, done.output
    head = git(repo, "rev-parse", "HEAD")
    assert f"released {STRATEGY} 2.1.0 (research) at commit {head[:12]}" in done.output
    assert f"recorded in {HISTORY}" in done.output

    shown = cli(repo, "history", STRATEGY)
    assert shown.exit_code == 0, shown.output
    for text in ("2.1.0", head[:12], "ops@example.com", "ma_crossover@1.4.0", "go live"):
        assert text in shown.output
    field = cli(repo, "history", "ma_trend", "--release", "latest", "--field", "commit")
    assert field.exit_code == 0 and field.output == f"{head}\n"
    pin = cli(repo, "history", STRATEGY, "--release", "2.1.0", "--field", "pins.signal.version")
    assert pin.output == "1.4.0\n"


def test_history_without_releases(repo: Path) -> None:
    result = cli(repo, "history", STRATEGY)
    assert result.exit_code == 0 and "no releases yet" in result.output
    assert not (repo / "releases").exists()


def test_releasing_the_same_version_again_is_a_no_op(repo: Path) -> None:
    assert cli(repo, "release", STRATEGY).exit_code == 0
    before = (repo / HISTORY).read_bytes()
    again = cli(repo, "release", STRATEGY)
    assert again.exit_code == 0, again.output
    assert "already released with these artefacts" in again.output
    assert "nothing was written" in again.output
    assert (repo / HISTORY).read_bytes() == before


def test_same_version_with_different_artefacts_is_refused(repo: Path) -> None:
    assert cli(repo, "release", STRATEGY).exit_code == 0
    commit_all(repo, "record release")
    bump(repo, version=None)  # fast 20 -> 30 under the same version
    commit_all(repo, "fast 30, version unchanged")
    before = (repo / HISTORY).read_bytes()
    result = cli(repo, "release", STRATEGY)
    assert result.exit_code == 2
    assert f"{STRATEGY} 2.1.0 was already released" in result.output
    assert "with different artefacts" in result.output and "bump strategy.version" in result.output
    assert (repo / HISTORY).read_bytes() == before


def test_uncommitted_generated_changes_are_refused_and_nothing_is_written(repo: Path) -> None:
    bump(repo)  # generated/ is fresh but not committed
    result = cli(repo, "release", STRATEGY)
    assert result.exit_code == 2
    assert "uncommitted changes" in result.output
    assert f"generated/{STRATEGY}/params.yaml" in result.output
    assert not (repo / "releases").exists()


def test_stale_generated_is_refused(repo: Path) -> None:
    edit(repo / CONF, "fast: 20", "fast: 30")
    commit_all(repo, "conf changed, generated/ not rebuilt")
    result = cli(repo, "release", STRATEGY)
    assert result.exit_code == 2
    assert f"generated/{STRATEGY}/ is stale" in result.output
    assert "run `qcompile build`" in result.output
    assert not (repo / "releases").exists()


def test_a_corrupt_manifest_is_refused_as_build_check_reports_it(repo: Path) -> None:
    (repo / "generated/manifest.json").write_text('{"strategies": ')
    commit_all(repo, "a bad merge of the manifest")
    assert "stale: generated/manifest.json" in cli(repo, "build", "--check").output
    result = cli(repo, "release", STRATEGY)
    assert result.exit_code == 2, result.output
    assert (
        "error: generated/ is stale (generated/manifest.json): run `qcompile build`, review and "
        "commit the result, then release"
    ) in result.output
    assert not (repo / "releases").exists()


def test_another_strategys_stale_files_refuse_a_release_too(repo: Path) -> None:
    """A release points at a commit: build --check must pass on it, whichever files it names."""
    edit(repo / "conf/strategy/breakout.yaml", "lookback: 40", "lookback: 60")
    commit_all(repo, "breakout changed, generated/ not rebuilt")
    result = cli(repo, "release", STRATEGY)
    assert result.exit_code == 2, result.output
    assert "error: generated/ is stale (generated/STR-2026-0051/" in result.output
    assert not (repo / "releases").exists()


def test_a_strategy_that_does_not_compile_leaves_the_others_releasable(repo: Path) -> None:
    """When another strategy does not compile, build --check cannot judge generated/ as a whole:
    this strategy's files are judged alone, and the manifest must record them as they are."""
    edit(repo / "conf/strategy/breakout.yaml", "lookback: 40", "lookback: forty")
    commit_all(repo, "breakout broken")
    manifest = repo / "generated/manifest.json"
    good = manifest.read_bytes()
    manifest.write_text("{}")
    commit_all(repo, "manifest emptied")
    refused = cli(repo, "release", STRATEGY)
    assert refused.exit_code == 2, refused.output
    assert (
        f"error: generated/manifest.json does not record generated/{STRATEGY}/ as it is"
    ) in refused.output
    assert not (repo / "releases").exists()
    manifest.write_bytes(good)
    commit_all(repo, "manifest restored")
    released = cli(repo, "release", STRATEGY)
    assert released.exit_code == 0, released.output
    assert (repo / HISTORY).is_file()


def test_outside_a_git_repository_is_refused(repo: Path) -> None:
    shutil.rmtree(repo / ".git")
    result = cli(repo, "release", STRATEGY)
    assert result.exit_code == 2
    assert "is not in a git repository" in result.output and "Traceback" not in result.output
    assert not (repo / "releases").exists()


def test_second_release_diff_shows_params_and_pin_changes(released: Path) -> None:
    first, second = records(released)
    assert (first["version"], second["version"]) == ("2.1.0", "2.2.0")
    assert second["previous"] == "2.1.0" and first["note"] == "first"
    assert second["commit"] == git(released, "rev-parse", "HEAD~1")

    result = cli(released, "diff", STRATEGY, "--from", "2.1.0", "--to", "2.2.0")
    assert result.exit_code == 0, result.output
    text = result.output
    label_a = f"release 2.1.0 ({first['commit'][:7]})"
    label_b = f"release 2.2.0 ({second['commit'][:7]})"
    assert text.startswith(f"{STRATEGY}: {label_a} -> {label_b}\n")
    pins = text[text.index("pins:") : text.index("files:")]
    assert "  strategy.version: 2.1.0 -> 2.2.0\n" in pins
    assert "signal.version" not in pins  # the signal did not change
    assert f"  M generated/{STRATEGY}/params.yaml\n" in text
    assert f"--- a/generated/{STRATEGY}/params.yaml\t{label_a}\n" in text
    assert f"+++ b/generated/{STRATEGY}/params.yaml\t{label_b}\n" in text
    assert "\n-    fast: 20\n+    fast: 30\n" in text
    assert "\n@@ " in text

    keywords = cli(released, "diff", STRATEGY, "--from", "previous", "--to", "latest")
    assert keywords.output == text
    revisions = cli(released, "diff", STRATEGY, "--from", first["commit"], "--to", "HEAD")
    assert "  strategy.version: 2.1.0 -> 2.2.0\n" in revisions.output
    assert "\n+    fast: 30\n" in revisions.output


def test_history_file_is_append_only(released: Path) -> None:
    lines = (released / HISTORY).read_bytes().splitlines(keepends=True)
    committed_first = git(released, "show", f"HEAD~2:{HISTORY}")  # as recorded by release 1
    assert len(lines) == 2
    assert lines[0].decode() == committed_first + "\n"


def test_rollback_finds_the_previous_release_commit(released: Path) -> None:
    first = records(released)[0]
    result = cli(released, "history", STRATEGY, "--release", "previous", "--field", "commit")
    assert result.exit_code == 0 and result.output == f"{first['commit']}\n"
    table = cli(released, "history", STRATEGY).output
    assert table.index("2.1.0") < table.index("2.2.0")


def test_corrupt_line_is_reported_with_its_line_number(released: Path) -> None:
    with (released / HISTORY).open("a") as handle:
        handle.write('{"version": "9.9.9"\n')
    for command in (("history", STRATEGY), ("diff", STRATEGY), ("release", STRATEGY)):
        result = cli(released, *command)
        assert result.exit_code == 2, command
        assert f"{HISTORY}:3: corrupt release record: not valid JSON" in result.output


def test_diff_without_differences_says_so_in_one_line(released: Path) -> None:
    result = cli(released, "diff", STRATEGY)
    assert result.exit_code == 0
    commit = records(released)[1]["commit"][:7]
    assert result.output == (
        f"no differences in generated/{STRATEGY}/ between release 2.2.0 ({commit}) "
        "and the working tree\n"
    )


def test_diff_unknown_revision_is_an_error(released: Path) -> None:
    result = cli(released, "diff", STRATEGY, "--from", "no-such-rev")
    assert result.exit_code == 2
    assert "unknown revision 'no-such-rev'" in result.output
    assert "released: 2.1.0, 2.2.0" in result.output


def test_diff_defaults_to_the_working_tree(released: Path) -> None:
    edit(released / CONF, "fast: 30", "fast: 40")
    edit(released / CONF, "version: 2.2.0", "version: 2.3.0")
    build(released)  # rebuilt, not committed
    result = cli(released, "diff", STRATEGY)
    assert result.exit_code == 0, result.output
    assert "  strategy.version: 2.2.0 -> 2.3.0\n" in result.output
    assert f"+++ b/generated/{STRATEGY}/params.yaml\tworking tree\n" in result.output
    assert "\n-    fast: 30\n+    fast: 40\n" in result.output


def test_project_in_a_subdirectory_of_the_repository(base_repo: Path, tmp_path: Path) -> None:
    """Git paths are relative to the project root, wherever the repository's top level is."""
    top = tmp_path / "monorepo"
    shutil.copytree(base_repo, top / "quant", symlinks=True, ignore=shutil.ignore_patterns(".git"))
    git(top, "init", "-q")
    git(top, "config", "user.email", RELEASER)
    commit_all(top, "initial")
    root = top / "quant"
    done = cli(root, "release", STRATEGY)
    assert done.exit_code == 0, done.output
    assert (root / HISTORY).is_file()
    (root / "generated" / STRATEGY / "runbook.md").unlink()
    result = cli(root, "diff", STRATEGY)
    assert f"  D generated/{STRATEGY}/runbook.md\n" in result.output
    assert f"--- a/generated/{STRATEGY}/runbook.md\t" in result.output
    assert "+++ /dev/null\t" in result.output


def test_diff_names_a_gate_policy_change(released: Path) -> None:
    """Asking for a requirement earlier (stricter, allowed) shows as its own section, not only
    somewhere inside the passport's unified diff."""
    edit(
        released / "conf/qcompile.yaml",
        "    - signoff.brief\n",
        "    - signoff.brief\n    - pins.complete\n",
    )
    build(released)
    result = cli(released, "diff", STRATEGY)
    assert result.exit_code == 0, result.output
    section = result.output[
        result.output.index("gates and waivers:") : result.output.index("files:")
    ]
    assert "  - gate production: pins.complete\n" in section
    assert "  + gate research: pins.complete\n" in section


def test_a_parameter_change_shows_its_metrics_beside_the_config_change(repo: Path) -> None:
    """Change fast, build, backtest: `qcompile diff --from HEAD` puts the committed report's
    metrics beside the new ones and names the parameter, and report.html does the same."""
    before = json.loads((repo / "reports/STR-2026-0007/2.1.0/evidence.json").read_text())
    bump(repo, fast=10, version=None)
    ran = cli(repo, "backtest", STRATEGY)
    assert ran.exit_code == 0
    # generated/ reads the evidence: the command says a build must follow, and it must
    assert "the evidence changed: generated/ reads it" in ran.output
    assert cli(repo, "build", "--check").exit_code == 1
    build(repo)
    assert cli(repo, "build", "--check").exit_code == 0
    after = json.loads((repo / "reports/STR-2026-0007/2.1.0/evidence.json").read_text())
    assert before["metrics"]["trade_count"] != after["metrics"]["trade_count"]
    shown = cli(repo, "diff", STRATEGY, "--from", "HEAD")
    assert shown.exit_code == 0, shown.output
    text = shown.output
    assert "metrics (reports/STR-2026-0007/2.1.0/evidence.json):" in text
    trades = next(line for line in text.splitlines() if line.strip().startswith("trades "))
    old, new = before["metrics"]["trade_count"], after["metrics"]["trade_count"]
    assert trades.split() == ["trades", str(old), "->", str(new), f"{new - old:+d}"]
    sharpe = next(line for line in text.splitlines() if line.strip().startswith("Sharpe ratio"))
    assert sharpe.split()[2:5] == [
        f"{before['metrics']['sharpe']:.3f}",
        "->",
        f"{after['metrics']['sharpe']:.3f}",
    ]
    inputs = text[text.index("inputs that changed (params.yaml):") : text.index("files:")]
    assert [line.strip() for line in inputs.strip().splitlines()[1:]] == [
        "signal.params.fast: 20 -> 10"
    ]
    page = (repo / "reports/STR-2026-0007/2.1.0/report.html").read_text()
    since = page[page.index('id="since"') : page.index("</section>", page.index('id="since"'))]
    assert "at HEAD (" in since and "<code>signal.params.fast</code>: 20 → 10" in since
    assert f'<td class="num">{old}</td><td class="num">{new}</td>' in since


def test_a_rerun_of_the_committed_report_says_nothing_changed(repo: Path) -> None:
    ran = cli(repo, "backtest", STRATEGY)
    assert ran.exit_code == 0 and "the evidence changed" not in ran.output
    page = (repo / "reports/STR-2026-0007/2.1.0/report.html").read_text()
    assert "Same inputs and metrics as reports/STR-2026-0007/2.1.0/evidence.json at HEAD" in page
    shown = cli(repo, "diff", STRATEGY, "--from", "HEAD")
    assert shown.output == (
        f"no differences in generated/{STRATEGY}/ between HEAD "
        f"({git(repo, 'rev-parse', 'HEAD')[:7]}) and the working tree\n"
    )
