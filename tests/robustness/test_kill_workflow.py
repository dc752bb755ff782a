"""`kill -9` of a whole workflow run, then `snakemake --rerun-incomplete`: it completes,
training resumes from its checkpoint and finished outputs are left untouched."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
TINY = {
    "demo": {"size": 64, "n_train": 2, "n_val": 1, "n_test": 2, "n_predict": 1},
    "tile": {"patch_size": 32},
    "model": {"depth": 2, "base_channels": 4},
    "train": {"epochs": 60, "batch_size": 4, "checkpoint_minutes": 0},
    "inference": {"tile": 32},
}


@pytest.mark.workflow
def test_killed_workflow_continues_with_rerun_incomplete(tmp_path):
    for name in ("Snakefile", "workflow", "config", "profiles"):
        source = REPO / name
        (shutil.copytree if source.is_dir() else shutil.copy)(source, tmp_path / name)
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    command = [sys.executable, "-m", "snakemake", "--cores", "2", "--configfile", "tiny.yaml"]
    checkpoint = tmp_path / "results/demo/train_state/checkpoint.pt"

    run = subprocess.Popen(command, cwd=tmp_path, env=env, start_new_session=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 300
    while not checkpoint.exists() and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(run.pid, signal.SIGKILL)  # snakemake and every job it started
    run.wait()
    assert checkpoint.exists(), "the run ended before training wrote a checkpoint"
    preprocessed = sorted((tmp_path / "results/demo/preprocessed").iterdir())
    stamps = {p.name: p.stat().st_mtime_ns for p in preprocessed}
    assert not (tmp_path / "results/demo/model").exists()

    rerun = subprocess.run([*command, "--rerun-incomplete"], cwd=tmp_path, env=env, capture_output=True,
                           text=True, timeout=600)  # fmt: skip
    assert rerun.returncode == 0, rerun.stderr[-4000:]
    assert "removed the lock left by a killed run" in rerun.stderr
    assert "resumed from checkpoint" in (tmp_path / "logs/demo/train.log").read_text()
    assert {p.name: p.stat().st_mtime_ns for p in preprocessed} == stamps  # finished work kept
    summary = json.loads((tmp_path / "results/demo/evaluation/summary.json").read_text())
    assert summary["n_images"] == 2
    assert sorted(p.name for p in (tmp_path / "results/demo/masks").iterdir()) == [
        "predict_00.tif",
        "test_00.tif",
        "test_01.tif",
    ]
