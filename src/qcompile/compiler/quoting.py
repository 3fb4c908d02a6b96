"""The only ways a value reaches generated text: shell words, Python literals and YAML.

Templates never interpolate raw values into code. Each filter either produces text that the
target language reads back as exactly the original value, or refuses the value.
"""

from __future__ import annotations

import math
import re
import shlex
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

import yaml


class QuotingError(ValueError):
    """A value that cannot be represented safely in the target language."""


def shquote(value: Any) -> str:
    """One POSIX shell word that expands to ``str(value)`` and nothing else."""
    if value is None or isinstance(value, dict | list | tuple | set):
        raise QuotingError(f"cannot pass {type(value).__name__} to a shell script as one word")
    text = str(value).lower() if isinstance(value, bool) else str(value)
    if "\x00" in text:
        raise QuotingError("a shell word cannot contain a NUL byte")
    return shlex.quote(text)


def pyliteral(value: Any) -> str:
    """A Python expression that evaluates to ``value`` (plain data only)."""
    if value is None or isinstance(value, bool | int | str):
        return repr(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "float('nan')"
        if math.isinf(value):
            return "float('inf')" if value > 0 else "float('-inf')"
        return repr(value)
    if isinstance(value, list | tuple):
        items = ", ".join(pyliteral(v) for v in value)
        return (
            f"[{items}]"
            if isinstance(value, list)
            else f"({items}{',' if len(value) == 1 else ''})"
        )
    if isinstance(value, dict):
        pairs = ", ".join(f"{pyliteral(k)}: {pyliteral(v)}" for k, v in sorted(value.items()))
        return "{" + pairs + "}"
    raise QuotingError(f"cannot write {type(value).__name__} as a Python literal")


class _Dumper(getattr(yaml, "CSafeDumper", yaml.SafeDumper)):  # type: ignore[misc]
    """Safe YAML whose multi-line or control-character strings come out double-quoted."""


def _represent_str(dumper: Any, value: str) -> yaml.ScalarNode:
    style = '"' if any(ord(c) < 32 or c in "\x7f\u2028\u2029\x85" for c in value) else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


def _represent_list(dumper: Any, value: list[Any]) -> yaml.SequenceNode:
    short_scalars = all(
        v is None
        or isinstance(v, bool | int | float)
        or (isinstance(v, str) and len(v) <= 40 and "\n" not in v)
        for v in value
    )
    return dumper.represent_sequence(
        "tag:yaml.org,2002:seq", value, flow_style=True if short_scalars else None
    )


_Dumper.add_representer(str, _represent_str)
_Dumper.add_representer(list, _represent_list)


def yaml_inline(value: Any) -> str:
    """A YAML value on one line (flow style) that loads back as ``value``."""
    text = yaml.dump(
        value,
        Dumper=_Dumper,
        default_flow_style=True,
        width=1 << 30,
        allow_unicode=True,
        sort_keys=True,
    )
    return text.removesuffix("\n...\n").removesuffix("\n")


# Words a YAML emitter leaves plain: a letter first, no indicator (: # , [ ] { } & * ! | > ' " %
# ` ?), single inner spaces; the resolver check below rules out true/no/null and the like.
_PLAIN_WORDS = re.compile(r"[A-Za-z][A-Za-z0-9_./@+-]*(?: [A-Za-z0-9_./@+-]+)*\Z")
_RESOLVER = yaml.resolver.Resolver()
_STR_TAG = "tag:yaml.org,2002:str"


def _plain(value: str) -> bool:
    """Whether PyYAML would emit ``value`` as itself (tests compare the two on many strings)."""
    return bool(_PLAIN_WORDS.match(value)) and (
        _RESOLVER.resolve(yaml.ScalarNode, value, (True, False)) == _STR_TAG
    )


@lru_cache(maxsize=65536)
def _scalar(value: Any) -> str:
    # PyYAML decides the quoting of every other scalar; the cache matters because the same keys
    # and values recur across every strategy of a portfolio
    if isinstance(value, str) and _plain(value):
        return value  # the common case, without a trip through the emitter
    return yaml_inline(value)


@lru_cache(maxsize=16384)
def _flow_sequence(typed: tuple[tuple[type, Any], ...]) -> str:
    # typed keys: 1, 1.0 and True are equal as cache keys but not as YAML
    return yaml_inline([value for _, value in typed])


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, bool | int | float | str)


