"""`unetseg.batch`: one process segments a batch of images with a trusted model.

Unit level (no Snakemake): a tiny random U-Net saved as a model directory, a few 64x64
synthetic images, and :class:`BatchSegmenter` writing every per-sample output; its state
files make a second run skip finished samples, and one bad image fails only its own row.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
import torch
import zarr
from scipy import ndimage as ndi

from unetseg.batch.manifest import read_manifests, write_manifest
from unetseg.batch.segment import BatchSample, BatchSegmenter, SegmentSettings, sample_paths
from unetseg.data.demo import synthetic_nuclei
from unetseg.data.normalize import normalize, percentile_stats
from unetseg.inference.run import InferenceOptions, PredictOutputs, predict_image
from unetseg.io.images import open_image
from unetseg.io.pixelsize import read_pixel_size
from unetseg.nn.model import UNet
from unetseg.nn.modelcard import save_model

PERCENTILES = [1.0, 99.8]
OPTIONS = InferenceOptions(tile=32, threads=2)
OLD_NS = 1_000_000_000 * 10**9  # 2001-09-09: a stamp no run of today's writes can produce


def nuclei(seed: int, shape=(64, 64)) -> tuple[np.ndarray, np.ndarray]:
    return synthetic_nuclei(shape, rng=np.random.default_rng(seed))


def threshold_net(level: float = 0.3, gain: float = 20.0) -> UNet:
    """A U-Net whose probability is sigmoid(gain * (3x3 mean of the input - level)): a smoothed
    threshold of the normalised image, so masks hold whole nuclei (a random net gives speckle)."""
    model = UNet(in_channels=1, out_channels=1, depth=2, base_channels=4)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.reset_parameters()  # identity: weight 1, bias 0, mean 0, variance 1
                module.reset_running_stats()
            elif isinstance(module, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
                module.weight.zero_()  # the deeper levels add nothing
                if module.bias is not None:
                    module.bias.zero_()
        delta = torch.zeros(3, 3)
        delta[1, 1] = 1.0
        model.encoders[0][0].weight[0, 0] = 1 / 9
        for conv in (model.encoders[0][3], model.decoders[1][0], model.decoders[1][3]):
            conv.weight[0, 0] = delta  # channel 0 of the skip connection, passed through
        model.head.weight[0, 0] = gain
        model.head.bias[0] = -gain * level
    return model.eval()


THRESHOLD = 0.3  # the card's, not the default 0.5


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("model") / "model"
    card = {"normalization": {"method": "percentile", "percentiles": PERCENTILES}, "threshold": THRESHOLD}
    save_model(threshold_net(), root, card)
    return root


def write_images(directory: Path, seeds=(1, 2, 3)) -> list[BatchSample]:
    directory.mkdir(parents=True, exist_ok=True)
    samples = []
    for i, seed in enumerate(seeds):
        path = directory / f"img_{i}.tif"
        tifffile.imwrite(path, nuclei(seed)[0])
        samples.append(BatchSample(sample=f"img_{i}", image=str(path)))
    return samples


def settings(tmp_path: Path, **changes) -> SegmentSettings:
    return SegmentSettings(results=str(tmp_path / "results"), overlays=str(tmp_path / "overlays"), **changes)


def output_files(tmp_path: Path, sample: str) -> dict[str, Path]:
    """Every file a segmented sample has (the preprocessed group by its metadata file)."""
    paths = sample_paths(tmp_path / "results", sample)
    files = {key: paths[key] for key in ("mask", "instances", "measurements", "state")}
    files["preprocessed"] = paths["preprocessed"] / "zarr.json"
    files["overlay"] = tmp_path / "overlays" / f"{sample}.png"
    return files


def age_outputs(tmp_path: Path, samples: list[BatchSample]) -> None:
    """Set every output's mtime to OLD_NS: a rewrite, however fast, shows as a new mtime."""
    for sample in samples:
        for path in output_files(tmp_path, sample.sample).values():
            os.utime(path, ns=(OLD_NS, OLD_NS))


