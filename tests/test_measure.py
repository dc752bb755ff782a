"""Per-object measurements: hand-computed cases, empty cases, and out-of-core == in-memory."""

from __future__ import annotations

import math

import dask.array as da
import numpy as np
import pandas as pd
import pytest
import zarr
from scipy import ndimage
from skimage.draw import disk
from skimage.measure import label, regionprops

from unetseg.objects.measure import measure_columns, measure_objects, measure_objects_chunked, summarize


def rectangle_and_disk() -> tuple[np.ndarray, np.ndarray]:
    """Label 1: rows 2-5, columns 3-8 (4 x 6); label 7: disk of radius 5 at (20, 30).

    Channel 0 is 3 in the rectangle and 10 in the disk; channel 1 is the column index.
    """
    labels = np.zeros((40, 50), np.int32)
    labels[2:6, 3:9] = 1
    labels[disk((20, 30), 5)] = 7
    image = np.zeros((2, 40, 50), np.uint16)
    image[0][labels == 1] = 3
    image[0][labels == 7] = 10
    image[1] = np.arange(50)
    return labels, image


def test_hand_computed_2d():
    labels, image = rectangle_and_disk()
    table = measure_objects(labels, image)
    assert list(table.columns) == measure_columns(2, ["c0", "c1"])
    assert table["label"].tolist() == [1, 7]
    rect, circle = table.iloc[0], table.iloc[1]
    assert rect["area"] == 24
    assert (rect["centroid_y"], rect["centroid_x"]) == (3.5, 5.5)
    assert [rect[f"bbox_{m}_{a}"] for m in ("min", "max") for a in "yx"] == [2, 3, 6, 9]
    assert rect["equivalent_diameter"] == pytest.approx(math.sqrt(4 * 24 / math.pi))
    # axis-aligned rectangle: inertia eigenvalues are the row and column variances (n^2 - 1) / 12
    assert rect["eccentricity"] == pytest.approx(math.sqrt(1 - (15 / 12) / (35 / 12)))
    assert rect["solidity"] == 1.0
    assert (rect["mean_intensity_c0"], rect["min_intensity_c0"], rect["max_intensity_c0"]) == (3, 3, 3)
    assert (rect["mean_intensity_c1"], rect["min_intensity_c1"], rect["max_intensity_c1"]) == (5.5, 3, 8)
    # disk: pixels strictly inside radius 5, so rows and columns 16..24
    yy, xx = np.mgrid[:40, :50]
    assert circle["area"] == np.sum((yy - 20) ** 2 + (xx - 30) ** 2 < 25)
    assert (circle["centroid_y"], circle["centroid_x"]) == (20.0, 30.0)
    assert [circle[f"bbox_{m}_{a}"] for m in ("min", "max") for a in "yx"] == [16, 26, 25, 35]
    assert circle["eccentricity"] == pytest.approx(0.0, abs=1e-12)
    assert (circle["mean_intensity_c0"], circle["mean_intensity_c1"]) == (10.0, 30.0)


def test_dtypes_and_channel_names():
    labels, image = rectangle_and_disk()
    table = measure_objects(labels, image, channel_names=["dapi", "gfp"])
    assert "mean_intensity_gfp" in table and "max_intensity_dapi" in table and "mean_intensity_c0" not in table
    assert table["mean_intensity_gfp"].tolist() == [5.5, 30.0]
    integer = ["label", "area", "bbox_min_y", "bbox_min_x", "bbox_max_y", "bbox_max_x"]
    assert all(table[c].dtype == np.int64 for c in integer)
    assert all(table[c].dtype == np.float64 for c in table.columns if c not in integer)


def test_pixel_size_columns():
    labels, image = rectangle_and_disk()
    table = measure_objects(labels, image, pixel_size=(0.5, 0.25))
    assert list(table.columns) == measure_columns(2, ["c0", "c1"], physical=True)
    rect = table.iloc[0]
    assert rect["area_um2"] == pytest.approx(24 * 0.125)
    assert (rect["centroid_y_um"], rect["centroid_x_um"]) == pytest.approx((3.5 * 0.5, 5.5 * 0.25))
    assert rect["equivalent_diameter_um"] == pytest.approx(math.sqrt(4 * 3.0 / math.pi))
    np.testing.assert_allclose(table["area_um2"], table["area"] * 0.125)
    assert rect["area"] == 24 and rect["centroid_y"] == 3.5  # pixel columns unchanged


