"""Tests for :mod:`unetseg.figures` and :mod:`unetseg.report_pages`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
from PIL import Image
from skimage.draw import disk

from unetseg.cli import main
from unetseg.data.preprocess import preprocess_sample
from unetseg.evaluation.evaluate import evaluate, write_evaluation
from unetseg.nn.modelcard import save_model
from unetseg.report import figures, overlays
from unetseg.report.pages import data_page, metrics_page

PNG = b"\x89PNG\r\n\x1a\n"


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


@pytest.fixture
def samples(tmp_path) -> list[tuple[str, Path, Path]]:
    """Three preprocessed samples with ground truth and shifted predictions."""
    out = []
    for k in range(3):
        truth = np.zeros((48, 56), np.uint16)
        truth[disk((20, 20), 9)], truth[disk((30, 38), 7)] = 1, 2
        name = f"s{k}"
        tifffile.imwrite(tmp_path / f"{name}.tif", truth.astype(np.float32) * 50)
        tifffile.imwrite(tmp_path / f"{name}_mask.tif", truth)
        tifffile.imwrite(tmp_path / f"{name}_pred.tif", (np.roll(truth, 2 * k, axis=1) > 0).astype(np.uint8) * 255)
        mask = tmp_path / f"{name}_mask.tif"
        preprocess_sample(name, tmp_path / f"{name}.tif", tmp_path / f"{name}.zarr", mask_path=mask)
        out.append((name, tmp_path / f"{name}.zarr", tmp_path / f"{name}_pred.tif"))
    return out


def test_error_map_colours() -> None:
    truth = np.array([[1, 1, 0, 0]], bool)
    pred = np.array([[1, 0, 1, 0]], bool)
    rgba = figures.error_map(truth, pred)
    assert tuple(rgba[0, 0]) == figures.TRUE_POSITIVE
    assert tuple(rgba[0, 1]) == figures.FALSE_NEGATIVE and tuple(rgba[0, 2]) == figures.FALSE_POSITIVE
    assert rgba[0, 3, 3] == 0  # background stays transparent


def test_overlay_with_and_without_truth(tmp_path, samples) -> None:
    _, pre, pred = samples[1]
    figures.overlay_figure(pre, pred, tmp_path / "with.png", dice=0.8)
    tifffile.imwrite(tmp_path / "p.tif", np.zeros((48, 56), np.float32))
    preprocess_sample("p", tmp_path / "p.tif", tmp_path / "p.zarr")
    figures.overlay_figure(tmp_path / "p.zarr", pred, tmp_path / "without.png")
    # With a ground truth the error map is a second panel beside the contours.
    assert _png_size(tmp_path / "with.png")[0] > 1.6 * _png_size(tmp_path / "without.png")[0]
    # The 48x56 plane is enlarged (nearest neighbour) so that its contours show.
    assert _png_size(tmp_path / "without.png")[0] >= overlays.MIN_SIDE
    # The mask in memory (the batch's small images) draws the very same overlay as its file.
    figures.overlay_figure(pre, tifffile.imread(pred), tmp_path / "from_memory.png", dice=0.8)
    assert (tmp_path / "from_memory.png").read_bytes() == (tmp_path / "with.png").read_bytes()


def test_overlay_colours_the_predicted_contour_and_the_errors(tmp_path, samples) -> None:
    _, pre, pred = samples[2]  # the prediction is the truth shifted by 4 pixels
    figures.overlay_figure(pre, pred, tmp_path / "o.png")
    pixels = np.asarray(Image.open(tmp_path / "o.png").convert("RGB")).reshape(-1, 3)
    colours = {tuple(int(round(255 * c)) for c in colour[:3]) for colour in (overlays.PRED_CONTOUR,
               overlays.TRUE_CONTOUR, overlays.FALSE_POSITIVE, overlays.FALSE_NEGATIVE)}  # fmt: skip
    found = {tuple(p) for p in np.unique(pixels, axis=0)}
    assert colours <= found  # opaque colours are drawn exactly


def test_composite_blends_only_the_coloured_pixels() -> None:
    plane = np.array([[0.0, 1.0, 0.5]])
    overlay = np.zeros((1, 3, 4))
    overlay[0, 1] = (0.0, 0.0, 1.0, 0.5)
    rgb = overlays.composite(plane, overlay)
    assert rgb[0, 0].tolist() == [0, 0, 0] and rgb[0, 2].tolist() == [128, 128, 128]
    assert rgb[0, 1].tolist() == [128, 128, 255]  # half grey 255, half blue


def test_thumbnail_of_a_large_image_is_read_on_a_stride(tmp_path) -> None:
    big = np.zeros((2100, 1500), np.uint8)
    big[1000:1100, 700:800] = 1
    tifffile.imwrite(tmp_path / "big.tif", big.astype(np.float32))
    tifffile.imwrite(tmp_path / "big_mask.tif", big)
    tifffile.imwrite(tmp_path / "big_pred.tif", big * 255)
    preprocess_sample("big", tmp_path / "big.tif", tmp_path / "big.zarr", mask_path=tmp_path / "big_mask.tif")
    plane, truth, pred, _ = figures.thumbnail(tmp_path / "big.zarr", tmp_path / "big_pred.tif", max_side=512)
    assert max(plane.shape) <= 512 and plane.shape == truth.shape == pred.shape and pred.any()


def test_evaluation_figures_and_pages(tmp_path, samples) -> None:
    summary = evaluate([s[0] for s in samples], [s[1] for s in samples], [s[2] for s in samples])
    summary["per_image"][0]["hd95"] = float("inf")  # a non-finite score is left out of its box
    write_evaluation(summary, tmp_path / "summary.json", tmp_path / "per_image.csv")
    figures.metric_distributions_figure(tmp_path / "per_image.csv", tmp_path / "dist.png")
    figures.instance_curve_figure(summary, tmp_path / "inst.png")
    rows = [(r["sample"], r["dice"], s[1], s[2]) for r, s in zip(summary["per_image"], samples)]
    figures.gallery_figure(rows, tmp_path / "gallery.png", n_worst=2)
    figures.gallery_figure([], tmp_path / "empty.png")
    for name in ("dist", "inst", "gallery", "empty"):
        assert _png_size(tmp_path / f"{name}.png")[0] > 200
    metrics_page(summary, tmp_path / "metrics.html")
    page = (tmp_path / "metrics.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and page.count("<table") == 3 and "ci95_low" in page
    data_page([s[1] for s in samples], ["test"] * 3, tmp_path / "data.html")
    assert "3 images (3 test)" in (tmp_path / "data.html").read_text()


def test_model_card_page(tmp_path, tiny_unet) -> None:
    card = {"threshold": 0.5, "labels": {"foreground": "nonzero"}, "config": {"train": {"epochs": 3}, "dataset": "x"}}
    save_model(tiny_unet(), tmp_path / "model", card)
    code = main(["figure", "card", "--model", str(tmp_path / "model"), "--output", str(tmp_path / "card.html")])
    page = (tmp_path / "card.html").read_text()
    assert code == 0 and "<h2>versions</h2>" in page and "<h2>config</h2>" in page and "epochs: 3" in page
    assert "torch" in page and "<script" not in page


def test_figure_command_names_missing_options(tmp_path, capsys) -> None:
    assert main(["figure", "data", "--output", str(tmp_path / "d.html")]) == 2
    assert "--preprocessed and --splits" in capsys.readouterr().err


def test_training_curve(tmp_path) -> None:
    history = pd.DataFrame({"epoch": [1, 2, 3], "train_loss": [1, 0.7, 0.5], "val_loss": [1.1, 0.8, 0.9],
                            "val_dice": [0.3, 0.6, 0.5]})  # fmt: skip
    history.to_csv(tmp_path / "history.csv", index=False)
    args = ["figure", "training", "--history", str(tmp_path / "history.csv"), "--output", str(tmp_path / "t.png")]
    assert main(args) == 0
    assert _png_size(tmp_path / "t.png")[0] > 300
