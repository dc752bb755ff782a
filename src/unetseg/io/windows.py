"""Windows of an image that may reach past its borders, filled as the padding would be."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from unetseg.inference.tiling import Border, border_indices

__all__ = ["PlaneSource", "read_window"]


class PlaneSource(Protocol):
    """Anything with a ``(Z, C, Y, X)`` shape that reads ``(C, y, x)`` blocks of a plane."""

    shape: tuple[int, int, int, int]

    def read(self, z: int, ys: slice, xs: slice) -> np.ndarray: ...


def read_window(
    source: PlaneSource, z: int, window: Sequence[tuple[int, int]], border: Border = "mirror"
) -> np.ndarray:
    """Read a ``(C, h, w)`` float32 window that may extend past the image borders.

    Only the bounding box of the needed pixels is read from ``source``; the rest comes from
    mirroring (or zeros), exactly as if the whole image had been padded first.
    """
    _, channels, height, width = source.shape
    (y0, y1), (x0, x1) = window
    iy, ix = border_indices(y0, y1, height, border), border_indices(x0, x1, width, border)
    out = np.zeros((channels, y1 - y0, x1 - x0), dtype=np.float32)
    vy, vx = iy >= 0, ix >= 0
    if not vy.any() or not vx.any():
        return out
    ylo, yhi = int(iy[vy].min()), int(iy[vy].max()) + 1
    xlo, xhi = int(ix[vx].min()), int(ix[vx].max()) + 1
    block = np.asarray(source.read(z, slice(ylo, yhi), slice(xlo, xhi)), dtype=np.float32)
    out[np.ix_(np.arange(channels), np.flatnonzero(vy), np.flatnonzero(vx))] = block[
        np.ix_(np.arange(channels), iy[vy] - ylo, ix[vx] - xlo)
    ]
    return out
