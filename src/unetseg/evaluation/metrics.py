"""Segmentation metrics in pure NumPy: pixels, boundaries and the regions they enclose.

The pixel-wise functions take a ground truth and a prediction of the same shape, of any
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

* :func:`hausdorff95`: 0.0 when both masks are empty, ``inf`` when exactly one
  is (the distance to an empty set is infinite: there is no contour to reach).
* :func:`region_scores`: NaN (undefined) when the ground truth has no region pixel,
  i.e. every pixel is boundary (see :mod:`unetseg.regions`).

Counts use ``numpy.count_nonzero``, which returns Python ints, so they cannot
overflow however large the images are.

Boundary and region metrics
---------------------------
HD95 is the boundary-aware score: the 95th percentile of the distances (in pixels)
from each contour pixel of one mask to the nearest contour pixel of the other,
the larger of the two directions (as MONAI's ``compute_hausdorff_distance`` with
``percentile=95``). Contour pixels are foreground pixels with a background
neighbour (4-connectivity in 2D), the image border counting as background.

For membrane data, :func:`region_scores` (from :mod:`unetseg.regions`) gives the
adapted Rand error and variation of information of the regions the boundaries enclose.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike
from scipy import ndimage

from unetseg.evaluation.regions import boundary_regions, region_scores, region_scores_from_table, region_table

__all__ = [
    "confusion_counts",
    "scores_from_counts",
    "class_scores_from_counts",
    "dice",
    "iou",
    "pixel_error",
    "contour",
    "surface_distances",
    "hausdorff95",
    "DistanceTally",
    "boundary_regions",
    "region_table",
    "region_scores_from_table",
    "region_scores",
]


def _foreground_pair(y_true: ArrayLike, y_pred: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Check shapes and binarise both inputs as nonzero = foreground."""
    true, pred = np.asarray(y_true), np.asarray(y_pred)
    if true.shape != pred.shape:
        raise ValueError(f"y_true and y_pred must have the same shape, got {true.shape} and {pred.shape}")
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


def class_scores_from_counts(tp: int, fp: int, fn: int, tn: int) -> dict[str, dict[str, float]]:
    """Scores of each class of a binary segmentation: ``foreground`` and ``background``.

    The background's counts are the foreground's with the roles swapped (its true
    positives are the foreground's true negatives, its false positives the
    foreground's false negatives). Pixel error is the same for both classes.

    Returns
    -------
    dict
        ``{"foreground": scores, "background": scores}``, each as :func:`scores_from_counts`.
    """
    return {"foreground": scores_from_counts(tp, fp, fn, tn), "background": scores_from_counts(tn, fn, fp, tp)}


def contour(mask: ArrayLike) -> np.ndarray:
    """Contour pixels of a binary mask: foreground with a background neighbour.

    Parameters
    ----------
    mask : (...) array_like
        Nonzero = foreground.

    Returns
    -------
    (...) ndarray of bool
        Neighbours along the axes only (4-connectivity in 2D); the image border counts as
        background, so an all-foreground mask's contour is its frame.
    """
    mask = np.asarray(mask) != 0
    return mask & ~ndimage.binary_erosion(mask, border_value=0)


def surface_distances(y_true: ArrayLike, y_pred: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Distances between the contours of two masks, in pixels, both directions.

    Parameters
    ----------
    y_true, y_pred : (...) array_like
        Masks of the same shape; nonzero = foreground.

    Returns
    -------
    true_to_pred : (n_true,) ndarray of float64
        For each contour pixel of `y_true`, the distance to the nearest contour pixel of
        `y_pred`; ``inf`` everywhere if `y_pred` is empty.
    pred_to_true : (n_pred,) ndarray of float64
        The same from `y_pred` to `y_true`.
    """
    true, pred = _foreground_pair(y_true, y_pred)
    edge_true, edge_pred = contour(true), contour(pred)

    def directed(source: np.ndarray, target: np.ndarray) -> np.ndarray:
        if not source.any():
            return np.zeros(0)
        if not target.any():
            return np.full(np.count_nonzero(source), np.inf)
        return ndimage.distance_transform_edt(~target)[source]

    return directed(edge_true, edge_pred), directed(edge_pred, edge_true)


def hausdorff95(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """95th-percentile Hausdorff distance (HD95) between two masks' contours, in pixels.

    Parameters
    ----------
    y_true, y_pred : (...) array_like
        Masks of the same shape; nonzero = foreground.

    Returns
    -------
    float
        ``max(P95(true -> pred), P95(pred -> true))`` of :func:`surface_distances`
        (linear interpolation between order statistics, as ``numpy.percentile``).
        0.0 when both masks are empty, ``inf`` when exactly one is.
    """
    tally = DistanceTally()
    tally.add(y_true, y_pred)
    return tally.hd95()


class DistanceTally:
    """Contour distances accumulated over planes or blocks, in bounded memory.

    Distances on the pixel grid are square roots of integers, so they are tallied as
    counts per squared distance: the memory is the number of distinct distances, not the
    number of contour pixels, and the percentile is exact. For a stack added plane by
    plane, distances are measured within each plane, as the network segments them.
    """

    def __init__(self) -> None:
        self.counts: list[dict[int, int]] = [{}, {}]  # true -> pred, pred -> true
        self.infinite = [0, 0]

    def add(self, y_true: ArrayLike, y_pred: ArrayLike) -> None:
        """Tally the contour distances of one plane (or any N-D block) of both masks."""
        for direction, distances in enumerate(surface_distances(y_true, y_pred)):
            finite = np.isfinite(distances)
            self.infinite[direction] += int(np.count_nonzero(~finite))
            squared, counts = np.unique(np.rint(distances[finite] ** 2).astype(np.int64), return_counts=True)
            tally = self.counts[direction]
            for value, count in zip(squared.tolist(), counts.tolist()):
                tally[value] = tally.get(value, 0) + count

    def percentile(self, q: float, direction: int) -> float:
        """``numpy.percentile`` (linear) of the distances of one direction (0: true to pred)."""
        squared = sorted(self.counts[direction])
        values = [math.sqrt(v) for v in squared] + [math.inf]
        cumulative = np.cumsum([self.counts[direction][v] for v in squared] + [self.infinite[direction]])
        n = int(cumulative[-1]) if len(cumulative) else 0
        if n == 0:
            return 0.0
        position = q / 100 * (n - 1)
        low, frac = int(math.floor(position)), position - math.floor(position)
        lo = values[int(np.searchsorted(cumulative, low, side="right"))]
        hi = values[int(np.searchsorted(cumulative, min(low + 1, n - 1), side="right"))]
        return lo if frac == 0 or lo == hi else lo + (hi - lo) * frac

    def hd95(self) -> float:
        """HD95 of everything tallied: 0.0 if both masks were empty, ``inf`` if one was."""
        return max(self.percentile(95, 0), self.percentile(95, 1))
