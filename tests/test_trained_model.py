"""The workflow with `trained_model`: segment new batches with a model trained before.

One tiny demo model is trained per module; every other run here only applies it (or, for
fine-tuning, starts from it). Bad input stops the run before any job, with one line naming
the key or file and the fix, and leaves no results/ behind.
"""

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

from unetseg.data.demo import write_demo_dataset

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.workflow

TINY = {
    "tile": {"patch_size": 32},
    "model": {"depth": 2, "base_channels": 4},
    "train": {"epochs": 2, "batch_size": 4, "max_minutes": 3},
    "inference": {"tile": 32},
}
DEMO = {"size": 64, "n_train": 1, "n_val": 1, "n_test": 0, "n_predict": 0}
BUILD_JOBS = ("demo_data", "preprocess", "tile", "train", "training_curve")


def project(root: Path) -> Path:
    """A copy of the workflow, as a user's clone would have it."""
    root.mkdir(parents=True, exist_ok=True)
    for name in ("Snakefile", "workflow", "config", "profiles"):
        source = REPO / name
        (shutil.copytree if source.is_dir() else shutil.copy)(source, root / name)
    return root


def snakemake(
    directory: Path, *args: str, target: str | None = None, check: bool = True
) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    targets = [target] if target else []  # first: --configfile and --resources take several values
    command = [sys.executable, "-m", "snakemake", *targets, "--cores", "2", "--resources", "gpu=1", *args]
    result = subprocess.run(command, cwd=directory, env=env, capture_output=True, text=True, timeout=900)
    if check and result.returncode:
        raise AssertionError(f"snakemake failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}")
    return result


def write_config(directory: Path, name: str = "tiny.yaml", **settings) -> str:
    (directory / name).write_text(yaml.safe_dump({**TINY, **settings}))
    return name


def job_counts(result: subprocess.CompletedProcess) -> dict[str, int]:
    """The "Job stats" table of a (dry) run: rule -> number of jobs; {} if nothing to do."""
    lines = (result.stdout + "\n" + result.stderr).splitlines()
    if "Job stats:" not in [line.strip() for line in lines]:
        assert "Nothing to be done" in result.stdout + result.stderr, result.stdout + result.stderr
        return {}
    start = [line.strip() for line in lines].index("Job stats:")
    counts = {}
    for line in lines[start + 3 :]:  # after "job count" and the dashes
        name, _, count = line.strip().rpartition(" ")
        if not name or name.strip() == "total":
            break
        counts[name.strip()] = int(count)
    assert counts, lines[start : start + 10]
    return counts


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_sheet(root: Path, rows: list[tuple[str, str, str, str]]) -> str:
    pd.DataFrame(rows, columns=["sample", "image", "mask", "split"]).to_csv(root / "sheet.tsv", sep="\t", index=False)
    return "sheet.tsv"


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """The model directory of a tiny demo run (absolute path, as a colleague would send it),
    in the project that trained it (root = model.parents[2])."""
    root = project(tmp_path_factory.mktemp("trained"))
    config = write_config(root, dataset="tiny", demo=DEMO)
    snakemake(root, "--configfile", config, target="results/tiny/model")
    model = root / "results" / "tiny" / "model"
    assert {"weights.pt", "card.json"} <= {p.name for p in model.iterdir()}
    return model


def new_data(root: Path) -> Path:
    """Images (and masks) the model has never seen."""
    data = root / "data"
    write_demo_dataset(data, shape=(64, 64), n_train=1, n_val=1, n_test=2, n_predict=2)
    return data


def test_predict_rows_are_segmented_without_training(tmp_path, trained):
    root = project(tmp_path / "apply")
    new_data(root)
    sheet = write_sheet(root, [(f"new_{i}", f"data/images/predict_0{i}.tif", "", "predict") for i in (0, 1)])
    config = write_config(root, dataset="batch42", samples=sheet, trained_model=str(trained))

    planned = job_counts(snakemake(root, "--configfile", config, "-n"))
    assert planned.get("segment") == 1 and planned.get("measurements_summary") == 1
    assert not set(planned) & {*BUILD_JOBS, "evaluate"}, planned
    weights_before = sha256(trained / "weights.pt")
    # The segmentations only (the report's pages run in the test below, with test rows).
    snakemake(root, "--configfile", config, target="results/batch42/measurements/summary.csv")

    results = root / "results" / "batch42"
    for sample in ("new_0", "new_1"):
        mask = tifffile.imread(results / "masks" / f"{sample}.tif")
        assert mask.shape == (64, 64) and mask.dtype == np.uint8
        instances = tifffile.imread(results / "instances" / f"{sample}.tif")
        np.testing.assert_array_equal(instances > 0, mask > 0)
        table = pd.read_csv(results / "measurements" / f"{sample}.csv")
        assert sorted(table["label"]) == np.unique(instances[instances > 0]).tolist()
    summary = pd.read_csv(results / "measurements" / "summary.csv")
    assert summary["sample"].tolist() == ["new_0", "new_1"]
    assert summary["status"].tolist() == ["ok", "ok"] and summary["split"].tolist() == ["predict"] * 2
    assert not (results / "model").exists() and not (results / "tiles").exists()
    assert not (results / "evaluation").exists()
    assert sha256(trained / "weights.pt") == weights_before  # the given model is only read


