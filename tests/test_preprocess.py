"""Preprocessing: normalisation, foreground masks and the per-sample Zarr group."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from unetseg.data.masks import foreground_mask
from unetseg.data.normalize import normalize, percentile_stats
from unetseg.data.preprocess import preprocess_sample
from unetseg.data.sample import open_preprocessed
from unetseg.errors import InputError
from unetseg.io.images import ImageSource


def test_percentile_stats_per_channel(rng):
    image = np.stack([rng.random((50, 40)) * 100, rng.random((50, 40)) * 10 + 5])
    stats = percentile_stats(ImageSource(image, "CYX"), 0, 100)
    assert stats[0] == pytest.approx((image[0].min(), image[0].max()))
    assert stats[1] == pytest.approx((image[1].min(), image[1].max()))


def test_percentile_stats_subsample_large_images(rng):
    image = rng.random((1, 400, 300))
    exact = np.percentile(image, [2, 98])
    approx = percentile_stats(ImageSource(image, "CYX"), 2, 98, max_samples=5000)[0]
    assert approx == pytest.approx(tuple(exact), abs=0.02)


def test_normalize_maps_percentiles_to_unit_range_and_constant_to_zero():
    block = np.array([[[10, 20, 30]], [[7, 7, 7]]], dtype=np.uint16)
    out = normalize(block, [(10, 30), (7, 7)])
    np.testing.assert_allclose(out, [[[0, 0.5, 1]], [[0, 0, 0]]])
    assert out.dtype == np.float32


def test_foreground_mask_modes():
    mask = np.array([0, 1, 2, 255])
    np.testing.assert_array_equal(foreground_mask(mask, "nonzero"), [False, True, True, True])
    np.testing.assert_array_equal(foreground_mask(mask, [0]), [True, False, False, False])
    np.testing.assert_array_equal(foreground_mask(mask, [1, 2]), [False, True, True, False])
    with pytest.raises(InputError):
        foreground_mask(mask, "positive")


def test_preprocess_sample_writes_image_and_mask(tmp_path, rng):
    image = rng.integers(100, 4000, (3, 20, 30), dtype=np.uint16)
    labels = np.zeros((3, 20, 30), dtype=np.uint16)
    labels[:, 5:10, 5:10] = 7
    tifffile.imwrite(tmp_path / "img.tif", image, photometric="minisblack")
    tifffile.imwrite(tmp_path / "mask.tif", labels, photometric="minisblack")
    attrs = preprocess_sample("s1", tmp_path / "img.tif", tmp_path / "s1.zarr", mask_path=tmp_path / "mask.tif")
    group, stored = open_preprocessed(tmp_path / "s1.zarr")
    assert stored == attrs and attrs["spatial_axes"] == "ZYX" and attrs["spatial_shape"] == [3, 20, 30]
    assert group["image"].shape == (3, 1, 20, 30) and group["image"].dtype == np.float32
    np.testing.assert_array_equal(group["mask"][:], (labels > 0).astype(np.uint8))
    lo, hi = attrs["normalization"]["stats"][0]
    np.testing.assert_allclose(group["image"][1, 0], (image[1] - lo) / (hi - lo), rtol=1e-5)


def test_preprocess_rejects_mismatched_mask_and_nan(tmp_path):
    tifffile.imwrite(tmp_path / "img.tif", np.zeros((20, 30), np.uint8))
    tifffile.imwrite(tmp_path / "mask.tif", np.zeros((20, 31), np.uint8))
    with pytest.raises(InputError, match="mask.tif: mask shape"):
        preprocess_sample("s", tmp_path / "img.tif", tmp_path / "s.zarr", mask_path=tmp_path / "mask.tif")
    assert not (tmp_path / "s.zarr").exists()
    bad = np.ones((20, 30), np.float32)
    bad[3, 3] = np.nan
    tifffile.imwrite(tmp_path / "nan.tif", bad)
    with pytest.raises(InputError, match="NaN"):
        preprocess_sample("s", tmp_path / "nan.tif", tmp_path / "s.zarr")
