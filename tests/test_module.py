"""unetseg used as a Snakemake module from a lab's own project, as the README shows."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from unetseg.data.demo import write_demo_dataset

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.workflow

# The lab's Snakefile: unetseg cloned into unetseg/, its config under the lab config's
# `unetseg` key, its rules renamed unetseg_*, and one rule of the lab's own on its output.
LAB_SNAKEFILE = """\
configfile: "config/config.yaml"


module unetseg:
    snakefile:
        "unetseg/Snakefile"
    config:
        config["unetseg"]


use rule * from unetseg as unetseg_*


rule all:
    input:
        rules.unetseg_all.input,
        "results/lab/dice.txt",
    default_target: True


rule lab_dice:
    input:
        "results/{dataset}/evaluation/summary.json".format(dataset=config["unetseg"]["dataset"]),
    output:
        "results/lab/dice.txt",
    params:
        lab=config["lab"],
    shell:
        "python -c 'import json, sys; print(sys.argv[1], json.load(open(sys.argv[2]))[\\"mean_dice\\"])'"
        " {params.lab} {input} > {output}"
"""

LAB_CONFIG = {
    "lab": "cell-lab",  # a key of the lab's own, unknown to unetseg
    "unetseg": {
        "dataset": "nuclei",
        "samples": "config/samples.tsv",
        "tile": {"patch_size": 32},
        "model": {"depth": 2, "base_channels": 4},
        "train": {"epochs": 3, "batch_size": 4, "max_minutes": 3},
        "inference": {"tile": 32},
    },
}


def lab_project(root: Path) -> Path:
    """A lab's project with its own config, sample sheet and data, and unetseg cloned into it."""
    (root / "unetseg").mkdir()
    for name in ("Snakefile", "workflow"):
        source = REPO / name
        (shutil.copytree if source.is_dir() else shutil.copy)(source, root / "unetseg" / name)
    (root / "Snakefile").write_text(LAB_SNAKEFILE)
    (root / "config").mkdir()
    (root / "config" / "config.yaml").write_text(yaml.safe_dump(LAB_CONFIG))
    write_demo_dataset(root / "data", shape=(48, 48), n_train=2, n_val=1, n_test=1, n_predict=1)
    rows = [
        (sample, f"data/images/{sample}.tif", "" if split == "predict" else f"data/masks/{sample}.tif", split)
        for sample, split in [("train_00", "train"), ("train_01", "train"), ("val_00", "val"),
                              ("test_00", "test"), ("predict_00", "predict")]
    ]  # fmt: skip
    sheet = pd.DataFrame(rows, columns=["sample", "image", "mask", "split"])
    sheet.to_csv(root / "config" / "samples.tsv", sep="\t", index=False)
    return root


def snakemake(directory: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    command = [sys.executable, "-m", "snakemake", "--cores", "2", "--resources", "gpu=1", *args]
    result = subprocess.run(command, cwd=directory, env=env, capture_output=True, text=True, timeout=900)
    if result.returncode:
        raise AssertionError(f"snakemake failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}")
    return result


def test_lab_project_runs_unetseg_as_a_module(tmp_path):
    root = lab_project(tmp_path)
    snakemake(root)

    results = root / "results" / "nuclei"
    assert {p.name for p in (results / "model").iterdir()} >= {"weights.pt", "card.json", "history.csv"}
    assert (results / "masks" / "test_00.tif").is_file() and (results / "masks" / "predict_00.tif").is_file()
    summary = json.loads((results / "evaluation" / "summary.json").read_text())
    assert summary["n_images"] == 1
    lab, dice = (root / "results" / "lab" / "dice.txt").read_text().split()
    assert lab == "cell-lab" and float(dice) == pytest.approx(summary["mean_dice"])
    # The config the lab passed, with the schema's defaults filled in, is the one recorded.
    card = json.loads((results / "model" / "card.json").read_text())
    assert card["config"]["model"]["depth"] == 2 and card["config"]["train"]["seed"] == 0
    assert not (root / "resources").exists()  # no demo data for a lab's own sheet

    assert "Nothing to be done" in snakemake(root, "-n").stdout
