"""Intensity normalisation by percentiles, the same at training and at inference."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from unetseg.errors import InputError
from unetseg.io.images import ImageSource
from unetseg.io.windows import PlaneSource

__all__ = ["percentile_stats", "check_finite", "normalize", "NormalizedSource"]


def percentile_stats(
    source: ImageSource, low: float, high: float, *, max_samples: int = 2**22
) -> list[tuple[float, float]]:
    """Per-channel ``(low, high)`` percentiles of the whole image, read plane by plane.

    Large images are subsampled on a regular stride so that at most about ``max_samples``
    pixels per channel are held; the stride is deterministic, so are the statistics.

    Returns
    -------
    list of (float, float)
        One ``(p_low, p_high)`` pair per channel.
    """
    z_count, channels, height, width = source.shape
    stride = max(1, math.ceil(math.sqrt(z_count * height * width / max_samples)))
    z_step = max(1, math.ceil(z_count * (height // stride + 1) * (width // stride + 1) / max_samples))
    samples = [
        source.read(z, slice(None, None, stride), slice(None, None, stride)).reshape(channels, -1)
        for z in range(0, z_count, z_step)
    ]
    values = np.concatenate(samples, axis=1).astype(np.float64)
    # Non-finite pixels are left out here; writing or predicting reports where they are.
    values[~np.isfinite(values)] = np.nan
    if np.isnan(values).all(axis=1).any():
        raise InputError(f"{source.path}: a channel has no finite value; check the image.")
    lo, hi = np.nanpercentile(values, [low, high], axis=1)
    return [(float(a), float(b)) for a, b in zip(lo, hi)]


def check_finite(block: np.ndarray, path: Any, z: int, y0: int = 0, x0: int = 0) -> None:
    """Raise :class:`InputError` naming the first NaN or infinite pixel of a ``(C, y, x)`` block."""
    if np.isfinite(block).all():
        return
    c, y, x = np.argwhere(~np.isfinite(block))[0]
    raise InputError(
        f"{path}: NaN or infinite value at plane {z}, channel {c}, row {y0 + y}, column {x0 + x}; "
        "replace such values (e.g. with 0) before segmenting."
    )


def normalize(block: np.ndarray, stats: Sequence[tuple[float, float]]) -> np.ndarray:
    """Map each channel's ``(p_low, p_high)`` to ``(0, 1)``; ``block`` is ``(C, ...)``.

    A constant channel (``p_high == p_low``) maps to 0 instead of dividing by zero.
    """
    out = np.empty(block.shape, dtype=np.float32)
    for c, (lo, hi) in enumerate(stats):
        scale = 1.0 / (hi - lo) if hi > lo else 0.0
        with np.errstate(invalid="ignore"):  # inf * 0: NaN, reported by check_finite
            out[c] = (block[c].astype(np.float32) - np.float32(lo)) * np.float32(scale)
    return out


class NormalizedSource:
    """A :class:`PlaneSource` that normalises blocks of another one by fixed statistics."""

    def __init__(self, source: PlaneSource, stats: Sequence[tuple[float, float]]):
        self.source, self.stats, self.shape = source, list(stats), source.shape

    def read(self, z: int, ys: slice = slice(None), xs: slice = slice(None)) -> np.ndarray:
        block = normalize(self.source.read(z, ys, xs), self.stats)
        check_finite(block, getattr(self.source, "path", "image"), z, ys.start or 0, xs.start or 0)
        return block
