"""Regions enclosed by boundaries, and the ISBI 2012 scores that compare them.

For membrane data (EM, where the foreground is the boundaries between cells), the
ISBI 2012 challenge ranked segmentations by the adapted Rand error and the
variation of information (VI) of the *regions* the boundaries enclose: connected
components of the background. :func:`region_scores` computes both with
scikit-image; ground-truth boundary pixels are ignored (as in the challenge), and
each predicted boundary pixel lying inside a true region is its own singleton
region (it claims to belong to no cell, so it is paired with no other pixel).
On nuclei data the regions are just the background and its holes, so the scores
say little there; they are computed for every image because they are cheap.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike
from scipy import sparse
from skimage.measure import label
from skimage.metrics import adapted_rand_error, variation_of_information

__all__ = ["boundary_regions", "region_table", "region_scores_from_table", "region_scores"]


def boundary_regions(boundaries: ArrayLike) -> np.ndarray:
    """Regions enclosed by boundaries: connected components of the non-boundary pixels.

    Parameters
    ----------
    boundaries : (...) array_like
        Nonzero = boundary (membrane).

    Returns
    -------
    (...) ndarray of int32
        0 on boundaries, 1..n on the regions (4-connectivity in 2D).
    """
    return label(np.asarray(boundaries) == 0, connectivity=1).astype(np.int32)


def region_table(true_regions: ArrayLike, pred_regions: ArrayLike) -> sparse.csr_array:
    """Contingency table of true and predicted regions, in pixel counts.

    Parameters
    ----------
    true_regions, pred_regions : (...) array_like of int
        Region labels, 0 = boundary (as :func:`boundary_regions`).

    Returns
    -------
    (n_true + 1, n_pred + 1 + k) scipy.sparse.csr_array of float64
        Entry ``[i, j]`` counts pixels of true region ``i`` in predicted region ``j``. True
        boundary pixels (row 0) are left out; each of the ``k`` predicted boundary pixels
        inside a true region is a column of its own (a singleton region).
    """
    true, pred = np.asarray(true_regions).ravel(), np.asarray(pred_regions).ravel()
    if true.shape != pred.shape:
        raise ValueError(f"true and predicted regions differ in size: {true.size} and {pred.size}")
    keep = true != 0
    true, pred = true[keep].astype(np.int64), pred[keep].astype(np.int64)
    singletons = pred == 0
    pred[singletons] = pred.max(initial=0) + 1 + np.arange(np.count_nonzero(singletons))
    shape = (int(true.max(initial=0)) + 1, int(pred.max(initial=0)) + 1)
    return sparse.csr_array((np.ones(true.size), (true, pred)), shape=shape)


def region_scores_from_table(table: sparse.csr_array) -> dict[str, float]:
    """Adapted Rand error and variation of information from a :func:`region_table`.

    Tables of several planes combine with ``scipy.sparse.block_diag``.

    Returns
    -------
    dict
        ``rand_error`` (adapted Rand error, 1 - the F-score of pixel pairs put in the same
        region by both segmentations; 0 is perfect), ``vi_split`` (H(pred | true),
        over-segmentation), ``vi_merge`` (H(true | pred), under-segmentation) and ``vi``
        (their sum), in bits; 0 is perfect. All NaN when the table is empty (no true
        region pixel); ``rand_error`` is NaN too when no two pixels share a region.

    Notes
    -----
    scikit-image's Rand precision and recall are not reported: with the table's rows
    being the ground truth (as its own ``contingency_table`` builds it) they come out
    swapped. The error itself is symmetric and unaffected.
    """
    total = float(table.sum())
    if total == 0:
        return dict.fromkeys(("rand_error", "vi_split", "vi_merge", "vi"), math.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        error = adapted_rand_error(table=table)[0]
    # skimage 0.26 checks image shapes even when given a table; empty images satisfy it.
    empty = np.zeros(0, dtype=np.int64)
    # Entropies of identical segmentations come out as +-1e-19 round-off: report them as 0.
    entropies = variation_of_information(empty, empty, table=table / total)
    split, merge = (float(h) if h > 1e-12 else 0.0 for h in entropies)
    return {
        "rand_error": float(error), "vi_split": float(split), "vi_merge": float(merge), "vi": float(split + merge),
    }  # fmt: skip


def region_scores(y_true: ArrayLike, y_pred: ArrayLike) -> dict[str, float]:
    """Adapted Rand error and VI of the regions two boundary masks enclose (ISBI 2012).

    Parameters
    ----------
    y_true, y_pred : (...) array_like
        Masks of the same shape; nonzero = boundary (membrane).

    Returns
    -------
    dict
        As :func:`region_scores_from_table`.
    """
    true, pred = np.asarray(y_true), np.asarray(y_pred)
    if true.shape != pred.shape:
        raise ValueError(f"y_true and y_pred must have the same shape, got {true.shape} and {pred.shape}")
    return region_scores_from_table(region_table(boundary_regions(true), boundary_regions(pred)))
