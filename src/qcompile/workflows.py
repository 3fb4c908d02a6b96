"""Commands that need both halves: compile a strategy, then hand its parameters to the runtime.

This is the one module that imports the compiler and the runtime; each stays ignorant of the
other. The CLI calls these functions and prints what they return.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import yaml

from qcompile.errors import QcompileError
from qcompile.hashing import sha256_json
from qcompile.project import Project


def backtest(project: Project, strategy: str, overrides: list[str]) -> tuple[object, str]:
    """Backtest one strategy as its config (plus overrides) stands now; returns (report, summary).

    Without overrides the report goes to reports/<id>/<version>/, where the gates look for it.
    With overrides it goes to reports/<id>/<version>/runs/<hash of the overrides>/: an experiment
    never replaces the evidence of the configuration as committed.
    """
    from qcompile.backtest.runner import backtest as run_backtest
    from qcompile.backtest.runner import summary
    from qcompile.build import compile_project
    from qcompile.plan import runtime_parameters

    compilation = compile_project(project, overrides, [strategy])
    if not compilation.strategies:
        raise QcompileError(f"no strategy {strategy!r}")
    (compiled,) = compilation.strategies
    params = runtime_parameters(compiled)
    target = None
    if overrides:
        version_dir = (
            project.root
            / params["backtest"]["reports_dir"]
            / compiled.id
            / params["strategy"]["version"]
        )
        target = version_dir / "runs" / sha256_json(overrides)[:12]
    with tempfile.TemporaryDirectory() as scratch:
        params_file = Path(scratch) / "params.yaml"
        params_file.write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
        report = run_backtest(params_file, project.root, target)
    return report, summary(report, project.root)
