"""Pixel sizes read from OME-TIFF, ImageJ TIFF, baseline TIFF and OME-Zarr, and written back."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import zarr

from unetseg.io.pixelsize import ngff_axes, ngff_scale, read_pixel_size, tiff_resolution_kwargs

IMAGE_2D = np.zeros((20, 30), np.uint16)
IMAGE_3D = np.zeros((3, 20, 30), np.uint16)


def test_ome_tiff_2d_converts_units(tmp_path):
    path = tmp_path / "a.ome.tif"
    metadata = {"PhysicalSizeX": 0.5, "PhysicalSizeXUnit": "µm", "PhysicalSizeY": 250, "PhysicalSizeYUnit": "nm"}
    tifffile.imwrite(path, IMAGE_2D, ome=True, metadata=metadata)
    assert read_pixel_size(path) == pytest.approx((0.25, 0.5))


def test_ome_tiff_3d(tmp_path):
    path = tmp_path / "a.ome.tiff"
    metadata = {"axes": "ZYX", "PhysicalSizeX": 0.5, "PhysicalSizeY": 0.25, "PhysicalSizeZ": 0.002}
    metadata["PhysicalSizeZUnit"] = "mm"  # X and Y without unit: the OME default, µm
    tifffile.imwrite(path, IMAGE_3D, ome=True, metadata=metadata)
    assert read_pixel_size(path) == pytest.approx((2.0, 0.25, 0.5))


def test_ome_tiff_stack_without_z_size_is_unknown(tmp_path):
    path = tmp_path / "a.ome.tif"
    tifffile.imwrite(path, IMAGE_3D, ome=True, metadata={"axes": "ZYX", "PhysicalSizeX": 0.5, "PhysicalSizeY": 0.5})
    assert read_pixel_size(path) is None


def test_ome_tiff_without_physical_size_is_unknown(tmp_path):
    path = tmp_path / "a.ome.tif"
    tifffile.imwrite(path, IMAGE_2D, ome=True)
    assert read_pixel_size(path) is None


def test_ome_tiff_with_unknown_unit_is_unknown(tmp_path):
    path = tmp_path / "a.ome.tif"
    metadata = {"PhysicalSizeX": 1, "PhysicalSizeXUnit": "pixel", "PhysicalSizeY": 1, "PhysicalSizeYUnit": "pixel"}
    tifffile.imwrite(path, IMAGE_2D, ome=True, metadata=metadata)
    assert read_pixel_size(path) is None


@pytest.mark.parametrize(
    ("unit", "factor"), [("um", 1.0), ("micron", 1.0), ("\\u00B5m", 1.0), ("nm", 1e-3), ("mm", 1e3)]
)
def test_imagej_tiff_2d(tmp_path, unit, factor):
    path = tmp_path / "a.tif"
    tifffile.imwrite(path, IMAGE_2D, imagej=True, resolution=(2.0, 4.0), metadata={"unit": unit})
    assert read_pixel_size(path) == pytest.approx((0.25 * factor, 0.5 * factor))


def test_imagej_tiff_3d_spacing(tmp_path):
    path = tmp_path / "a.tif"
    metadata = {"unit": "um", "spacing": 2.0, "axes": "ZYX"}
    tifffile.imwrite(path, IMAGE_3D, imagej=True, resolution=(2.0, 4.0), metadata=metadata)
    assert read_pixel_size(path) == pytest.approx((2.0, 0.25, 0.5))


def test_imagej_stack_without_spacing_uses_imagej_default(tmp_path):
    path = tmp_path / "a.tif"
    metadata = {"unit": "um", "axes": "ZYX"}
    tifffile.imwrite(path, IMAGE_3D, imagej=True, resolution=(2.0, 2.0), metadata=metadata)
    assert read_pixel_size(path) == pytest.approx((1.0, 0.5, 0.5))


def test_imagej_tiff_without_unit_is_unknown(tmp_path):
    path = tmp_path / "a.tif"
    tifffile.imwrite(path, IMAGE_2D, imagej=True, resolution=(2.0, 4.0))
    assert read_pixel_size(path) is None


def test_plain_tiff_is_unknown(tmp_path):
    path = tmp_path / "a.tif"
    tifffile.imwrite(path, IMAGE_2D)
    assert read_pixel_size(path) is None


def test_inch_resolution_is_unknown(tmp_path):
    path = tmp_path / "a.tif"
    tifffile.imwrite(path, IMAGE_2D, resolution=(72.0, 72.0), resolutionunit="INCH")
    assert read_pixel_size(path) is None


def test_centimetre_resolution(tmp_path):
    path = tmp_path / "a.tiff"
    tifffile.imwrite(path, IMAGE_2D, resolution=(40000.0, 20000.0), resolutionunit="CENTIMETER")
    assert read_pixel_size(path) == pytest.approx((0.5, 0.25))


@pytest.mark.parametrize("pixel_size", [(0.5, 0.25), (0.325, 0.325), (0.1083, 0.2166)])
@pytest.mark.parametrize("imagej", [True, False])
def test_tiff_round_trip_2d(tmp_path, pixel_size, imagej):
    path = tmp_path / "a.tif"
    tifffile.imwrite(path, IMAGE_2D, imagej=imagej, **tiff_resolution_kwargs(pixel_size, imagej=imagej))
    assert read_pixel_size(path) == pytest.approx(pixel_size, rel=1e-6)


def test_tiff_round_trip_3d_imagej_with_own_metadata(tmp_path):
    path = tmp_path / "a.tif"
    kwargs = tiff_resolution_kwargs((1.5, 0.325, 0.3))
    assert kwargs == {"resolution": (1 / 0.3, 1 / 0.325), "metadata": {"unit": "um", "spacing": 1.5}}
    kwargs["metadata"]["axes"] = "ZYX"
    tifffile.imwrite(path, IMAGE_3D, imagej=True, **kwargs)
    with tifffile.TiffFile(path) as tif:  # what Fiji reads: unit and spacing in the ImageJ description
        assert tif.imagej_metadata["unit"] == "um"
        assert tif.imagej_metadata["spacing"] == 1.5
    assert read_pixel_size(path) == pytest.approx((1.5, 0.325, 0.3), rel=1e-6)


def test_tiff_writer_write_accepts_kwargs(tmp_path):
    path = tmp_path / "a.tif"
    with tifffile.TiffWriter(path) as writer:
        writer.write(IMAGE_2D, **tiff_resolution_kwargs((0.5, 0.25), imagej=False))
    assert read_pixel_size(path) == pytest.approx((0.5, 0.25))


def test_baseline_kwargs(tmp_path):
    assert tiff_resolution_kwargs((0.5, 0.25), imagej=False) == {
        "resolution": (40000.0, 20000.0),
        "resolutionunit": "CENTIMETER",
    }
    with pytest.raises(ValueError, match="Z size"):
        tiff_resolution_kwargs((2.0, 0.5, 0.25), imagej=False)


@pytest.mark.parametrize("bad", [(0.5,), (0.0, 0.5), (-1.0, 1.0), (np.nan, 1.0), (1, 1, 1, 1)])
def test_resolution_kwargs_rejects_bad_sizes(bad):
    with pytest.raises(ValueError, match="pixel_size"):
        tiff_resolution_kwargs(bad)


def _multiscales(axes, scale, *, outer=None):
    multiscale = {
        "axes": axes,
        "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": scale}]}],
        "name": "image",
    }
    if outer is not None:
        multiscale["coordinateTransformations"] = [{"type": "scale", "scale": outer}]
    return [multiscale]


def test_ome_zarr_ngff_05(tmp_path):
    path = tmp_path / "a.zarr"
    group = zarr.open_group(path, mode="w")
    axes = [
        {"name": "c", "type": "channel"},
        {"name": "z", "type": "space", "unit": "micrometer"},
        {"name": "y", "type": "space", "unit": "micrometer"},
        {"name": "x", "type": "space", "unit": "nanometer"},
    ]
    group.attrs["ome"] = {"version": "0.5", "multiscales": _multiscales(axes, [1.0, 2.0, 0.5, 250.0])}
    assert (path / "zarr.json").is_file()
    assert read_pixel_size(path) == pytest.approx((2.0, 0.5, 0.25))


def test_ome_zarr_ngff_04_with_multiscale_scale(tmp_path):
    path = tmp_path / "a.zarr"
    group = zarr.open_group(path, mode="w", zarr_format=2)
    axes = [{"name": "y", "type": "space", "unit": "micrometer"}, {"name": "x", "type": "space", "unit": "micrometer"}]
    group.attrs["multiscales"] = _multiscales(axes, [0.5, 0.25], outer=[2.0, 2.0])
    assert (path / ".zattrs").is_file()
    assert read_pixel_size(path) == pytest.approx((1.0, 0.5))


def test_ome_zarr_without_units_or_multiscales_is_unknown(tmp_path):
    group = zarr.open_group(tmp_path / "a.zarr", mode="w")
    axes = [{"name": "y", "type": "space"}, {"name": "x", "type": "space"}]
    group.attrs["ome"] = {"version": "0.5", "multiscales": _multiscales(axes, [0.5, 0.25])}
    assert read_pixel_size(tmp_path / "a.zarr") is None
    zarr.open_group(tmp_path / "b.zarr", mode="w")
    assert read_pixel_size(tmp_path / "b.zarr") is None
    (tmp_path / "plain").mkdir()
    assert read_pixel_size(tmp_path / "plain") is None


def test_ngff_round_trip(tmp_path):
    group = zarr.open_group(tmp_path / "a.zarr", mode="w")
    axes = ngff_axes("tczyx")
    assert [a["type"] for a in axes] == ["time", "channel", "space", "space", "space"]
    scale = ngff_scale((3.0, 0.5, 0.25), axes)
    assert scale == [1.0, 1.0, 3.0, 0.5, 0.25]
    group.attrs["ome"] = {"version": "0.5", "multiscales": _multiscales(axes, scale)}
    assert read_pixel_size(tmp_path / "a.zarr") == pytest.approx((3.0, 0.5, 0.25))


def test_ngff_scale():
    assert ngff_scale((0.5, 0.25), "cyx") == [1.0, 0.5, 0.25]
    assert ngff_scale((0.5, 0.25), ["y", "x"]) == [0.5, 0.25]
    assert ngff_scale(None, "czyx") == [1.0] * 4
    with pytest.raises(ValueError, match="spatial axes"):
        ngff_scale((0.5, 0.25), "czyx")
    with pytest.raises(ValueError, match="spatial axes"):
        ngff_scale((0.0, 0.25), "yx")


def test_other_and_missing_files(tmp_path):
    (tmp_path / "a.png").write_bytes(b"not an image")
    assert read_pixel_size(tmp_path / "a.png") is None
    with pytest.raises(FileNotFoundError):
        read_pixel_size(tmp_path / "missing.tif")
