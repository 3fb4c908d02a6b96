"""Jinja set-up shared by the compiler's artefacts and the runtime's reports.

Both render code, YAML and Markdown, never HTML-escaped by default: StrictUndefined turns a
missing value into an error, and values reach the text only through explicit filters.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jinja2

from qcompile.project import user_cache_dir

# Control characters (NUL and ESC make git call a file binary and hide its diff) and the
# bidirectional overrides that make text read differently from what it is.
_INVISIBLE = re.compile("[\x00-\x08\x0e-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def markdown_cell(value: Any) -> str:
    """Text that stays inside one Markdown table cell, renders no HTML and no link or image (a
    config's text must not load remote content), and carries no invisible characters."""
    text = re.sub(r"\s+", " ", _INVISIBLE.sub("", str(value))).strip()
    for raw, escaped in (
        ("\\", "\\\\"),
        ("|", "\\|"),
        ("[", "\\["),
        ("]", "\\]"),
        ("<", "&lt;"),
        (">", "&gt;"),
    ):
        text = text.replace(raw, escaped)
    return text


def _bytecode_cache() -> jinja2.BytecodeCache | None:
    """Compiled templates kept between runs, like Python's own bytecode cache: compiling them
    costs each command ~50 ms. Entries carry their template's checksum, so an edited template is
    compiled afresh; QCOMPILE_TEMPLATE_CACHE=off disables it."""
    setting = os.environ.get("QCOMPILE_TEMPLATE_CACHE", "")
    if setting == "off":
        return None
    directory = Path(setting) if setting else user_cache_dir("jinja")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None  # a read-only home: compile every time
    return jinja2.FileSystemBytecodeCache(str(directory))


def environment(directory: Path, filters: dict[str, Callable[..., Any]]) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(directory),
        bytecode_cache=_bytecode_cache(),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update({"md": markdown_cell, **filters})
    return env
