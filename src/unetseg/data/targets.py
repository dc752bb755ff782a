"""Training targets that keep touching objects apart, as the U-Net paper's cell targets did.

When a mask holds instance ids, two objects that touch would merge in a plain foreground
target, and so would the network's predictions. :func:`separated_foreground` puts a line
of background between them: a pixel of an object becomes background when one of its eight
neighbours belongs to another object with a lower id. The line is one pixel wide, and what
remains of two touching objects is not 8-connected, so connected components of a perfect
prediction recover every object.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from scipy import ndimage as ndi

__all__ = ["touching_pixels", "separated_foreground"]


def touching_pixels(objects: ArrayLike) -> np.ndarray:
    """Pixels of an object that have an 8-neighbour (26 in 3D) of another object with a lower id.

    Parameters
    ----------
    objects : (Y, X) array_like of int
        Instance ids, 0 = background.

    Returns
    -------
    (Y, X) ndarray of bool
    """
    objects = np.asarray(objects).astype(np.int64)
    inside = objects > 0
    if not inside.any():
        return np.zeros(objects.shape, dtype=bool)
    # Background counts as "no lower id": give it a value above every id.
    raised = np.where(inside, objects, objects.max() + 1)
    lowest = ndi.minimum_filter(raised, size=3, mode="nearest")
    return inside & (lowest < objects)


def separated_foreground(objects: ArrayLike) -> np.ndarray:
    """The foreground of ``objects`` with a one-pixel background line between touching objects.

    Parameters
    ----------
    objects : (Y, X) array_like of int
        Instance ids, 0 = background.

    Returns
    -------
    (Y, X) ndarray of bool
    """
    objects = np.asarray(objects)
    return (objects > 0) & ~touching_pixels(objects)
