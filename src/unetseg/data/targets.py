"""Training targets that keep touching objects apart, as the U-Net paper's cell targets did.

When a mask holds instance ids, two objects that touch would merge in a plain foreground
target, and so would the network's predictions. :func:`separated_foreground` puts a line
of background between them: a pixel of an object becomes background when one of its eight
neighbours belongs to another object. The line is two pixels wide (one on each side of the
contact), and what remains of two touching objects is not 8-connected, so connected
components of a perfect prediction recover every object.

:func:`contact_target` is the three-class alternative: the same pixels become a class of
their own (background 0, object 1, contact 2), so the network learns the full extent of
the objects (the mask: every pixel that is not background) and where they touch (the
instances: the objects without their contact pixels, grown back over them).

Measured on the demo's test split (README): a one-pixel line (``both_sides=False``, only
the object with the higher id gives up its contact pixels) was not learnt by the demo's
network in its 40 epochs, with or without the weight map (AP at IoU 0.5 of 0.26 and 0.33);
the two-pixel line with the weight map gave 0.86.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from scipy import ndimage as ndi

__all__ = [
    "LINE_WIDTH",
    "SEPARATIONS",
    "CONTACT",
    "DEFAULT_SEPARATION",
    "touching_pixels",
    "separated_foreground",
    "contact_target",
]

# Width of the line between touching objects in a separated target; the instances of a model
# trained on such targets close lines up to twice that wide (unetseg.objects.components.fill_gaps).
LINE_WIDTH = 2
# How touching objects are kept apart in the target: a background line (binary target,
# sigmoid), or a class of its own for the contact pixels (background / object / contact,
# softmax; the mask is then everything that is not background).
SEPARATIONS = ("line", "contact")
CONTACT = 2  # class index of the contact pixels in a contact target (1: the rest of the objects)
# labels.separate_touching: true. On the demo's test split (README) the contact target gave
# pixel Dice 0.980 and AP50 0.866, the line 0.940 and 0.872 (same network, data and steps):
# the line costs the objects their contact pixels, the contact class does not.
DEFAULT_SEPARATION = "contact"


def touching_pixels(objects: ArrayLike, *, both_sides: bool = True) -> np.ndarray:
    """Pixels of an object that have an 8-neighbour (26 in 3D) of another object (with
    ``both_sides=False``: of another object with a lower id).

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
    if not both_sides:
        return inside & (lowest < objects)
    highest = ndi.maximum_filter(objects, size=3, mode="nearest")
    return inside & ((lowest < objects) | (highest > objects))


def separated_foreground(objects: ArrayLike, *, both_sides: bool = True) -> np.ndarray:
    """The foreground of ``objects`` with a background line between touching objects (two
    pixels wide; one with ``both_sides=False``).

    Parameters
    ----------
    objects : (Y, X) array_like of int
        Instance ids, 0 = background.

    Returns
    -------
    (Y, X) ndarray of bool
    """
    objects = np.asarray(objects)
    return (objects > 0) & ~touching_pixels(objects, both_sides=both_sides)


def contact_target(objects: ArrayLike) -> np.ndarray:
    """Three classes: 0 background, 1 object, :data:`CONTACT` where an object touches another
    (the pixels :func:`separated_foreground` turns into background).

    Parameters
    ----------
    objects : (Y, X) array_like of int
        Instance ids, 0 = background.

    Returns
    -------
    (Y, X) ndarray of uint8
    """
    objects = np.asarray(objects)
    target = (objects > 0).astype(np.uint8)
    target[touching_pixels(objects)] = CONTACT
    return target
