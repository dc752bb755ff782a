"""Evaluation of final masks against the ground truth, plane by plane.

Writes ``summary.json`` (the keys of the project's contract: ``n_images``, ``mean_dice``,
``mean_iou``, ``per_image``, plus the statistics below) and a tidy per-image CSV.

Per image (one row of ``per_image``):

* pixels, foreground class: ``dice``, ``iou``, ``precision``, ``recall``, ``pixel_error``
  and the counts ``tp``, ``fp``, ``fn``, ``tn``; background class: ``background_dice``,
  ``background_iou``, ``background_precision``, ``background_recall``;
* boundaries: ``hd95`` in pixels (:func:`unetseg.metrics.hausdorff95`);
* regions enclosed by the foreground, as for membranes (:mod:`unetseg.regions`):
  ``rand_error``, ``vi_split``, ``vi_merge``, ``vi``;
* objects (:mod:`unetseg.instances`; the predicted ones are the instance labels delivered
  with the mask when given, else the mask's connected components): ``n_true_objects``, ``n_pred_objects``, ``ap_50`` ...
  ``ap_95`` (Data Science Bowl 2018 AP at IoU 0.50 ... 0.95), ``mean_ap`` (their mean, the
  DSB score), and at IoU 0.5 ``precision_50``, ``recall_50``, ``f1_50``,
  ``matched_iou_50``, ``pq_50``; ``instance_ids`` says whether the true objects came from
  the original mask's ids (true) or the connected components of the binary ground truth
  (false: binary masks, listed foreground values, or an original mask no longer readable
  or changed since preprocessing).

With ``labels.classes`` (multi-class masks), pixel scores above are of the foreground (any
class against background), objects are the connected components of each class, and
every image also gets, per class, ``dice_{class}``, ``iou_{class}``, ``precision_{class}``
and ``recall_{class}``, and ``unlisted_pixels`` (mask pixels of values no class lists,
counted as background). Over the split, ``per_class`` gives for each class the mean of its
per-image scores and the scores of the pooled pixels. ``confusion`` holds the pooled pixel
counts of true (rows) against predicted classes (columns), ``(C + 1) x (C + 1)`` with
classes, else 2 x 2 (background, foreground).

Stacks are scored plane by plane, as the network segments them: pixel counts, contour
distances, region tables and object matches are summed over planes (objects and regions
are 2D, per plane), so memory holds one plane at a time.

Over the split, ``metrics`` gives for every per-image score its ``n`` (images where it is
finite), ``mean``, ``std`` (sample standard deviation), ``median`` and a percentile
bootstrap 95% confidence interval of the mean (``ci95``; 2000 resamples, seed 0, so the
same scores give the same interval). ``instances`` pools the object matches of all images
per IoU threshold. In the JSON file, NaN (undefined) and infinite scores are written as
``null``; the CSV keeps ``nan`` and ``inf``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse

from unetseg.data.sample import PreprocessedSample, open_sample
from unetseg.errors import InputError
from unetseg.evaluation.classes import CLASS_METRICS, class_confusion, per_class_scores
from unetseg.evaluation.matching import InstanceCounts, instance_scores
from unetseg.evaluation.metrics import DistanceTally, class_scores_from_counts, confusion_counts
from unetseg.evaluation.regions import boundary_regions, region_scores_from_table, region_table
from unetseg.io.files import atomic_path, write_json
from unetseg.io.images import ImageSource, open_image
from unetseg.objects.labels import class_objects, label_objects

__all__ = ["evaluate_sample", "evaluate", "aggregate", "metrics_table", "write_evaluation", "METRICS"]

# Per-image scores summarised over the split, in the order of the tables and figures.
METRICS = (
    "dice", "iou", "precision", "recall", "pixel_error", "hd95",
    "background_dice", "background_iou", "background_precision", "background_recall",
    "rand_error", "vi_split", "vi_merge", "vi",
    "mean_ap", "ap_50", "ap_75", "precision_50", "recall_50", "f1_50", "matched_iou_50", "pq_50",
)  # fmt: skip
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0


def _score_planes(
    truth: PreprocessedSample, prediction: ImageSource, instances: ImageSource | None = None
) -> tuple[dict[str, Any], InstanceCounts, np.ndarray | None]:
    counts = np.zeros(4, dtype=np.int64)
    distances, objects, tables = DistanceTally(), InstanceCounts(), []
    mask, true_objects, classes = truth.mask, truth.objects, truth.classes
    side = len(classes) + 1 if classes else 0
    confusion = np.zeros((side, side), dtype=np.int64) if classes else None
    for z in range(mask.shape[0]):
        true_values, pred_values = mask.read(z)[0], prediction.read(z)[0]
        true_plane, pred_plane = true_values != 0, pred_values != 0
        counts += confusion_counts(true_plane, pred_plane)
        distances.add(true_plane, pred_plane)
        tables.append(region_table(boundary_regions(true_plane), boundary_regions(pred_plane)))
        if classes:
            confusion += class_confusion(true_values, pred_values, side, prediction.path)
        if instances is not None:
            pred_objects = instances.read(z)[0]
        else:
            pred_objects = class_objects(pred_values) if classes else label_objects(pred_plane)
        objects.add(true_objects.read(z)[0], pred_objects)
    tp, fp, fn, tn = (int(c) for c in counts)
    binary = class_scores_from_counts(tp, fp, fn, tn)
    scores = {
        **binary["foreground"],
        "hd95": distances.hd95(),
        **{f"background_{k}": v for k, v in binary["background"].items() if k != "pixel_error"},
        **region_scores_from_table(sparse.block_diag(tables, format="csr")),
        "instance_ids": truth.instance_ids, "tp": tp, "fp": fp, "fn": fn, "tn": tn,
    }  # fmt: skip
    if classes:
        for name, class_scores in zip(classes, per_class_scores(confusion)):
            scores.update({f"{k}_{name}": class_scores[k] for k in CLASS_METRICS})
        scores["unlisted_pixels"] = int(truth.attrs.get("unlisted_pixels", 0))
    return scores, objects, confusion


def _instance_columns(objects: InstanceCounts) -> dict[str, Any]:
    rows = instance_scores(objects)
    columns: dict[str, Any] = {"n_true_objects": objects.n_true, "n_pred_objects": objects.n_pred}
    columns.update({f"ap_{round(r['threshold'] * 100)}": r["ap"] for r in rows})
    columns["mean_ap"] = float(np.mean([r["ap"] for r in rows]))
    at_50 = rows[0]
    columns.update({f"{k}_50": at_50[k] for k in ("precision", "recall", "f1", "matched_iou", "pq")})
    return columns


def _evaluate_sample(
    truth_path: str | os.PathLike,
    prediction_path: str | os.PathLike,
    foreground: str | Sequence[int],
    instances_path: str | os.PathLike | None = None,
) -> tuple[dict[str, Any], InstanceCounts, np.ndarray | None]:
    truth = open_sample(truth_path)
    attrs = truth.attrs
    if not truth.has_mask:
        raise InputError(f"{truth_path}: sample {attrs['sample']!r} has no ground truth mask to evaluate against.")
    with open_image(prediction_path, axes=attrs["spatial_axes"]) as prediction:
        if prediction.spatial_shape != tuple(attrs["spatial_shape"]):
            raise InputError(
                f"{prediction_path}: mask shape {prediction.spatial_shape} differs from the image's "
                f"{tuple(attrs['spatial_shape'])}; delete it and rerun the workflow."
            )
        if instances_path:
            with open_image(instances_path, axes=attrs["spatial_axes"]) as instances:
                scores, objects, confusion = _score_planes(truth, prediction, instances)
        else:
            scores, objects, confusion = _score_planes(truth, prediction)
    counts = {k: scores.pop(k) for k in ("instance_ids", "tp", "fp", "fn", "tn")}  # last columns of the table
    row = {"sample": attrs["sample"], **scores, **_instance_columns(objects)}
    return {**row, **counts}, objects, confusion


def evaluate_sample(
    truth_path: str | os.PathLike,
    prediction_path: str | os.PathLike,
    *,
    foreground: str | Sequence[int] = "nonzero",
    instances_path: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Scores of one predicted mask against a preprocessed sample's ground truth.

    Parameters
    ----------
    truth_path : path-like
        Preprocessed sample (Zarr group with a ``mask``).
    prediction_path : path-like
        Final mask (TIFF or Zarr), nonzero = foreground.
    foreground : "nonzero" or sequence of int
        The ``labels.foreground`` the sample was preprocessed with; decides whether the
        original mask's values are instance ids.
    instances_path : path-like, optional
        The instance labels delivered with the mask: the predicted objects, instead of the
        connected components of the mask.

    Returns
    -------
    dict
        One row of ``per_image`` (see the module docstring). Memory: one plane at a time.
    """
    return _evaluate_sample(truth_path, prediction_path, foreground, instances_path)[0]


