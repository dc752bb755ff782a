"""The real Snakemake workflow, end to end, on tiny data in a temporary directory."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
import yaml
import zarr

from unetseg.data.demo import write_demo_dataset
from unetseg.data.masks import foreground_mask
from unetseg.evaluation.metrics import dice, iou
from unetseg.io.images import open_image

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.workflow

TINY = {
    "tile": {"patch_size": 32},
    "model": {"depth": 2, "base_channels": 4},
    "train": {"epochs": 3, "batch_size": 4, "max_minutes": 3},
    "inference": {"tile": 32},
}


def project(tmp_path: Path) -> Path:
    """A copy of the workflow, as a user's clone would have it."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    for name in ("Snakefile", "workflow", "config", "profiles"):
        source = REPO / name
        (shutil.copytree if source.is_dir() else shutil.copy)(source, tmp_path / name)
    return tmp_path


def snakemake(directory: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    command = [sys.executable, "-m", "snakemake", "--cores", "2", "--resources", "gpu=1", *args]
    result = subprocess.run(command, cwd=directory, env=env, capture_output=True, text=True, timeout=900)
    if check and result.returncode:
        raise AssertionError(f"snakemake failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}")
    return result


def write_config(directory: Path, **settings) -> Path:
    path = directory / "tiny.yaml"
    path.write_text(yaml.safe_dump({**TINY, **settings}))
    return path


def test_demo_workflow_produces_the_contract_outputs_and_report(tmp_path):
    root = project(tmp_path)
    demo = {"size": 64, "n_train": 2, "n_val": 1, "n_test": 2, "n_predict": 1}
    config = write_config(root, dataset="tiny", demo=demo)
    snakemake(root, "--configfile", config.name)

    results = root / "results" / "tiny"
    summary = json.loads((results / "evaluation" / "summary.json").read_text())
    assert summary["n_images"] == 2 and [r["sample"] for r in summary["per_image"]] == ["test_00", "test_01"]
    # The summary agrees with an independent recomputation from the files on disk.
    scores = []
    for sample in ("test_00", "test_01"):
        mask = tifffile.imread(results / "masks" / f"{sample}.tif")
        truth = tifffile.imread(root / "resources" / "demo" / "masks" / f"{sample}.tif")
        assert mask.shape == truth.shape == (64, 64) and np.issubdtype(mask.dtype, np.integer)
        scores.append((dice(truth, mask), iou(truth, mask)))
    assert summary["mean_dice"] == pytest.approx(np.mean([s[0] for s in scores]))
    assert summary["mean_iou"] == pytest.approx(np.mean([s[1] for s in scores]))
    assert pd.read_csv(results / "evaluation" / "per_image.csv")["sample"].tolist() == ["test_00", "test_01"]
    provenance = summary["provenance"]
    weights = hashlib.sha256((results / "model" / "weights.pt").read_bytes()).hexdigest()
    assert provenance["model"]["weights_sha256"] == weights and sorted(provenance["inputs"]) == ["test_00", "test_01"]
    assert provenance["training"]["device"] == "cpu" and provenance["seed"] == 0
    assert provenance["config"]["dataset"] == "tiny" and provenance["evaluation_seconds"] > 0
    card = json.loads((results / "model" / "card.json").read_text())
    assert sorted(card["provenance"]["inputs"]) == ["train_00", "train_01", "val_00"]
    assert card["provenance"]["sample_sheet"]["path"] == "resources/demo/samples.tsv"
    assert (results / "masks" / "predict_00.tif").is_file()
    assert {p.name for p in (results / "model").iterdir()} >= {"weights.pt", "card.json", "history.csv"}
    assert not (results / "probabilities").exists() or not any((results / "probabilities").iterdir())

    assert "Nothing to be done" in snakemake(root, "--configfile", config.name, "-n").stdout
    snakemake(root, "--configfile", config.name, "--report", "report.html")
    report = (root / "report.html").read_text()
    assert "training_curve.png" in report and "test_00.png" in report and "per_image.csv" in report


def test_own_data_with_stacks_zarr_and_listed_foreground_values(tmp_path):
    root = project(tmp_path)
    data = root / "data"
    write_demo_dataset(data, shape=(48, 48), n_train=2, n_val=1, n_test=1, n_predict=2)
    rows = [(s, f"data/images/{s}.tif", f"data/masks/{s}.tif", split)
            for s, split in (("train_00", "train"), ("train_01", "train"), ("val_00", "val"))]  # fmt: skip
    # Masks with inverted values and a listed foreground value, as for ISBI 2012 membranes.
    for sample, *_ in rows + [("test_00",)]:
        labels = tifffile.imread(data / "masks" / f"{sample}.tif")
        tifffile.imwrite(data / "masks" / f"{sample}.tif", np.where(labels > 0, 7, 200).astype(np.uint8))
    zarr.create_array(data / "test_00.zarr", data=tifffile.imread(data / "images" / "test_00.tif"), chunks=(16, 16))
    rows.append(("test_00", "data/test_00.zarr", "data/masks/test_00.tif", "test"))
    stack = np.stack([tifffile.imread(data / "images" / f"predict_0{i}.tif") for i in (0, 1)])
    tifffile.imwrite(data / "stack.tif", stack, imagej=True, metadata={"axes": "ZYX"})
    rows.append(("stack", "data/stack.tif", "", "predict"))
    pd.DataFrame(rows, columns=["sample", "image", "mask", "split"]).to_csv(root / "sheet.tsv", sep="\t", index=False)
    inference = {"tile": 32, "blend": "gaussian", "instances": True, "ome_zarr": True, "min_object_size": 0}
    config = write_config(root, dataset="own", samples="sheet.tsv", labels={"foreground": [7]}, inference=inference)
    snakemake(root, "--configfile", config.name)

    results = root / "results" / "own"
    stack_mask = tifffile.imread(results / "masks" / "stack.tif")
    assert stack_mask.shape == (2, 48, 48)
    instances = tifffile.imread(results / "instances" / "stack.tif")  # 3D-connected labels of the stack
    np.testing.assert_array_equal(instances > 0, stack_mask > 0)
    with open_image(results / "ome-zarr" / "stack.ome.zarr") as probabilities:
        assert probabilities.shape == (2, 1, 48, 48) and probabilities.dtype == np.uint8
    with open_image(results / "ome-zarr" / "stack.ome.zarr" / "labels" / "instances") as stored:
        np.testing.assert_array_equal(np.stack([stored.read(z)[0] for z in range(2)]), instances)
    summary = json.loads((results / "evaluation" / "summary.json").read_text())
    truth = foreground_mask(tifffile.imread(data / "masks" / "test_00.tif"), [7])
    assert summary["mean_dice"] == pytest.approx(dice(truth, tifffile.imread(results / "masks" / "test_00.tif")))
    assert not (root / "resources").exists()  # no demo data generated for a user's sheet


def test_bad_sample_sheet_stops_before_any_job(tmp_path):
    root = project(tmp_path)
    (root / "sheet.tsv").write_text("sample\timage\tmask\tsplit\na/b\tx.tif\tm.tif\ttrain\n")
    config = write_config(root, dataset="bad", samples="sheet.tsv")
    result = snakemake(root, "--configfile", config.name, check=False)
    assert result.returncode != 0
    assert "sheet.tsv" in result.stderr + result.stdout
    assert not (root / "results").exists()


def test_misspelt_config_key_is_refused(tmp_path):
    root = project(tmp_path)
    config = write_config(root, dataset="bad", trian={"epochs": 1})
    result = snakemake(root, "--configfile", config.name, "-n", check=False)
    assert result.returncode != 0 and "trian" in result.stderr + result.stdout


@pytest.mark.slow
def test_reruns_give_bit_identical_weights_and_masks(tmp_path):
    demo = {"size": 64, "n_train": 2, "n_val": 1, "n_test": 1, "n_predict": 0}
    runs = []
    for name in ("first", "second"):
        root = project(tmp_path / name)
        config = write_config(root, dataset="same", demo=demo)
        snakemake(root, "--configfile", config.name)
        runs.append(root / "results" / "same")
    first, second = runs
    assert (first / "model/weights.pt").read_bytes() == (second / "model/weights.pt").read_bytes()
    assert (first / "masks/test_00.tif").read_bytes() == (second / "masks/test_00.tif").read_bytes()


def test_two_classes_train_segment_measure_and_evaluate(tmp_path):
    root = project(tmp_path)
    demo = {"size": 64, "n_train": 2, "n_val": 1, "n_test": 1, "n_predict": 1, "kind": "cells",
            "directory": "resources/cells"}  # fmt: skip
    config = write_config(
        root, dataset="cells", samples="resources/cells/samples.tsv", demo=demo,
        labels={"classes": {"cell_body": [1], "nucleus": [2]}}, inference={"tile": 32, "min_object_size": 0},
    )  # fmt: skip
    snakemake(root, "--configfile", config.name)

    results = root / "results" / "cells"
    card = json.loads((results / "model" / "card.json").read_text())
    assert card["architecture"]["out_channels"] == 3 and card["classes"] == {"cell_body": [1], "nucleus": [2]}
    mask = tifffile.imread(results / "masks" / "test_00.tif")
    assert set(np.unique(mask)) <= {0, 1, 2}
    summary = json.loads((results / "evaluation" / "summary.json").read_text())
    assert list(summary["per_class"]) == ["cell_body", "nucleus"]
    assert summary["confusion"]["classes"] == ["background", "cell_body", "nucleus"]
    truth = tifffile.imread(root / "resources" / "cells" / "masks" / "test_00.tif")
    assert summary["per_image"][0]["dice_nucleus"] == pytest.approx(dice(truth == 2, mask == 2))
    # Objects per class, each measured with its class.
    instances = tifffile.imread(results / "instances" / "test_00.tif")
    table = pd.read_csv(results / "measurements" / "test_00.csv")
    assert len(table) == instances.max() and set(table["class"]) <= {"cell_body", "nucleus"}
    for row in table.itertuples():
        assert set(np.unique(mask[instances == row.label])) == {1 + ["cell_body", "nucleus"].index(row[2])}
    summary_csv = pd.read_csv(results / "measurements" / "summary.csv").set_index("sample")
    counts = table["class"].value_counts()
    assert summary_csv.loc["test_00", "object_count_nucleus"] == counts.get("nucleus", 0)
    assert (results / "report" / "confusion.png").is_file()


def test_a_config_of_a_sample_sheet_alone_is_planned(tmp_path):
    root = project(tmp_path)
    write_demo_dataset(root / "data", shape=(64, 64), n_train=2, n_val=1, n_test=1, n_predict=0)
    config = root / "mine.yaml"
    config.write_text(yaml.safe_dump({"dataset": "mine", "samples": "data/samples.tsv", "train": {"max_minutes": 0.5}}))
    snakemake(root, "--configfile", config.name)

    results = root / "results" / "mine"
    plan = json.loads((results / "plan.json").read_text())
    card = json.loads((results / "model" / "card.json").read_text())
    assert card["plan"]["settings"] == plan["settings"]
    assert card["model_config"]["depth"] == plan["settings"]["model"]["depth"]
    assert card["model_config"]["base_channels"] == plan["settings"]["model"]["base_channels"]
    assert plan["settings"]["tile"]["patch_size"] == 64  # the images' side: smaller than 128
    assert plan["reasons"]["tile.weight_map.enabled"].endswith("with instance ids)")
    assert json.loads((results / "evaluation" / "summary.json").read_text())["n_images"] == 1
