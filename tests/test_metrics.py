"""Tests for :mod:`unetseg.metrics` against hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.draw import disk

from unetseg.metrics import confusion_counts, dice, iou, pixel_error


def _squares() -> tuple[np.ndarray, np.ndarray]:
    """Two 10x10 squares offset by 5 px in x on a 20x20 grid."""
    a = np.zeros((20, 20), dtype=np.uint8)
    b = np.zeros((20, 20), dtype=np.uint8)
    a[5:15, 0:10] = 1
    b[5:15, 5:15] = 1
    return a, b


def test_offset_squares_by_hand() -> None:
    a, b = _squares()
    # Intersection 10x5 = 50, each square 100, union 150, 400 pixels in all.
    assert confusion_counts(a, b) == (50, 50, 50, 250)
    assert iou(a, b) == pytest.approx(1 / 3)
    assert dice(a, b) == pytest.approx(0.5)
    assert pixel_error(a, b) == pytest.approx(100 / 400)


def test_counts_are_python_ints() -> None:
    a, b = _squares()
    assert all(type(c) is int for c in confusion_counts(a, b))
    assert type(dice(a, b)) is float and type(iou(a, b)) is float


def test_disks_overlap_matches_pixel_count() -> None:
    a = np.zeros((64, 64), dtype=bool)
    b = np.zeros((64, 64), dtype=bool)
    a[disk((32, 26), 10)] = True
    b[disk((32, 38), 10)] = True
    inter, area_a, area_b = np.sum(a & b), np.sum(a), np.sum(b)
    assert 0 < inter < area_a
    assert iou(a, b) == pytest.approx(inter / (area_a + area_b - inter))
    assert dice(a, b) == pytest.approx(2 * inter / (area_a + area_b))


def test_identical_and_disjoint() -> None:
    a, _ = _squares()
    assert dice(a, a) == iou(a, a) == 1.0
    assert pixel_error(a, a) == 0.0
    disjoint = np.zeros_like(a)
    disjoint[0:3, 15:20] = 1
    assert dice(a, disjoint) == iou(a, disjoint) == 0.0
    assert pixel_error(a, disjoint) == pytest.approx(115 / 400)


def test_empty_masks() -> None:
    empty = np.zeros((8, 8))
    full = np.zeros((8, 8))
    full[2, 3] = 1
    assert dice(empty, empty) == iou(empty, empty) == 1.0
    assert pixel_error(empty, empty) == 0.0
    for pair in ((empty, full), (full, empty)):
        assert dice(*pair) == iou(*pair) == 0.0
        assert pixel_error(*pair) == pytest.approx(1 / 64)


def test_zero_size_inputs() -> None:
    none = np.zeros((0, 5))
    assert confusion_counts(none, none) == (0, 0, 0, 0)
    assert dice(none, none) == iou(none, none) == 1.0
    assert pixel_error(none, none) == 0.0


@pytest.mark.parametrize(
    ("dtype", "values"),
    [
        (bool, [True]),
        (np.uint8, [1, 255]),
        (np.uint16, [3, 65535]),
        (np.int32, [-2, 7]),
        (np.float32, [0.25, -1.5]),
        (np.float64, [1e-9, np.nan]),
    ],
)
def test_any_nonzero_is_foreground(dtype: type, values: list) -> None:
    a, b = _squares()
    # Instance ids, negative values, tiny fractions and NaN all count as foreground.
    fill = np.resize(np.array(values, dtype=dtype), a.shape)
    coded = np.where(a > 0, fill, np.zeros((), dtype=dtype))
    assert coded.dtype == np.dtype(dtype)
    assert confusion_counts(coded, b) == (50, 50, 50, 250)
    assert dice(coded, b.astype(dtype)) == pytest.approx(0.5)


def test_instance_labels_not_matched_by_id() -> None:
    truth = np.array([[1, 1, 0, 2, 2]], dtype=np.uint16)
    pred = np.array([[5, 5, 0, 9, 9]], dtype=np.uint16)
    assert dice(truth, pred) == 1.0


def test_three_dimensional_input() -> None:
    a = np.zeros((4, 10, 10), dtype=np.uint8)
    b = np.zeros((4, 10, 10), dtype=np.uint8)
    a[0:2] = 1  # 200 voxels
    b[1:4] = 1  # 300 voxels, 100 shared
    assert confusion_counts(a, b) == (100, 200, 100, 0)
    assert iou(a, b) == pytest.approx(100 / 400)
    assert dice(a, b) == pytest.approx(200 / 500)
    assert pixel_error(a, b) == pytest.approx(300 / 400)


@pytest.mark.parametrize("func", [confusion_counts, dice, iou, pixel_error])
def test_shape_mismatch_names_both_shapes(func) -> None:
    with pytest.raises(ValueError, match=r"\(4, 5\).*\(5, 4\)"):
        func(np.zeros((4, 5)), np.zeros((5, 4)))


def test_dice_iou_identity_on_random_masks() -> None:
    rng = np.random.default_rng(0)
    for density in (0.05, 0.3, 0.7):
        a = rng.random((3, 40, 50)) < density
        b = rng.random((3, 40, 50)) < density
        j = iou(a, b)
        assert dice(a, b) == pytest.approx(2 * j / (1 + j))
        tp, fp, fn, tn = confusion_counts(a, b)
        assert tp + fp + fn + tn == a.size
        assert pixel_error(a, b) == pytest.approx(np.mean(a != b))


def test_large_counts_do_not_overflow() -> None:
    # More foreground pixels than a uint16 accumulator could hold.
    big = np.ones(70_000, dtype=np.uint8)
    assert confusion_counts(big, big) == (70_000, 0, 0, 0)
    assert dice(big, big) == 1.0
