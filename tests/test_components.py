"""Out-of-core connected components: equal to skimage's labelling of the whole mask."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import tifffile
import zarr
from scipy import ndimage as ndi
from skimage.measure import label

import unetseg.objects.components as components
from unetseg.errors import InputError
from unetseg.io.images import open_image
from unetseg.objects.components import fits_one_block, label_array, label_components


def blobs(rng, shape, fraction=0.45, sigma=1.5):
    """A random mask of irregular blobs of many sizes."""
    noise = ndi.gaussian_filter(rng.standard_normal(shape), sigma)
    return noise > np.quantile(noise, 1 - fraction)


def snake(shape, step=4):
    """One 1-pixel-wide path that zigzags through the whole image (one object)."""
    mask = np.zeros(shape, dtype=np.uint8)
    mask[::step] = 1
    for i, row in enumerate(range(0, shape[0] - step, step)):
        mask[row : row + step, -1 if i % 2 == 0 else 0] = 1
    return mask


def read(path):
    if path.suffix == ".zarr":
        return zarr.open_array(str(path), mode="r")[...]
    return tifffile.imread(path)


def assert_same_partition(labels, reference):
    """Same background, and the ids of the two labellings correspond one to one."""
    np.testing.assert_array_equal(labels == 0, reference == 0)
    pairs = np.unique(np.stack([labels.ravel(), reference.ravel()]), axis=1)
    assert len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == pairs.shape[1]
    ids = np.unique(labels)
    np.testing.assert_array_equal(ids, np.arange(len(ids)))  # 0 (if any) then 1..n


@pytest.mark.parametrize("suffix", [".zarr", ".tif"])
@pytest.mark.parametrize("chunk", [5, 8, 13, 100])
@pytest.mark.parametrize("connectivity", [1, 2])
def test_2d_equals_skimage(tmp_path, rng, suffix, chunk, connectivity):
    mask = blobs(rng, (61, 47))
    mask[40:, :] = snake((21, 47), step=3)  # crosses every chunk border in its rows
    out = tmp_path / f"labels{suffix}"
    count = label_components(mask, out, chunk=chunk, connectivity=connectivity)
    labels = read(out)
    reference = label(mask, connectivity=connectivity)
    assert labels.shape == mask.shape and labels.dtype == np.uint32
    assert count == reference.max() == labels.max()
    assert_same_partition(labels, reference)


@pytest.mark.parametrize("chunk", [4, 7])
def test_snake_through_many_chunks_is_one_object(tmp_path, chunk):
    mask = snake((33, 29), step=4)
    assert label_components(mask, tmp_path / "snake.zarr", chunk=chunk) == 1
    labels = read(tmp_path / "snake.zarr")
    np.testing.assert_array_equal(labels, mask.astype(np.uint32))


@pytest.mark.parametrize("connectivity, expected", [(1, 2), (2, 1)])
def test_diagonal_contact_across_a_chunk_corner(tmp_path, connectivity, expected):
    mask = np.zeros((8, 8), dtype=bool)
    mask[3, 3] = mask[4, 4] = True  # touching only at the corner of four 4x4 chunks
    assert label_components(mask, tmp_path / "d.zarr", chunk=4, connectivity=connectivity) == expected


@pytest.mark.parametrize("suffix", [".zarr", ".tiff"])
@pytest.mark.parametrize("chunk", [3, 6, 50])
@pytest.mark.parametrize("connectivity", [1, 3])
def test_3d_equals_skimage(tmp_path, rng, suffix, chunk, connectivity):
    mask = blobs(rng, (9, 23, 19), fraction=0.35, sigma=1.0)
    mask[:, 0, 0] = True  # a column through every plane: one object in 3D
    out = tmp_path / f"stack{suffix}"
    count = label_components(mask, out, spatial_axes="ZYX", chunk=chunk, connectivity=connectivity)
    labels = read(out)
    reference = label(mask, connectivity=connectivity)
    assert labels.shape == mask.shape and count == reference.max()
    assert_same_partition(labels, reference)
    assert len(np.unique(labels[:, 0, 0])) == 1


@pytest.mark.parametrize("seed", range(12))
def test_random_masks_and_chunkings(tmp_path, seed):
    """Random shapes, densities, block sizes (down to 1 pixel), connectivities and inputs."""
    rng = np.random.default_rng(seed)
    ndim = 2 + seed % 2
    shape = tuple(rng.integers(3, 30 if ndim == 2 else 12, ndim))
    mask = rng.random(shape) < rng.uniform(0.2, 0.7)
    chunk, connectivity = int(rng.integers(1, 9)), int(rng.integers(1, ndim + 1))
    source = [mask, da.from_array(mask, chunks=3), mask.astype(np.uint8)][seed % 3]
    count = label_components(
        source, tmp_path / "l.zarr", spatial_axes="YX" if ndim == 2 else "ZYX", chunk=chunk,
        connectivity=connectivity,
    )  # fmt: skip
    reference = label(mask, connectivity=connectivity)
    assert count == reference.max()
    assert_same_partition(read(tmp_path / "l.zarr"), reference)


def test_zarr_input_is_read_chunk_by_chunk(tmp_path, rng, monkeypatch):
    source = zarr.create_array(str(tmp_path / "mask.zarr"), shape=(1, 50, 70), dtype="uint8", chunks=(1, 8, 8))
    source[...] = blobs(rng, (1, 50, 70))
    expected = label(source[0])  # full connectivity, the default
    reads = []
    original = zarr.Array.__getitem__

    def recording(self, key):
        value = original(self, key)
        if self.store_path == source.store_path:
            reads.append(np.size(value))
        return value

    monkeypatch.setattr(zarr.Array, "__getitem__", recording)
    count = label_components(source, tmp_path / "labels.zarr", chunk=16)
    monkeypatch.undo()
    assert reads and max(reads) <= 16 * 16  # never the whole mask
    assert count == expected.max()
    assert_same_partition(read(tmp_path / "labels.zarr"), expected)


def test_outputs_read_back_with_their_axes(tmp_path, rng):
    mask = blobs(rng, (4, 20, 30))
    label_components(mask, tmp_path / "l.zarr", spatial_axes="ZYX", chunk=8)
    label_components(mask, tmp_path / "l.tif", spatial_axes="ZYX", chunk=8)
    assert zarr.open_array(str(tmp_path / "l.zarr")).chunks == (1, 8, 8)
    for name in ("l.zarr", "l.tif"):
        with open_image(tmp_path / name) as source:
            assert source.spatial_axes == "ZYX" and source.spatial_shape == (4, 20, 30)
    np.testing.assert_array_equal(read(tmp_path / "l.zarr"), read(tmp_path / "l.tif"))


def test_empty_and_full_masks(tmp_path):
    assert label_components(np.zeros((10, 12), np.uint8), tmp_path / "e.zarr", chunk=4) == 0
    assert not read(tmp_path / "e.zarr").any()
    assert label_components(np.ones((10, 12), np.uint8), tmp_path / "f.zarr", chunk=4) == 1
    assert (read(tmp_path / "f.zarr") == 1).all()


def test_one_plane_stack_as_2d(tmp_path, rng):
    mask = blobs(rng, (1, 20, 30))
    assert label_components(mask, tmp_path / "p.tif", chunk=8) == label(mask[0]).max()
    assert read(tmp_path / "p.tif").shape == (20, 30)


@pytest.mark.parametrize(
    "shape, axes, output, options, message",
    [
        ((4, 5, 6), "YX", "o.zarr", {}, "3 dimensions"),
        ((5, 6), "ZYX", "o.zarr", {}, "2 dimensions"),
        ((5, 6), "YX", "o.png", {}, "TIFF or Zarr"),
        ((5, 6), "YX", "o.zarr", {"connectivity": 3}, "connectivity"),
        ((5, 6), "XY", "o.zarr", {}, "spatial_axes"),
        ((5, 6), "YX", "o.zarr", {"chunk": 0}, "chunk"),
    ],
)
def test_user_errors(tmp_path, shape, axes, output, options, message):
    with pytest.raises(InputError, match=message) as info:
        label_components(np.ones(shape), tmp_path / output, spatial_axes=axes, **options)
    assert str(tmp_path / output) in str(info.value)
    assert not (tmp_path / output).exists()


def test_more_pieces_than_labels_hold(tmp_path, monkeypatch):
    monkeypatch.setattr(components, "MAX_LABELS", 5)
    mask = np.zeros((8, 16), dtype=bool)
    mask[::2, ::2] = True  # 32 separate pixels
    with pytest.raises(InputError, match="int32 labels"):
        label_components(mask, tmp_path / "o.zarr", chunk=4)
    assert not (tmp_path / "o.zarr").exists()


@pytest.mark.parametrize("suffix", [".zarr", ".tif"])
def test_failure_leaves_nothing(tmp_path, rng, monkeypatch, suffix):
    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(components, "_relabel", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        label_components(blobs(rng, (20, 20)), tmp_path / f"o{suffix}", chunk=8)
    assert list(tmp_path.iterdir()) == []  # no output, no temporary or scratch files


def test_fill_gaps_closes_the_line_between_touching_objects_only():
    labels = np.zeros((20, 30), np.uint32)
    labels[5:15, 2:12], labels[5:15, 14:24] = 1, 2  # a two-pixel line at columns 12-13
    labels[0, 29] = 3  # a speck with a free border
    filled = components.fill_gaps(labels, 2)
    np.testing.assert_array_equal(filled[5:15, 12], 1)
    np.testing.assert_array_equal(filled[5:15, 13], 2)
    np.testing.assert_array_equal(filled[labels > 0], labels[labels > 0])  # objects keep their pixels
    added = (filled > 0) & (labels == 0)
    assert added[:, 12:14].sum() == added.sum() and added[4:16].sum() == added.sum()  # only the line and its ends
    np.testing.assert_array_equal(components.fill_gaps(labels, 0), labels)


@pytest.mark.parametrize("chunk", [7, 16, 100])
def test_gap_filling_across_blocks_equals_the_whole_image(tmp_path, chunk):
    from unetseg.data.targets import separated_foreground

    truth = label(blobs(np.random.default_rng(3), (60, 70), fraction=0.6), connectivity=1)
    separated = separated_foreground(truth)  # what a model trained on separated targets predicts
    count = label_components(separated, tmp_path / "labels.tif", chunk=chunk, gap=2)
    labels = tifffile.imread(tmp_path / "labels.tif")
    reference = components.fill_gaps(label(separated, connectivity=2).astype(np.uint32), 2)
    assert count == reference.max()
    assert_same_partition(labels, reference)
    assert np.count_nonzero(labels) > np.count_nonzero(separated)


@pytest.mark.parametrize("suffix", [".tif", ".zarr"])
def test_mask_takes_the_pixels_of_gap_filled_instances(tmp_path, suffix):
    from unetseg.inference.masks import FOREGROUND, add_object_pixels, write_mask

    separated = np.zeros((1, 1, 40, 40), np.float32)
    separated[..., 5:15, 2:12] = separated[..., 5:15, 14:24] = 1.0  # two objects, a two-pixel line
    mask_path = tmp_path / f"mask{suffix}"
    write_mask(separated, mask_path, threshold=0.5)
    with open_image(mask_path) as mask:
        label_components(mask.array, tmp_path / "instances.tif", gap=2)
    instances = tifffile.imread(tmp_path / "instances.tif")
    assert instances.max() == 2 and (instances[5:15, 12:14] > 0).all()
    assert add_object_pixels(mask_path, tmp_path / "instances.tif") == np.count_nonzero(instances) - 200
    np.testing.assert_array_equal(read(mask_path), np.where(instances > 0, FOREGROUND, 0))


@pytest.mark.parametrize("gap", [0, 2])
def test_label_array_gives_the_ids_label_components_writes_for_one_block(tmp_path, gap) -> None:
    rng = np.random.default_rng(3)
    mask = (ndi.uniform_filter(rng.random((200, 300)), 5) > 0.52).astype(np.uint8) * 255
    mask[50:60, 50:60] = 2  # a second class: never one object with the first
    labels, count = label_array(mask, min_size=6, gap=gap)
    assert count == label_components(mask, tmp_path / "l.tif", min_size=6, gap=gap) and count > 20
    assert fits_one_block(mask.shape) and not fits_one_block((1025, 10))
    np.testing.assert_array_equal(labels, tifffile.imread(tmp_path / "l.tif"))
    assert labels.dtype == np.uint32
