"""Stage 5 (render): planned artefacts -> text, through Jinja templates.

Consumes :class:`~qcompile.plan.Artefact` records; produces each artefact's bytes. StrictUndefined
turns a missing value into an error instead of an empty string; autoescape is off because the
outputs are code and YAML, which is why every value goes through a quoting filter instead.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import Any

import jinja2

from qcompile.quoting import pyliteral, shquote, yaml_block, yaml_inline

TEMPLATES_DIR = Path(__file__).parent / "templates"


def markdown_cell(value: Any) -> str:
    """Text that stays inside one Markdown table cell and renders no HTML."""
    text = re.sub(r"\s+", " ", str(value)).strip()
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


@cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        shquote=shquote,
        pyliteral=pyliteral,
        yaml=yaml_inline,
        yaml_block=yaml_block,
        md=markdown_cell,
    )
    return env


def template_names() -> list[str]:
    return sorted(p.name for p in TEMPLATES_DIR.glob("*.j2"))


def render(template: str, context: dict[str, Any]) -> bytes:
    text = environment().get_template(template).render(**context)
    return text.encode("utf-8")
