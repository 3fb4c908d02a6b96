"""qcompile sweep --launcher slurm on a real single-node Slurm: munge, slurmctld and slurmd from
Debian's packages (.ci/install-system-deps), started here on this machine with a private
configuration, and conf/hydra/launcher/slurm.yaml submitting through sbatch.

A missing Slurm fails the test (the README's test command installs it); where the tests do not
run as root it is skipped, since slurmd must run as root.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import cli

DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "sinfo")
FAST = "strategy.signal.params.fast"
SWEEP = (f"{FAST}=10,20", "costs=zero,bogus", "strategy.backtest.initial_capital=100000,-5")


def _binary(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _munge_works(socket_path: Path) -> bool:
    munge, unmunge = _binary("munge"), _binary("unmunge")
    if not (munge and unmunge):
        return False
    where = ["-S", str(socket_path)]
    token = subprocess.run([munge, "-n", *where], capture_output=True, check=False)
    if token.returncode:
        return False
    check = subprocess.run([unmunge, *where], input=token.stdout, capture_output=True, check=False)
    return check.returncode == 0


@pytest.fixture(scope="module")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A private single-node cluster; yields its slurm.conf (for SLURM_CONF)."""
    if any(_binary(name) is None for name in DAEMONS):
        # missing is a failure, not a skip: the README's test command installs it
        pytest.fail("Slurm is not installed: run `sh .ci/install-system-deps`")
    if os.geteuid() != 0:
        pytest.skip("slurmd runs as root")
    started: list[subprocess.Popen[bytes]] = []
    root = tmp_path_factory.mktemp("slurm")
    for name in ("state", "spool", "log", "munge"):
        (root / name).mkdir()
    # A munged of this cluster's own, on its own socket: another test run on the machine (CI
    # beside a developer's run) has its own too, and neither can stop the other's.
    socket_path = root / "munge" / "munge.socket"
    started.append(
        subprocess.Popen(
            [
                str(_binary("munged")), "--foreground", "--force", f"--socket={socket_path}",
                f"--pid-file={root}/munge/munged.pid", f"--log-file={root}/munge/munged.log",
                f"--seed-file={root}/munge/munged.seed",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while not _munge_works(socket_path):
        assert time.monotonic() < deadline, "munged did not start"
        time.sleep(0.1)
    host = socket.gethostname().split(".")[0]
    conf = root / "slurm.conf"
    conf.write_text(
        "\n".join(
            [
                "ClusterName=qcompiletest",
                f"SlurmctldHost={host}",
                "SlurmUser=root",
                "SlurmdUser=root",
                "AuthType=auth/munge",
                f"AuthInfo=socket={socket_path}",
                f"SlurmctldPort={_free_port()}",
                f"SlurmdPort={_free_port()}",
                f"StateSaveLocation={root}/state",
                f"SlurmdSpoolDir={root}/spool",
                f"SlurmctldPidFile={root}/slurmctld.pid",
                f"SlurmdPidFile={root}/slurmd.pid",
                f"SlurmctldLogFile={root}/log/slurmctld.log",
                f"SlurmdLogFile={root}/log/slurmd.log",
                "ProctrackType=proctrack/linuxproc",
                "TaskPlugin=task/none",
                "SelectType=select/cons_tres",
                "SelectTypeParameters=CR_Core",
                "ReturnToService=2",
                "MpiDefault=none",
                "JobAcctGatherType=jobacct_gather/none",
                "AccountingStorageType=accounting_storage/none",
                f"NodeName={host} CPUs={os.cpu_count() or 1} RealMemory=8000 State=UNKNOWN",
                "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
                "",
            ]
        )
    )
    env = {**os.environ, "SLURM_CONF": str(conf)}
    for daemon in ("slurmctld", "slurmd"):  # -D: in the foreground, so that they are ours to end
        started.append(
            subprocess.Popen(
                [str(_binary(daemon)), "-D", "-f", str(conf)],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            state = subprocess.run(
                [str(_binary("sinfo")), "-h", "-o", "%t"], env=env, capture_output=True, text=True
            )
            if state.stdout.strip() == "idle":
                break
            assert time.monotonic() < deadline, f"Slurm did not come up: {state.stderr.strip()}"
            time.sleep(0.3)
        yield conf
    finally:
        _cancel_jobs(env)
        for process in reversed(started):
            process.terminate()
        for process in reversed(started):
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        # slurmd's step daemons and the jobs' srun detach from slurmd: end every process of this
        # cluster, found by the configuration it runs under, and fail if one survives
        left = _end_processes_of(conf)
        assert not left, f"Slurm processes survived the test: {left}"


def _cancel_jobs(env: dict[str, str]) -> None:
    """Cancel whatever this cluster still runs and wait (briefly) until its queue is empty."""
    scancel, squeue = _binary("scancel"), _binary("squeue")
    if not (scancel and squeue):
        return
    subprocess.run([scancel, "--full", "--user", "root"], env=env, capture_output=True)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        queued = subprocess.run([squeue, "-h", "-o", "%i"], env=env, capture_output=True, text=True)
        if queued.returncode or not queued.stdout.strip():
            return
        time.sleep(0.3)


def _processes_of(conf: Path) -> dict[int, str]:
    """Every process whose environment names ``conf`` as its SLURM_CONF (but this one)."""
    marker = f"SLURM_CONF={conf}".encode()
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker in (entry / "environ").read_bytes().split(b"\0"):
                found[int(entry.name)] = (entry / "cmdline").read_bytes().split(b"\0")[0].decode()
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return found


def _end_processes_of(conf: Path) -> dict[int, str]:
    """SIGTERM, then SIGKILL, every process of this cluster; returns those still alive."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in _processes_of(conf):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + 5
        while _processes_of(conf) and time.monotonic() < deadline:
            time.sleep(0.1)
    return _processes_of(conf)


def test_a_sweep_through_slurm_gives_the_local_pools_table(
    example: Path, slurm: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLURM_CONF", str(slurm))
    assert cli(example, "build").exit_code == 0  # a sweep runs what was built
    refused = cli(example, "sweep", "ma_trend", *SWEEP, "--launcher", "slurm",
                  "hydra.launcher.mem_gb=100000")  # fmt: skip
    assert refused.exit_code == 2
    # sbatch's own words (submitit prints them), then ours: one line, no traceback
    assert refused.output.splitlines()[-1].startswith("error: --launcher slurm: sbatch: error: ")
    assert "Traceback" not in refused.output
    local = cli(example, "sweep", "ma_trend", *SWEEP, "--name", "local")
    assert local.exit_code == 1, local.output  # 6 jobs fail on purpose
    launched = cli(example, "sweep", "ma_trend", *SWEEP, "--name", "slurm", "--launcher", "slurm",
                   "hydra.launcher.timeout_min=5")  # fmt: skip
    assert launched.exit_code == 1, launched.output
    assert "8 job(s), 6 failed" in launched.output
    base = example / "reports/STR-2026-0007/sweeps"
    for name in ("results.csv", "statistics.json", "summary.md"):
        assert (base / "slurm" / name).read_bytes() == (base / "local" / name).read_bytes()
    # one array task per batch, run by slurmd: submitit's logs name the Slurm job
    logs = list((base / "slurm/launcher/.submitit").glob("*/*_log.out"))
    assert len(logs) == 4