def rewritten(tmp_path: Path, samples: list[BatchSample]) -> dict[str, bool]:
    """Per sample: whether any of its outputs was written since :func:`age_outputs`."""
    return {
        s.sample: any(p.stat().st_mtime_ns != OLD_NS for p in output_files(tmp_path, s.sample).values())
        for s in samples
    }


def test_run_writes_every_output_and_the_mask_of_unetseg_predict(tmp_path, model_dir):
    samples = write_images(tmp_path / "images")
    rows = BatchSegmenter(model_dir, OPTIONS, settings(tmp_path)).run(samples)

    assert [r["sample"] for r in rows] == ["img_0", "img_1", "img_2"]
    assert [r["status"] for r in rows] == ["ok"] * 3 and all(r["error"] == "" for r in rows)
    assert json.loads((model_dir / "card.json").read_text())["threshold"] == THRESHOLD
    for sample, row in zip(samples, rows):
        files = output_files(tmp_path, sample.sample)
        assert all(path.is_file() for path in files.values()), files
        # The mask is what `unetseg predict` writes for the same image and model.
        reference = tmp_path / "predict" / f"{sample.sample}.tif"
        predict_image(str(model_dir), sample.image, PredictOutputs(str(reference)), OPTIONS)
        mask = tifffile.imread(files["mask"])
        assert mask.shape == (64, 64) and mask.dtype == np.uint8
        np.testing.assert_array_equal(mask, tifffile.imread(reference))
        assert 0.1 < np.count_nonzero(mask) / mask.size < 0.6
        # ... and the card's threshold applied to the probabilities of the normalised image.
        with open_image(sample.image) as source:
            block = normalize(source.read(0), percentile_stats(source, *PERCENTILES))
        probs = OPTIONS.predictor(model_dir).predict_whole(block)[0]
        np.testing.assert_array_equal(mask > 0, probs >= THRESHOLD)
        assert (mask > 0).sum() > (probs >= 0.5).sum()  # the card's threshold made a difference

        # Instance labels: the connected objects of the mask, one id each.
        instances = tifffile.imread(files["instances"])
        np.testing.assert_array_equal(instances > 0, mask > 0)
        ids = np.unique(instances[instances > 0])
        assert len(ids) == ndi.label(mask > 0, structure=np.ones((3, 3)))[1] == row["object_count"]

        # Measurements: one row per instance id, areas and intensities of the raw image.
        table = pd.read_csv(files["measurements"])
        assert sorted(table["label"]) == ids.tolist()
        raw = tifffile.imread(sample.image).astype(np.float64)
        for record in table.itertuples():
            region = instances == record.label
            assert record.area == region.sum()
            assert record.mean_intensity_c0 == pytest.approx(raw[region].mean())
        assert row["foreground_fraction"] == pytest.approx(np.count_nonzero(mask) / mask.size)

        # The preprocessed sample: the normalised image the network saw.
        group = zarr.open_group(str(sample_paths(tmp_path / "results", sample.sample)["preprocessed"]), mode="r")
        assert group.attrs["unetseg"]["sample"] == sample.sample
        np.testing.assert_allclose(group["image"][0], block, rtol=1e-6, atol=1e-6)
    # Nothing half-written is left beside the outputs.
    leftovers = [p for p in (tmp_path / "results").rglob("*") if p.name.startswith(".")]
    assert leftovers == []


