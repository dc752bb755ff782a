"""Tiling maths for overlap-tile inference: pure arithmetic, no I/O.

A *tile* has three regions, named as in stardist's ``big.py``:

``read``
    The window of the (virtually mirror-padded) image fed to the network: the write region
    grown by the halo on every side, and grown further at the far end so its size is a
    multiple of the network's grid. It may extend past the image; those pixels come from
    the border mode (mirror or zero padding). With ``clip`` (border mode ``"none"``: the
    network's own zero padding at the image border) it is cut to the image rounded up to
    the grid instead, so tiles at the border are smaller.
``crop``
    Where the write region sits inside the network's output for that read window.
``write``
    The pixels of the full-size output this tile is responsible for. The write regions of
    a grid partition the image: every pixel is written exactly once.

Tile origins are multiples of the tile size, itself a multiple of the grid, and the halo is
a multiple of the grid too, so every read window starts on the grid of the virtually padded
whole image. With a halo of at least the network's receptive-field margin, the tiled result
therefore equals the result of one forward pass over the whole (padded) image.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from itertools import product
from typing import Literal

import numpy as np

__all__ = ["Tile", "round_up", "tile_size_for", "tile_grid", "n_tiles", "border_indices"]

Border = Literal["mirror", "zero", "none"]


def round_up(value: int, multiple: int) -> int:
    """Smallest multiple of ``multiple`` that is >= ``value``."""
    return -(-value // multiple) * multiple


@dataclass(frozen=True)
class Tile:
    """One tile of a grid over an N-dimensional image.

    Attributes
    ----------
    read : tuple of (start, stop)
        Read window in image coordinates; may start below 0 or stop past the image.
    crop : tuple of slice
        The write region's position inside the network output of the read window.
    write : tuple of slice
        The region of the full-size output that this tile fills.
    """

    read: tuple[tuple[int, int], ...]
    crop: tuple[slice, ...]
    write: tuple[slice, ...]

    @property
    def read_shape(self) -> tuple[int, ...]:
        return tuple(stop - start for start, stop in self.read)


def tile_size_for(shape: tuple[int, ...], tile: int, grid: int) -> tuple[int, ...]:
    """Tile size per axis: ``tile``, or less for an axis shorter than a tile.

    Parameters
    ----------
    shape : tuple of int
        Spatial shape of the image.
    tile : int
        Requested tile size; must be a positive multiple of ``grid``.
    grid : int
        The network's grid (``2 ** depth``).

    Returns
    -------
    tuple of int
        Per-axis tile size, each a multiple of ``grid`` and at most ``tile``.
    """
    if grid < 1 or tile < grid or tile % grid:
        raise ValueError(f"tile size {tile} must be a positive multiple of the network grid {grid}")
    return tuple(min(tile, round_up(max(n, 1), grid)) for n in shape)


def _axis_tiles(
    n: int, size: int, halo: int, margin: int, read_size: int, extent: int | None = None
) -> list[tuple[tuple[int, int], slice, slice]]:
    tiles = []
    for start in range(0, n, size):
        stop = min(start + size, n)
        read = (start - halo, start - halo + read_size)
        if extent is not None:  # clipped to [0, extent): no padding beyond the image
            read = (max(read[0], 0), min(read[1], extent))
        crop = slice(start - read[0] - margin, start - read[0] - margin + stop - start)
        tiles.append((read, crop, slice(start, stop)))
    return tiles


def tile_grid(
    shape: tuple[int, ...],
    tile: int,
    *,
    halo: int,
    grid: int,
    margin: int = 0,
    read_size: Callable[[int], int] | None = None,
    clip: bool = False,
) -> list[Tile]:
    """Cover an image with tiles whose write regions partition it.

    Parameters
    ----------
    shape : tuple of int
        Spatial shape of the image, e.g. ``(Y, X)``.
    tile : int
        Tile (write region) size; a multiple of ``grid``. Axes shorter than a tile use one
        smaller tile, see :func:`tile_size_for`.
    halo : int
        Context read before the write region on every axis. For a same-padded network a
        multiple of ``grid`` of at least its receptive-field radius; for a valid-padded one
        its margin.
    grid : int
        The network's grid (``2 ** depth``): read windows start on it.
    margin : int
        Pixels the network trims from each side of its input (0 for same padding).
    read_size : callable, optional
        Read window size for a given tile size; default ``size + 2 * halo``. A valid-padded
        network passes the smallest input size it accepts for that output.
    clip : bool
        Cut read windows to the image rounded up to ``grid`` (same padding only): no
        context is invented beyond the image, and a tile at the border reads less.

    Returns
    -------
    list of Tile
        In C order. Without ``clip`` all read windows have the same shape, so tiles batch
        together; with it, tiles at the image border are smaller.
    """
    if clip and margin:
        raise ValueError("clipped read windows need a same-padded network (margin 0)")
    if halo < 0 or (margin == 0 and halo % grid):
        raise ValueError(f"halo {halo} must be a non-negative multiple of the network grid {grid}")
    if any(n < 1 for n in shape):
        raise ValueError(f"cannot tile an empty image of shape {shape}")
    read_size = read_size or (lambda size: size + 2 * halo)
    sizes = tile_size_for(shape, tile, grid)
    per_axis = [
        _axis_tiles(n, size, halo, margin, read_size(size), round_up(n, grid) if clip else None)
        for n, size in zip(shape, sizes)
    ]
    return [
        Tile(
            read=tuple(t[0] for t in combo),
            crop=tuple(t[1] for t in combo),
            write=tuple(t[2] for t in combo),
        )
        for combo in product(*per_axis)
    ]


def n_tiles(shape: tuple[int, ...], tile: int, grid: int) -> int:
    """Number of tiles :func:`tile_grid` makes, without building them."""
    sizes = tile_size_for(shape, tile, grid)
    return math.prod(-(-n // s) for n, s in zip(shape, sizes))


def border_indices(start: int, stop: int, n: int, border: Border = "mirror") -> np.ndarray:
    """Source indices of positions ``start..stop-1`` along an axis of length ``n``.

    Positions outside ``[0, n)`` map by mirroring at the borders without repeating the edge
    (NumPy's ``"reflect"``, the U-Net paper's overlap-tile padding) for ``"mirror"``, or to
    ``-1`` (meaning zero) for ``"zero"``. Mirroring is defined for any distance, so windows
    larger than the image are fine. ``"none"`` reads clipped windows (:func:`tile_grid`),
    which reach past the image only to round it up to the network's grid: that remainder
    is mirrored.
    """
    positions = np.arange(start, stop)
    if border == "none":
        border = "mirror"
    if border == "zero":
        return np.where((positions >= 0) & (positions < n), positions, -1)
    if border != "mirror":
        raise ValueError(f"border must be 'mirror', 'zero' or 'none', not {border!r}")
    if n == 1:
        return np.zeros_like(positions)
    period = 2 * (n - 1)
    folded = np.mod(positions, period)
    return np.where(folded < n, folded, period - folded)