def test_test_rows_are_evaluated_with_the_given_model(tmp_path, trained):
    root = project(tmp_path / "apply")
    new_data(root)
    rows = [(s, f"data/images/{s}.tif", f"data/masks/{s}.tif", "test") for s in ("test_00", "test_01")]
    rows.append(("predict_00", "data/images/predict_00.tif", "", "predict"))
    config = write_config(root, dataset="scored", samples=write_sheet(root, rows), trained_model=str(trained))

    planned = job_counts(snakemake(root, "--configfile", config, "-n"))
    assert planned.get("evaluate") == 1 and not set(planned) & set(BUILD_JOBS), planned
    snakemake(root, "--configfile", config)

    results = root / "results" / "scored"
    summary = json.loads((results / "evaluation" / "summary.json").read_text())
    assert summary["n_images"] == 2 and [r["sample"] for r in summary["per_image"]] == ["test_00", "test_01"]
    provenance = summary["provenance"]
    assert provenance["model"]["weights_sha256"] == sha256(trained / "weights.pt")
    assert provenance["model"]["path"] == str(trained)
    for sample in ("test_00", "test_01", "predict_00"):
        assert (results / "masks" / f"{sample}.tif").is_file()
        assert (results / "measurements" / f"{sample}.csv").is_file()
    measured = pd.read_csv(results / "measurements" / "summary.csv")
    assert measured["sample"].tolist() == ["test_00", "test_01", "predict_00"]
    assert measured["split"].tolist() == ["test", "test", "predict"]
    assert not (results / "model").exists()
    assert (results / "report" / "model_card.html").is_file() and (results / "report" / "data.html").is_file()
    assert job_counts(snakemake(root, "--configfile", config, "-n")) == {}  # up to date


def test_images_glob_gives_one_predict_row_per_file(tmp_path, trained):
    root = project(tmp_path / "apply")
    data = new_data(root)
    incoming = root / "incoming"
    incoming.mkdir()
    shutil.copy(data / "images" / "predict_00.tif", incoming / "cell 01.tif")
    shutil.copy(data / "images" / "predict_01.tif", incoming / "cell-02.ome.tif")
    (incoming / "notes.txt").write_text("not an image; the glob does not match it\n")
    (incoming / "broken.tif").write_bytes(b"II*\x00 a header and nothing else")  # fails alone
    config = write_config(root, dataset="globbed", images="incoming/*.tif", trained_model=str(trained))

    dry = snakemake(root, "--configfile", config, "-n")
    planned = job_counts(dry)
    assert planned.get("segment") == 1 and not set(planned) & set(BUILD_JOBS), planned
    assert "warning: sample broken will fail, the others are segmented" in dry.stderr, dry.stderr
    snakemake(root, "--configfile", config, target="results/globbed/measurements/summary.csv")

    results = root / "results" / "globbed"
    summary = pd.read_csv(results / "measurements" / "summary.csv").set_index("sample")
    assert sorted(summary.index) == ["broken", "cell-02", "cell_01"]
    assert set(summary["split"]) == {"predict"}
    assert summary["status"].to_dict() == {"broken": "failed", "cell-02": "ok", "cell_01": "ok"}
    assert "broken.tif: not a readable TIFF" in summary.loc["broken", "error"]
    assert sorted(p.name for p in (results / "masks").iterdir()) == ["cell-02.tif", "cell_01.tif"]
    assert not (root / "resources").exists()  # no demo data for a glob
    # The user's images are nobody's output: Snakemake would delete them (--delete-all-output,
    # --forceall) if a rule claimed them, as demo_data once did.
    deleting = snakemake(root, "--configfile", config, "--delete-all-output", "--dry-run")
    listed = [line for line in (deleting.stdout + deleting.stderr).splitlines() if not line.startswith("warning:")]
    assert not [line for line in listed if "incoming" in line], listed
    assert "Would delete results/globbed/measurements/summary.csv" in listed, listed

    # An installed workflow run from a project directory of its own (`snakemake -s`): the
    # config of three keys is enough there too.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "batch.yaml").write_text(yaml.safe_dump(
        {"dataset": "batch", "images": str(incoming / "cell*.tif"), "trained_model": str(trained)}
    ))  # fmt: skip
    planned = job_counts(snakemake(elsewhere, "-s", str(root / "Snakefile"), "--configfile", "batch.yaml", "-n"))
    assert planned.get("segment") == 1 and not set(planned) & set(BUILD_JOBS), planned


