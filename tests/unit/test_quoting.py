"""The quoting filters: whatever the value, the target language reads back exactly that value."""

from __future__ import annotations

import subprocess

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from qcompile.compiler.quoting import QuotingError, pyliteral, shquote, yaml_block, yaml_inline

HOSTILE = [
    "x'; rm -rf ~ #",
    "$(touch pwned)",
    "`touch pwned`",
    "line one\nline two; touch pwned",
    '"; touch pwned; echo "',
    "${HOME}",
    "tab\there",
    "back\\slash",
    "",
    "- item",
    "yes",
    "null",
    "1.0",
    "key: value",
    "# comment",
    "ünïcödé ✓",
]

texts = st.text(alphabet=st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)))


@pytest.mark.parametrize("value", HOSTILE)
def test_shquote_gives_bash_exactly_one_inert_word(value: str, tmp_path) -> None:
    script = f"printf '%s' {shquote(value)}"
    result = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0
    assert result.stdout == value
    assert list(tmp_path.iterdir()) == []  # nothing was executed


@settings(max_examples=200)
@given(texts)
def test_shquote_round_trips_through_a_shell(value: str) -> None:
    result = subprocess.run(["sh", "-c", f"printf '%s' {shquote(value)}"], capture_output=True)
    assert result.stdout.decode("utf-8", "surrogateescape") == value


def test_shquote_refuses_what_is_not_one_word() -> None:
    for bad in (None, ["a"], {"a": 1}, "nul\x00byte"):
        with pytest.raises(QuotingError):
            shquote(bad)
    assert shquote(True) == "true"
    assert shquote(12) == "12"


json_like = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | texts,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(texts, children, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300)
@given(json_like)
def test_pyliteral_evaluates_to_the_value(value) -> None:
    assert eval(pyliteral(value), {"__builtins__": {"float": float}}) == value


@pytest.mark.parametrize("value", HOSTILE)
def test_pyliteral_hostile_strings_stay_strings(value: str) -> None:
    source = f"name = {pyliteral(value)}\n"
    namespace: dict = {}
    exec(compile(source, "<generated>", "exec"), namespace)
    assert namespace["name"] == value
    assert source.count("\n") == 1  # a newline in the value cannot end the statement


def test_pyliteral_special_floats_and_refusals() -> None:
    assert pyliteral(float("inf")) == "float('inf')"
    assert pyliteral((1,)) == "(1,)"
    with pytest.raises(QuotingError):
        pyliteral(object())


@settings(max_examples=300)
@given(json_like)
def test_yaml_inline_and_block_load_back(value) -> None:
    inline = yaml_inline(value)
    assert "\n" not in inline
    assert yaml.safe_load(inline) == value
    assert yaml.safe_load(yaml_block({"k": value})) == {"k": value}


@pytest.mark.parametrize("value", HOSTILE)
def test_yaml_hostile_value_cannot_add_keys(value: str) -> None:
    document = f"name: {yaml_inline(value)}\nsafe: true\n"
    assert yaml.safe_load(document) == {"name": value, "safe": True}


WORDS = st.text(
    alphabet=st.sampled_from(
        list("abcdeflnorsuxyzABEFNOTY0123456789 _./@+-:#,'\"[]{}&*!|>%`?~=\t")
    ),
    max_size=12,
)


@settings(max_examples=2000)
@given(
    st.one_of(
        WORDS,
        st.sampled_from(
            [
                "yes",
                "No",
                "ON",
                "off",
                "True",
                "NULL",
                "y",
                "n",
                "e5",
                "E",
                "abc def",
                "a  b",
                "a b ",
                "x-1.0",
                "on-call",
            ]
        ),
    )
)
def test_the_plain_fast_path_writes_what_pyyaml_writes(value: str) -> None:
    # yaml_block takes a shortcut for words PyYAML leaves plain; it must never disagree with it
    assert yaml_block({"k": value}) == "k: " + yaml_inline(value)
