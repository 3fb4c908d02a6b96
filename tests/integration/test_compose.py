"""The fast compose path (group options composed once, or read as they are when they have no
defaults list) equals Hydra composing each strategy directly."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from qcompile.compiler.compose import (
    compose_strategies,
    hydra_session,
    parse_overrides,
    read_conf_tree,
)
from qcompile.project import Project
from tests.conftest import edit

CASES = [
    [],
    ["costs=zero"],
    ["costs=institutional", "universe=us_tech", "strategy.backtest.initial_capital=1234"],
    ["+strategy.note=hello", "~strategy.rules.exit"],
    ["++data.lookback_years=9"],
]


def strategy_count(root: Path) -> int:
    return len(list((root / "conf/strategy").glob("*.yaml")))


@pytest.mark.parametrize("overrides", CASES, ids=[" ".join(c) or "none" for c in CASES])
def test_fast_path_equals_direct_hydra_compose(example: Path, overrides: list[str]) -> None:
    from hydra import compose

    project = Project(example)
    tree = read_conf_tree(project)
    fast = compose_strategies(project, tree, overrides)
    assert len(fast) == strategy_count(example)
    with hydra_session(project):
        for composed in fast:
            direct = compose(
                config_name="qcompile", overrides=[f"+strategy={composed.name}", *overrides]
            )
            assert OmegaConf.to_container(composed.config) == OmegaConf.to_container(direct), (
                composed.name
            )


def test_overrides_are_classified_with_hydras_grammar(example: Path) -> None:
    tree = read_conf_tree(Project(example))
    parsed, problems = parse_overrides(["costs=zero", "+x.y=[1,2]", "~a.b", "++c=3"], tree)
    assert problems == []
    assert [(o.key, o.kind, o.value, o.is_group) for o in parsed] == [
        ("costs", "change", "zero", True),
        ("x.y", "add", [1, 2], False),
        ("a.b", "delete", None, False),
        ("c", "force_add", 3, False),
    ]


def _count_composes(monkeypatch) -> list[list[str]]:
    import hydra

    calls: list[list[str]] = []
    real = hydra.compose

    def counting(*args, **kwargs):
        calls.append(kwargs.get("overrides", []))
        return real(*args, **kwargs)

    monkeypatch.setattr(hydra, "compose", counting)
    return calls


def test_files_without_defaults_lists_compose_without_starting_hydra(
    example: Path, monkeypatch
) -> None:
    """No example option has a defaults list: each composes to its own data at its package,
    so the parts are read from the parsed files (equality with Hydra: the test above)."""
    calls = _count_composes(monkeypatch)
    project = Project(example)
    assert len(compose_strategies(project, read_conf_tree(project), [])) == strategy_count(example)
    assert calls == []


def test_an_option_with_a_defaults_list_is_composed_by_hydra_once_for_all(
    example: Path, monkeypatch
) -> None:
    from hydra import compose

    costs = example / "conf/costs/retail.yaml"
    costs.write_text("defaults:\n  - _self_\n" + costs.read_text())
    calls = _count_composes(monkeypatch)
    project = Project(example)
    composed = compose_strategies(project, read_conf_tree(project), [])
    assert len(calls) == 1
    # every option the strategies select, each composed once under its own slot
    assert sorted(o.split("=")[1] for o in calls[0]) == [
        "institutional",
        "live_redis",
        "paper",
        "retail",
        "sample_us_daily",
        "tickdb_us_daily",
        "us_sample",
        "us_sample_stocks",
        "us_tech",
    ]
    with hydra_session(project):
        for item in composed:
            direct = compose(config_name="qcompile", overrides=[f"+strategy={item.name}"])
            assert item.data == OmegaConf.to_container(direct), item.name


def test_unusual_defaults_fall_back_to_hydra_and_still_agree(example: Path, monkeypatch) -> None:
    from hydra import compose

    strategy = example / "conf/strategy/breakout.yaml"
    text = (
        strategy.read_text()
        .replace("  - _self_\n", "")
        .replace("defaults:\n", "defaults:\n  - _self_\n")
    )
    strategy.write_text(
        text.replace(
            "  initial_capital: 250000", "  initial_capital: 250000\ncosts:\n  slippage_bps: 9"
        )
    )
    zero = example / "conf/costs/zero.yaml"
    zero.write_text(
        "# @package _global_\ncosts:\n  name: zero\n  slippage_bps: 0\n  commission_per_share: 0\n"
    )
    calls = _count_composes(monkeypatch)
    project = Project(example)
    composed = compose_strategies(project, read_conf_tree(project), ["costs=zero"])
    assert len(calls) == strategy_count(
        example
    )  # zero.yaml places itself (@package _global_): each composed by Hydra
    with hydra_session(project):
        for item in composed:
            direct = compose(
                config_name="qcompile", overrides=[f"+strategy={item.name}", "costs=zero"]
            )
            assert item.data == OmegaConf.to_container(direct), item.name
    breakout = next(c for c in composed if c.name == "breakout")
    assert breakout.data["costs"]["slippage_bps"] == 0  # _self_ first: the costs group wins


def test_a_key_missing_because_its_file_is_empty_is_located_in_that_file(example: Path) -> None:
    """Validation blames a missing key on the file that would have set it when that file is
    empty; a missing key whose files hold keys stays with the strategy, as before."""
    (example / "conf/qcompile.yaml").write_text("# the project's settings go here\n")
    (example / "conf/costs/retail.yaml").write_text("")
    project = Project(example)
    (composed,) = compose_strategies(project, read_conf_tree(project), [], {"ma_trend"})
    assert composed.locate("costs.name") == ("conf/costs/retail.yaml", 1)  # not the primary
    assert composed.locate("costs") == ("conf/costs/retail.yaml", 1)
    assert composed.locate("gates") == ("conf/qcompile.yaml", 1)
    assert composed.locate("project.reports_dir") == ("conf/qcompile.yaml", 1)
    # the strategy file sets strategy.*: a key missing there is the strategy's
    line = composed.file.line_of("strategy")
    assert composed.locate("strategy.nothing_here") == ("conf/strategy/ma_trend.yaml", line)
    # a group's section missing because the strategy selects no option is the strategy's
    edit(example / "conf/strategy/ma_trend.yaml", "  - /deployment: paper\n", "")
    (composed,) = compose_strategies(project, read_conf_tree(project), [], {"ma_trend"})
    assert composed.locate("deployment.name") == ("conf/strategy/ma_trend.yaml", 0)
    assert composed.locate("gates") == ("conf/qcompile.yaml", 1)
