"""The workflow through profiles/slurm on a real one-node SLURM cluster started on localhost.

Installs Debian's SLURM and MUNGE packages when they are missing (root only; skips
otherwise), starts munged, slurmctld and slurmd in the foreground with a configuration in a
temporary directory (tests/slurm/), runs the tiny workflow with the SLURM executor plugin
and stops the daemons it started by their PIDs.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import string
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
TEMPLATES = Path(__file__).resolve().parent / "slurm"
PACKAGES = ["slurmctld", "slurmd", "slurm-client", "munge"]
COMMANDS = ["slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "munged", "munge", "unmunge"]
# Without slurmdbd, job states come from squeue, which sees a finished job for MinJobAge
# seconds: the plugin needs at least 3x its status-check delay.
STATUS_DELAY = 1
MIN_JOB_AGE = 300

pytestmark = [pytest.mark.workflow, pytest.mark.slow]

TINY = {
    "dataset": "tiny",
    # One image per split: each job adds its submission latency, not its work.
    "demo": {"size": 64, "n_train": 1, "n_val": 1, "n_test": 1, "n_predict": 0},
    "tile": {"patch_size": 32},
    "model": {"depth": 2, "base_channels": 4},
    "train": {"epochs": 3, "batch_size": 4, "max_minutes": 3},
    "inference": {"tile": 32},
}


@dataclass
class Cluster:
    directory: Path
    env: dict[str, str]
    partitions: tuple[str, str]  # CPU, GPU

    def run(self, *command: str, timeout: float = 30) -> str:
        result = subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=timeout)
        if result.returncode:
            raise AssertionError(f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}")
        return result.stdout

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in sorted(self.directory.glob("*.log"))
        )


def install_slurm() -> bool:
    """Install SLURM and MUNGE with apt-get, or skip the test saying why that is impossible.

    Returns whether it installed them (then :func:`remove_slurm` takes them away again).
    """
    if os.geteuid() != 0:
        pytest.skip("installing and starting a SLURM cluster needs root")
    if all(shutil.which(c) for c in COMMANDS):
        return False
    if shutil.which("apt-get") is None:
        pytest.skip("SLURM is not installed and there is no apt-get to install it")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *PACKAGES],
    ):
        try:
            result = subprocess.run(
                command, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=600
            )
        except subprocess.TimeoutExpired:
            pytest.skip(f"{' '.join(command)} took more than 10 minutes")
        if result.returncode:
            pytest.skip(f"{' '.join(command)} failed, cannot install SLURM:\n{result.stderr[-2000:]}")
    return True


def remove_slurm() -> None:
    """Remove the packages :func:`install_slurm` installed. With ``scontrol`` on PATH and no
    controller answering, the SLURM executor plugin's import waits 9-10 s for
    ``scontrol show config`` at every later Snakemake start (the rest of the suite, the user's
    runs): leave the machine as it was."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    command = ["apt-get", "remove", "-y", "-qq", *PACKAGES, "slurm-wlm-basic-plugins"]
    subprocess.run(command, env=env, stdin=subprocess.DEVNULL, capture_output=True, timeout=600)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(check, what: str, processes: list[subprocess.Popen], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        for process in processes:
            if process.poll() is not None:
                raise AssertionError(f"{process.args[0]} exited with {process.returncode} before {what}")
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def munge_works() -> bool:
    encode = subprocess.run(["munge", "-n"], capture_output=True, timeout=10)
    if encode.returncode:
        return False
    return subprocess.run(["unmunge"], input=encode.stdout, capture_output=True, timeout=10).returncode == 0


def start_munged(directory: Path) -> subprocess.Popen | None:
    """munged as the munge user, unless one already answers; None if none was started."""
    if munge_works():
        return None
    run_dir = Path("/run/munge")
    run_dir.mkdir(parents=True, exist_ok=True)
    shutil.chown(run_dir, "munge", "munge")
    if not Path("/etc/munge/munge.key").exists():
        subprocess.run(["mungekey", "--create"], user="munge", group="munge", check=True, timeout=30)
    with open(directory / "munged.log", "w") as log:
        process = subprocess.Popen(
            ["munged", "--foreground"], user="munge", group="munge", stdout=log, stderr=subprocess.STDOUT
        )
    wait_for(munge_works, "munged to answer", [process], timeout=15)
    return process


def profile() -> dict:
    return yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())


def profile_partitions() -> tuple[str, str]:
    """The CPU and GPU partitions that profiles/slurm asks for, so that the profile is run as written."""
    settings = profile()
    cpu = settings["default-resources"]["slurm_partition"]
    gpu = {settings["set-resources"][rule]["slurm_partition"] for rule in ("plan", "train", "segment")}
    assert len(gpu) == 1, "plan, train and segment ask for different partitions"
    return cpu, gpu.pop()


