"""Read-only views for ``qcompile show`` and ``qcompile list``: composed configs and pins."""

from __future__ import annotations

from typing import Any

from qcompile.compiler.quoting import yaml_block
from qcompile.project import Project

MASK = "****"


def _mask(data: Any, key: str = "") -> Any:
    """Literal secrets become ****; ${oc.env:NAME} references are shown as they are."""
    from qcompile.compiler.validate import SECRET_REFERENCE, secret_problem

    if isinstance(data, dict):
        return {k: _mask(v, f"{key}.{k}" if key else str(k)) for k, v in data.items()}
    if isinstance(data, list):
        return [_mask(v, f"{key}[{i}]") for i, v in enumerate(data)]
    if isinstance(data, str) and not SECRET_REFERENCE.match(data) and secret_problem(key, data):
        return MASK
    return data


def composed_yaml(project: Project, strategy: str, overrides: list[str]) -> str:
    """The composed, resolved config of one strategy as YAML, secrets never resolved."""
    from qcompile.compiler.compose import compose_strategies, read_conf_tree
    from qcompile.compiler.validate import resolve
    from qcompile.errors import DiagnosticsError

    tree = read_conf_tree(project)
    (composed,) = compose_strategies(project, tree, overrides, {strategy})
    data, problems = resolve(composed)
    if problems:
        raise DiagnosticsError(problems)
    header = f"# {composed.file.path}" + (f" with {' '.join(overrides)}" if overrides else "")
    return header + "\n" + yaml_block(_mask(data)) + "\n"


def strategy_rows(project: Project, overrides: list[str]) -> list[dict[str, str]]:
    """One row per strategy: phase, pinned versions and what the next gate still needs."""
    from qcompile.compiler.build import compile_project

    rows = []
    for compiled in sorted(compile_project(project, overrides).strategies, key=lambda c: c.id):
        pins = compiled.lock.pins
        timestamp = pins["data"]["timestamp"]
        rows.append(
            {
                "id": compiled.id,
                "name": compiled.data["strategy"]["name"],
                "phase": compiled.data["strategy"]["status"],
                "version": pins["strategy"]["version"],
                "signal": f"{pins['signal']['name']}@{pins['signal']['version']} "
                f"({(pins['signal']['source_sha256'] or '')[:8]})",
                "data": f"{pins['data']['vendor']} {pins['data']['api_version']} "
                f"{timestamp['unit']} {timestamp['timezone']} {timestamp['stamping']}",
                "next gate": ", ".join(u.requirement for u in compiled.unmet_next) or "ready",
            }
        )
    return rows
