"""The `unetseg` command line: predict on any layout, and errors without tracebacks."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import tifffile
import zarr

from unetseg.cli import main
from unetseg.data.normalize import normalize
from unetseg.inference.predictor import TiledPredictor
from unetseg.nn.modelcard import save_model


@pytest.fixture
def model_dir(tiny_unet, tmp_path):
    model = tiny_unet(depth=2)
    directory = tmp_path / "model"
    save_model(model, directory, {"normalization": {"method": "percentile", "percentiles": [0, 100]}, "threshold": 0.5})
    return directory, model


def expected_mask(model, image):
    stats = [(float(image.min()), float(image.max()))]
    probs = TiledPredictor(model).predict_whole(normalize(image[None], stats))
    return np.where(probs[0] >= 0.5, 255, 0).astype(np.uint8)


def test_predict_tiff_to_tiff_equals_whole_image(model_dir, tmp_path, rng):
    directory, model = model_dir
    image = rng.integers(0, 4000, (70, 45), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "in.tif", image)
    assert main(["predict", "--model", str(directory), "--input", str(tmp_path / "in.tif"),
                 "--output", str(tmp_path / "out" / "mask.tif"), "--tile", "16"]) == 0  # fmt: skip
    mask = tifffile.imread(tmp_path / "out" / "mask.tif")
    assert mask.shape == (70, 45) and mask.dtype == np.uint8
    np.testing.assert_array_equal(mask, expected_mask(model, image))
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["mask.tif"]  # no scratch left


def test_predict_zarr_stack_to_zarr(model_dir, tmp_path, rng):
    directory, model = model_dir
    stack = rng.random((3, 40, 33)).astype(np.float32)
    zarr.create_array(tmp_path / "in.zarr", data=stack, chunks=(1, 16, 16), attributes={"axes": "ZYX"})
    assert main(["predict", "--model", str(directory), "--input", str(tmp_path / "in.zarr"),
                 "--output", str(tmp_path / "out.zarr"), "--tile", "16"]) == 0  # fmt: skip
    mask = zarr.open_array(tmp_path / "out.zarr", mode="r")[:]
    assert mask.shape == (3, 40, 33)
    # Normalisation uses the whole stack's statistics, not each plane's.
    stats = [(float(stack.min()), float(stack.max()))]
    for z in range(3):
        probs = TiledPredictor(model).predict_whole(normalize(stack[z][None], stats))
        np.testing.assert_array_equal(mask[z], np.where(probs[0] >= 0.5, 255, 0))


def test_errors_are_one_line_with_exit_status_2(model_dir, tmp_path, capsys):
    directory, _ = model_dir
    rgb = np.zeros((20, 20, 3), np.uint8)
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb")
    status = main(
        [
            "predict",
            "--model",
            str(directory),
            "--input",
            str(tmp_path / "rgb.tif"),
            "--output",
            str(tmp_path / "o.tif"),
        ]
    )
    assert status == 2
    err = capsys.readouterr().err
    assert "rgb.tif: image has 3 channel(s) but the model was trained on 1" in err and "Traceback" not in err
    assert main(["predict", "--model", str(tmp_path), "--input", "x.tif", "--output", "o.tif"]) == 2
    assert "not a unetseg model directory" in capsys.readouterr().err


def test_console_script_and_module_entry_point():
    result = subprocess.run([sys.executable, "-m", "unetseg", "--help"], capture_output=True, text=True, check=True)
    assert "predict" in result.stdout


def test_predict_writes_instances_and_an_ome_zarr_pyramid(model_dir, tmp_path, rng):
    from skimage.measure import label

    from unetseg.io.images import open_image

    _, model = model_dir
    image = rng.integers(0, 4000, (300, 270), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "in.tif", image)
    stats = [(float(image.min()), float(image.max()))]
    probs = TiledPredictor(model).predict_whole(normalize(image[None], stats))
    # A threshold that leaves many separate objects, some across tile and chunk borders.
    threshold = float(np.quantile(probs, 0.8))
    directory = tmp_path / "model80"
    save_model(
        model, directory, {"normalization": {"method": "percentile", "percentiles": [0, 100]}, "threshold": threshold}
    )
    out = tmp_path / "out"
    assert main(["predict", "--model", str(directory), "--input", str(tmp_path / "in.tif"), "--output",
                 str(out / "mask.tif"), "--tile", "64", "--instances", str(out / "instances.tif"),
                 "--probabilities", str(out / "in.ome.zarr"), "--probabilities-dtype", "uint8"]) == 0  # fmt: skip
    mask = tifffile.imread(out / "mask.tif")
    certain = np.abs(probs[0] - threshold) > 1e-5  # tiled and whole agree to 1e-5
    np.testing.assert_array_equal(mask[certain], np.where(probs[0] >= threshold, 255, 0)[certain])
    instances = tifffile.imread(out / "instances.tif")
    reference = label(mask > 0)  # full connectivity, as the evaluation
    assert instances.max() == reference.max() > 20
    pairs = set(zip(instances.ravel().tolist(), reference.ravel().tolist()))
    assert len(pairs) == reference.max() + 1  # the same partition of the pixels
    with open_image(out / "in.ome.zarr") as stored:
        assert stored.shape == (1, 1, 300, 270) and stored.dtype == np.uint8
        np.testing.assert_allclose(stored.read(0) / 255, probs, atol=0.5 / 255 + 1e-6)
    for name, expected in (("mask", mask), ("instances", instances)):
        with open_image(out / "in.ome.zarr" / "labels" / name) as stored:
            np.testing.assert_array_equal(stored.read(0)[0], expected)
    assert sorted(p.name for p in out.iterdir()) == ["in.ome.zarr", "instances.tif", "mask.tif"]


def test_predict_with_a_tissue_mask_segments_only_tissue(model_dir, tmp_path, rng, capsys):
    directory, model = model_dir
    image = rng.integers(0, 4000, (64, 64), dtype=np.uint16)
    tissue = np.zeros((64, 64), np.uint8)
    tissue[:16, :16] = 1
    tifffile.imwrite(tmp_path / "in.tif", image)
    tifffile.imwrite(tmp_path / "tissue.tif", tissue)
    assert main(["predict", "--model", str(directory), "--input", str(tmp_path / "in.tif"), "--output",
                 str(tmp_path / "mask.tif"), "--tile", "16", "--tissue-mask", str(tmp_path / "tissue.tif")]) == 0  # fmt: skip
    mask, expected = tifffile.imread(tmp_path / "mask.tif"), expected_mask(model, image)
    np.testing.assert_array_equal(mask[:16, :16], expected[:16, :16])
    assert not mask[16:].any() and not mask[:, 16:].any()
    tifffile.imwrite(tmp_path / "small.tif", tissue[:32])
    assert main(["predict", "--model", str(directory), "--input", str(tmp_path / "in.tif"), "--output",
                 str(tmp_path / "mask2.tif"), "--tissue-mask", str(tmp_path / "small.tif")]) == 2  # fmt: skip
    assert "small.tif: tissue mask of shape (32, 64)" in capsys.readouterr().err
    assert not (tmp_path / "mask2.tif").exists()


def test_predict_refuses_bad_or_colliding_paths_before_any_work(model_dir, tmp_path, rng, capsys, monkeypatch):
    import unetseg.inference.predictor

    directory, _ = model_dir
    image = tmp_path / "in.tif"
    tifffile.imwrite(image, rng.integers(0, 4000, (40, 40), dtype=np.uint16))
    original = image.read_bytes()
    monkeypatch.setattr(
        unetseg.inference.predictor.TiledPredictor, "predict", lambda *a, **k: pytest.fail("inference ran")
    )
    cases = [
        (["--output", str(image)], "given to both --input and --output"),
        (
            ["--output", str(tmp_path / "m.tif"), "--instances", str(tmp_path / "m.tif")],
            "given to both --output and --instances",
        ),
        (["--output", str(tmp_path / "m.png")], "--output must name a mask"),
        (["--output", str(tmp_path / "m.tif"), "--instances", str(tmp_path / "i.png")], "--instances must name"),
        (["--output", str(tmp_path / "m.tif"), "--probabilities", str(tmp_path / "p.tif")], "name it *.ome.zarr"),
    ]
    for extra, message in cases:
        assert main(["predict", "--model", str(directory), "--input", str(image), *extra]) == 2
        assert message in capsys.readouterr().err
    assert image.read_bytes() == original
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.tif", "model"]  # nothing written, nothing hidden


def test_predict_input_errors_leave_nothing_to_resume(model_dir, tmp_path, capsys):
    directory, _ = model_dir
    image = np.ones((40, 40), np.float32)
    image[30, 7] = np.nan
    tifffile.imwrite(tmp_path / "nan.tif", image)
    (tmp_path / "folder").mkdir()
    for source, message in (("nan.tif", "NaN or infinite value"), ("folder", "not a Zarr store")):
        assert main(["predict", "--model", str(directory), "--input", str(tmp_path / source),
                     "--output", str(tmp_path / "out" / "m.tif"), "--tile", "16"]) == 2  # fmt: skip
        assert message in capsys.readouterr().err
        assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_predict_option_errors_are_usage_errors(model_dir, tmp_path):
    directory, _ = model_dir
    for option in (["--tile", "0"], ["--overlap", "0.6"], ["--batch-size", "-1"]):
        with pytest.raises(SystemExit) as exit_info:
            main(["predict", "--model", str(directory), "--input", "x.tif", "--output", "m.tif", *option])
        assert exit_info.value.code == 2


def test_unavailable_device_is_an_input_error():
    import torch

    from unetseg.errors import InputError
    from unetseg.nn.device import pick_device

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(InputError, match="no usable CUDA device"):
        pick_device("cuda")


def test_instances_command_drops_small_objects_and_closes_lines(tmp_path):
    mask = np.zeros((40, 60), np.uint8)
    mask[5:20, 5:20] = mask[5:20, 22:37] = 255  # two squares, a 2-pixel line between them
    mask[30, 50] = 255  # a speck
    tifffile.imwrite(tmp_path / "mask.tif", mask)
    main(["instances", "--mask", str(tmp_path / "mask.tif"), "--output", str(tmp_path / "bare.tif")])
    main(["instances", "--mask", str(tmp_path / "mask.tif"), "--output", str(tmp_path / "closed.tif"),
          "--min-size", "5", "--gap", "2"])  # fmt: skip
    bare, closed = tifffile.imread(tmp_path / "bare.tif"), tifffile.imread(tmp_path / "closed.tif")
    assert bare.max() == 3 and closed.max() == 2 and closed[30, 50] == 0
    assert set(np.unique(closed[5:20, 20:22])) == {1, 2}  # the line's pixels joined the nearer square