def test_second_run_skips_and_changes_recompute_only_what_they_affect(tmp_path, model_dir, capsys):
    samples = write_images(tmp_path / "images")
    BatchSegmenter(model_dir, OPTIONS, settings(tmp_path)).run(samples)

    age_outputs(tmp_path, samples)
    capsys.readouterr()
    segmenter = BatchSegmenter(model_dir, OPTIONS, settings(tmp_path))
    rows = segmenter.run(samples)
    assert rewritten(tmp_path, samples) == {"img_0": False, "img_1": False, "img_2": False}
    assert segmenter.up_to_date == 3 and capsys.readouterr().err.count("(up to date: outputs kept)") == 3
    assert [r["status"] for r in rows] == ["ok"] * 3  # up to date counts as done
    assert all(r["object_count"] > 0 for r in rows)  # ... with its row from the first run

    # Another image in the same file: that sample alone is segmented again.
    tifffile.imwrite(samples[1].image, nuclei(7)[0])
    BatchSegmenter(model_dir, OPTIONS, settings(tmp_path)).run(samples)
    assert rewritten(tmp_path, samples) == {"img_0": False, "img_1": True, "img_2": False}
    mask = tifffile.imread(output_files(tmp_path, "img_1")["mask"])
    reference = tmp_path / "reference.tif"
    predict_image(str(model_dir), samples[1].image, PredictOutputs(str(reference)), OPTIONS)
    np.testing.assert_array_equal(mask, tifffile.imread(reference))

    # Only the modification time of one image changes (a `touch`): that sample again.
    age_outputs(tmp_path, samples)
    stat = Path(samples[2].image).stat()
    os.utime(samples[2].image, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    BatchSegmenter(model_dir, OPTIONS, settings(tmp_path)).run(samples)
    assert rewritten(tmp_path, samples) == {"img_0": False, "img_1": False, "img_2": True}

    # An inference option that changes the result: every sample again.
    age_outputs(tmp_path, samples)
    tta = InferenceOptions(tile=32, threads=2, tta=True)
    BatchSegmenter(model_dir, tta, settings(tmp_path)).run(samples)
    assert rewritten(tmp_path, samples) == {"img_0": True, "img_1": True, "img_2": True}

    # A deleted output: that sample again, the others are skipped.
    age_outputs(tmp_path, samples)
    output_files(tmp_path, "img_0")["measurements"].unlink()
    BatchSegmenter(model_dir, tta, settings(tmp_path)).run(samples)
    assert output_files(tmp_path, "img_0")["measurements"].is_file()
    assert rewritten(tmp_path, samples) == {"img_0": True, "img_1": False, "img_2": False}


def test_a_moved_project_keeps_its_finished_samples(tmp_path, model_dir, monkeypatch):
    """Paths relative to the project, as the workflow gives them: moving the project with
    its results (another disk, a renamed folder) leaves every sample up to date."""
    first = tmp_path / "project"
    write_images(first / "images")
    monkeypatch.chdir(first)
    samples = [BatchSample(f"img_{i}", f"images/img_{i}.tif") for i in range(3)]
    relative = SegmentSettings(results="results", overlays="overlays")
    BatchSegmenter(model_dir, OPTIONS, relative).run(samples)

    moved = tmp_path / "elsewhere" / "project"
    moved.parent.mkdir()
    first.rename(moved)
    monkeypatch.chdir(moved)
    age_outputs(moved, samples)
    rows = BatchSegmenter(model_dir, OPTIONS, relative).run(samples)

    assert [r["status"] for r in rows] == ["ok"] * 3
    assert rewritten(moved, samples) == {"img_0": False, "img_1": False, "img_2": False}


def test_unreadable_images_fail_their_rows_and_the_batch_goes_on(tmp_path, model_dir, capsys):
    good = write_images(tmp_path / "images", seeds=(1, 2))
    truncated = tmp_path / "images" / "cut.tif"
    tifffile.imwrite(truncated, nuclei(3)[0])
    not_tiff = tmp_path / "images" / "notes.tif"
    not_tiff.write_text("exported as text by mistake\n")
    samples = [good[0], BatchSample("cut", str(truncated)), BatchSample("notes", str(not_tiff)), good[1]]
    segmenter = BatchSegmenter(model_dir, OPTIONS, settings(tmp_path))
    segmenter.run(samples)  # all four fine (notes fails): "cut" now has outputs of a good image
    assert output_files(tmp_path, "cut")["mask"].is_file()

    # The copy of "cut" breaks off half-way: its old outputs must not pass for its results.
    data = truncated.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    capsys.readouterr()
    rows = segmenter.run(samples)

    by_sample = {r["sample"]: r for r in rows}
    assert [r["sample"] for r in rows] == ["img_0", "cut", "notes", "img_1"]
    assert by_sample["img_0"]["status"] == by_sample["img_1"]["status"] == "ok"
    assert by_sample["cut"]["status"] == by_sample["notes"]["status"] == "failed"
    assert any(word in by_sample["cut"]["error"].lower() for word in ("truncat", "corrupt")), by_sample["cut"]
    assert "not a readable TIFF" in by_sample["notes"]["error"] and "notes.tif" in by_sample["notes"]["error"]
    for sample in ("cut", "notes"):
        paths = sample_paths(tmp_path / "results", sample)
        for key in ("preprocessed", "mask", "instances", "measurements", "ome_zarr"):
            assert not paths[key].exists(), (sample, key)
        assert not (tmp_path / "overlays" / f"{sample}.png").exists()
    for sample in good:
        assert all(p.is_file() for p in output_files(tmp_path, sample.sample).values())
    err = capsys.readouterr().err
    assert "cut" in err and "notes" in err
    assert [p for p in (tmp_path / "results").rglob("*") if p.name.startswith(".")] == []

    # The manifest keeps the reasons, one line each.
    write_manifest(rows, tmp_path / "batch.tsv")
    manifest = read_manifests([tmp_path / "batch.tsv"])
    assert manifest["status"].tolist() == ["ok", "failed", "failed", "ok"]
    assert manifest.loc[2, "error"] == by_sample["notes"]["error"] and manifest.loc[0, "error"] == ""

    # A failed sample is tried again by the next run (no state marks it done).
    truncated.write_bytes(data)
    rows = segmenter.run(samples)
    assert [r["status"] for r in rows] == ["ok", "ok", "failed", "ok"]


def test_nan_pixels_are_filled_counted_and_left_out_of_measurements(tmp_path, model_dir, capsys):
    image = nuclei(4)[0].astype(np.float32)
    holes = np.zeros(image.shape, bool)
    holes[np.random.default_rng(0).integers(0, 64, 40), np.random.default_rng(1).integers(0, 64, 40)] = True
    image[holes] = np.nan
    path = tmp_path / "gaps.tif"
    tifffile.imwrite(path, image)

    rows = BatchSegmenter(model_dir, OPTIONS, settings(tmp_path)).run([BatchSample("gaps", str(path))])

    assert rows[0]["status"] == "ok", rows[0]
    paths = sample_paths(tmp_path / "results", "gaps")
    attrs = zarr.open_group(str(paths["preprocessed"]), mode="r").attrs["unetseg"]
    assert attrs["nonfinite_pixels"] == holes.sum()
    assert np.isfinite(zarr.open_group(str(paths["preprocessed"]), mode="r")["image"][...]).all()
    table = pd.read_csv(paths["measurements"])
    instances = tifffile.imread(paths["instances"])
    assert len(table) > 0 and sorted(table["label"]) == np.unique(instances[instances > 0]).tolist()
    intensity = [c for c in table.columns if "intensity" in c]
    assert intensity and np.isfinite(table[intensity].to_numpy()).all()
    for record in table.itertuples():
        assert record.mean_intensity_c0 == pytest.approx(np.nanmean(image[instances == record.label]))
    assert np.isfinite(rows[0]["mean_intensity"])
    err = capsys.readouterr().err
    assert "warning" in err and "gaps" in err and "NaN" in err


def test_pixel_size_of_the_file_gives_micrometre_measurements_and_calibrated_masks(tmp_path, model_dir):
    image = nuclei(5)[0]
    path = tmp_path / "calibrated.tif"
    tifffile.imwrite(path, image, imagej=True, resolution=(2.0, 2.0), metadata={"unit": "um"})  # 0.5 µm
    assert read_pixel_size(path) == pytest.approx((0.5, 0.5))

    rows = BatchSegmenter(model_dir, OPTIONS, settings(tmp_path)).run([BatchSample("calibrated", str(path))])

    assert rows[0]["status"] == "ok", rows[0]
    paths = sample_paths(tmp_path / "results", "calibrated")
    table = pd.read_csv(paths["measurements"])
    assert len(table) > 0
    np.testing.assert_allclose(table["area_um2"], table["area"] * 0.25)
    np.testing.assert_allclose(table["centroid_y_um"], table["centroid_y"] * 0.5)
    np.testing.assert_allclose(table["centroid_x_um"], table["centroid_x"] * 0.5)
    assert read_pixel_size(paths["mask"]) == pytest.approx((0.5, 0.5))
    assert read_pixel_size(paths["instances"]) == pytest.approx((0.5, 0.5))

    # data.pixel_size overrides what the file says.
    other = tmp_path / "override"
    rows = BatchSegmenter(model_dir, OPTIONS, settings(other, pixel_size=(0.2, 0.2))).run(
        [BatchSample("calibrated", str(path))]
    )
    assert rows[0]["status"] == "ok", rows[0]
    paths = sample_paths(other / "results", "calibrated")
    table = pd.read_csv(paths["measurements"])
    np.testing.assert_allclose(table["area_um2"], table["area"] * 0.04)
    assert read_pixel_size(paths["mask"]) == pytest.approx((0.2, 0.2))

    # An uncalibrated image: pixel columns only, and a mask without a pixel size.
    plain = tmp_path / "plain.tif"
    tifffile.imwrite(plain, image)
    rows = BatchSegmenter(model_dir, OPTIONS, settings(tmp_path)).run([BatchSample("plain", str(plain))])
    paths = sample_paths(tmp_path / "results", "plain")
    assert "area_um2" not in pd.read_csv(paths["measurements"]).columns
    assert read_pixel_size(paths["mask"]) is None


@pytest.mark.parametrize("separated", [False, True])
def test_in_memory_and_out_of_core_paths_write_the_same_files(tmp_path, model_dir, monkeypatch, separated):
    """Images that fit one labelling block are labelled and measured in memory; larger ones
    block by block from the written files. Both paths must give the same outputs."""
    import unetseg.batch.segment as segment

    model = model_dir
    if separated:  # the card of a model trained on separated targets: lines are closed
        model = tmp_path / "separated"
        card = {"normalization": {"method": "percentile", "percentiles": PERCENTILES}, "threshold": THRESHOLD,
                "separated_target": True}  # fmt: skip
        save_model(threshold_net(), model, card)
    samples = write_images(tmp_path / "images", seeds=(4, 5))
    outputs = {}
    for path in ("memory", "files"):
        if path == "files":
            monkeypatch.setattr(segment, "fits_one_block", lambda *args: False)
        root = tmp_path / path
        rows = BatchSegmenter(model, OPTIONS, settings(root, min_size=5)).run(samples)
        assert [r["status"] for r in rows] == ["ok", "ok"]
        files = {s.sample: sample_paths(root / "results", s.sample) for s in samples}
        outputs[path] = (
            rows,
            {
                (sample, key): tifffile.imread(paths[key])
                for sample, paths in files.items()
                for key in ("mask", "instances")
            },
            {sample: pd.read_csv(paths["measurements"]) for sample, paths in files.items()},
        )
    (rows_a, images_a, tables_a), (rows_b, images_b, tables_b) = outputs["memory"], outputs["files"]
    assert rows_a == rows_b
    assert all(row["object_count"] > 3 for row in rows_a)
    for key in images_a:
        np.testing.assert_array_equal(images_a[key], images_b[key])
    for sample in tables_a:
        pd.testing.assert_frame_equal(tables_a[sample], tables_b[sample])


def test_border_none_with_a_valid_padded_model_is_one_line_naming_the_fix(tmp_path):
    from unetseg.errors import InputError
    from unetseg.workflow.trained import check_trained_model

    model = tmp_path / "valid"
    card = {"normalization": {"method": "percentile", "percentiles": PERCENTILES}}
    save_model(UNet(in_channels=1, out_channels=1, depth=2, base_channels=4, padding="valid"), model, card)
    samples = write_images(tmp_path / "images", seeds=(1,))
    sheet = pd.DataFrame([{"sample": s.sample, "image": s.image, "mask": "", "split": "predict"} for s in samples])
    check_trained_model(str(model), sheet)  # mirror, the default: fine
    with pytest.raises(InputError, match="set inference.border: mirror"):
        check_trained_model(str(model), sheet, border="none")
    with pytest.raises(InputError, match="use --border mirror"):
        InferenceOptions(border="none").predictor(model)