def aggregate(
    values: Sequence[float], *, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED
) -> dict[str, Any]:
    """Mean, standard deviation, median and bootstrap 95% CI of the finite values.

    Parameters
    ----------
    values : (n,) sequence of float
        One score per image; NaN and infinite values are left out (and counted out of ``n``).
    resamples : int
        Bootstrap resamples of the images, drawn with ``numpy.random.default_rng(seed)``.

    Returns
    -------
    dict
        ``n``, ``mean``, ``std`` (``ddof=1``; None for fewer than 2 values), ``median``,
        ``ci95`` (``[low, high]``, the 2.5th and 97.5th percentiles of the resampled means;
        ``[x, x]`` for one value); all None when no value is finite.
    """
    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return {"n": 0, "mean": None, "std": None, "median": None, "ci95": [None, None]}
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(resamples, x.size))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return {
        "n": int(x.size), "mean": float(x.mean()), "std": float(x.std(ddof=1)) if x.size > 1 else None,
        "median": float(np.median(x)), "ci95": [float(low), float(high)],
    }  # fmt: skip


def evaluate(
    samples: Sequence[str],
    truths: Sequence[str | os.PathLike],
    predictions: Sequence[str | os.PathLike],
    *,
    foreground: str | Sequence[int] = "nonzero",
    instances: Sequence[str | os.PathLike] | None = None,
) -> dict[str, Any]:
    """Per-image scores and their statistics over a split (``instances``: the instance label
    files delivered with the predictions, same order, scored as the predicted objects).

    Returns
    -------
    dict
        ``n_images``, ``mean_dice``, ``mean_iou``, ``mean_precision``, ``mean_recall``,
        ``mean_pixel_error`` (plain means over the images), ``metrics`` (statistics of
        every score, see :func:`aggregate`), ``instances`` (object matches pooled over the
        images, one entry per IoU threshold), ``bootstrap`` (its settings) and
        ``per_image`` (one dict per sample, in the order given).
    """
    if not (len(samples) == len(truths) == len(predictions)):
        raise ValueError("samples, truths and predictions must have the same length")
    per_image, pooled, confusion, classes = [], InstanceCounts(), np.zeros((2, 2), np.int64), None
    for i, (sample, truth, prediction) in enumerate(zip(samples, truths, predictions)):
        scores, objects, matrix = _evaluate_sample(truth, prediction, foreground, instances[i] if instances else None)
        if scores["sample"] != sample:
            raise InputError(f"{truth}: holds sample {scores['sample']!r}, expected {sample!r}")
        per_image.append(scores)
        pooled += objects
        if matrix is None:  # binary: rows and columns background, foreground
            matrix = np.array([[scores["tn"], scores["fp"]], [scores["fn"], scores["tp"]]], np.int64)
        else:
            classes = open_sample(truth).classes
        if len(per_image) > 1 and confusion.shape != matrix.shape:
            raise InputError(f"{truth}: preprocessed with other labels.classes than the samples before it.")
        confusion = matrix if len(per_image) == 1 else confusion + matrix
    table = pd.DataFrame(per_image)
    summary: dict[str, Any] = {"n_images": len(per_image)}
    for metric in ("dice", "iou", "precision", "recall", "pixel_error"):
        summary[f"mean_{metric}"] = float(table[metric].mean()) if per_image else None
    names = [f"{k}_{c}" for c in classes or [] for k in CLASS_METRICS]
    summary["metrics"] = {m: aggregate(table[m] if per_image else []) for m in (*METRICS, *names)}
    if classes:
        pooled_scores = per_class_scores(confusion)
        summary["per_class"] = {
            c: {**{k: float(table[f"{k}_{c}"].mean()) for k in CLASS_METRICS}, "pooled": pooled_scores[i]}
            for i, c in enumerate(classes)
        }
    summary["confusion"] = {"classes": ["background", *(classes or ["foreground"])], "counts": confusion.tolist()}
    summary["instances"] = instance_scores(pooled)
    summary["bootstrap"] = {"resamples": BOOTSTRAP_RESAMPLES, "seed": BOOTSTRAP_SEED, "confidence": 0.95}
    summary["per_image"] = per_image
    return summary