def two_channel_sheet(root: Path, model: Path) -> dict:
    image = np.random.default_rng(0).integers(0, 1000, (2, 64, 64)).astype(np.uint16)
    tifffile.imwrite(root / "two.tif", image, photometric="minisblack", metadata={"axes": "CYX"})
    rows = [("one", "data/images/predict_00.tif", "", "predict"), ("two", "two.tif", "", "predict")]
    return {"samples": write_sheet(root, rows), "trained_model": str(model)}


def duplicate_ids(root: Path, model: Path) -> dict:
    (root / "dup").mkdir()
    shutil.copy(root / "data/images/predict_00.tif", root / "dup" / "a b.tif")
    shutil.copy(root / "data/images/predict_01.tif", root / "dup" / "a_b.tif")
    return {"images": "dup/*.tif", "trained_model": str(model)}


def not_a_model(root: Path, model: Path) -> dict:
    (root / "colleague").mkdir()
    (root / "colleague" / "weights.pt").write_bytes((model / "weights.pt").read_bytes())  # no card
    return {"samples": write_sheet(root, [("one", "data/images/predict_00.tif", "", "predict")]),
            "trained_model": "colleague"}  # fmt: skip


def missing_model(root: Path, model: Path) -> dict:
    rows = [("one", "data/images/predict_00.tif", "", "predict")]
    return {"samples": write_sheet(root, rows), "trained_model": str(root / "models" / "gone")}


def empty_glob(root: Path, model: Path) -> dict:
    return {"images": "incoming/*.tif", "trained_model": str(model)}


def init_from_other_depth(root: Path, model: Path) -> dict:
    return {
        "demo": DEMO,
        "model": {"depth": 3, "base_channels": 4},
        "train": {**TINY["train"], "init_from": str(model)},
    }


BAD_INPUT = {
    # case: (settings, [fragments that one line of the error holds: key or file, and the fix])
    "missing model": (missing_model, ["trained_model", "models/gone", "does not exist", "give the model directory"]),
    "not a model": (not_a_model, ["trained_model", "colleague", "card.json", "give results/<dataset>/model"]),
    "two channels": (two_channel_sheet, ["two.tif", "2 channel(s)", "takes 1", "data.axes"]),
    "empty glob": (empty_glob, ["images", "incoming/*.tif", "matches no file", "check the pattern"]),
    "duplicate ids": (duplicate_ids, ["images", "a b.tif", "a_b.tif", "'a_b'", "rename one"]),
    "init_from depth": (init_from_other_depth, ["train.init_from", "model.depth", "set model.depth: 2"]),
}


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_stops_before_any_job_with_one_line_naming_the_fix(tmp_path, trained, case):
    root = project(tmp_path / "apply")
    new_data(root)
    make, fragments = BAD_INPUT[case]
    config = write_config(root, dataset="bad", **make(root, trained))

    result = snakemake(root, "--configfile", config, check=False)

    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if all(f in line for f in fragments)]
    assert lines, f"no line of stderr holds {fragments}:\n{result.stderr[-3000:]}"
    assert not (root / "results").exists()
    assert not (root / "resources").exists()


def test_init_from_a_matching_model_fine_tunes_it(tmp_path, trained):
    # The project that trained the model, copied with its results: the next round of training
    # starts from that model; preprocessing and tiling are up to date and are not redone (the
    # training stage of the plan reads train.* and runs again; the patches' stage does not).
    root = tmp_path / "tune"
    shutil.copytree(trained.parents[2], root)
    train = {**TINY["train"], "epochs": 1, "init_from": str(trained)}
    config = write_config(root, "tune.yaml", dataset="tiny", demo=DEMO, train=train)

    planned = job_counts(snakemake(root, "--configfile", config, "-n", target="results/tiny/model"))
    assert planned == {"plan": 1, "train": 1}, planned
    snakemake(root, "--configfile", config, target="results/tiny/model")

    log = (root / "logs" / "tiny" / "train.log").read_text()
    assert f"initialised from {trained}" in log
    tuned = root / "results" / "tiny" / "model"
    assert json.loads((tuned / "card.json").read_text())["config"]["train"]["init_from"] == str(trained)
    assert sha256(tuned / "weights.pt") != sha256(trained / "weights.pt")
