"""Scores of multi-class masks (``labels.classes``): a confusion matrix and per-class scores.

Class 0 is the background, classes 1..C are the ones ``labels.classes`` lists. A class's
true positives are the diagonal entry, its false positives the rest of its column and its
false negatives the rest of its row, so each class is scored one-against-the-rest with the
edge cases of :func:`unetseg.evaluation.metrics.scores_from_counts`.
"""

from __future__ import annotations

import os

import numpy as np
from numpy.typing import ArrayLike

from unetseg.errors import InputError
from unetseg.evaluation.metrics import scores_from_counts

__all__ = ["CLASS_METRICS", "class_confusion", "per_class_scores"]

CLASS_METRICS = ("dice", "iou", "precision", "recall")  # per class, in the per-image table


def class_confusion(
    y_true: ArrayLike, y_pred: ArrayLike, classes: int, prediction: str | os.PathLike | None = None
) -> np.ndarray:
    """``(classes, classes)`` pixel counts: true class (rows) against predicted (columns).

    Parameters
    ----------
    y_true, y_pred : (...) array_like of int
        Class indices ``0 .. classes - 1``, same shape.
    classes : int
        Number of classes including the background.
    prediction : path-like, optional
        The predicted mask's file, named in the error when it holds other values.

    Raises
    ------
    InputError
        If ``y_pred`` holds a value outside ``0 .. classes - 1`` (e.g. a binary model's 255).
    """
    true, pred = np.asarray(y_true).astype(np.int64).ravel(), np.asarray(y_pred).astype(np.int64).ravel()
    if true.shape != pred.shape:
        raise ValueError(f"shapes differ: {np.shape(y_true)} and {np.shape(y_pred)}")
    high = int(pred.max(initial=0))
    if high >= classes or int(pred.min(initial=0)) < 0:
        raise InputError(
            f"{prediction or 'prediction'}: holds class {high} but the ground truth has {classes - 1} classes "
            "(labels.classes); segment it with a model trained on the same labels.classes."
        )
    return np.bincount(true * classes + pred, minlength=classes * classes).reshape(classes, classes)


def per_class_scores(confusion: ArrayLike) -> list[dict[str, float]]:
    """Dice, IoU, precision and recall of classes 1..C (not the background), in order."""
    confusion = np.asarray(confusion, dtype=np.int64)
    total = int(confusion.sum())
    scores = []
    for k in range(1, len(confusion)):
        tp = int(confusion[k, k])
        fp, fn = int(confusion[:, k].sum()) - tp, int(confusion[k, :].sum()) - tp
        counts = scores_from_counts(tp, fp, fn, total - tp - fp - fn)
        scores.append({key: counts[key] for key in CLASS_METRICS})
    return scores