def write_config(directory: Path, ctld_port: int) -> Path:
    cpu, gpu = profile_partitions()
    partitions = [f"PartitionName={cpu} Nodes=localhost Default=YES MaxTime=INFINITE State=UP"]
    if gpu != cpu:
        partitions.append(f"PartitionName={gpu} Nodes=localhost MaxTime=INFINITE State=UP")
    template = string.Template((TEMPLATES / "slurm.conf.in").read_text())
    text = template.substitute(
        directory=directory,
        ctld_port=ctld_port,
        slurmd_port=free_port(),
        min_job_age=MIN_JOB_AGE,
        partitions="\n".join(partitions),
    )
    (directory / "slurm.conf").write_text(text)
    shutil.copy(TEMPLATES / "gres.conf", directory / "gres.conf")  # read from slurm.conf's directory
    for name in ("state", "spool"):
        (directory / name).mkdir()
    return directory / "slurm.conf"


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory):
    installed = install_slurm()
    directory = tmp_path_factory.mktemp("slurm")
    ctld_port = free_port()
    env = {**os.environ, "SLURM_CONF": str(write_config(directory, ctld_port))}
    started: list[subprocess.Popen] = []
    try:
        munged = start_munged(directory)
        if munged is not None:
            started.append(munged)
        cluster = Cluster(directory, env, profile_partitions())

        def sinfo_says(text: str, *options: str) -> bool:
            result = subprocess.run(["sinfo", "-h", *options], env=env, capture_output=True, text=True, timeout=10)
            return result.returncode == 0 and text in result.stdout

        try:
            with open(directory / "slurmctld.out", "w") as log:
                slurmctld = ["slurmctld", "-D", "-c"]
                started.append(subprocess.Popen(slurmctld, env=env, stdout=log, stderr=subprocess.STDOUT))
            wait_for(lambda: sinfo_says(""), "slurmctld to answer", started)
            # slurmd without SLURM_CONF fetches the configuration from slurmctld (configless).
            slurmd = ["slurmd", "-D", "-N", "localhost", "--conf-server", f"localhost:{ctld_port}"]
            without_conf = {k: v for k, v in os.environ.items() if k != "SLURM_CONF"}
            with open(directory / "slurmd.out", "w") as log:
                started.append(subprocess.Popen(slurmd, env=without_conf, stdout=log, stderr=subprocess.STDOUT))
            wait_for(lambda: sinfo_says("idle", "-N", "-o", "%T"), "the node to be idle", started)
        except AssertionError as error:
            raise AssertionError(f"{error}\n{cluster.logs()}") from None
        yield cluster
    finally:
        # Jobs left by a failed or timed-out run first, then the daemons, newest first.
        if started:
            try:
                subprocess.run(["scancel", "--full", "--user", "root"], env=env, capture_output=True, timeout=30)
            except subprocess.TimeoutExpired:
                pass
        for process in reversed(started):
            stop(process)
        if installed:
            remove_slurm()


def slurm_jobs(cluster: Cluster) -> list[dict[str, str]]:
    """Every job slurmctld still remembers (MinJobAge), as key=value fields."""
    lines = cluster.run("scontrol", "-o", "show", "job").splitlines()
    return [dict(re.findall(r"(\w+)=(\S*)", line)) for line in lines if line.startswith("JobId=")]


def test_workflow_runs_through_the_slurm_profile(slurm_cluster, tmp_path):
    root = tmp_path
    for name in ("Snakefile", "workflow", "config", "profiles"):
        source = REPO / name
        (shutil.copytree if source.is_dir() else shutil.copy)(source, root / name)
    (root / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    # The jobs get the submitting environment (sbatch --export=ALL): `unetseg` and SLURM_CONF.
    env = {**slurm_cluster.env, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    command = [
        sys.executable, "-m", "snakemake", "--workflow-profile", "profiles/slurm", "--configfile", "tiny.yaml",
        "--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", str(STATUS_DELAY),
    ]  # fmt: skip
    started = time.monotonic()
    try:
        # A wrong status set-up hangs rather than fails, hence the timeout.
        result = subprocess.run(
            command, cwd=root, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=600
        )
    except subprocess.TimeoutExpired as error:
        stderr = (error.stderr or b"").decode(errors="replace")[-6000:]  # bytes, whatever text= says
        raise AssertionError(f"snakemake timed out:\n{stderr}\n{slurm_cluster.logs()}") from None
    print(f"workflow through SLURM: {time.monotonic() - started:.0f} s")
    if result.returncode:
        logs = sorted((root / "logs").rglob("*.log")) + sorted((root / ".snakemake" / "slurm_logs").rglob("*.log"))
        tails = "\n".join(f"--- {p.relative_to(root)}\n{p.read_text(errors='replace')[-1500:]}" for p in logs)
        raise AssertionError(f"snakemake failed:\n{result.stderr[-6000:]}\n{tails}\n{slurm_cluster.logs()}")

    # Every job ran as a SLURM job; the GPU rules, and only they, asked for a GPU in the GPU partition.
    cpu_partition, gpu_partition = slurm_cluster.partitions
    jobs = {}
    for job in slurm_jobs(slurm_cluster):
        rule = re.match(r"rule_([A-Za-z_]+?)(_wildcards_|$)", job["Comment"]).group(1)
        jobs.setdefault(rule, []).append(job)
    # preprocess: train and val images; segment: one batch of test images.
    expected = {"demo_data": 1, "preprocess": 2, "plan_data": 1, "plan": 1, "tile": 1, "train": 1, "segment": 1,
                "evaluate": 1}  # fmt: skip
    assert {rule: len(jobs.get(rule, [])) for rule in expected} == expected
    for rule, submitted in jobs.items():
        for job in submitted:
            assert job["JobState"] == "COMPLETED", job
            asks_gpu = "gres:gpu:1" in job.get("TresPerJob", "")
            assert asks_gpu == (rule in ("plan", "train", "segment")), job
            if asks_gpu:
                cpus_per_gpu = profile()["set-resources"][rule]["cpus_per_gpu"]
                assert job["Partition"] == gpu_partition, job
                assert job["CpusPerTres"] == f"gres:gpu:{cpus_per_gpu}", job
            else:
                assert job["Partition"] == cpu_partition, job

    # The contract's outputs.
    results = root / "results" / "tiny"
    assert {p.name for p in (results / "model").iterdir()} >= {"weights.pt", "card.json", "history.csv"}
    assert (results / "masks" / "test_00.tif").is_file()
    summary = json.loads((results / "evaluation" / "summary.json").read_text())
    assert summary["n_images"] == 1 and 0.0 <= summary["mean_dice"] <= 1.0