def _json_safe(value: Any) -> Any:
    """NaN and infinities as None (JSON has neither); NumPy scalars as Python ones."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def metrics_table(summary: dict[str, Any]) -> pd.DataFrame:
    """The split's statistics as a tidy table: one row per metric.

    Returns
    -------
    DataFrame
        Columns ``metric``, ``n``, ``mean``, ``std``, ``median``, ``ci95_low``, ``ci95_high``.
    """
    rows = [
        {"metric": name, **{k: v for k, v in stats.items() if k != "ci95"},
         "ci95_low": stats["ci95"][0], "ci95_high": stats["ci95"][1]}
        for name, stats in summary["metrics"].items()
    ]  # fmt: skip
    return pd.DataFrame(rows, columns=["metric", "n", "mean", "std", "median", "ci95_low", "ci95_high"])


def write_evaluation(
    summary: dict[str, Any],
    json_path: str | os.PathLike,
    csv_path: str | os.PathLike,
    *,
    metrics_csv: str | os.PathLike | None = None,
) -> None:
    """Write ``summary.json``, the per-image CSV and optionally the metrics table, atomically."""
    write_json(json_path, _json_safe(summary))
    with atomic_path(csv_path) as tmp:
        pd.DataFrame(summary["per_image"]).to_csv(tmp, index=False)
    if metrics_csv is not None:
        with atomic_path(metrics_csv) as tmp:
            metrics_table(summary).to_csv(tmp, index=False)
