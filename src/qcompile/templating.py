"""Jinja set-up shared by the compiler's artefacts and the runtime's reports.

Both render code, YAML and Markdown, never HTML-escaped by default: StrictUndefined turns a
missing value into an error, and values reach the text only through explicit filters.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jinja2


def markdown_cell(value: Any) -> str:
    """Text that stays inside one Markdown table cell and renders no HTML."""
    text = re.sub(r"\s+", " ", str(value)).strip()
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def environment(directory: Path, filters: dict[str, Callable[..., Any]]) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(directory),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update({"md": markdown_cell, **filters})
    return env
