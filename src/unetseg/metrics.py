"""Pixel-wise segmentation metrics in pure NumPy.

All functions take a ground truth and a prediction of the same shape, of any
dimensionality and dtype; every nonzero element (including NaN) counts as
foreground, so instance label images, boolean masks and probability maps
thresholded elsewhere can be passed directly.

Edge cases
----------
* Both masks empty: :func:`dice` and :func:`iou` return 1.0, because the
  prediction agrees perfectly that there is nothing there.
* Exactly one mask empty: :func:`dice` and :func:`iou` return 0.0.
* Zero-size inputs: every count is 0, so :func:`dice` and :func:`iou` return
  1.0 and :func:`pixel_error` returns 0.0 (no pixel is wrong).
* Precision and recall follow the same rule: 1.0 when both masks are empty,
  0.0 when their denominator is 0 otherwise (nothing predicted, or nothing there).

Counts use ``numpy.count_nonzero``, which returns Python ints, so they cannot
overflow however large the images are.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["confusion_counts", "scores_from_counts", "dice", "iou", "pixel_error"]


def _foreground_pair(y_true: ArrayLike, y_pred: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Check shapes and binarise both inputs as nonzero = foreground."""
    true, pred = np.asarray(y_true), np.asarray(y_pred)
    if true.shape != pred.shape:
        raise ValueError(
            f"y_true and y_pred must have the same shape, got {true.shape} and {pred.shape}"
        )
    return true != 0, pred != 0


def confusion_counts(y_true: ArrayLike, y_pred: ArrayLike) -> tuple[int, int, int, int]:
    """Count pixel-wise true/false positives and negatives.

    Parameters
    ----------
    y_true : (...) array_like
        Ground truth; nonzero = foreground.
    y_pred : (...) array_like
        Prediction with the same shape as `y_true`; nonzero = foreground.

    Returns
    -------
    tp, fp, fn, tn : int
        Python ints; ``tp + fp + fn + tn == y_true.size``.

    Raises
    ------
    ValueError
        If the shapes differ.
    """
    true, pred = _foreground_pair(y_true, y_pred)
    tp = int(np.count_nonzero(true & pred))
    fp = int(np.count_nonzero(pred)) - tp
    fn = int(np.count_nonzero(true)) - tp
    tn = true.size - tp - fp - fn
    return tp, fp, fn, tn


def _ratio(numerator: int, denominator: int, *, both_empty: bool) -> float:
    if both_empty:
        return 1.0
    return 0.0 if denominator == 0 else numerator / denominator


def scores_from_counts(tp: int, fp: int, fn: int, tn: int) -> dict[str, float]:
    """Dice, IoU, precision, recall and pixel error from confusion counts.

    Counts may be summed over blocks or planes first, so large images are scored without
    holding them in memory. Edge cases as in the module docstring.

    Returns
    -------
    dict
        Keys ``dice``, ``iou``, ``precision``, ``recall``, ``pixel_error``.
    """
    empty = tp + fp + fn == 0
    total = tp + fp + fn + tn
    return {
        "dice": _ratio(2 * tp, 2 * tp + fp + fn, both_empty=empty),
        "iou": _ratio(tp, tp + fp + fn, both_empty=empty),
        "precision": _ratio(tp, tp + fp, both_empty=empty),
        "recall": _ratio(tp, tp + fn, both_empty=empty),
        "pixel_error": 0.0 if total == 0 else (fp + fn) / total,
    }


def dice(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Dice coefficient (F1 score) of the foreground, ``2 TP / (2 TP + FP + FN)``.

    Parameters
    ----------
    y_true : (...) array_like
        Ground truth; nonzero = foreground.
    y_pred : (...) array_like
        Prediction with the same shape as `y_true`; nonzero = foreground.

    Returns
    -------
    float
        In ``[0, 1]``; 1 is perfect overlap.

    Raises
    ------
    ValueError
        If the shapes differ.

    Notes
    -----
    Both masks empty gives 1.0 (perfect agreement on "nothing there");
    exactly one empty gives 0.0. Related to IoU by
    ``dice = 2 iou / (1 + iou)``.
    """
    return scores_from_counts(*confusion_counts(y_true, y_pred))["dice"]


def iou(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Intersection over union (Jaccard index) of the foreground, ``TP / (TP + FP + FN)``.

    Parameters
    ----------
    y_true : (...) array_like
        Ground truth; nonzero = foreground.
    y_pred : (...) array_like
        Prediction with the same shape as `y_true`; nonzero = foreground.

    Returns
    -------
    float
        In ``[0, 1]``; 1 is perfect overlap.

    Raises
    ------
    ValueError
        If the shapes differ.

    Notes
    -----
    Both masks empty gives 1.0 (perfect agreement on "nothing there");
    exactly one empty gives 0.0.
    """
    return scores_from_counts(*confusion_counts(y_true, y_pred))["iou"]


def pixel_error(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Fraction of pixels classified wrongly, ``(FP + FN) / N`` (1 - accuracy).

    Parameters
    ----------
    y_true : (...) array_like
        Ground truth; nonzero = foreground.
    y_pred : (...) array_like
        Prediction with the same shape as `y_true`; nonzero = foreground.

    Returns
    -------
    float
        In ``[0, 1]``; 0 means every pixel is right.

    Raises
    ------
    ValueError
        If the shapes differ.

    Notes
    -----
    Unlike Dice and IoU this counts background pixels, so it stays small for
    sparse foreground even when every nucleus is missed. Zero-size inputs
    give 0.0, since no pixel is wrong.
    """
    return scores_from_counts(*confusion_counts(y_true, y_pred))["pixel_error"]
