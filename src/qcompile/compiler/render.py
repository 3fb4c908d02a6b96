"""Stage 5 (render): planned artefacts -> text, through Jinja templates.

Consumes :class:`~qcompile.compiler.plan.Artefact` records; produces each artefact's bytes. StrictUndefined
turns a missing value into an error instead of an empty string; autoescape is off because the
outputs are code and YAML, which is why every value goes through a quoting filter instead.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import jinja2

from qcompile import templating
from qcompile.compiler.generator import TEMPLATES_DIR
from qcompile.compiler.quoting import pyliteral, shquote, yaml_block, yaml_scalar


@cache
def environment() -> jinja2.Environment:
    return templating.environment(
        TEMPLATES_DIR,
        {"shquote": shquote, "pyliteral": pyliteral, "yaml": yaml_scalar, "yaml_block": yaml_block},
    )


def template_names() -> list[str]:
    return sorted(p.name for p in TEMPLATES_DIR.glob("*.j2"))


def render(template: str, context: dict[str, Any]) -> bytes:
    text = environment().get_template(template).render(**context)
    return text.encode("utf-8")
