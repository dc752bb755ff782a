"""Validation on whole images, through the same tiled inference used at predict time.

Scores are pooled over every validation pixel from two histograms of predicted
probabilities (of true-foreground and of true-background pixels), so the Dice at any
threshold comes from them without keeping any probability map: the threshold stored in the
model card is the one that maximises it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from unetseg.data.sample import open_sample
from unetseg.inference.predictor import TiledPredictor
from unetseg.io.images import ImageSource
from unetseg.nn.model import UNet

__all__ = ["WholeImageValidator", "dice_at_thresholds", "best_threshold"]

BINS = 1000  # probability histogram resolution: thresholds on a 0.001 grid


class _Plane:
    """One plane of a ``(Z, C, Y, X)`` source as a one-plane source."""

    def __init__(self, source: ImageSource, z: int):
        self.source, self.z = source, z
        self.shape = (1, *source.shape[1:])

    def read(self, z: int, ys: slice = slice(None), xs: slice = slice(None)) -> np.ndarray:
        return self.source.read(self.z, ys, xs)


class WholeImageValidator:
    """Probability histograms of preprocessed validation samples, plane by plane.

    Parameters
    ----------
    samples : sequence of path-like
        Preprocessed samples with masks.
    tile, border :
        As for :class:`~unetseg.inference.TiledPredictor`.
    """

    def __init__(self, samples: Sequence[str | os.PathLike], *, tile: int = 512, border: str = "mirror"):
        self.samples = []
        for path in samples:
            sample = open_sample(path)
            self.samples.append((sample.image, sample.target))
        self.tile, self.border = tile, border

    def histograms(self, model: UNet, *, device: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Counts of foreground-probability bins ``(BINS,)`` for true foreground and background."""
        predictor = TiledPredictor(model, tile=self.tile, border=self.border, device=device)
        foreground, background = np.zeros(BINS, np.int64), np.zeros(BINS, np.int64)
        for image, mask in self.samples:
            for z in range(image.shape[0]):
                probs = np.zeros((1, predictor.classes, *image.shape[2:]), np.float32)
                predictor.predict(_Plane(image, z), probs, progress=False)
                score = probs[0, 0] if predictor.classes == 1 else 1 - probs[0, 0]
                bins = np.minimum((score * BINS).astype(np.int64), BINS - 1)
                truth = mask.read(z)[0] > 0
                foreground += np.bincount(bins[truth], minlength=BINS)
                background += np.bincount(bins[~truth], minlength=BINS)
        return foreground, background


def dice_at_thresholds(foreground: np.ndarray, background: np.ndarray) -> np.ndarray:
    """Pooled Dice when pixels in bins ``>= i`` are called foreground, for every bin ``i``.

    Threshold ``i / BINS``; both classes empty counts as Dice 1, as in :mod:`unetseg.metrics`.
    """
    tp = np.cumsum(foreground[::-1])[::-1]  # true foreground at or above each threshold
    fp = np.cumsum(background[::-1])[::-1]
    fn = foreground.sum() - tp
    denominator = 2 * tp + fp + fn
    return np.where(denominator == 0, 1.0, 2 * tp / np.maximum(denominator, 1))


def best_threshold(foreground: np.ndarray, background: np.ndarray) -> tuple[float, float]:
    """``(threshold, Dice)`` maximising the pooled Dice; ties go to the one nearest 0.5."""
    dice = dice_at_thresholds(foreground, background)
    thresholds = np.arange(BINS) / BINS
    candidates = np.flatnonzero(dice == dice.max())
    index = candidates[np.argmin(np.abs(thresholds[candidates] - 0.5))]
    return float(thresholds[index]), float(dice[index])
