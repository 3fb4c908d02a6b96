"""The state log's differences: applied to the older state they give the newer one, exactly."""

from __future__ import annotations

import copy
import random

import orjson
import pytest

from qcompile.runtime import statelog


def _through_json(value):
    """As the log and the checkpoint store it (numbers as keys become strings)."""
    return orjson.loads(orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS))


def _random_value(rng: random.Random, depth: int):
    kind = rng.randrange(6 if depth < 3 else 4)
    if kind == 0:
        return rng.choice([0, 1, -3, 2**40])
    if kind == 1:
        return rng.choice([0.0, 1.5, -2.25, 1e-12, 3.0])
    if kind == 2:
        return rng.choice(["", "a", "déjà", None, True, False])
    if kind == 3:
        return [rng.random() for _ in range(rng.randrange(3))]
    return {f"k{rng.randrange(6)}": _random_value(rng, depth + 1) for _ in range(rng.randrange(4))}


def _mutate(rng: random.Random, state: dict, depth: int = 0) -> dict:
    """A new state as the runner makes one: changed values replaced, never changed in place."""
    new = dict(state)
    for _ in range(rng.randrange(1, 4)):
        action = rng.randrange(4)
        key = f"k{rng.randrange(6)}"
        if action == 0:
            new[key] = _random_value(rng, depth)
        elif action == 1:
            new.pop(key, None)
        elif action == 2 and isinstance(new.get(key), dict) and depth < 3:
            new[key] = _mutate(rng, new[key], depth + 1)
        else:  # a type change that compares equal: 1 becomes 1.0, True becomes 1
            if key in new and type(new[key]) in (int, bool):
                new[key] = float(new[key])
    return new


@pytest.mark.parametrize("seed", range(40))
def test_a_difference_applied_to_the_older_state_gives_the_newer_one(seed: int) -> None:
    rng = random.Random(seed)
    state = {f"k{i}": _random_value(rng, 0) for i in range(6)}
    replayed = _through_json(state)
    for _ in range(30):
        newer = _mutate(rng, state)
        change = statelog.difference(state, newer)
        # written and read back as the log does, then applied to what the reader holds
        seq, read = statelog.decode(statelog.encode(1, change).rstrip(b"\n"))
        assert seq == 1
        statelog.apply(replayed, read)
        assert orjson.dumps(replayed, option=orjson.OPT_SORT_KEYS) == orjson.dumps(
            _through_json(newer), option=orjson.OPT_SORT_KEYS
        )
        state = newer


def test_only_what_changed_is_written() -> None:
    rows = {f"S{i:03d}": [float(i), 1.0, 2.0] for i in range(500)}
    old = {"seq": 1, "building": rows, "cash": 100.0, "day": 5}
    new = {**old, "seq": 2, "building": {**rows, "S007": [7.0, 1.5, 2.0]}}
    assert statelog.difference(old, new) == {
        "s": {"seq": 2},
        "n": {"building": {"s": {"S007": [7.0, 1.5, 2.0]}}},
    }
    assert statelog.difference(old, copy.deepcopy(old)) == {}  # equal copies: nothing
    gone = {k: v for k, v in old.items() if k != "day"}
    assert statelog.difference(old, gone) == {"d": {"day": 0}}
    assert statelog.difference({"n": 1}, {"n": 1.0}) == {"s": {"n": 1.0}}  # 1 and 1.0 differ


@pytest.mark.parametrize(
    "line",
    [
        b"",
        b"zzzzzzzz {}",
        b"00000000 {}",
        statelog.encode(3, {"s": {"a": 1}})[:-5],  # torn
        statelog.encode(3, {"s": {"a": 1}}).replace(b'"a"', b'"b"'),  # one byte changed
    ],
)
def test_a_line_that_is_not_intact_is_refused(line: bytes) -> None:
    with pytest.raises(statelog.LogError):
        statelog.decode(line.rstrip(b"\n"))


def _log(*records: tuple[int, dict]) -> bytes:
    return b"".join(statelog.encode(seq, change) for seq, change in records)


def test_replay_skips_what_the_checkpoint_holds_and_drops_a_torn_tail() -> None:
    state = {"seq": 2, "a": 0}
    data = _log((1, {"s": {"a": 9}}), (2, {"s": {"a": 9}}), (3, {"s": {"a": 3, "seq": 3}}))
    torn = statelog.encode(4, {"s": {"a": 4}})[:-7]
    assert statelog.replay(state, data + torn, "state.log") == (1, len(data))
    assert state == {"seq": 3, "a": 3}


def test_replay_refuses_a_gap_and_a_bad_line_before_the_last() -> None:
    with pytest.raises(statelog.LogError, match=r"state.log:2: save 5 follows save 3"):
        statelog.replay({"seq": 2}, _log((3, {}), (5, {})), "state.log")
    bad = _log((3, {})) + b"garbage\n" + _log((4, {}))
    with pytest.raises(statelog.LogError, match=r"state.log:2: checksum"):
        statelog.replay({"seq": 2}, bad, "state.log")


def test_an_intact_line_of_the_wrong_shape_is_refused_not_applied() -> None:
    for change in ({"s": [1, 2]}, {"d": 5}, {"n": {"a": 7}}):
        with pytest.raises(statelog.LogError, match=r"state.log:1: not a log record"):
            statelog.replay({"seq": 0, "a": {}}, _log((1, change)), "state.log")