def test_label_ids_kept_and_disconnected_pieces_are_one_object():
    labels = np.zeros((10, 10), np.int64)
    labels[0, 0] = 1000
    labels[9, 9] = 1000
    labels[5, 5] = 3
    table = measure_objects(labels, None)
    assert table["label"].tolist() == [3, 1000]
    assert table["area"].tolist() == [1, 2]
    assert (table["centroid_y"].iloc[1], table["bbox_max_x"].iloc[1]) == (4.5, 10)


def test_nan_pixels_ignored_and_all_nan_object_gives_nan():
    labels, _ = rectangle_and_disk()
    image = np.ones((1, 40, 50), np.float32)
    image[0, 2:6, 3:5] = np.nan  # part of the rectangle
    image[0, 2:6, 5:9] = np.arange(4, dtype=np.float32)  # columns 5..8: 0, 1, 2, 3
    image[0][labels == 7] = np.nan  # the whole disk
    table = measure_objects(labels, image)
    rect, circle = table.iloc[0], table.iloc[1]
    assert (rect["mean_intensity_c0"], rect["min_intensity_c0"], rect["max_intensity_c0"]) == (1.5, 0.0, 3.0)
    assert np.isnan([circle["mean_intensity_c0"], circle["min_intensity_c0"], circle["max_intensity_c0"]]).all()
    assert circle["area"] > 0


def test_infinite_pixels_outside_an_object_do_not_leak_or_warn():
    labels, _ = rectangle_and_disk()
    image = np.ones((1, 40, 50))
    image[0, 16, 26] = np.inf  # in the disk's bounding box, outside the disk
    table = measure_objects(labels, image)
    assert table["max_intensity_c0"].tolist() == [1.0, 1.0]
    assert_same(measure_objects_chunked(labels, image, block=(7, 9)), table)


def test_no_objects_gives_empty_table_with_all_columns():
    labels = np.zeros((12, 9), np.uint16)
    image = np.random.default_rng(0).random((2, 12, 9))
    for table in (
        measure_objects(labels, image, pixel_size=(1.0, 1.0)),
        measure_objects_chunked(labels, image, pixel_size=(1.0, 1.0), block=5),
    ):
        assert len(table) == 0
        assert list(table.columns) == measure_columns(2, ["c0", "c1"], physical=True)
        assert table["label"].dtype == np.int64 and table["mean_intensity_c0"].dtype == np.float64


def test_3d_objects_connected_across_planes():
    labels = np.zeros((6, 12, 14), np.int32)
    labels[1:4, 2:5, 3:7] = 5  # 3 x 3 x 4 box
    labels[4, 8, 8] = 9
    image = np.stack([np.broadcast_to(np.arange(6.0)[:, None, None], labels.shape)])
    table = measure_objects(labels, image, pixel_size=(2.0, 0.5, 0.25))
    assert list(table.columns) == measure_columns(3, ["c0"], physical=True)
    assert "eccentricity" not in table and "solidity" not in table
    box = table.iloc[0]
    assert box["label"] == 5 and box["area"] == 36
    assert (box["centroid_z"], box["centroid_y"], box["centroid_x"]) == (2.0, 3.0, 4.5)
    assert [box[f"bbox_{m}_{a}"] for m in ("min", "max") for a in "zyx"] == [1, 2, 3, 4, 5, 7]
    assert box["equivalent_diameter"] == pytest.approx((6 * 36 / math.pi) ** (1 / 3))
    assert (box["mean_intensity_c0"], box["min_intensity_c0"], box["max_intensity_c0"]) == (2.0, 1.0, 3.0)
    assert box["volume_um3"] == pytest.approx(36 * 0.25)
    assert (box["centroid_z_um"], box["centroid_y_um"], box["centroid_x_um"]) == pytest.approx((4.0, 1.5, 1.125))
    assert box["equivalent_diameter_um"] == pytest.approx((6 * 9.0 / math.pi) ** (1 / 3))


