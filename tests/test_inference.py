"""Tiled inference equals one forward pass over the whole image."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from unetseg.inference import NormalizedSource, TiledPredictor
from unetseg.io import ImageSource


def tiled(predictor, image, **kwargs):
    out = np.full((1, predictor.classes, *image.shape[1:]), np.nan, dtype=np.float32)
    predictor.predict(ImageSource(image, "CYX"), out, progress=False, **kwargs)
    return out[0]


@pytest.mark.parametrize("depth", [2, 3])
@pytest.mark.parametrize("tile", [16, 32, 48])
def test_tiled_equals_whole_image_same_padding(tiny_unet, rng, depth, tile):
    model = tiny_unet(depth=depth, in_channels=2)
    predictor = TiledPredictor(model, tile=tile, batch_size=3)
    image = rng.random((2, 83, 61)).astype(np.float32)
    np.testing.assert_allclose(tiled(predictor, image, threads=2), predictor.predict_whole(image), atol=1e-5, rtol=0)


@pytest.mark.parametrize("border", ["mirror", "zero"])
def test_tiled_equals_whole_image_for_both_borders(tiny_unet, rng, border):
    predictor = TiledPredictor(tiny_unet(depth=2, upsampling="bilinear"), tile=16, border=border)
    image = rng.random((1, 45, 70)).astype(np.float32)
    np.testing.assert_allclose(tiled(predictor, image), predictor.predict_whole(image), atol=1e-5, rtol=0)


def test_borders_differ_near_the_edge(tiny_unet, rng):
    model = tiny_unet(depth=2)
    image = rng.random((1, 40, 40)).astype(np.float32)
    mirror = TiledPredictor(model, border="mirror").predict_whole(image)
    zero = TiledPredictor(model, border="zero").predict_whole(image)
    assert np.abs(mirror - zero)[:, :3].max() > 1e-4


def test_tiled_equals_whole_image_valid_padding(tiny_unet, rng):
    predictor = TiledPredictor(tiny_unet(depth=2, padding="valid", out_channels=3), tile=16, batch_size=2)
    image = rng.random((1, 50, 37)).astype(np.float32)
    result = tiled(predictor, image)
    assert result.shape == (3, 50, 37)
    np.testing.assert_allclose(result.sum(axis=0), 1, atol=1e-5)  # softmax over classes
    np.testing.assert_allclose(result, predictor.predict_whole(image), atol=1e-5, rtol=0)


def test_image_smaller_than_a_tile(tiny_unet, rng):
    predictor = TiledPredictor(tiny_unet(depth=3), tile=64)
    image = rng.random((1, 5, 9)).astype(np.float32)
    np.testing.assert_allclose(tiled(predictor, image), predictor.predict_whole(image), atol=1e-5, rtol=0)


def test_stack_planes_stream_into_zarr(tiny_unet, rng, tmp_path):
    predictor = TiledPredictor(tiny_unet(depth=2), tile=16, batch_size=2)
    stack = rng.random((3, 1, 40, 29)).astype(np.float32)
    out = predictor.create_output(tmp_path / "p.zarr", (3, 40, 29))
    predictor.predict(ImageSource(stack, "ZCYX"), out, threads=2, progress=False)
    stored = zarr.open_array(tmp_path / "p.zarr", mode="r")[:]
    assert stored.shape == (3, 1, 40, 29) and not np.isnan(stored).any()
    for z in range(3):
        np.testing.assert_allclose(stored[z], predictor.predict_whole(stack[z]), atol=1e-5, rtol=0)


def test_normalized_source_applies_statistics(rng):
    raw = (rng.random((1, 10, 10)) * 1000).astype(np.uint16)
    source = NormalizedSource(ImageSource(raw, "CYX"), [(100.0, 600.0)])
    np.testing.assert_allclose(source.read(0), (raw.astype(np.float32) - 100) / 500, rtol=1e-6)


def test_test_time_augmentation_is_tiled_exactly_and_flip_invariant(tiny_unet, rng):
    predictor = TiledPredictor(tiny_unet(depth=2), tile=16, tta=True)
    image = rng.random((1, 48, 40)).astype(np.float32)
    result = tiled(predictor, image)
    np.testing.assert_allclose(result, predictor.predict_whole(image), atol=1e-5, rtol=0)
    flipped = predictor.predict_whole(image[:, ::-1].copy())[:, ::-1]
    np.testing.assert_allclose(flipped, result, atol=1e-5, rtol=0)  # symmetric by construction
    plain = TiledPredictor(predictor.model, tile=16).predict_whole(image)
    assert np.abs(plain - result).max() > 1e-4


def test_predict_leaves_torch_threads_as_found(tiny_unet, rng):
    import torch

    before = torch.get_num_threads()
    predictor = TiledPredictor(tiny_unet(depth=2), tile=16)
    tiled(predictor, rng.random((1, 20, 20)).astype(np.float32), threads=1 if before > 1 else 4)
    assert torch.get_num_threads() == before
