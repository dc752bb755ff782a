"""Reading images of every layout lazily, and atomic writes."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import zarr

from unetseg.errors import InputError
from unetseg.io.files import atomic_path
from unetseg.io.images import open_image, read_mask


def test_2d_tiff(tmp_path, rng):
    image = rng.integers(0, 65535, (30, 20), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "a.tif", image)
    with open_image(tmp_path / "a.tif") as source:
        assert source.axes == "YX" and source.shape == (1, 1, 30, 20) and source.spatial_shape == (30, 20)
        np.testing.assert_array_equal(source.read(0)[0], image)
        np.testing.assert_array_equal(source.read(0, slice(3, 9), slice(2, 5))[0], image[3:9, 2:5])


def test_rgb_tiff_is_yx_with_channels(tmp_path, rng):
    image = rng.integers(0, 255, (30, 20, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "rgb.tif", image, photometric="rgb")
    with open_image(tmp_path / "rgb.tif") as source:
        assert source.shape == (1, 3, 30, 20) and source.spatial_axes == "YX"
        np.testing.assert_array_equal(source.read(0), np.moveaxis(image, -1, 0))


def test_imagej_stack_and_channels(tmp_path, rng):
    stack = rng.random((4, 2, 16, 12)).astype(np.float32)
    tifffile.imwrite(tmp_path / "s.tif", stack, imagej=True, metadata={"axes": "ZCYX"})
    with open_image(tmp_path / "s.tif") as source:
        assert source.shape == (4, 2, 16, 12) and source.spatial_shape == (4, 16, 12)
        np.testing.assert_array_equal(source.read(2), stack[2])


def test_plain_3d_tiff_is_a_stack_unless_told_otherwise(tmp_path, rng):
    data = rng.random((5, 16, 12)).astype(np.float32)
    tifffile.imwrite(tmp_path / "z.tif", data)
    with open_image(tmp_path / "z.tif") as source:
        assert source.spatial_shape == (5, 16, 12)
    with open_image(tmp_path / "z.tif", axes="CYX") as as_channels:
        assert as_channels.shape == (1, 5, 16, 12) and as_channels.spatial_axes == "YX"


def test_zarr_array_and_ome_zarr(tmp_path, rng):
    data = rng.random((2, 16, 12)).astype(np.float32)
    zarr.create_array(tmp_path / "a.zarr", data=data, attributes={"axes": "CYX"})
    assert open_image(tmp_path / "a.zarr").shape == (1, 2, 16, 12)
    group = zarr.open_group(tmp_path / "ome.zarr", mode="w")
    group.create_array("0", data=data[0])
    group.attrs["multiscales"] = [{"axes": [{"name": "y"}, {"name": "x"}], "datasets": [{"path": "0"}]}]
    source = open_image(tmp_path / "ome.zarr")
    assert source.axes == "YX"
    np.testing.assert_array_equal(source.read(0)[0], data[0])


def test_missing_and_corrupt_files_name_the_file(tmp_path):
    with pytest.raises(InputError, match="nope.tif: file not found"):
        open_image(tmp_path / "nope.tif")
    tifffile.imwrite(tmp_path / "ok.tif", np.zeros((64, 64), np.uint16))
    (tmp_path / "cut.tif").write_bytes((tmp_path / "ok.tif").read_bytes()[:100])
    with pytest.raises(InputError, match="cut.tif: not a readable TIFF"):
        open_image(tmp_path / "cut.tif")
    (tmp_path / "x.png").write_bytes(b"png")
    with pytest.raises(InputError, match="unsupported file type"):
        open_image(tmp_path / "x.png")


def test_read_mask_checks_the_shape(tmp_path):
    tifffile.imwrite(tmp_path / "m.tif", np.ones((1, 8, 9), np.uint8))
    assert read_mask(tmp_path / "m.tif", (8, 9)).shape == (8, 9)
    with pytest.raises(InputError, match="does not match the image's spatial shape"):
        read_mask(tmp_path / "m.tif", (9, 8))


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.json"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("partial")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []
    with atomic_path(target) as tmp:
        tmp.write_text("done")
    assert target.read_text() == "done" and list(tmp_path.iterdir()) == [target]