def test_invalid_inputs():
    labels, image = rectangle_and_disk()
    with pytest.raises(ValueError, match="integer"):
        measure_objects(labels.astype(float), image)
    with pytest.raises(ValueError, match="shape"):
        measure_objects(labels, image[:, :-1])
    with pytest.raises(ValueError, match="channel_names"):
        measure_objects(labels, image, channel_names=["a"])
    with pytest.raises(ValueError, match="pixel_size"):
        measure_objects(labels, image, pixel_size=(1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="block"):
        measure_objects_chunked(labels, image, block=(0, 4))


def blobs(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Odd-shaped objects with scattered, non-consecutive ids, some crossing any chunk grid."""
    rng = np.random.default_rng(seed)
    smooth = ndimage.gaussian_filter(rng.random(shape), 2.0)
    labels, count = ndimage.label(smooth > np.quantile(smooth, 0.7))
    labels = labels * 3 + 2 * (labels > 0)
    labels[labels == 5] = 0  # a gap in the ids
    return labels.astype(np.uint32)


def noisy_image(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Two float32 channels with NaN holes."""
    rng = np.random.default_rng(seed)
    image = rng.normal(100, 20, (2, *shape)).astype(np.float32)
    image[rng.random(image.shape) < 0.05] = np.nan
    return image


def assert_same(chunked: pd.DataFrame, memory: pd.DataFrame) -> None:
    """Integer columns identical; float columns equal up to summation order."""
    pd.testing.assert_frame_equal(chunked, memory, check_exact=False, rtol=1e-12, atol=0)


def test_chunked_zarr_equals_in_memory(tmp_path):
    labels = blobs((97, 131), seed=1)
    image = noisy_image(labels.shape, seed=2)
    stored = zarr.create_array(tmp_path / "labels.zarr", shape=labels.shape, chunks=(32, 40), dtype=labels.dtype)
    stored[:] = labels
    pixels = zarr.create_array(tmp_path / "image.zarr", shape=image.shape, chunks=(1, 32, 40), dtype=image.dtype)
    pixels[:] = image
    memory = measure_objects(labels, image, pixel_size=(0.5, 0.25))
    chunked = measure_objects_chunked(stored, pixels, pixel_size=(0.5, 0.25))  # blocks = Zarr chunks
    crossing = (memory["bbox_min_y"] // 32 != (memory["bbox_max_y"] - 1) // 32) & (
        memory["bbox_min_x"] // 40 != (memory["bbox_max_x"] - 1) // 40
    )
    assert len(memory) > 10 and crossing.sum() >= 3
    assert_same(chunked, memory)


@pytest.mark.parametrize("block", [(17, 23), 7, (97, 131), (200, 1)])
def test_chunked_odd_blocks_and_dask(block):
    labels = blobs((61, 45), seed=3)
    image = noisy_image(labels.shape, seed=4)
    memory = measure_objects(labels, image, channel_names=["a", "b"])
    chunked = measure_objects_chunked(
        da.from_array(labels, chunks=(13, 11)),
        da.from_array(image, chunks=(2, 13, 11)),
        channel_names=["a", "b"],
        block=block,
    )
    assert_same(chunked, memory)


def test_chunked_integer_image_is_exact():
    labels = blobs((50, 70), seed=5)
    image = np.random.default_rng(6).integers(0, 4096, (1, 50, 70), dtype=np.uint16)
    pd.testing.assert_frame_equal(measure_objects_chunked(labels, image, block=(9, 16)), measure_objects(labels, image))


def test_chunked_3d_equals_in_memory():
    labels = blobs((9, 33, 29), seed=7)
    image = noisy_image(labels.shape, seed=8)
    memory = measure_objects(labels, image, pixel_size=(2.0, 0.5, 0.5))
    chunked = measure_objects_chunked(labels, image, pixel_size=(2.0, 0.5, 0.5), block=(2, 7, 9))
    assert_same(chunked, memory)
    assert (memory["bbox_max_z"] - memory["bbox_min_z"]).max() > 2  # objects span planes


def test_chunked_sparse_objects_and_negative_background():
    labels = np.zeros((64, 64), np.int16)
    labels[60:64, 1:3] = 4
    labels[30:34, 30:34] = 2
    labels[0:5, 40:50] = -1  # background, as for scikit-image
    image = np.arange(64 * 64, dtype=np.float64).reshape(1, 64, 64)
    memory = measure_objects(labels, image)
    assert memory["label"].tolist() == [2, 4]
    assert_same(measure_objects_chunked(labels, image, block=8), memory)


def test_chunked_without_image():
    labels = blobs((40, 40), seed=9)
    assert_same(measure_objects_chunked(labels, None, block=(11, 13)), measure_objects(labels, None))


def test_summarize():
    labels, image = rectangle_and_disk()
    table = measure_objects(labels, image)
    row = summarize(table, sample="s1", foreground_fraction=0.25)
    assert row == {
        "sample": "s1",
        "status": "ok",
        "object_count": 2,
        "foreground_fraction": 0.25,
        "mean_area": (24 + table["area"].iloc[1]) / 2,
        "median_area": (24 + table["area"].iloc[1]) / 2,
        "mean_intensity": (3.0 + 10.0) / 2,
        "error": "",
    }
    assert list(row) == ["sample", "status", "object_count", "foreground_fraction", "mean_area", "median_area",
                         "mean_intensity", "error"]  # fmt: skip


def test_summarize_empty_and_failed():
    empty = measure_objects(np.zeros((5, 5), np.int32), np.zeros((1, 5, 5)))
    row = summarize(empty, sample="s2", foreground_fraction=0.0)
    assert row["object_count"] == 0
    assert np.isnan([row["mean_area"], row["median_area"], row["mean_intensity"]]).all()
    failed = summarize(None, sample="s3", foreground_fraction=None, status="failed", error="boom")
    assert (failed["status"], failed["error"], failed["object_count"]) == ("failed", "boom", 0)
    assert np.isnan(failed["foreground_fraction"])


def test_summarize_without_intensities_or_with_nan_objects():
    labels, image = rectangle_and_disk()
    assert np.isnan(summarize(measure_objects(labels, None), sample="s", foreground_fraction=0.1)["mean_intensity"])
    image = image.astype(np.float64)
    image[0][labels == 7] = np.nan
    row = summarize(measure_objects(labels, image), sample="s", foreground_fraction=0.1)
    assert row["mean_intensity"] == 3.0  # the all-NaN object is skipped


def test_eccentricity_is_scikit_images_for_every_shape():
    rng = np.random.default_rng(7)
    labels = label((ndimage.uniform_filter(rng.random((300, 260)), 7) > 0.5).astype(np.uint8)).astype(np.int32)
    labels[0, 0], labels[299, 259] = labels.max() + 1, labels.max() + 2  # one-pixel objects: eccentricity 0
    labels[150, 100:140] = labels.max() + 1  # a line: eccentricity 1
    table = measure_objects(labels, None)
    expected = {r.label: r.eccentricity for r in regionprops(labels)}
    assert len(table) > 20
    np.testing.assert_allclose(table["eccentricity"], [expected[i] for i in table["label"]], rtol=1e-9, atol=1e-12)


def test_every_column_is_scikit_images_regionprops():
    """The vectorised columns and the per-object solidity equal ``regionprops`` on random shapes
    (two-pixel objects, lines and holes included), intensities of two channels too."""
    rng = np.random.default_rng(11)
    labels = label((ndimage.uniform_filter(rng.random((200, 180)), 5) > 0.52).astype(np.uint8)).astype(np.int32)
    labels[0, 0:2] = labels.max() + 1  # two pixels
    labels[120, 20:60] = labels.max() + 1  # a line
    image = rng.normal(100, 20, (2, *labels.shape))
    table = measure_objects(labels, image, channel_names=["dapi", "gfp"])
    regions = {r.label: r for r in regionprops(labels, np.moveaxis(image, 0, -1))}
    assert len(table) > 30
    for row in table.itertuples():
        r = regions[row.label]
        assert row.area == r.area and (row.centroid_y, row.centroid_x) == pytest.approx(r.centroid, rel=1e-12)
        assert (row.bbox_min_y, row.bbox_min_x, row.bbox_max_y, row.bbox_max_x) == r.bbox
        assert row.equivalent_diameter == pytest.approx(r.equivalent_diameter_area, rel=1e-12)
        assert row.solidity == pytest.approx(r.solidity, rel=1e-12)
        assert (row.mean_intensity_dapi, row.mean_intensity_gfp) == pytest.approx(r.intensity_mean, rel=1e-9)
        assert (row.min_intensity_gfp, row.max_intensity_gfp) == (r.intensity_min[1], r.intensity_max[1])
