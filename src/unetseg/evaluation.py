"""Evaluation of final masks against the ground truth, plane by plane.

Writes ``summary.json`` (the keys of the project's contract: ``n_images``, ``mean_dice``,
``mean_iou``, ``per_image``) and a tidy per-image CSV.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from .errors import InputError
from .io import ImageSource, atomic_path, open_image, write_json
from .metrics import confusion_counts, scores_from_counts
from .preprocess import open_preprocessed

__all__ = ["evaluate_sample", "evaluate", "write_evaluation"]


def evaluate_sample(truth_path: str | os.PathLike, prediction_path: str | os.PathLike) -> dict[str, Any]:
    """Scores of one predicted mask against a preprocessed sample's ground truth.

    Counts are accumulated plane by plane, so stacks larger than memory are fine.
    """
    group, attrs = open_preprocessed(truth_path)
    if "mask" not in group:
        raise InputError(f"{truth_path}: sample {attrs['sample']!r} has no ground truth mask to evaluate against.")
    truth = ImageSource(group["mask"], "ZYX")
    counts = np.zeros(4, dtype=np.int64)
    with open_image(prediction_path, axes=attrs["spatial_axes"]) as prediction:
        if prediction.spatial_shape != tuple(attrs["spatial_shape"]):
            raise InputError(
                f"{prediction_path}: mask shape {prediction.spatial_shape} differs from the image's "
                f"{tuple(attrs['spatial_shape'])}; delete it and rerun the workflow."
            )
        for z in range(truth.shape[0]):
            counts += confusion_counts(truth.read(z)[0], prediction.read(z)[0])
    tp, fp, fn, tn = (int(c) for c in counts)
    return {"sample": attrs["sample"], **scores_from_counts(tp, fp, fn, tn), "tp": tp, "fp": fp, "fn": fn, "tn": tn}


def evaluate(
    samples: Sequence[str], truths: Sequence[str | os.PathLike], predictions: Sequence[str | os.PathLike]
) -> dict[str, Any]:
    """Per-image scores and their means over a split.

    Returns
    -------
    dict
        ``n_images``, ``mean_dice``, ``mean_iou``, means of the other scores, and
        ``per_image`` (one dict per sample, in the order given).
    """
    if not (len(samples) == len(truths) == len(predictions)):
        raise ValueError("samples, truths and predictions must have the same length")
    per_image = []
    for sample, truth, prediction in zip(samples, truths, predictions):
        scores = evaluate_sample(truth, prediction)
        if scores["sample"] != sample:
            raise InputError(f"{truth}: holds sample {scores['sample']!r}, expected {sample!r}")
        per_image.append(scores)
    table = pd.DataFrame(per_image)
    summary: dict[str, Any] = {"n_images": len(per_image)}
    for metric in ("dice", "iou", "precision", "recall", "pixel_error"):
        summary[f"mean_{metric}"] = float(table[metric].mean()) if per_image else None
    summary["per_image"] = per_image
    return summary


def write_evaluation(summary: dict[str, Any], json_path: str | os.PathLike, csv_path: str | os.PathLike) -> None:
    """Write ``summary.json`` and the per-image CSV, each atomically."""
    write_json(json_path, summary)
    with atomic_path(csv_path) as tmp:
        pd.DataFrame(summary["per_image"]).to_csv(tmp, index=False)
