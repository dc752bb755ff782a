"""The U-Net paper's loss weight map, which makes the network learn thin borders.

    w(x) = w_c(x) + w0 * exp(-(d1(x) + d2(x))**2 / (2 * sigma**2))

``w_c`` balances the class frequencies, ``d1`` and ``d2`` are the distances to the nearest
and the second-nearest object. The border term is applied to pixels outside every object:
the narrow gaps between touching objects get the largest weights.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike
from scipy import ndimage as ndi

__all__ = ["class_balance_weights", "border_weights", "unet_weight_map"]


def class_balance_weights(foreground: ArrayLike) -> np.ndarray:
    """``w_c``: each class weighted by the inverse of its frequency, mean 1.

    An image of one class only gets weight 1 everywhere.
    """
    foreground = np.asarray(foreground, dtype=bool)
    fraction = foreground.mean() if foreground.size else 0.0
    if fraction in (0.0, 1.0):
        return np.ones(foreground.shape, dtype=np.float32)
    return np.where(foreground, 0.5 / fraction, 0.5 / (1 - fraction)).astype(np.float32)


def border_weights(objects: ArrayLike, *, w0: float = 10.0, sigma: float = 5.0) -> np.ndarray:
    """``w0 * exp(-(d1 + d2)**2 / (2 sigma**2))`` outside the objects, 0 inside.

    Parameters
    ----------
    objects : (Y, X) array_like of int
        Object labels, 0 = no object.
    w0, sigma : float
        Height and width (pixels) of the border term.

    Notes
    -----
    Distances are computed per object within ``4 sigma`` of it (Euclidean distance
    transforms of its bounding box grown by that much). Farther away the term is below
    ``w0 * exp(-8)``, so it is left at 0 there.
    """
    objects = np.asarray(objects)
    reach = int(math.ceil(4 * sigma))
    d1 = np.full(objects.shape, np.inf, dtype=np.float32)
    d2 = np.full(objects.shape, np.inf, dtype=np.float32)
    for index, box in enumerate(ndi.find_objects(objects), start=1):
        if box is None:
            continue
        grown = tuple(slice(max(0, s.start - reach), min(n, s.stop + reach)) for s, n in zip(box, objects.shape))
        distance = ndi.distance_transform_edt(objects[grown] != index).astype(np.float32)
        near1, near2 = d1[grown], d2[grown]
        closer = distance < near1
        near2[:] = np.where(closer, near1, np.minimum(near2, distance))
        near1[:] = np.where(closer, distance, near1)
    with np.errstate(invalid="ignore", over="ignore"):
        border = w0 * np.exp(-((d1 + d2) ** 2) / (2 * sigma**2))
    border[~np.isfinite(border) | (objects != 0)] = 0
    return border.astype(np.float32)


def unet_weight_map(foreground: ArrayLike, objects: ArrayLike, *, w0: float = 10.0, sigma: float = 5.0) -> np.ndarray:
    """The paper's weight map ``w_c + border`` of one plane.

    Parameters
    ----------
    foreground : (Y, X) array_like of bool
        The training target (what the network learns to call foreground).
    objects : (Y, X) array_like of int
        The objects whose borders matter: nuclei for nuclei, cells (the background of a
        membrane mask) for membranes.
    """
    return class_balance_weights(foreground) + border_weights(objects, w0=w0, sigma=sigma)
