"""Tiled inference equals one forward pass over the whole image."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import zarr

from unetseg.data.normalize import NormalizedSource
from unetseg.inference.predictor import TiledPredictor
from unetseg.io.images import ImageSource


def tiled(predictor, image, **kwargs):
    out = np.full((1, predictor.classes, *image.shape[1:]), np.nan, dtype=np.float32)
    predictor.predict(ImageSource(image, "CYX"), out, progress=False, **kwargs)
    return out[0]


@pytest.mark.parametrize("depth", [2, 3])
@pytest.mark.parametrize("tile", [16, 32, 48])
@pytest.mark.parametrize("border", ["mirror", "none"])
def test_tiled_equals_whole_image_same_padding(tiny_unet, rng, depth, tile, border):
    model = tiny_unet(depth=depth, in_channels=2)
    predictor = TiledPredictor(model, tile=tile, batch_size=3, border=border)
    image = rng.random((2, 83, 61)).astype(np.float32)
    np.testing.assert_allclose(tiled(predictor, image, threads=2), predictor.predict_whole(image), atol=1e-5, rtol=0)


@pytest.mark.parametrize("border", ["mirror", "zero", "none"])
@pytest.mark.parametrize("batch_size", [1, 4])
def test_tiled_equals_whole_image_for_every_border(tiny_unet, rng, border, batch_size):
    predictor = TiledPredictor(tiny_unet(depth=2, upsampling="bilinear"), tile=16, border=border, batch_size=batch_size)
    image = rng.random((1, 45, 70)).astype(np.float32)
    np.testing.assert_allclose(tiled(predictor, image), predictor.predict_whole(image), atol=1e-5, rtol=0)


def test_border_none_is_the_network_on_the_image_itself(tiny_unet, rng):
    """No halo beyond the image: one tile is one forward pass of the image, as in a plain
    PyTorch script; the halo that mirror adds costs (512 + 2 halo)^2 / 512^2 the pixels."""
    model = tiny_unet(depth=3)
    image = rng.random((1, 64, 48)).astype(np.float32)
    none, mirror = (TiledPredictor(model, tile=64, border=border) for border in ("none", "mirror"))
    assert [tile.read for tile in none.tiles((64, 48))] == [((0, 64), (0, 48))]
    assert mirror.tiles((64, 48))[0].read_shape == (64 + 2 * mirror.halo, 48 + 2 * mirror.halo)
    with torch.inference_mode():
        direct = torch.sigmoid(model.eval()(torch.from_numpy(image)[None]))[0].numpy()
    np.testing.assert_allclose(tiled(none, image), direct, atol=1e-5, rtol=0)
    # Sides that are not a multiple of the grid are mirrored up to the next multiple only.
    odd = rng.random((1, 61, 45)).astype(np.float32)
    assert [tile.read for tile in none.tiles((61, 45))] == [((0, 64), (0, 48))]
    np.testing.assert_allclose(tiled(none, odd), none.predict_whole(odd), atol=1e-5, rtol=0)


def test_border_none_needs_same_padding_and_no_blending(tiny_unet):
    with pytest.raises(ValueError, match="border 'none' needs a same-padded network"):
        TiledPredictor(tiny_unet(depth=2, padding="valid"), border="none")
    with pytest.raises(ValueError, match="use border 'mirror'"):
        TiledPredictor(tiny_unet(depth=2), border="none", blend="gaussian")


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


def blended_reference(predictor, image, skip_constant=False):
    """Gaussian blending written out over the whole canvas: every tile's full output,
    weighted, summed where it lands, divided by the summed weights."""
    from unetseg.io.windows import read_window

    source = ImageSource(image, "CYX")
    _, height, width = image.shape
    total = np.zeros((predictor.classes, height, width))
    weight = np.zeros((height, width))
    for tile in predictor.tiles((height, width)):
        window = read_window(source, 0, tile.read, predictor.border)
        if skip_constant and window.min() == window.max():
            continue
        prob = predictor.forward(window[np.newaxis])[0]
        w = predictor.gaussian_weights(prob.shape[1:])
        (y0, _), (x0, _) = tile.read
        y0, x0 = y0 + predictor.margin, x0 + predictor.margin
        ys = slice(max(0, y0), min(height, y0 + prob.shape[1]))
        xs = slice(max(0, x0), min(width, x0 + prob.shape[2]))
        inner = (slice(ys.start - y0, ys.stop - y0), slice(xs.start - x0, xs.stop - x0))
        total[:, ys, xs] += prob[(slice(None), *inner)] * w[inner]
        weight[ys, xs] += w[inner]
    return (total / np.where(weight > 0, weight, 1)).astype(np.float32)  # uncovered: 0


@pytest.mark.parametrize(
    ("settings", "tile", "overlap", "shape"),
    [
        ({}, 16, 0.25, (53, 70)),
        ({}, 24, 0.4, (41, 33)),
        ({"depth": 3}, 32, 0.25, (100, 37)),
        ({"padding": "valid", "out_channels": 3}, 16, 0.3, (45, 50)),
    ],
)
def test_gaussian_blending_equals_the_weighted_mean_of_overlapping_tiles(
    tiny_unet, rng, settings, tile, overlap, shape
):
    predictor = TiledPredictor(tiny_unet(**settings), tile=tile, batch_size=3, blend="gaussian", overlap=overlap)
    assert predictor.halo - predictor.margin == predictor.context > 0
    image = rng.random((1, *shape)).astype(np.float32)
    result = tiled(predictor, image, threads=2)
    np.testing.assert_allclose(result, blended_reference(predictor, image), atol=1e-5, rtol=0)
    # Close to the exact overlap-tile result, though its context is smaller than the receptive field.
    exact = TiledPredictor(predictor.model, tile=tile).predict_whole(image)
    assert np.abs(result - exact).mean() < 0.05


def test_gaussian_weights_peak_in_the_centre(tiny_unet):
    weights = TiledPredictor(tiny_unet(), tile=16, blend="gaussian").gaussian_weights((32, 24))
    assert weights.shape == (32, 24) and weights.max() <= 1 and weights.min() > 0
    assert np.unravel_index(weights.argmax(), weights.shape) in {(15, 11), (15, 12), (16, 11), (16, 12)}
    np.testing.assert_allclose(weights, weights[::-1, ::-1], rtol=1e-6)


def count_forward_passes(predictor, monkeypatch):
    calls = []
    forward = predictor.forward

    def counting(batch):
        calls.append(len(batch))
        return forward(batch)

    monkeypatch.setattr(predictor, "forward", counting)
    return calls


@pytest.mark.parametrize("blend", ["none", "gaussian"])
def test_constant_tiles_are_skipped_and_the_rest_is_unchanged(tiny_unet, rng, monkeypatch, blend):
    predictor = TiledPredictor(tiny_unet(), tile=16, blend=blend)
    image = np.full((1, 64, 96), 0.3, dtype=np.float32)
    image[:, :20, :30] = rng.random((1, 20, 30))  # content in one corner only
    reference = tiled(predictor, image)
    calls = count_forward_passes(predictor, monkeypatch)
    result = tiled(predictor, image, skip_constant=True)
    n_tiles = len(predictor.tiles((64, 96)))
    assert 0 < sum(calls) < n_tiles  # the tiles far from the corner were not run
    computed = ~np.all(result == 0, axis=0)
    if blend == "gaussian":  # skipped tiles are left out of the weighted mean
        reference = blended_reference(predictor, image, skip_constant=True)
        np.testing.assert_allclose(result, reference, atol=1e-5, rtol=0)
    np.testing.assert_allclose(result[:, computed], reference[:, computed], atol=1e-5, rtol=0)
    assert computed[:16, :16].all() and not computed[-16:, -16:].any()
    np.testing.assert_array_equal(result[:, ~computed], 0)


def test_tiles_outside_the_tissue_mask_are_skipped(tiny_unet, rng, monkeypatch):
    predictor = TiledPredictor(tiny_unet(), tile=16)
    image = rng.random((1, 48, 48)).astype(np.float32)
    tissue = np.zeros((1, 48, 48), dtype=np.uint8)
    tissue[0, 20:24, 5:9] = 1  # inside the tile of rows 16-32, columns 0-16
    reference = tiled(predictor, image)
    calls = count_forward_passes(predictor, monkeypatch)
    result = tiled(predictor, image, tissue=ImageSource(tissue, "CYX"))
    assert sum(calls) == 1
    np.testing.assert_allclose(result[:, 16:32, :16], reference[:, 16:32, :16], atol=1e-5, rtol=0)
    result[:, 16:32, :16] = 0
    np.testing.assert_array_equal(result, 0)
    with pytest.raises(ValueError, match="does not match"):
        tiled(predictor, image, tissue=ImageSource(tissue[:, :40], "CYX"))


def test_blending_resumes_from_its_ledger(tiny_unet, rng, tmp_path, monkeypatch):
    from unetseg.inference.ledger import TileLedger

    predictor = TiledPredictor(tiny_unet(), tile=16, blend="gaussian")
    image = rng.random((1, 1, 50, 50)).astype(np.float32)
    source = ImageSource(image, "ZCYX")
    out = predictor.create_output(tmp_path / "p.zarr", (1, 50, 50))
    ledger = TileLedger(tmp_path / "tiles")
    predictor.predict(source, out, progress=False, ledger=ledger)
    complete = out[:]
    n_tiles = len(predictor.tiles((50, 50)))
    assert n_tiles == 16
    # As if killed before the last row of chunks was written: only tiles near it run again.
    for index in range(12, 16):
        (tmp_path / "tiles" / f"0.{index}").unlink()
        out[(0, slice(None), *predictor.tiles((50, 50))[index].write)] = np.nan
    calls = count_forward_passes(predictor, monkeypatch)
    predictor.predict(source, out, progress=False, ledger=ledger)
    assert sum(calls) == 8  # the last two rows of tiles
    np.testing.assert_allclose(out[:], complete, atol=1e-6, rtol=0)


@pytest.mark.parametrize(("chunks", "tile"), [((1, 1, 13, 17), 16), ((1, 1, 64, 8), 24), ((1, 1, 100, 100), 32)])
def test_tiled_equals_whole_image_for_zarr_chunkings(tiny_unet, rng, tmp_path, chunks, tile):
    predictor = TiledPredictor(tiny_unet(depth=2), tile=tile)
    image = rng.random((1, 1, 77, 59)).astype(np.float32)
    zarr.create_array(tmp_path / "image.zarr", data=image, chunks=chunks)
    source = ImageSource(zarr.open_array(tmp_path / "image.zarr", mode="r"), "ZCYX")
    out = predictor.create_output(tmp_path / "p.zarr", (1, 77, 59))
    predictor.predict(source, out, threads=2, progress=False)
    np.testing.assert_allclose(out[0], predictor.predict_whole(image[0]), atol=1e-5, rtol=0)
