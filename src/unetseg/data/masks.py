"""Which mask pixels are foreground (``labels.foreground``), or of which class (``labels.classes``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from unetseg.errors import InputError

__all__ = ["foreground_mask", "check_classes", "class_map", "MAX_CLASSES"]

MAX_CLASSES = 254  # class indices 1..C are stored as uint8, with 0 for the background


def foreground_mask(mask: np.ndarray, foreground: str | Sequence[int] = "nonzero") -> np.ndarray:
    """Binary ground truth: ``True`` where ``mask`` is foreground.

    Parameters
    ----------
    mask : ndarray
        Ground truth values (binary, instance ids or class values).
    foreground : "nonzero" or sequence of int
        ``"nonzero"``: every nonzero value is foreground. A list: exactly those values are
        foreground (``[0]`` for ISBI 2012 membranes, which are stored as 0).
    """
    if isinstance(foreground, str):
        if foreground != "nonzero":
            raise InputError(f"labels.foreground must be 'nonzero' or a list of values, not {foreground!r}")
        return mask != 0
    return np.isin(mask, np.asarray(list(foreground)))


def check_classes(classes: Any, *, key: str = "labels.classes") -> dict[str, list[int]]:
    """Validate a ``labels.classes`` mapping and return it as ``{name: [values]}``, in order.

    Each class name must be an identifier other than ``background`` (index 0), list at least
    one integer mask value, and no value may belong to two classes.

    Raises
    ------
    InputError
        Naming the class or value at fault and the fix.
    """
    if not isinstance(classes, Mapping):
        raise InputError(f"{key} must map class names to lists of mask values, e.g. {{cell: [1], nucleus: [2]}}.")
    if len(classes) > MAX_CLASSES:
        raise InputError(f"{key} lists {len(classes)} classes; at most {MAX_CLASSES} fit in a uint8 mask.")
    owner: dict[int, str] = {}
    checked: dict[str, list[int]] = {}
    for name, values in classes.items():
        if not isinstance(name, str) or not name.isidentifier() or name == "background":
            raise InputError(
                f"{key}: class name {name!r} is not a valid identifier (letters, digits, underscores, "
                "not starting with a digit; 'background' is class 0); rename it, e.g. 'nucleus'."
            )
        if isinstance(values, int | np.integer) and not isinstance(values, bool):
            values = [values]
        if not isinstance(values, Sequence) or isinstance(values, str) or not values:
            raise InputError(f"{key}.{name} lists no mask value; give the values of that class, e.g. {name}: [1].")
        for value in values:
            if isinstance(value, bool) or not isinstance(value, int | np.integer):
                raise InputError(f"{key}.{name}: {value!r} is not an integer mask value.")
            if int(value) in owner:
                raise InputError(
                    f"{key}: mask value {value} is listed for both {owner[int(value)]!r} and {name!r}; "
                    "a value belongs to one class, remove it from one of them."
                )
            owner[int(value)] = name
        checked[name] = [int(v) for v in values]
    return checked


def class_map(mask: np.ndarray, classes: Mapping[str, Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Class indices of a mask: 0 = background, 1..C in the order of ``classes``.

    Parameters
    ----------
    mask : ndarray of int
        Ground truth values.
    classes : mapping
        ``labels.classes`` (checked by :func:`check_classes`).

    Returns
    -------
    indices : ndarray of uint8
        Same shape as ``mask``.
    unlisted : ndarray of int
        The nonzero mask values that no class lists (counted as background).
    """
    indices = np.zeros(mask.shape, dtype=np.uint8)
    listed: list[int] = []
    for index, values in enumerate(classes.values(), start=1):
        indices[np.isin(mask, values)] = index
        listed += list(values)
    present = np.unique(mask)
    unlisted = present[(present != 0) & ~np.isin(present, listed)]
    return indices, unlisted
