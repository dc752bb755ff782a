"""Validation on whole images, through the same tiled inference used at predict time.

Scores are pooled over every validation pixel from two histograms of predicted
probabilities (of true-foreground and of true-background pixels), so the Dice at any
threshold comes from them without keeping any probability map: the threshold stored in the
model card is the one that maximises it. Multi-class models (softmax over background and
``labels.classes``) are scored by the mean Dice of the classes, from the confusion matrix
of the most probable class (:func:`mean_class_dice`); they have no threshold.

During training the trainer scores in its own mixed precision (``amp``), which halves a
validation on a CPU with bfloat16 (ISBI 2012, three 512 x 512 slices, 16 base channels:
0.59-0.75 s against 1.18-1.53 s) and so leaves more of a time budget to the steps; the threshold
of the kept model is tuned at full precision, as inference runs by default.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from unetseg.data.sample import open_sample
from unetseg.inference.predictor import TiledPredictor
from unetseg.io.images import ImageSource
from unetseg.nn.model import UNet

__all__ = ["WholeImageValidator", "dice_at_thresholds", "best_threshold", "mean_class_dice"]

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

    def _probabilities(self, model: UNet, device: str | None, amp: bool = False):
        """``(truth plane, (K, Y, X) probabilities)`` of every validation plane."""
        predictor = TiledPredictor(model, tile=self.tile, border=self.border, device=device, amp=amp)
        for image, mask in self.samples:
            for z in range(image.shape[0]):
                probs = np.zeros((1, predictor.classes, *image.shape[2:]), np.float32)
                predictor.predict(_Plane(image, z), probs, progress=False)
                yield mask.read(z)[0], probs[0]

    def histograms(self, model: UNet, *, device: str | None = None, amp: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Counts of foreground-probability bins ``(BINS,)`` for true foreground and background
        (``amp``: the forward pass in mixed precision, as :class:`~unetseg.inference.TiledPredictor`)."""
        foreground, background = np.zeros(BINS, np.int64), np.zeros(BINS, np.int64)
        for mask, probs in self._probabilities(model, device, amp):
            score = probs[0] if len(probs) == 1 else 1 - probs[0]
            bins = np.minimum((score * BINS).astype(np.int64), BINS - 1)
            truth = mask > 0
            foreground += np.bincount(bins[truth], minlength=BINS)
            background += np.bincount(bins[~truth], minlength=BINS)
        return foreground, background

    def confusion(self, model: UNet, *, device: str | None = None, amp: bool = False) -> np.ndarray:
        """``(K, K)`` pixel counts, true class (rows) against the most probable class."""
        matrix = None
        for mask, probs in self._probabilities(model, device, amp):
            k = len(probs)
            counts = np.bincount(mask.astype(np.int64).ravel() * k + probs.argmax(0).ravel(), minlength=k * k)
            matrix = counts.reshape(k, k) if matrix is None else matrix + counts.reshape(k, k)
        return matrix

    def score(self, model: UNet, *, device: str | None = None, amp: bool = False) -> float:
        """Dice at threshold 0.5 (binary) or the mean Dice of the classes (multi-class)."""
        if model.settings["out_channels"] == 1:
            return float(dice_at_thresholds(*self.histograms(model, device=device, amp=amp))[BINS // 2])
        return mean_class_dice(self.confusion(model, device=device, amp=amp))


def mean_class_dice(confusion: np.ndarray) -> float:
    """Mean Dice of classes 1..K-1 (not the background) from a ``(K, K)`` confusion matrix of
    true (rows) against predicted classes; a class absent from both counts as Dice 1."""
    confusion = np.asarray(confusion, dtype=np.float64)
    tp = np.diag(confusion)[1:]
    denominator = confusion.sum(0)[1:] + confusion.sum(1)[1:]
    return float(np.mean(np.where(denominator == 0, 1.0, 2 * tp / np.maximum(denominator, 1))))


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
