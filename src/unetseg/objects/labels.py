"""Object labels of a mask: connected components, and instance ids kept when masks hold them."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike
from skimage.measure import label

from unetseg.data.masks import foreground_mask

__all__ = ["label_objects", "class_objects", "has_instance_ids", "true_instances"]


def label_objects(mask: ArrayLike, *, connectivity: int | None = None) -> np.ndarray:
    """Connected components of a binary mask (nonzero = foreground), full connectivity
    unless ``connectivity`` says otherwise (1: 4-neighbours in 2D).

    Returns
    -------
    (...) ndarray of int32
        0 = background, 1..n = objects.
    """
    return label(np.asarray(mask) != 0, connectivity=connectivity or np.ndim(mask)).astype(np.int32)


def class_objects(classes: ArrayLike, *, connectivity: int | None = None) -> np.ndarray:
    """Connected components of each class of a class map: touching pixels of different
    classes belong to different objects (full connectivity unless ``connectivity`` says
    otherwise). For a binary mask this is :func:`label_objects`.

    Returns
    -------
    (...) ndarray of int32
        0 = background, 1..n = objects.
    """
    classes = np.asarray(classes)
    return label(classes, background=0, connectivity=connectivity or classes.ndim).astype(np.int32)


def has_instance_ids(mask: ArrayLike, foreground: str | Sequence[int] = "nonzero") -> bool:
    """Whether a ground truth's values are instance ids: ``nonzero`` foreground, 2+ values.

    Parameters
    ----------
    mask : (...) array_like of int
    foreground : "nonzero" or sequence of int
        As ``labels.foreground``; listed foreground values are classes, never ids.
    """
    if not isinstance(foreground, str):
        return False
    values = np.unique(np.asarray(mask))
    return np.count_nonzero(values) > 1


def true_instances(mask: ArrayLike, foreground: str | Sequence[int] = "nonzero") -> np.ndarray:
    """True objects of a ground-truth mask, with the workflow's foreground mapping.

    Parameters
    ----------
    mask : (...) array_like of int
        Ground truth as stored by the user: binary, instance ids or class values.
    foreground : "nonzero" or sequence of int
        As ``labels.foreground`` (see :func:`unetseg.preprocess.foreground_mask`).

    Returns
    -------
    (...) ndarray of int64
        The mask's own ids if `foreground` is ``"nonzero"`` and the mask has more than one
        distinct nonzero value, else the connected components of the foreground.
    """
    mask = np.asarray(mask)
    binary = foreground_mask(mask, foreground)
    if has_instance_ids(mask, foreground):
        return np.where(binary, mask, 0).astype(np.int64)
    return label_objects(binary).astype(np.int64)
