"""What a sign-off covers, and whether it still covers what is there now.

A sign-off records the sha256 of the artefact it signed; the gates compare that with the
artefact's current hash, so that editing a signed report, evidence file, checklist or research
brief makes its sign-off stale. ``qcompile signoff`` (lifecycle/) writes the records with these
same functions; the build reads them through ``signed_artefacts``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qcompile.compiler.rules.gates import SignedArtefact
from qcompile.compiler.schema import SIGNOFF_ARTEFACTS, SIGNOFF_ROLES
from qcompile.hashing import sha256_file, sha256_json


def artefact_locations(config: dict[str, Any]) -> dict[str, str]:
    """Where each signed artefact of a composed, resolved config lives (relative to the root)."""
    strategy = config["strategy"]
    reports = str((config.get("project") or {}).get("reports_dir", "reports")).rstrip("/")
    version_dir = f"{reports}/{strategy['id']}/{strategy['version']}"
    return {
        "brief": "the research brief (strategy.alpha_thesis and strategy.brief)",
        "report": f"{version_dir}/report.md",
        "validation": f"{version_dir}/evidence.json",
        "checklist": f"generated/{strategy['id']}/checklist.md",
    }


def artefact_sha256(root: Path, config: dict[str, Any], artefact: str) -> str | None:
    """The artefact's current hash, or None when its file does not exist.

    The brief lives in the config itself, so its hash is taken over the resolved values: editing
    the alpha thesis after signing makes the brief sign-off stale.
    """
    if artefact not in SIGNOFF_ARTEFACTS:
        raise ValueError(f"unknown sign-off artefact {artefact!r}")
    if artefact == "brief":
        strategy = config["strategy"]
        return sha256_json(
            {"alpha_thesis": strategy.get("alpha_thesis"), "brief": strategy.get("brief")}
        )
    path = root / artefact_locations(config)[artefact]
    return sha256_file(path) if path.is_file() else None


def signed_artefacts(root: Path, config: dict[str, Any]) -> dict[str, SignedArtefact]:
    """Current state of every artefact whose sign-off recorded a hash (for gates.evaluate).

    Hand-written sign-offs without ``sha256`` are left out: there is nothing to compare.
    """
    signoffs = config["strategy"].get("signoffs")
    if not isinstance(signoffs, dict):
        return {}
    where = artefact_locations(config)
    return {
        name: SignedArtefact(where[name], artefact_sha256(root, config, name))
        for name, record in sorted(signoffs.items())
        if name in SIGNOFF_ARTEFACTS and isinstance(record, dict) and record.get("sha256")
    }


def resign_command(strategy_id: str, artefact: str) -> str:
    """The command that (re-)signs ``artefact``: hints print it."""
    extra = " --artefact brief" if artefact == "brief" else ""
    return f"qcompile signoff {strategy_id} --role {SIGNOFF_ROLES[artefact]}{extra} --by EMAIL"
