"""Sweeps through Hydra's launcher plugins: Slurm and local processes (hydra-submitit-launcher),
joblib (hydra-joblib-launcher) and Ray (hydra-ray-launcher), installed as qcompile's extras.

``--launcher NAME`` names an option of Hydra's ``hydra/launcher`` config group, configured like
any Hydra launcher: a plugin's own option (``submitit_local``, ``submitit_slurm``, ``joblib``,
``ray``) or a project file ``conf/hydra/launcher/NAME.yaml`` whose defaults list extends one
(``conf/hydra/launcher/slurm.yaml``: ``defaults: [submitit_slurm]`` and the cluster's settings).
``hydra.launcher.*`` overrides on the command line change a setting for one run.

The sweep's batches are cut into launcher jobs (one per batch, or at most ``--tasks``), pickled
to ``<sweep>/launcher/tasks.pkl`` (the project directory is shared with the cluster, as its data
and conf/ must be), and each launcher job runs ``batches.run_batches`` on its share: the same
function the local pool runs, so the results table is the same. A launcher job that fails as a
whole (a node lost, a time limit) records its error on each of its sweep jobs.
"""

from __future__ import annotations

import importlib.util
import pickle
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from qcompile.errors import QcompileError
from qcompile.project import Project

# Hydra launcher options -> (the plugin's module, the qcompile extra that installs it)
PLUGINS = {
    "submitit_slurm": ("hydra_plugins.hydra_submitit_launcher", "slurm"),
    "submitit_local": ("hydra_plugins.hydra_submitit_launcher", "slurm"),
    "joblib": ("hydra_plugins.hydra_joblib_launcher", "joblib"),
    "ray": ("hydra_plugins.hydra_ray_launcher", "ray"),
    "ray_aws": ("hydra_plugins.hydra_ray_launcher", "ray"),
}
LAUNCHER_DIR = "launcher"  # under the sweep's folder: Hydra's sweep dir (job logs, tasks.pkl)
TASK_KEY = "qcompile_task"


def _options(project: Project) -> list[str]:
    directory = project.conf_dir / "hydra" / "launcher"
    files = sorted(p.stem for p in directory.glob("*.yaml")) if directory.is_dir() else []
    return sorted({*files, *PLUGINS})


def plugin_of(project: Project, name: str, seen: tuple[str, ...] = ()) -> str | None:
    """The plugin option ``name`` is or extends through the project's defaults lists."""
    if name in PLUGINS:
        return name
    path = project.conf_dir / "hydra" / "launcher" / f"{name}.yaml"
    if name in seen or not path.is_file():
        return None
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError:
        return None
    defaults = config.get("defaults") if isinstance(config, dict) else None
    for entry in defaults if isinstance(defaults, list) else []:
        option = entry if isinstance(entry, str) else None
        if option and option != "_self_":
            found = plugin_of(project, option.split("@")[0].strip(), (*seen, name))
            if found:
                return found
    return None


def check_launcher(project: Project, name: str) -> str:
    """The plugin option behind ``--launcher name``; an error naming the extra when the plugin
    is not installed, or the options there are when ``name`` is none of them."""
    plugin = plugin_of(project, name)
    if plugin is None:
        choices = ", ".join(["local", "serial", *_options(project)])
        raise QcompileError(
            f"--launcher {name}: not a launcher; choose from {choices} "
            "(a project's own go in conf/hydra/launcher/, see docs/sweeps.md)"
        )
    module, extra = PLUGINS[plugin]
    if importlib.util.find_spec(module) is None:
        raise QcompileError(f"--launcher {name} needs: pip install 'qcompile[{extra}]'")
    return plugin


@dataclass
class LauncherTask:
    """What each launcher job calls with its composed config: its share of the sweep."""

    project: Project
    strategy: str
    tasks_file: str

    def __call__(self, config: Any) -> Any:
        from qcompile.research.sweep.batches import run_batches

        with open(self.tasks_file, "rb") as handle:
            work = pickle.load(handle)[int(config[TASK_KEY])]
        return run_batches(self.project, self.strategy, work)


def launch(
    project: Project,
    strategy: str,
    work: list[Any],
    directory: Path,
    name: str,
    overrides: list[str],
    tasks: int | None,
) -> Iterator[Any]:
    """Every launcher job's results (``sweep.BatchResults``), after the launcher returns."""
    if not work:
        return
    from hydra._internal.callbacks import Callbacks
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra._internal.utils import create_config_search_path
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.plugins import Plugins
    from hydra.core.utils import setup_globals
    from hydra.errors import HydraException
    from hydra.types import HydraContext, RunMode
    from omegaconf.errors import OmegaConfBaseException

    from qcompile.research.sweep.batches import chunks, first_line

    shares = chunks(work, tasks or len(work))
    sweep_dir = (directory / LAUNCHER_DIR).resolve()
    shutil.rmtree(sweep_dir, ignore_errors=True)  # the last run's job folders and logs only
    sweep_dir.mkdir(parents=True)
    tasks_file = sweep_dir / "tasks.pkl"
    tasks_file.write_bytes(pickle.dumps(shares, protocol=pickle.HIGHEST_PROTOCOL))
    setup_globals()
    search_path = create_config_search_path(str(project.conf_dir.resolve()))
    loader = ConfigLoaderImpl(config_search_path=search_path)
    try:
        config = loader.load_configuration(
            config_name=None,
            overrides=[
                f"hydra/launcher={name}",
                f"hydra.sweep.dir={sweep_dir.as_posix()}",
                "hydra.sweep.subdir=${hydra.job.num}",
                "hydra.job.chdir=False",
                "hydra.job.name=qcompile_sweep",
                "hydra/hydra_logging=disabled",  # the launcher's own chatter: stdout is ours
                *overrides,
            ],
            run_mode=RunMode.MULTIRUN,
        )
        HydraConfig.instance().set_config(config)
        launcher = Plugins.instance().instantiate_launcher(
            hydra_context=HydraContext(config_loader=loader, callbacks=Callbacks(config)),
            task_function=LauncherTask(project, strategy, str(tasks_file)),
            config=config,
        )
    except (HydraException, OmegaConfBaseException) as error:
        raise QcompileError(f"--launcher {name}: {str(error).splitlines()[0]}") from None
    try:
        returns = launcher.launch([[f"+{TASK_KEY}={i}"] for i in range(len(shares))], 0)
    except Exception as error:  # nothing was launched (sbatch refused the jobs, no Ray...)
        raise QcompileError(f"--launcher {name}: {first_line(error)}") from None
    for share, returned in zip(shares, returns, strict=True):
        try:
            yield returned.return_value
        except Exception as error:  # the launcher job failed as a whole: each job says why
            message = f"launcher job failed: {first_line(error)}"
            yield [(job, None, None, message) for batch in share for job in batch.jobs]
