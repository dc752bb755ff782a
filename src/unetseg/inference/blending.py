"""Gaussian blending of overlapping tile outputs, as MONAI and nnU-Net do: pure maths, no I/O.

A tile's output covers more than its write region; the write region's result is the mean of
every overlapping output, each weighted by a Gaussian that favours its tile's centre.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np

__all__ = ["gaussian_weights", "blend_region"]


@functools.lru_cache(maxsize=8)
def _gaussian_weights(shape: tuple[int, ...]) -> np.ndarray:
    weights = np.ones(shape, dtype=np.float32)
    for axis, n in enumerate(shape):
        centre, sigma = (n - 1) / 2, n / 8
        profile = np.exp(-((np.arange(n) - centre) ** 2) / (2 * sigma**2)).astype(np.float32)
        weights *= profile.reshape([-1 if a == axis else 1 for a in range(len(shape))])
    weights = np.maximum(weights, 1e-6)
    weights.flags.writeable = False
    return weights


def gaussian_weights(shape: Sequence[int]) -> np.ndarray:
    """Blending weights of a tile output: a Gaussian with sigma 1/8 of each side, peak 1.

    Computed once per shape (every tile of a grid has the same); read-only.
    """
    return _gaussian_weights(tuple(int(n) for n in shape))


def blend_region(
    region: Sequence[slice], outputs: Sequence[tuple[Sequence[int], np.ndarray | None]], empty: np.ndarray
) -> np.ndarray:
    """The weighted mean, over ``region``, of the tile outputs that overlap it.

    Parameters
    ----------
    region : sequence of slice
        The write region, in image coordinates.
    outputs : sequence of (origin, (K, h, w) ndarray or None)
        Each overlapping tile's output and the image coordinates of its first pixel;
        ``None`` for a skipped tile, which takes no part in the mean.
    empty : (K, ...) ndarray
        Probabilities of pixels that no computed output covers (background).

    Returns
    -------
    (K, ...) ndarray of float32, the shape of ``region``.
    """
    shape = tuple(s.stop - s.start for s in region)
    total = np.zeros((empty.shape[0], *shape), dtype=np.float32)
    weight = np.zeros(shape, dtype=np.float32)
    for origin, prob in outputs:
        if prob is None:
            continue
        src, dst = [], []
        for axis, part in enumerate(region):
            low, high = max(part.start, origin[axis]), min(part.stop, origin[axis] + prob.shape[1 + axis])
            src.append(slice(low - origin[axis], high - origin[axis]))
            dst.append(slice(low - part.start, high - part.start))
        if any(s.stop <= s.start for s in src):
            continue
        w = gaussian_weights(prob.shape[1:])[tuple(src)]
        total[(slice(None), *dst)] += prob[(slice(None), *src)] * w
        weight[tuple(dst)] += w
    covered = weight > 0
    return np.where(covered, total / np.where(covered, weight, 1), empty)
