"""A training killed with SIGKILL resumes from its checkpoint and ends as if never killed."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
import torch

MODEL = {"depth": 2, "base_channels": 4}
TRAIN = {"epochs": 12, "batch_size": 4, "seed": 5, "checkpoint_minutes": 0}


def command(patches, output, checkpoint):
    return [
        sys.executable, "-m", "unetseg", "train", "--patches", str(patches), "--output", str(output),
        "--model-settings", json.dumps(MODEL), "--train-settings", json.dumps(TRAIN), "--checkpoint", str(checkpoint),
    ]  # fmt: skip


def weights(directory):
    return torch.load(directory / "weights.pt", weights_only=True)


@pytest.mark.slow
def test_killed_training_resumes_and_matches_the_uninterrupted_run(tiny_patches, tmp_path):
    subprocess.run(command(tiny_patches, tmp_path / "reference", tmp_path / "ref.pt"), check=True, capture_output=True)

    output, checkpoint = tmp_path / "model", tmp_path / "state" / "checkpoint.pt"
    process = subprocess.Popen(command(tiny_patches, output, checkpoint), stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.kill()  # SIGKILL: no cleanup, no finally blocks
    process.wait()
    assert checkpoint.exists(), "training ended before its first checkpoint"
    assert not output.exists()  # nothing half-written under the final name
    killed_at = torch.load(checkpoint, weights_only=True)["epoch"]
    assert 1 <= killed_at < TRAIN["epochs"]

    rerun = subprocess.run(command(tiny_patches, output, checkpoint), check=True, capture_output=True, text=True)
    assert f"resumed from checkpoint {checkpoint} after epoch" in rerun.stderr
    assert "epoch 1:" not in rerun.stderr  # the finished epochs were not trained again
    assert not checkpoint.exists()  # removed once the model is written
    reference, resumed = weights(tmp_path / "reference"), weights(output)
    assert all(torch.equal(reference[k], resumed[k]) for k in reference)
    history = (output / "history.csv").read_text().splitlines()
    assert len(history) == 1 + TRAIN["epochs"]


def test_checkpoint_of_other_settings_is_ignored(tiny_patches, tmp_path):
    checkpoint = tmp_path / "checkpoint.pt"
    settings = {**TRAIN, "epochs": 2}
    base = command(tiny_patches, tmp_path / "a", checkpoint)
    base[base.index("--train-settings") + 1] = json.dumps(settings)
    torch.save({"fingerprint": "another run", "epoch": 1}, checkpoint)
    result = subprocess.run(base, check=True, capture_output=True, text=True)
    assert "ignoring checkpoint" in result.stderr and "epoch 2:" in result.stderr
