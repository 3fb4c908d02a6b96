"""A corpus of hostile and mistaken user input, each case one that once produced a traceback or
a misleading message: every one must end in a diagnostic naming where and what, exit 2 (or 1
for a sweep with failed jobs), and leave generated/ and reports/ as they were.

The CLI runs in-process with exceptions propagating, so a traceback fails the test outright."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import cli, edit, tree_digest

FAST = "strategy.signal.params.fast"


def _nothing(root: Path) -> None:
    pass


def _not_utf8(root: Path) -> None:
    (root / "conf/costs/broken.yaml").write_bytes(b"slippage_bps: 3\nname: caf\xe9\n")


def _strategy_not_utf8(root: Path) -> None:
    path = root / "conf/strategy/ma_trend.yaml"
    path.write_bytes(path.read_bytes() + b"# caf\xe9\n")


def _outside(root: Path) -> None:
    edit(
        root / "conf/data/sample_us_daily.yaml", "path: data/sample_us_daily", "path: ../elsewhere"
    )


def _laughs(root: Path) -> None:
    """A billion laughs: nine levels of nine aliases, 387 million values once expanded."""
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for level in range(1, 9):
        lines.append(f"l{level}: &l{level} [" + ", ".join([f"*l{level - 1}"] * 9) + "]")
    (root / "conf/data/laughs.yaml").write_text("\n".join(lines) + "\n")


def _deep(root: Path) -> None:
    (root / "conf/costs/deep.yaml").write_text("x: " + "[" * 200 + "]" * 200 + "\n")


def _huge(root: Path) -> None:
    (root / "conf/costs/huge.yaml").write_text("".join(f"k{i}: {i}\n" for i in range(150_000)))


def _desk_signals(root: Path, module: bytes) -> None:
    """A team package listed in conf/qcompile.yaml, holding ``module`` as desk_signals/bad.py."""
    package = root / "desk_signals"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "bad.py").write_bytes(module)
    edit(
        root / "conf/qcompile.yaml",
        "signal_packages: [qcompile.signals]",
        "signal_packages: [qcompile.signals, desk_signals]",
    )


def _signal_syntax_error(root: Path) -> None:
    _desk_signals(root, b"from qcompile.signals import signal\n\n\ndef carry(bars:\n")


def _signal_not_utf8(root: Path) -> None:
    _desk_signals(root, b"# caf\xe9\n")


def _packages_not_a_list(root: Path) -> None:
    edit(root / "conf/qcompile.yaml", "signal_packages: [qcompile.signals]", "signal_packages: x")


SELFTEST = "reports/runtime/qcompile-0.1.0.json"
PARITY = "reports/STR-2026-0088/1.0.0/parity.json"
COVERAGE = "reports/coverage/signals.json"
EVIDENCE = "reports/STR-2026-0088/1.0.0/evidence.json"


def _rewrite(relative: str, change: Callable[[Any], Any]) -> Callable[[Path], None]:
    """A preparation that rewrites a committed JSON evidence file with ``change`` applied."""

    def prepare(root: Path) -> None:
        path = root / relative
        path.write_text(json.dumps(change(json.loads(path.read_text()))))

    return prepare


def _setting(key: str, value: Any) -> Callable[[Any], Any]:
    return lambda document: {**document, key: value}


def _every_file(value: Any) -> Callable[[Any], Any]:
    return lambda document: {**document, "files": dict.fromkeys(document["files"], value)}


# (what is wrong, the preparation, the diagnostic's line): each a committed evidence file that
# once reached the gates or the checklist as it was and ended in a traceback
MALFORMED_EVIDENCE: list[tuple[str, Callable[[Path], None], str]] = [
    (
        "a runtime self-test result that is a list",
        _rewrite(SELFTEST, lambda _: [1, 2]),
        f"{SELFTEST}: error: expected a mapping at the top, got a list [evidence.malformed]",
    ),
    (
        "a runtime self-test result whose checks are a list",
        _rewrite(SELFTEST, _setting("checks", [1])),
        f"{SELFTEST}: error: checks: expected a mapping, got a list [evidence.malformed]",
    ),
    (
        "a parity record whose fills are a list",
        _rewrite(PARITY, _setting("fills", [1, 2])),
        f"{PARITY}: error: fills: expected a mapping, got a list [evidence.malformed]",
    ),
    (
        "a parity record whose window is a number",
        _rewrite(PARITY, _setting("window", 5)),
        f"{PARITY}: error: window: expected a list, got a number [evidence.malformed]",
    ),
    (
        "a coverage report whose files are a list",
        _rewrite(COVERAGE, _setting("files", [1])),
        f"{COVERAGE}: error: files: expected a mapping, got a list [evidence.malformed]",
    ),
    (
        "a coverage report whose entries are lists",
        _rewrite(COVERAGE, _every_file([1])),
        f"{COVERAGE}: error: files['src/qcompile/signals/__init__.py']: expected a mapping, "
        "got a list [evidence.malformed]",
    ),
    (
        "evidence whose minimum sample is a list",
        _rewrite(EVIDENCE, _setting("minimum_sample", [1])),
        f"{EVIDENCE}: error: minimum_sample: expected a mapping, got a list [evidence.malformed]",
    ),
    (
        "evidence whose inputs are a list",
        _rewrite(EVIDENCE, _setting("inputs", [1])),
        f"{EVIDENCE}: error: inputs: expected a mapping, got a list [evidence.malformed]",
    ),
    (
        "evidence whose critical failures are a number",
        _rewrite(EVIDENCE, _setting("critical_failures", 5)),
        f"{EVIDENCE}: error: critical_failures: expected a list, got a number [evidence.malformed]",
    ),
    (
        "evidence that is not JSON",
        lambda root: (root / EVIDENCE).write_text('{"inputs": {'),
        f"{EVIDENCE}:1: error: not valid JSON: Expecting property name enclosed in double "
        "quotes [evidence.malformed]",
    ),
]
ENGINEER = ("--by", "x@quantfund.com")


def _checklist_not_utf8(root: Path) -> None:
    path = root / "generated/STR-2026-0088/checklist.md"
    path.write_bytes(path.read_bytes() + b"caf\xe9\n")


CASES: list[tuple[str, Callable[[Path], None], tuple[str, ...], int, tuple[str, ...]]] = [
    *(
        (f"{what}, read by validate", prepare, ("validate",), 2, (expected,))
        for what, prepare, expected in MALFORMED_EVIDENCE
    ),
    *(  # every command that compiles the evidence: one file of each kind
        (f"{what}, read by {command[0]}", prepare, command, 2, (expected,))
        for what, prepare, expected in MALFORMED_EVIDENCE[1::2]
        for command in (
            ("build", "--check"),
            ("signoff", "STR-2026-0088", "--role", "quant_engineer", *ENGINEER),
            ("promote", "STR-2026-0088", "--to", "validation"),
        )
    ),
    (
        "a team's signal module with a syntax error",
        _signal_syntax_error,
        ("build",),
        2,
        ("error: desk_signals/bad.py:4: does not parse as Python: '(' was never closed",),
    ),
    (
        "a team's signal module that is not UTF-8, read by the docs",
        _signal_not_utf8,
        ("docs",),
        2,
        ("error: desk_signals/bad.py: not UTF-8 text",),
    ),
    (
        "signal packages that are not a list, read by the docs",
        _packages_not_a_list,
        ("docs", "--check"),
        2,
        ("conf/qcompile.yaml: project.signal_packages: not a list of package names",),
    ),
    (
        "a float where the signal declares an integer",
        _nothing,
        ("backtest", "STR-2026-0007", f"{FAST}=14.5"),
        2,
        (f"{FAST}: must be an integer (ma_crossover declares fast: int), was 14.5",),
    ),
    (
        "text where the signal declares an integer",
        _nothing,
        ("backtest", "STR-2026-0007", f"{FAST}=abc"),
        2,
        (f"{FAST}: must be an integer (ma_crossover declares fast: int), was 'abc'",),
    ),
    (
        "a quoted number where the signal declares an integer",
        _nothing,
        ("backtest", "STR-2026-0007", f'{FAST}="14"'),
        2,
        ("was '14' [lock.signal_param_type]",),
    ),
    (
        "a value inside the tested span but not a tested value",
        _nothing,
        ("backtest", "STR-2026-0007", f"{FAST}=12"),
        2,
        (f"{FAST}: value 12 is not one of its tested values [5, 10, 20, 30, 40, 50]",),
    ),
    (
        "an out-of-sample period without a bar",
        _nothing,
        (
            "backtest",
            "STR-2026-0007",
            "strategy.backtest.out_of_sample.start_date=2016-01-02",
            "strategy.backtest.out_of_sample.end_date=2016-01-03",
        ),
        2,
        ("the period 2016-01-02..2016-01-03 holds no bars of the local data",),
    ),
    (
        "a generated checklist that is not UTF-8, signed by the quant engineer",
        _checklist_not_utf8,
        ("signoff", "STR-2026-0088", "--role", "quant_engineer", *ENGINEER),
        2,
        (
            "generated/STR-2026-0088/checklist.md:",
            ": error: not UTF-8 text: byte 0xe9 at offset ",
            "[signoff.artefact]",
        ),
    ),
    (
        "evidence that is a list, signed by the peer reviewer",
        _rewrite(EVIDENCE, lambda _: [1, 2]),
        ("signoff", "STR-2026-0088", "--role", "peer_reviewer", *ENGINEER),
        2,
        (f"{EVIDENCE}: error: expected a mapping at the top, got a list [evidence.malformed]",),
    ),
    (
        "an empty primary config: its sections are missing from it, not from the strategies",
        lambda root: (root / "conf/qcompile.yaml").write_text(""),
        ("validate",),
        2,
        (
            "conf/qcompile.yaml:1: error: gates: required field missing [schema.required]",
            "conf/qcompile.yaml:1: error: project: required field missing [schema.required]",
            "2 errors in 1 file; nothing was written.",
        ),
    ),
    (
        "an empty group option: its keys are missing from it, not from the strategy",
        lambda root: (root / "conf/costs/retail.yaml").write_text("# to be filled in\n"),
        ("validate",),
        2,
        (
            "conf/costs/retail.yaml:1: error: costs.name: required field missing",
            "conf/costs/retail.yaml:1: error: costs.slippage_bps: required field missing",
            "3 errors in 1 file; nothing was written.",
        ),
    ),
    (
        "a config file that is not UTF-8",
        _not_utf8,
        ("validate",),
        2,
        (
            "conf/costs/broken.yaml:2: error: not UTF-8 text: byte 0xe9 at offset 25 [yaml.encoding]",
        ),
    ),
    *(
        (
            f"{command[0]} of a strategy whose file is not UTF-8",
            _strategy_not_utf8,
            command,
            2,
            (
                "error: not UTF-8 text: byte 0xe9",
                "hint: conf/strategy/ma_trend.yaml could not be read; it may hold STR-2026-0007",
            ),
        )
        for command in (
            ("signoff", "STR-2026-0007", "--item", "docs.on_call", "--by", "a@quantfund.com"),
            ("promote", "STR-2026-0007", "--to", "validation"),
            ("backtest", "STR-2026-0007"),
            ("show", "STR-2026-0007"),
        )
    ),
    (
        "a data path outside the project",
        _outside,
        ("build",),
        2,
        ("data.local.path: '../elsewhere' resolves to ", "outside the project [rule.path_outside]"),
    ),
    (
        "a billion laughs",
        _laughs,
        ("build",),
        2,
        ("conf/data/laughs.yaml: error: refused: more than 100,000 values once its aliases",),
    ),
    (
        "a document nested 200 deep",
        _deep,
        ("validate",),
        2,
        ("conf/costs/deep.yaml: error: refused: nested 65 levels deep (at most 64)",),
    ),
    (
        "a config file of megabytes",
        _huge,
        ("validate",),
        2,
        ("conf/costs/huge.yaml: error: refused: 2,177,780 bytes (at most 1,048,576)",),
    ),
    (
        "a misspelt override key",
        _nothing,
        ("validate", "strategy.backtest.slipage_bps=3"),
        2,
        ("strategy.backtest.slipage_bps=3: no such key", "did you mean 'costs.slippage_bps'?"),
    ),
    (
        "a key only some strategies have",
        _nothing,
        ("validate", f"{FAST}=10"),
        2,
        (f"{FAST}=10: no such key in breakout, earnings_gap", "pick some with --strategy ID"),
    ),
    (
        "a key added on the command line that the schema does not know",
        _nothing,
        ("validate", "+strategy.params.fast=abc"),
        2,
        ("<command line>: error: strategy.params: unknown key [schema.unknown_key]",),
    ),
    (
        "a misspelt strategy id",
        _nothing,
        ("show", "STR-2026-007"),
        2,
        ("no strategy 'STR-2026-007'", "did you mean 'STR-2026-0007'?"),
    ),
    (
        "a sweep in which every job fails",
        _nothing,
        ("sweep", "STR-2026-0007", "costs=bogus1,bogus2", "--name", "bad"),
        1,
        ("2 job(s), 2 failed", "error: 2 of 2 job(s) failed"),
    ),
]


@pytest.mark.parametrize(
    ("prepare", "args", "code", "expected"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_user_input_ends_in_a_diagnostic(
    example: Path,
    prepare: Callable[[Path], None],
    args: tuple[str, ...],
    code: int,
    expected: tuple[str, ...],
) -> None:
    assert cli(example, "build").exit_code == 0
    prepare(example)
    before = tree_digest(example / "generated"), tree_digest(example / "reports")
    result = cli(example, *args)
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    for text in expected:
        assert text in result.output, result.output
    if "+" in "".join(args):  # an override's problem is blamed on the override, not on files
        assert "conf/strategy/" not in result.output, result.output
    after = tree_digest(example / "generated"), tree_digest(example / "reports")
    if args[0] != "sweep":  # a sweep writes its table even when jobs fail
        assert after == before


def test_a_truncated_state_file_stops_the_runner_with_one_line(example: Path) -> None:
    assert cli(example, "build").exit_code == 0
    state = example / "state/STR-2026-0007/state.json"
    state.parent.mkdir(parents=True)
    state.write_text('{"seq": 3, "cursor": {"MS')
    result = cli(example, "run", "STR-2026-0007", "--feed", "emulator", "--duration", "5")
    assert result.exit_code == 2, result.output
    assert "state.json: state is corrupt or truncated" in result.output
    assert "refusing to start from an empty state" in result.output
    assert state.read_text() == '{"seq": 3, "cursor": {"MS'  # left for the operator to inspect
