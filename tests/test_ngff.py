"""OME-Zarr output: what ome-zarr's reader and unetseg's own reader see."""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from ome_zarr.io import parse_url
from ome_zarr.reader import Label, Reader

import unetseg.io.ngff as ngff
from unetseg.errors import InputError
from unetseg.io.images import open_image
from unetseg.io.ngff import pyramid_shapes, write_ome_zarr


def nodes(path):
    """ome-zarr's reading of a store: the image node and the label nodes by name."""
    found = list(Reader(parse_url(str(path)))())
    labels = {node.metadata["name"]: node for node in found if node.load(Label)}
    image = next(node for node in found if node.specs and not node.load(Label) and node.data)
    return image, labels


def scales(node):
    levels = node.metadata["coordinateTransformations"]
    return [next(t["scale"] for t in level if t["type"] == "scale") for level in levels]


def block_mean(array):
    """Mean over 2x2 blocks of the last two axes (odd edges dropped)."""
    *rest, height, width = array.shape
    array = array[..., : height - height % 2, : width - width % 2]
    return array.reshape(*rest, height // 2, 2, width // 2, 2).mean(axis=(-3, -1))


@pytest.fixture
def results(tmp_path, rng):
    """Probabilities (a Zarr array on disk), a mask and instance ids of a 70 x 90 image."""
    probabilities = zarr.create_array(
        str(tmp_path / "probabilities.zarr"), shape=(1, 2, 70, 90), dtype="float32", chunks=(1, 2, 32, 32)
    )
    probabilities[...] = rng.random((1, 2, 70, 90), dtype=np.float32)
    mask = ((probabilities[0, 1] > 0.5) * 255).astype(np.uint8)
    instances = rng.integers(0, 1000, (70, 90)).astype(np.uint32)
    return probabilities, mask, instances


@pytest.mark.parametrize("dtype", ["float16", "float32", "uint8"])
def test_2d_store_read_by_ome_zarr(tmp_path, results, dtype):
    probabilities, mask, instances = results
    path = write_ome_zarr(
        tmp_path / "s.ome.zarr", probabilities=probabilities, mask=mask, instances=instances,
        dtype=dtype, chunk=16, min_level_size=10,
    )  # fmt: skip
    image, labels = nodes(path)
    shapes = [(70, 90), (35, 45), (17, 22), (8, 11)]  # halved, rounded down, until min side <= 10
    assert [level.shape for level in image.data] == [(2, *s) for s in shapes]
    assert [a["name"] for a in image.metadata["axes"]] == ["c", "y", "x"]
    assert scales(image) == [[1.0, 70 / h, 90 / w] for h, w in shapes]  # full size / level size
    assert image.metadata["channel_names"] == ["class 0", "class 1"]
    assert set(labels) == {"mask", "instances"}

    expected = np.asarray(probabilities[0])
    factor = 1 / 255 if dtype == "uint8" else 1.0
    tolerance = {"float16": 1e-3, "float32": 1e-7, "uint8": 0.5 / 255 + 1e-7}[dtype]
    for level in image.data:
        stored = np.asarray(level)
        assert stored.dtype == dtype
        np.testing.assert_allclose(stored * factor, expected, atol=tolerance, rtol=0)
        expected = block_mean(expected)
    attributes = zarr.open_group(str(path)).attrs["unetseg"]
    assert attributes == {"content": "probabilities", "scale": factor, "spatial_axes": "YX"}

    for name, truth in (("mask", mask), ("instances", instances)):
        node = labels[name]
        assert node.metadata["axes"] == image.metadata["axes"] and scales(node) == scales(image)
        ids = set(np.unique(truth))
        for k, level in enumerate(node.data):
            level = np.asarray(level)
            assert level.dtype == truth.dtype and level.shape == (1, *shapes[k])
            np.testing.assert_array_equal(level[0], truth[:: 2**k, :: 2**k][: shapes[k][0], : shapes[k][1]])
            assert set(np.unique(level)) <= ids  # subsampled, never interpolated

    with open_image(path) as source:
        assert source.axes == "CYX" and source.shape == (1, 2, 70, 90) and source.dtype == dtype
        np.testing.assert_allclose(source.read(0) * factor, probabilities[0], atol=tolerance, rtol=0)


def test_uint8_round_trip_within_half_a_step(tmp_path):
    values = np.linspace(0, 1, 64 * 64, dtype=np.float32).reshape(1, 1, 64, 64)
    path = write_ome_zarr(tmp_path / "u.zarr", probabilities=values, dtype="uint8", min_level_size=64)
    with open_image(path) as source:
        decoded = source.read(0)[0] / 255
    assert np.abs(decoded - values[0, 0]).max() <= 0.5 / 255 + 1e-7
    assert zarr.open_group(str(path)).attrs["unetseg"]["scale"] == 1 / 255


def test_even_sizes_give_powers_of_two(tmp_path, rng):
    probabilities = rng.random((1, 1, 64, 96), dtype=np.float32)
    path = write_ome_zarr(tmp_path / "e.zarr", probabilities=probabilities, min_level_size=16)
    image, _ = nodes(path)
    assert [level.shape for level in image.data] == [(1, 64, 96), (1, 32, 48), (1, 16, 24)]
    assert scales(image) == [[1.0, 1.0, 1.0], [1.0, 2.0, 2.0], [1.0, 4.0, 4.0]]
    # a single level when the image is already small
    path = write_ome_zarr(tmp_path / "one.zarr", probabilities=probabilities, min_level_size=64)
    assert len(nodes(path)[0].data) == 1


def test_3d_store_keeps_z(tmp_path, rng):
    probabilities = rng.random((5, 1, 40, 36), dtype=np.float32)  # (Z, K, Y, X)
    mask = rng.integers(0, 3, (5, 40, 36)).astype(np.uint8)
    path = write_ome_zarr(
        tmp_path / "z.zarr", probabilities=probabilities, mask=mask, spatial_axes="ZYX",
        dtype="float32", chunk=8, min_level_size=10,
    )  # fmt: skip
    image, labels = nodes(path)
    assert [a["name"] for a in image.metadata["axes"]] == ["c", "z", "y", "x"]
    assert [level.shape for level in image.data] == [(1, 5, 40, 36), (1, 5, 20, 18), (1, 5, 10, 9)]
    assert [s[1] for s in scales(image)] == [1.0, 1.0, 1.0]  # Z is never downsampled
    np.testing.assert_array_equal(np.asarray(image.data[0]), probabilities.transpose(1, 0, 2, 3))
    np.testing.assert_array_equal(np.asarray(labels["mask"].data[1])[0], mask[:, ::2, ::2])
    with open_image(path) as source:
        assert source.spatial_axes == "ZYX" and source.shape == (5, 1, 40, 36)
        np.testing.assert_array_equal(source.read(3), probabilities[3])


@pytest.mark.parametrize("given", ["mask", "instances", "both"])
def test_labels_without_probabilities(tmp_path, results, given):
    _, mask, instances = results
    inputs = {"mask": mask, "instances": instances}
    inputs = inputs if given == "both" else {given: inputs[given]}
    path = write_ome_zarr(tmp_path / "l.zarr", **inputs, min_level_size=30)
    image, labels = nodes(path)
    content = "mask" if given != "instances" else "instances"
    assert zarr.open_group(str(path)).attrs["unetseg"]["content"] == content
    np.testing.assert_array_equal(np.asarray(image.data[0])[0], inputs[content])
    assert set(labels) == set(inputs)
    with open_image(path) as source:
        np.testing.assert_array_equal(source.read(0)[0], inputs[content])


def test_inputs_are_read_chunk_by_chunk(tmp_path, results, monkeypatch):
    probabilities, mask, _ = results
    stored_mask = zarr.create_array(str(tmp_path / "mask.zarr"), shape=mask.shape, dtype=mask.dtype, chunks=(16, 16))
    stored_mask[...] = mask
    sources = {str(probabilities.store_path), str(stored_mask.store_path)}
    reads = []
    original = zarr.Array.__getitem__

    def recording(self, key):
        value = original(self, key)
        if str(self.store_path) in sources:
            reads.append(np.size(value))
        return value

    monkeypatch.setattr(zarr.Array, "__getitem__", recording)
    write_ome_zarr(tmp_path / "s.zarr", probabilities=probabilities, mask=stored_mask, chunk=16, min_level_size=10)
    monkeypatch.undo()
    assert reads and max(reads) <= 2 * 32 * 32  # one stored chunk at a time, never whole


def test_failure_leaves_nothing_and_keeps_the_old_store(tmp_path, results, monkeypatch):
    probabilities, mask, _ = results
    path = tmp_path / "s.zarr"

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(ngff, "write_multiscale_labels", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        write_ome_zarr(path, probabilities=probabilities, mask=mask)
    assert list(tmp_path.iterdir()) == [tmp_path / "probabilities.zarr"]  # no store, no temporary

    monkeypatch.undo()
    write_ome_zarr(path, mask=mask)
    monkeypatch.setattr(ngff, "write_multiscale_labels", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        write_ome_zarr(path, probabilities=probabilities, mask=mask)
    assert zarr.open_group(str(path)).attrs["unetseg"]["content"] == "mask"  # the previous result


@pytest.mark.parametrize(
    "inputs, options, message",
    [
        ({}, {}, "nothing to write"),
        ({"probabilities": np.zeros((2, 1, 8, 8))}, {}, "spatial_axes='ZYX'"),
        ({"probabilities": np.zeros((1, 8, 8))}, {}, r"\(Z, K, Y, X\)"),
        ({"probabilities": np.zeros((1, 1, 8, 8)), "mask": np.zeros((8, 9), np.uint8)}, {}, "spatial shape"),
        ({"mask": np.zeros((8, 8), np.float32)}, {}, "integers"),
        ({"mask": np.zeros((8, 8), np.uint8)}, {"spatial_axes": "ZYX"}, "does not fit"),
        ({"mask": np.zeros((8, 8), np.uint8)}, {"dtype": "float64"}, "stored as one of"),
    ],
)
def test_user_errors(tmp_path, inputs, options, message):
    with pytest.raises(InputError, match=message) as info:
        write_ome_zarr(tmp_path / "s.zarr", **inputs, **options)
    assert str(tmp_path / "s.zarr") in str(info.value)
    assert not (tmp_path / "s.zarr").exists()


def test_store_name_must_end_in_zarr(tmp_path):
    with pytest.raises(InputError, match=r"\*\.zarr"):
        write_ome_zarr(tmp_path / "s.ome", mask=np.zeros((8, 8), np.uint8))


def test_pyramid_shapes():
    assert pyramid_shapes((2, 1000, 300), 256) == [(2, 1000, 300), (2, 500, 150)]
    assert pyramid_shapes((1, 256, 4096), 256) == [(1, 256, 4096)]
    assert pyramid_shapes((1, 9, 9), 1) == [(1, 9, 9), (1, 4, 4), (1, 2, 2), (1, 1, 1)]


def test_pixel_size_becomes_the_scale_of_every_level(tmp_path):
    from unetseg.io.pixelsize import read_pixel_size

    probabilities = np.random.default_rng(0).random((1, 1, 600, 700)).astype(np.float32)
    mask = (probabilities[0, 0] > 0.5).astype(np.uint8)
    path = ngff.write_ome_zarr(tmp_path / "s.ome.zarr", probabilities=probabilities, mask=mask,
                               pixel_size=(0.5, 0.25), min_level_size=128)  # fmt: skip
    assert read_pixel_size(path) == pytest.approx((0.5, 0.25))
    for group in (zarr.open_group(str(path)), zarr.open_group(str(path / "labels" / "mask"))):
        multiscale = group.attrs["ome"]["multiscales"][0]
        assert [a.get("unit") for a in multiscale["axes"]] == [None, "micrometer", "micrometer"]
        level1 = multiscale["datasets"][1]["coordinateTransformations"][0]["scale"]
        assert level1 == pytest.approx([1.0, 1.0, 0.5])  # half the pixels per axis, twice the size
