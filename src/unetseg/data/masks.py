"""Which mask pixels are foreground (``labels.foreground``)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from unetseg.errors import InputError

__all__ = ["foreground_mask"]


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
