"""Tiling maths: the grid covers the image once, and read / crop / write round-trip."""

from __future__ import annotations

import numpy as np
import pytest

from unetseg.inference.tiling import border_indices, n_tiles, tile_grid, tile_size_for
from unetseg.io.images import ImageSource
from unetseg.io.windows import read_window

SHAPES = [(1, 1), (5, 3), (16, 16), (17, 33), (64, 64), (100, 7), (129, 255), (300, 41)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize(("tile", "halo", "grid"), [(16, 0, 8), (32, 16, 8), (64, 32, 16), (8, 24, 4)])
def test_write_regions_partition_the_image(shape, tile, halo, grid):
    tiles = tile_grid(shape, tile, halo=halo, grid=grid)
    count = np.zeros(shape, dtype=int)
    for t in tiles:
        count[t.write] += 1
    assert (count == 1).all()
    assert len(tiles) == n_tiles(shape, tile, grid)
    assert len({t.read_shape for t in tiles}) == 1  # tiles batch together
    for t in tiles:
        assert all(start % grid == (-halo) % grid for start, _ in t.read)  # read windows start on the grid
        assert all(size % grid == 0 for size in t.read_shape)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize(("tile", "halo"), [(16, 8), (32, 32), (8, 40)])
def test_read_crop_write_round_trip_reproduces_the_image(shape, tile, halo, rng):
    image = rng.random((2, *shape)).astype(np.float32)
    source = ImageSource(image, "CYX")
    out = np.full_like(image, np.nan)
    for t in tile_grid(shape, tile, halo=halo, grid=8):
        window = read_window(source, 0, t.read)
        out[(slice(None), *t.write)] = window[(slice(None), *t.crop)]
    np.testing.assert_array_equal(out, image)


@pytest.mark.parametrize("n", [1, 2, 3, 10])
@pytest.mark.parametrize(("start", "stop"), [(-25, 40), (-3, 3), (0, 10), (5, 31)])
def test_mirror_indices_equal_numpy_reflect_padding(n, start, stop):
    values = np.arange(n) * 10
    pad = 40
    padded = np.pad(values, pad, mode="reflect") if n > 1 else np.full(n + 2 * pad, values[0])
    expected = padded[start + pad : stop + pad]
    np.testing.assert_array_equal(values[border_indices(start, stop, n, "mirror")], expected)


def test_zero_border_marks_outside_pixels():
    idx = border_indices(-2, 5, 3, "zero")
    np.testing.assert_array_equal(idx, [-1, -1, 0, 1, 2, -1, -1])


def test_windows_beyond_the_image_read_mirror_or_zeros(rng):
    image = rng.random((1, 5, 6)).astype(np.float32)
    source = ImageSource(image, "CYX")
    window = [(-4, 9), (-7, 13)]
    mirrored = read_window(source, 0, window, "mirror")
    np.testing.assert_array_equal(mirrored[0], np.pad(image[0], ((4, 4), (7, 7)), mode="reflect"))
    zeros = read_window(source, 0, window, "zero")
    np.testing.assert_array_equal(zeros[0], np.pad(image[0], ((4, 4), (7, 7))))


def test_small_axes_get_one_smaller_tile():
    assert tile_size_for((5, 300), 64, 8) == (8, 64)
    with pytest.raises(ValueError, match="multiple of the network grid"):
        tile_size_for((10, 10), 12, 8)
    with pytest.raises(ValueError, match="halo"):
        tile_grid((10, 10), 16, halo=4, grid=8)
