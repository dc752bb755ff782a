"""What Snakemake reruns after a change to a finished run: dry runs (`snakemake -n`) of one
finished tiny run, changed one way at a time.

Changes to how images are segmented, or to which images are, must not retrain (nor re-tile,
nor re-preprocess the training data); changes to what the model is trained from or how must.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import tifffile
import yaml

from unetseg.data.demo import write_demo_dataset

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.workflow

TINY = {
    "dataset": "rerun",
    "samples": "sheet.tsv",
    "tile": {"patch_size": 32},
    "model": {"depth": 2, "base_channels": 4},
    "train": {"epochs": 1, "batch_size": 4, "max_minutes": 3},
    "inference": {"tile": 32},
}
ROWS = [
    ("train_00", "train"), ("train_01", "train"), ("val_00", "val"),
    ("test_00", "test"), ("test_01", "test"), ("predict_00", "predict"),
]  # fmt: skip
BUILD = {"preprocess", "plan_data", "plan", "tile", "train"}  # what makes the model
OLD_NS = 1_000_000_000 * 10**9  # 2001-09-09: no write of today's run can produce it


def snakemake(directory: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    command = [sys.executable, "-m", "snakemake", "--cores", "2", "--resources", "gpu=1", *args]
    result = subprocess.run(command, cwd=directory, env=env, capture_output=True, text=True, timeout=900)
    if check and result.returncode:
        raise AssertionError(f"snakemake failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}")
    return result


def job_counts(result: subprocess.CompletedProcess) -> dict[str, int]:
    """The "Job stats" table of a (dry) run: rule -> number of jobs; {} if nothing to do."""
    lines = (result.stdout + "\n" + result.stderr).splitlines()
    stripped = [line.strip() for line in lines]
    if "Job stats:" not in stripped:
        assert "Nothing to be done" in result.stdout + result.stderr, result.stdout + result.stderr
        return {}
    counts = {}
    for line in lines[stripped.index("Job stats:") + 3 :]:  # after "job count" and the dashes
        name, _, count = line.strip().rpartition(" ")
        if not name or name.strip() == "total":
            break
        counts[name.strip()] = int(count)
    assert counts, lines
    return counts


def write_sheet(root: Path, rows: list[tuple[str, str]]) -> None:
    records = [
        (s, f"data/images/{s}.tif", "" if split == "predict" else f"data/masks/{s}.tif", split) for s, split in rows
    ]
    pd.DataFrame(records, columns=["sample", "image", "mask", "split"]).to_csv(
        root / "sheet.tsv", sep="\t", index=False
    )


def merged(base: dict, change: dict) -> dict:
    out = {**base}
    for key, value in change.items():
        out[key] = merged(base.get(key, {}), value) if isinstance(value, dict) else value
    return out


def planned(root: Path, change: dict | None = None) -> dict[str, int]:
    """Jobs `snakemake -n` schedules in ``root`` with ``change`` merged into the run's config."""
    name = "tiny.yaml"
    if change:
        name = "changed.yaml"
        (root / name).write_text(yaml.safe_dump(merged(TINY, change)))
    return job_counts(snakemake(root, "--configfile", name, "-n"))


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished tiny run on a sheet of own data; the data directory holds two more images
    (train_02 with its mask, predict_01) that the sheet does not list yet."""
    root = tmp_path_factory.mktemp("finished") / "project"
    root.mkdir()
    for name in ("Snakefile", "workflow", "config", "profiles"):
        source = REPO / name
        (shutil.copytree if source.is_dir() else shutil.copy)(source, root / name)
    write_demo_dataset(root / "data", shape=(64, 64), n_train=3, n_val=1, n_test=2, n_predict=2)
    write_sheet(root, ROWS)
    (root / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    snakemake(root, "--configfile", "tiny.yaml")
    assert planned(root) == {}, "a finished run has nothing left to do"
    return root


@pytest.fixture
def copy(finished, tmp_path) -> Path:
    """A copy of the finished run (timestamps kept), for a test that changes it."""
    target = tmp_path / "copy"
    shutil.copytree(finished, target, symlinks=True)
    return target


@pytest.fixture
def in_place(finished, tmp_path) -> Iterator[Path]:
    """The finished run itself, for a test that runs jobs in it (a copy elsewhere would give
    its images other absolute paths); put back as it was afterwards."""
    pristine = tmp_path / "pristine"
    shutil.copytree(finished, pristine, symlinks=True)
    yield finished
    shutil.rmtree(finished)
    shutil.move(pristine, finished)


NO_RETRAIN = {
    "inference.tta": {"inference": {"tta": True}},
    "inference.tile": {"inference": {"tile": 64}},
    "inference.ome_zarr": {"inference": {"ome_zarr": True}},
    "inference.measure": {"inference": {"measure": False}},
    "inference.instances": {"inference": {"instances": False}},
}


@pytest.mark.parametrize("key", list(NO_RETRAIN))
def test_inference_settings_resegment_without_retraining(finished, key):
    jobs = planned(finished, NO_RETRAIN[key])
    assert not BUILD & set(jobs), jobs
    assert jobs.get("segment") == 1, jobs  # the new setting does reach the segmentations


RETRAIN = {
    "model.depth": {"model": {"depth": 3}},
    "model.batch_norm": {"model": {"batch_norm": False}},
    "train.epochs": {"train": {"epochs": 2}},
    "tile.patch_size": {"tile": {"patch_size": 64}},
    "preprocess.percentiles": {"preprocess": {"percentiles": [2.0, 99.0]}},
}


@pytest.mark.parametrize("key", list(RETRAIN))
def test_training_settings_retrain(finished, key):
    jobs = planned(finished, RETRAIN[key])
    assert jobs.get("train") == 1, jobs
    assert jobs.get("segment") == 1, jobs  # with a new model, every segmentation is redone
    if key == "preprocess.percentiles":
        assert jobs.get("preprocess") == 3 and jobs.get("tile") == 1, jobs
    if key.startswith("train.") or key == "model.batch_norm":  # the training stage of the plan only
        # (it times the network training will run): the same patches
        assert jobs.get("plan") == 1 and "plan_data" not in jobs and "tile" not in jobs, jobs


def test_removing_a_test_row_does_not_retrain(copy):
    write_sheet(copy, [row for row in ROWS if row[0] != "test_01"])
    jobs = planned(copy)
    assert not BUILD & set(jobs), jobs
    assert jobs.get("evaluate") == 1, jobs  # the scores are over the remaining test images


@pytest.mark.parametrize(
    "rows",
    [
        [*ROWS, ("train_02", "train")],  # one more training image
        [row for row in ROWS if row[0] != "train_01"],  # one less
        [("train_00", "train"), ("train_01", "val"), ("val_00", "train"), *ROWS[3:]],  # swapped splits
    ],
    ids=["added", "removed", "swapped"],
)
def test_other_training_rows_retrain(copy, rows):
    write_sheet(copy, rows)
    jobs = planned(copy)
    assert jobs.get("train") == 1 and jobs.get("tile") == 1, jobs


def test_moving_the_project_does_not_retrain(copy, tmp_path):
    moved = tmp_path / "elsewhere" / "renamed-project"
    moved.parent.mkdir()
    shutil.move(copy, moved)
    jobs = planned(moved)
    assert not BUILD & set(jobs), jobs


def test_a_new_predict_row_keeps_the_finished_segmentations(in_place):
    results = in_place / "results" / "rerun"
    before = [s for s, split in ROWS if split in ("test", "predict")]
    masks = {s: results / "masks" / f"{s}.tif" for s in before}
    for path in masks.values():
        os.utime(path, ns=(OLD_NS, OLD_NS))
    weights = (results / "model" / "weights.pt").stat().st_mtime_ns

    write_sheet(in_place, [*ROWS, ("predict_01", "predict")])
    jobs = planned(in_place)
    assert not BUILD & set(jobs) and jobs.get("segment") == 1, jobs
    snakemake(in_place, "--configfile", "tiny.yaml")

    assert {s: p.stat().st_mtime_ns for s, p in masks.items()} == dict.fromkeys(before, OLD_NS)
    assert tifffile.imread(results / "masks" / "predict_01.tif").shape == (64, 64)
    assert (results / "measurements" / "predict_01.csv").is_file()
    assert (results / "model" / "weights.pt").stat().st_mtime_ns == weights
    summary = pd.read_csv(results / "measurements" / "summary.csv")
    assert summary["sample"].tolist() == [*before, "predict_01"]
    assert set(summary["status"]) == {"ok"}
    assert planned(in_place) == {}
