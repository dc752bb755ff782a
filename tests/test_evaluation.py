"""Tests for :mod:`unetseg.evaluation`: per-image scores from files, statistics, outputs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
from skimage.draw import disk

from unetseg.cli import main
from unetseg.data.preprocess import preprocess_sample
from unetseg.evaluation.evaluate import METRICS, aggregate, evaluate, evaluate_sample, metrics_table, write_evaluation
from unetseg.evaluation.matching import instance_scores, match_instances
from unetseg.evaluation.metrics import dice, hausdorff95, iou
from unetseg.evaluation.regions import region_scores
from unetseg.objects.labels import label_objects


def _nuclei(shape=(64, 64), centers=((20, 20), (20, 35), (45, 30)), radius=8) -> np.ndarray:
    """Instance ids 1..n of disks; the first two touch."""
    labels = np.zeros(shape, dtype=np.uint16)
    for i, center in enumerate(centers, start=1):
        labels[disk(center, radius, shape=shape[-2:])] = i
    return labels


def _sample(tmp_path: Path, name: str, truth: np.ndarray, prediction: np.ndarray, **kw) -> tuple[Path, Path]:
    """Write image, mask and prediction; preprocess the sample. Returns (preprocessed, prediction)."""
    image = (truth > 0).astype(np.float32) * 100 + np.random.default_rng(0).random(truth.shape, np.float32)
    axes = {"metadata": {"axes": "ZYX"}, "imagej": True} if truth.ndim == 3 else {}
    tifffile.imwrite(tmp_path / f"{name}.tif", image, **axes)
    tifffile.imwrite(tmp_path / f"{name}_mask.tif", truth, **axes)
    tifffile.imwrite(tmp_path / f"{name}_pred.tif", ((prediction > 0) * 255).astype(np.uint8), **axes)
    mask = tmp_path / f"{name}_mask.tif"
    preprocess_sample(name, tmp_path / f"{name}.tif", tmp_path / f"{name}.zarr", mask_path=mask, **kw)
    return tmp_path / f"{name}.zarr", tmp_path / f"{name}_pred.tif"


def test_sample_scores_agree_with_the_metric_functions(tmp_path) -> None:
    truth = _nuclei()
    pred = np.roll(truth > 0, 3, axis=1)
    pre, mask = _sample(tmp_path, "a", truth, pred)
    row = evaluate_sample(pre, mask)
    assert row["sample"] == "a" and row["instance_ids"] is True
    assert row["dice"] == pytest.approx(dice(truth, pred)) and row["iou"] == pytest.approx(iou(truth, pred))
    assert row["hd95"] == pytest.approx(hausdorff95(truth, pred))
    assert row["rand_error"] == pytest.approx(region_scores(truth, pred)["rand_error"])
    # Objects: the true ids (3 objects, two touching) against the prediction's 2 components.
    expected = instance_scores(match_instances(truth, label_objects(pred)))
    assert (row["n_true_objects"], row["n_pred_objects"]) == (3, 2)
    assert row["ap_50"] == pytest.approx(expected[0]["ap"]) and row["ap_95"] == pytest.approx(expected[-1]["ap"])
    assert row["mean_ap"] == pytest.approx(np.mean([r["ap"] for r in expected]))
    assert row["tp"] + row["fp"] + row["fn"] + row["tn"] == truth.size


def test_binary_truth_and_listed_foreground_use_components(tmp_path) -> None:
    truth = _nuclei()
    coded = np.where(truth > 0, 7, 200).astype(np.uint8)
    pre, mask = _sample(tmp_path, "b", coded, truth > 0, foreground=[7])
    row = evaluate_sample(pre, mask, foreground=[7])
    assert row["dice"] == 1.0 and row["n_true_objects"] == row["n_pred_objects"] == 2  # touching disks merged
    assert row["ap_95"] == 1.0 and row["instance_ids"] is False  # listed foreground values are classes, not ids


def test_stack_is_scored_plane_by_plane(tmp_path) -> None:
    truth = np.stack([_nuclei(), np.zeros((64, 64), np.uint16), _nuclei(centers=((30, 30),))])
    pred = truth > 0
    pred[1, 5:9, 5:9] = True  # a false object in the empty plane
    pre, mask = _sample(tmp_path, "s", truth, pred)
    row = evaluate_sample(pre, mask)
    assert row["dice"] == pytest.approx(dice(truth, pred))
    assert row["n_true_objects"] == 4 and row["n_pred_objects"] == 4  # 3 + 0 + 1 true, 2 + 1 + 1 predicted
    assert math.isinf(row["hd95"])  # the middle plane's false object has no true contour to reach


def test_empty_truth_and_prediction_score_perfectly(tmp_path) -> None:
    empty = np.zeros((32, 32), np.uint16)
    pre, mask = _sample(tmp_path, "e", empty, empty)
    row = evaluate_sample(pre, mask)
    assert row["dice"] == row["iou"] == row["mean_ap"] == row["f1_50"] == 1.0
    assert row["hd95"] == 0.0 and row["rand_error"] == 0.0 and math.isnan(row["matched_iou_50"])


def test_aggregate_statistics_and_edge_cases() -> None:
    values = [0.2, 0.4, 0.9, 0.5, math.nan, math.inf]
    stats = aggregate(values)
    finite = np.array([0.2, 0.4, 0.9, 0.5])
    assert stats["n"] == 4 and stats["mean"] == pytest.approx(finite.mean())
    assert stats["std"] == pytest.approx(finite.std(ddof=1)) and stats["median"] == pytest.approx(0.45)
    low, high = stats["ci95"]
    assert finite.min() <= low < stats["mean"] < high <= finite.max()
    assert aggregate(values) == stats  # seeded: deterministic
    assert aggregate([0.7]) == {"n": 1, "mean": 0.7, "std": None, "median": 0.7, "ci95": [0.7, 0.7]}
    assert aggregate([math.nan])["n"] == 0 and aggregate([])["mean"] is None


def test_bootstrap_interval_narrows_with_more_images() -> None:
    rng = np.random.default_rng(3)
    few, many = aggregate(rng.random(5)), aggregate(rng.random(200))
    assert many["ci95"][1] - many["ci95"][0] < few["ci95"][1] - few["ci95"][0]


def test_evaluate_writes_contract_keys_statistics_and_valid_json(tmp_path) -> None:
    truth = _nuclei()
    a = _sample(tmp_path, "a", truth, truth > 0)
    b = _sample(tmp_path, "b", truth, np.zeros_like(truth))  # nothing predicted: HD95 infinite
    summary = evaluate(["a", "b"], [a[0], b[0]], [a[1], b[1]])
    assert summary["n_images"] == 2 and [r["sample"] for r in summary["per_image"]] == ["a", "b"]
    assert summary["mean_dice"] == pytest.approx(0.5) and summary["mean_iou"] == pytest.approx(0.5)
    assert set(summary["metrics"]) == set(METRICS) and summary["metrics"]["hd95"]["n"] == 1
    # Pooled objects: 3 + 3 true; image a's touching pair is one predicted component.
    expected = instance_scores(match_instances(truth, label_objects(truth > 0)))[0]
    pooled = summary["instances"][0]
    assert (pooled["tp"], pooled["fp"], pooled["fn"]) == (expected["tp"], expected["fp"], expected["fn"] + 3)
    write_evaluation(summary, tmp_path / "s.json", tmp_path / "p.csv", metrics_csv=tmp_path / "m.csv")
    text = (tmp_path / "s.json").read_text()
    assert "Infinity" not in text and "NaN" not in text
    loaded = json.loads(text)
    assert loaded["per_image"][1]["hd95"] is None and loaded["per_image"][0]["hd95"] == 0.0
    table = pd.read_csv(tmp_path / "p.csv")
    assert table["sample"].tolist() == ["a", "b"] and math.isinf(table["hd95"][1])
    assert {"dice", "iou", "hd95", "rand_error", "vi", "ap_50", "mean_ap", "pq_50", "tp"} <= set(table.columns)
    stats = pd.read_csv(tmp_path / "m.csv")
    assert stats["metric"].tolist() == list(METRICS) and metrics_table(summary).shape == (len(METRICS), 7)


def test_evaluate_refuses_a_swapped_sample(tmp_path) -> None:
    truth = _nuclei()
    a = _sample(tmp_path, "a", truth, truth > 0)
    with pytest.raises(Exception, match="expected 'x'"):
        evaluate(["x"], [a[0]], [a[1]])


def test_cli_evaluate_writes_every_output(tmp_path) -> None:
    truth = _nuclei()
    samples = [_sample(tmp_path, name, truth, np.roll(truth, k, axis=0)) for k, name in enumerate(("a", "b", "c"))]
    out = {k: tmp_path / f"out.{k}" for k in ("json", "csv", "table", "html", "dist", "inst", "gallery")}
    code = main([
        "evaluate", "--samples", "a", "b", "c", "--truth", *[str(s[0]) for s in samples],
        "--prediction", *[str(s[1]) for s in samples], "--foreground", "nonzero",
        "--json", str(out["json"]), "--csv", str(out["csv"]), "--metrics-table", str(out["table"]),
        "--metrics-page", str(out["html"]), "--distributions", str(out["dist"]),
        "--instances", str(out["inst"]), "--gallery", str(out["gallery"]),
    ])  # fmt: skip
    assert code == 0
    for name in ("dist", "inst", "gallery"):
        assert out[name].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<table" in out["html"].read_text() and json.loads(out["json"].read_text())["n_images"] == 3


def test_ids_stored_at_preprocessing_are_used_after_the_original_mask_changes(tmp_path) -> None:
    # Only preprocessing reads the raw mask: the evaluation keeps the ids it stored, whether
    # the original file is edited or deleted afterwards.
    truth = _nuclei()
    pre, mask = _sample(tmp_path, "d", truth, truth > 0)
    before = evaluate_sample(pre, mask)
    tifffile.imwrite(tmp_path / "d_mask.tif", np.roll(truth, 5, axis=0))
    assert evaluate_sample(pre, mask) == before
    (tmp_path / "d_mask.tif").unlink()
    assert evaluate_sample(pre, mask) == before
    assert before["instance_ids"] is True and before["n_true_objects"] == 3 and before["dice"] == 1.0


def test_delivered_instances_are_the_predicted_objects(tmp_path) -> None:
    truth = _nuclei()
    pre, mask = _sample(tmp_path, "a", truth, truth)  # the mask merges the two touching nuclei
    merged = evaluate_sample(pre, mask)
    tifffile.imwrite(tmp_path / "instances.tif", truth.astype(np.uint32))
    kept = evaluate_sample(pre, mask, instances_path=tmp_path / "instances.tif")
    assert (merged["n_pred_objects"], kept["n_pred_objects"]) == (2, 3)
    assert kept["ap_50"] == 1.0 and merged["ap_50"] < 1.0 and kept["dice"] == merged["dice"]