def _scalar_cached(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return "true" if value is True else "false" if value is False else "null"
    if isinstance(value, int):
        return str(value)
    return _scalar(value)


def _flow_list(value: list[Any]) -> bool:
    return all(
        _is_scalar(v) and not (isinstance(v, str) and (len(v) > 40 or "\n" in v)) for v in value
    )


# Within one build, strategies share their universe, costs, data and deployment objects (composed
# data is read-only): their block text is made once. The memo holds each object, so an id cannot
# be reused while it is cached, and it only lives inside ``shared_blocks()``.
_BLOCKS: dict[tuple[int, str], tuple[Any, list[str]]] | None = None


@contextmanager
def shared_blocks() -> Iterator[None]:
    """Reuse the YAML of the same (unmodified) mapping or list rendered again in this block."""
    global _BLOCKS
    _BLOCKS = {}
    try:
        yield
    finally:
        _BLOCKS = None


def _block_lines(value: Any, pad: str, lines: list[str]) -> None:
    """Append ``value`` (a non-empty mapping or list) as block YAML lines indented by ``pad``."""
    if _BLOCKS is not None:
        cached = _BLOCKS.get((id(value), pad))
        if cached is not None and cached[0] is value:
            lines.extend(cached[1])
            return
        start = len(lines)
        _emit_block(value, pad, lines)
        _BLOCKS[(id(value), pad)] = (value, lines[start:])
        return
    _emit_block(value, pad, lines)


def _emit_block(value: Any, pad: str, lines: list[str]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            head = f"{pad}{_scalar_cached(key)}:"
            if isinstance(item, dict) and item:
                lines.append(head)
                _block_lines(item, pad + "  ", lines)
            elif isinstance(item, list) and item and not _flow_list(item):
                lines.append(head)
                _block_lines(item, pad, lines)
            else:
                lines.append(f"{head} {_inline(item)}")
        return
    for item in value:
        if isinstance(item, dict) and item:
            nested: list[str] = []
            _block_lines(item, pad + "  ", nested)
            lines.append(f"{pad}- {nested[0][len(pad) + 2 :]}")
            lines.extend(nested[1:])
        elif isinstance(item, list) and item and not _flow_list(item):
            nested = []
            _block_lines(item, pad + "  ", nested)
            lines.append(f"{pad}- {nested[0][len(pad) + 2 :]}")
            lines.extend(nested[1:])
        else:
            lines.append(f"{pad}- {_inline(item)}")


def yaml_scalar(value: Any) -> str:
    """``yaml_inline`` through the caches: the filter templates use for one value on a line."""
    return _inline(value)


def _inline(value: Any) -> str:
    if _is_scalar(value):
        return _scalar_cached(value)
    if isinstance(value, list) and _flow_list(value):
        # a flow sequence has indicators ([ ] { } ,) of its own: PyYAML quotes for that context
        return _flow_sequence(tuple((type(v), v) for v in value))
    return yaml_inline(value)  # empty containers and anything unusual: let PyYAML decide


def yaml_block(value: Any, indent: int = 0) -> str:
    """A YAML block, every line indented by ``indent`` spaces.

    Keys keep their insertion order (the compiler builds every mapping in a fixed order); short
    lists of scalars stay on one line, mappings are always blocks. The layout is ours; every
    scalar is quoted by PyYAML, so a value can never change the document's structure.
    """
    if not isinstance(value, dict | list) or not value:
        return " " * indent + _inline(value)
    lines: list[str] = []
    _block_lines(value, " " * indent, lines)
    return "\n".join(lines)
