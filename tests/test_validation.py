"""Whole-image validation and the tuned threshold."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from unetseg.data.preprocess import preprocess_sample
from unetseg.evaluation.metrics import dice
from unetseg.inference.predictor import TiledPredictor
from unetseg.training.validation import BINS, WholeImageValidator, best_threshold, dice_at_thresholds


def test_dice_at_thresholds_hand_case():
    foreground = np.zeros(BINS, np.int64)
    background = np.zeros(BINS, np.int64)
    foreground[[300, 800]] = [2, 6]  # 8 true pixels at p=0.3 and 0.8
    background[[100, 600]] = [10, 3]  # 13 background pixels at p=0.1 and 0.6
    curve = dice_at_thresholds(foreground, background)
    assert curve[500] == pytest.approx(2 * 6 / (2 * 6 + 3 + 2))  # threshold 0.5
    assert curve[700] == pytest.approx(2 * 6 / (2 * 6 + 0 + 2))  # above the background's 0.6
    assert curve[0] == pytest.approx(2 * 8 / (2 * 8 + 13))
    threshold, best = best_threshold(foreground, background)
    assert best == pytest.approx(12 / 14) and 0.6 < threshold <= 0.8
    assert dice_at_thresholds(np.zeros(BINS, np.int64), background)[999] == 1.0  # nothing there, nothing called


def _validation_sample(rng, tmp_path, shape, above):
    """A preprocessed random sample ``v.zarr``, its mask where a uniform draw exceeds ``above``; the mask."""
    image = rng.integers(0, 4000, shape, dtype=np.uint16)
    mask = (rng.random(shape) > above).astype(np.uint8)
    tifffile.imwrite(tmp_path / "img.tif", image, photometric="minisblack")
    tifffile.imwrite(tmp_path / "mask.tif", mask, photometric="minisblack")
    preprocess_sample("v", tmp_path / "img.tif", tmp_path / "v.zarr", mask_path=tmp_path / "mask.tif")
    return mask


def test_validator_histograms_match_direct_tiled_inference(tiny_unet, rng, tmp_path):
    mask = _validation_sample(rng, tmp_path, (2, 50, 70), 0.7)
    model = tiny_unet(depth=2)
    foreground, background = WholeImageValidator([tmp_path / "v.zarr"], tile=32).histograms(model, device="cpu")
    assert foreground.sum() == mask.sum() and background.sum() == mask.size - mask.sum()

    import zarr

    normalised = zarr.open_group(tmp_path / "v.zarr", mode="r")["image"][:]
    predictor = TiledPredictor(model, tile=32)
    probs = np.stack([predictor.predict_whole(normalised[z])[0] for z in range(2)])
    expected = dice(mask, probs >= 0.5)
    assert dice_at_thresholds(foreground, background)[BINS // 2] == pytest.approx(expected, abs=1e-9)


def test_validator_amp_matches_tiled_inference_in_mixed_precision(tiny_unet, rng, tmp_path):
    """The trainer's scores in its precision: the histograms of an ``amp`` validation are
    those of mixed-precision tiled inference (bfloat16 on a CPU that has it, else float32)."""
    mask = _validation_sample(rng, tmp_path, (1, 48, 64), 0.6)
    model = tiny_unet(depth=2)
    validator = WholeImageValidator([tmp_path / "v.zarr"], tile=32)

    import zarr

    normalised = zarr.open_group(tmp_path / "v.zarr", mode="r")["image"][:][0]
    for amp in (False, True):
        probs = TiledPredictor(model, tile=32, amp=amp).predict_whole(normalised)[0]
        expected = np.bincount(np.minimum((probs * BINS).astype(np.int64), BINS - 1)[mask[0] > 0], minlength=BINS)
        foreground, _ = validator.histograms(model, device="cpu", amp=amp)
        np.testing.assert_array_equal(foreground, expected)
        assert validator.score(model, device="cpu", amp=amp) == pytest.approx(dice(mask[0], probs >= 0.5), abs=1e-9)
