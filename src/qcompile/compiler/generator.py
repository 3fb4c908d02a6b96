"""What the compiler's output depends on besides its inputs: the generator pin.

Given the same inputs, generated/ is a function of qcompile's version and the templates' text:
released code does not change under a version, and the templates are where the artefacts' words
live. The manifest therefore pins those two, and not the compiler's Python source: a comment, a
rename or a refactor of a compiler module must leave every committed file, manifest included,
byte for byte as it was (docs/architecture.md, "What the manifest pins").

A development install can change compiler code without a new version. So that such a change is
never hidden behind the no-change fast path or a reused strategy, the build also remembers the
compiler source it last rendered with in the project's local cache (``.qcompile/``, never
committed); when the source differs, everything is rendered afresh and the bytes decide.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from qcompile import __version__
from qcompile.hashing import sha256_file, sha256_json, sources_sha256

PACKAGE_DIR = Path(__file__).resolve().parent
TEMPLATES_DIR = PACKAGE_DIR / "templates"
SOURCE_RECORD = "compiler.json"  # under the project's cache folder


@cache
def templates_sha256() -> str:
    files = sorted(TEMPLATES_DIR.glob("*.j2"))
    return sha256_json({p.name: sha256_file(p) for p in files})


def generator_pin() -> dict[str, Any]:
    """The generator's part of every input digest: qcompile's version and its templates."""
    return {"qcompile": __version__, "templates": templates_sha256()}


@cache
def source_sha256() -> str:
    """The Python source that renders: the compiler (with its sub-packages), the shared Jinja
    set-up whose filters every artefact goes through, the shared tables the runbook prints (the
    alert catalogue, the runner's operating defaults) and the runtime, whose source hash decides
    whether the self-test evidence still ticks the checklist's runtime items."""
    return sources_sha256(
        PACKAGE_DIR.parent,
        (PACKAGE_DIR.name, "templating.py", "alertcatalog.py", "runtimedefaults.py", "runtime"),
    )


def rendered_with_this_source(cache_dir: Path) -> bool:
    """Whether the last build in this checkout rendered with the compiler source installed now
    (False when unknown: a fresh clone renders once before trusting its manifest)."""
    try:
        record = json.loads((cache_dir / SOURCE_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and record.get("source_sha256") == source_sha256()


def remember_source(cache_dir: Path) -> None:
    """Record that generated/ now holds what this compiler source renders."""
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        (cache_dir / SOURCE_RECORD).write_text(
            json.dumps({"source_sha256": source_sha256()}) + "\n", encoding="utf-8"
        )
    except OSError:
        pass  # a cache: without it the next build renders everything again, which is safe
