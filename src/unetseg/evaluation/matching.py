"""Object-level evaluation: matching predicted and true instances at IoU thresholds.

Predicted instances are the connected components of the predicted binary mask (the
workflow's masks hold no ids). True instances are the ground truth's own ids when it has
them (more than one distinct nonzero value, with ``labels.foreground`` = ``nonzero``),
else the connected components of its foreground. Objects are 8-connected in 2D (full
connectivity in N-D), the dual of the 4-connected background regions of
:mod:`unetseg.regions`.

A true and a predicted object *match* at threshold ``t`` when their IoU is at least ``t``
and the pair belongs to a one-to-one matching that maximises the number of matches (then
their total IoU), as stardist's ``matching`` does. Above 0.5 every object overlaps at most
one partner by that much, so the matching is unique; at or below 0.5 it is solved
optimally with ``scipy.optimize.linear_sum_assignment``, separately within each group of
objects linked by candidate pairs, so its cost stays small on images with many objects.

Edge cases
----------
* No true and no predicted object: precision, recall, F1, AP and PQ are 1.0 (nothing
  there, nothing claimed), as for the pixel scores; mean matched IoU is NaN.
* Otherwise a ratio whose denominator is 0 is 0.0 (e.g. recall with no true object is
  not reachable: it has ``tp + fn = 0`` only in the case above), and mean matched IoU
  with no match is NaN.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy import sparse
from scipy.optimize import linear_sum_assignment
from skimage.segmentation import relabel_sequential

__all__ = ["THRESHOLDS", "overlap_ious", "match_pairs", "InstanceCounts", "match_instances", "instance_scores"]

THRESHOLDS = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))  # 0.5, 0.55, ..., 0.95


def overlap_ious(true_labels: ArrayLike, pred_labels: ArrayLike) -> tuple[sparse.coo_array, int, int]:
    """IoU of every overlapping pair of true and predicted objects.

    Parameters
    ----------
    true_labels, pred_labels : (...) array_like of int
        Label images of the same shape, 0 = background.

    Returns
    -------
    ious : (n_true, n_pred) scipy.sparse.coo_array of float64
        Nonzero only for overlapping pairs; objects numbered in label order from 0.
    n_true, n_pred : int
        Numbers of objects.
    """
    true, pred = np.asarray(true_labels), np.asarray(pred_labels)
    if true.shape != pred.shape:
        raise ValueError(f"label images differ in shape: {true.shape} and {pred.shape}")
    true = relabel_sequential(true.astype(np.int64, copy=False))[0].ravel()
    pred = relabel_sequential(pred.astype(np.int64, copy=False))[0].ravel()
    n_true, n_pred = int(true.max(initial=0)), int(pred.max(initial=0))
    area_true = np.bincount(true, minlength=n_true + 1)
    area_pred = np.bincount(pred, minlength=n_pred + 1)
    both = (true > 0) & (pred > 0)
    pairs, inter = np.unique(true[both] * (n_pred + 1) + pred[both], return_counts=True)
    rows, cols = pairs // (n_pred + 1), pairs % (n_pred + 1)
    iou = inter / (area_true[rows] + area_pred[cols] - inter)
    return sparse.coo_array((iou, (rows - 1, cols - 1)), shape=(n_true, n_pred)), n_true, n_pred


def match_pairs(ious: sparse.coo_array, threshold: float) -> np.ndarray:
    """One-to-one matching of objects whose IoU is at least `threshold`.

    Parameters
    ----------
    ious : (n_true, n_pred) scipy.sparse.coo_array
        As :func:`overlap_ious`.
    threshold : float
        In ``(0, 1]``.

    Returns
    -------
    (n_matches,) ndarray of float64
        The IoU of each matched pair.
    """
    keep = ious.data >= threshold
    rows, cols, values = ious.row[keep], ious.col[keep], ious.data[keep]
    if threshold > 0.5 or values.size == 0:
        return values  # each object has at most one partner above 0.5
    n_true = ious.shape[0]
    graph = sparse.coo_array((np.ones(values.size), (rows, n_true + cols)), shape=(sum(ious.shape),) * 2)
    group = sparse.csgraph.connected_components(graph, directed=False)[1][rows]
    matched = []
    for g in np.unique(group):
        r, c, v = rows[group == g], cols[group == g], values[group == g]
        ur, ri = np.unique(r, return_inverse=True)
        uc, ci = np.unique(c, return_inverse=True)
        iou = np.zeros((ur.size, uc.size))
        iou[ri, ci] = v
        # Each candidate is worth 1, plus a tie-break summing to less than 1: most matches, then most IoU.
        score = np.where(iou > 0, 1 + iou / (2 * min(ur.size, uc.size)), 0.0)
        i, j = linear_sum_assignment(score, maximize=True)
        matched.append(iou[i, j][iou[i, j] > 0])
    return np.concatenate(matched)


class InstanceCounts:
    """Matches, misses and false objects per IoU threshold; sums over planes and images.

    Attributes
    ----------
    thresholds : (T,) ndarray of float64
    tp, fp, fn : (T,) ndarray of int64
        Matched pairs, unmatched predicted objects, unmatched true objects.
    iou_sum : (T,) ndarray of float64
        Total IoU of the matched pairs.
    n_true, n_pred : int
        Numbers of objects.
    """

    def __init__(self, thresholds: Sequence[float] = THRESHOLDS) -> None:
        self.thresholds = np.asarray(thresholds, dtype=np.float64)
        self.tp = np.zeros(self.thresholds.size, dtype=np.int64)
        self.fp, self.fn = np.zeros_like(self.tp), np.zeros_like(self.tp)
        self.iou_sum = np.zeros(self.thresholds.size)
        self.n_true = self.n_pred = 0

    def add(self, true_labels: ArrayLike, pred_labels: ArrayLike) -> None:
        """Match the objects of one plane (or image) and add the counts."""
        ious, n_true, n_pred = overlap_ious(true_labels, pred_labels)
        for k, threshold in enumerate(self.thresholds):
            matched = match_pairs(ious, float(threshold))
            self.tp[k] += matched.size
            self.fp[k] += n_pred - matched.size
            self.fn[k] += n_true - matched.size
            self.iou_sum[k] += float(matched.sum())
        self.n_true += n_true
        self.n_pred += n_pred

    def __iadd__(self, other: InstanceCounts) -> InstanceCounts:
        if not np.array_equal(self.thresholds, other.thresholds):
            raise ValueError("cannot add instance counts at different thresholds")
        self.tp += other.tp
        self.fp += other.fp
        self.fn += other.fn
        self.iou_sum += other.iou_sum
        self.n_true += other.n_true
        self.n_pred += other.n_pred
        return self


def match_instances(
    true_labels: ArrayLike, pred_labels: ArrayLike, *, thresholds: Sequence[float] = THRESHOLDS
) -> InstanceCounts:
    """Match true and predicted objects at each IoU threshold (see the module docstring).

    Parameters
    ----------
    true_labels, pred_labels : (...) array_like of int
        Label images of the same shape, 0 = background.
    thresholds : sequence of float
        IoU thresholds in ``(0, 1]``; default 0.5 to 0.95 in steps of 0.05.

    Returns
    -------
    InstanceCounts
    """
    counts = InstanceCounts(thresholds)
    counts.add(true_labels, pred_labels)
    return counts


def _ratio(numerator: float, denominator: float, *, both_empty: bool) -> float:
    if both_empty:
        return 1.0
    return 0.0 if denominator == 0 else numerator / denominator


def instance_scores(counts: InstanceCounts) -> list[dict[str, Any]]:
    """Object-level scores at each threshold.

    Returns
    -------
    list of dict
        One per threshold: ``threshold``, ``tp``, ``fp``, ``fn``, ``precision``
        (TP / (TP + FP)), ``recall`` (TP / (TP + FN)), ``f1``, ``ap`` (the Data Science
        Bowl 2018 average precision, TP / (TP + FP + FN)), ``matched_iou`` (mean IoU of the
        matched pairs) and ``pq`` (panoptic quality, sum of matched IoU / (TP + FP/2 + FN/2)).
    """
    empty = counts.n_true == 0 and counts.n_pred == 0
    rows = []
    for k, threshold in enumerate(counts.thresholds):
        tp, fp, fn, total = int(counts.tp[k]), int(counts.fp[k]), int(counts.fn[k]), float(counts.iou_sum[k])
        rows.append({
            "threshold": float(threshold), "tp": tp, "fp": fp, "fn": fn,
            "precision": _ratio(tp, tp + fp, both_empty=empty),
            "recall": _ratio(tp, tp + fn, both_empty=empty),
            "f1": _ratio(2 * tp, 2 * tp + fp + fn, both_empty=empty),
            "ap": _ratio(tp, tp + fp + fn, both_empty=empty),
            "matched_iou": total / tp if tp else math.nan,
            "pq": _ratio(total, tp + fp / 2 + fn / 2, both_empty=empty),
        })  # fmt: skip
    return rows
