"""Tests for :mod:`unetseg.metrics`, :mod:`unetseg.regions` and :mod:`unetseg.instances`
against hand-computed cases and independent brute-force references."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import sparse
from scipy.spatial.distance import cdist
from skimage.draw import disk

from unetseg.evaluation.matching import THRESHOLDS, InstanceCounts, instance_scores, match_instances, match_pairs
from unetseg.evaluation.metrics import (
    DistanceTally,
    class_scores_from_counts,
    confusion_counts,
    contour,
    dice,
    hausdorff95,
    iou,
    pixel_error,
    surface_distances,
)
from unetseg.evaluation.regions import boundary_regions, region_scores, region_scores_from_table, region_table
from unetseg.objects.labels import label_objects, true_instances


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


# --- per class -------------------------------------------------------------------------


def test_background_class_swaps_the_counts() -> None:
    a, b = _squares()
    classes = class_scores_from_counts(*confusion_counts(a, b))
    assert classes["foreground"]["dice"] == pytest.approx(0.5)
    # Background: 300 true pixels, 300 predicted, 250 shared.
    assert classes["background"]["dice"] == pytest.approx(2 * 250 / 600)
    assert classes["background"]["precision"] == pytest.approx(250 / 300)
    assert classes["background"]["pixel_error"] == classes["foreground"]["pixel_error"]
    inverse = class_scores_from_counts(*confusion_counts(1 - a, 1 - b))
    assert inverse["foreground"] == classes["background"]


# --- HD95 ------------------------------------------------------------------------------


def _disk(center: tuple[int, int], radius: float, shape: tuple[int, int] = (96, 96)) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[disk(center, radius, shape=shape)] = True
    return mask


def _hd95_brute_force(a: np.ndarray, b: np.ndarray) -> float:
    """All pairwise contour distances, no distance transform."""
    pa, pb = np.argwhere(contour(a)), np.argwhere(contour(b))
    d = cdist(pa, pb)
    return max(np.percentile(d.min(axis=1), 95), np.percentile(d.min(axis=0), 95))


def test_contour_of_a_square_and_of_a_full_image() -> None:
    square = np.zeros((8, 8), dtype=bool)
    square[2:6, 2:6] = True
    assert np.count_nonzero(contour(square)) == 12  # 4x4 square minus its 2x2 inside
    assert np.count_nonzero(contour(np.ones((5, 5)))) == 16  # the image border is background


def test_hd95_of_single_pixels_is_their_distance() -> None:
    a, b = np.zeros((20, 20)), np.zeros((20, 20))
    a[2, 3], b[5, 7] = 1, 1
    assert hausdorff95(a, b) == pytest.approx(5.0)


@pytest.mark.parametrize(("shift", "grow"), [(0, 3), (4, 0), (7, 2), (15, -4)])
def test_hd95_of_disks_matches_brute_force(shift: int, grow: int) -> None:
    a = _disk((48, 40), 14)
    b = _disk((48, 40 + shift), 14 + grow)
    assert hausdorff95(a, b) == pytest.approx(_hd95_brute_force(a, b))
    assert hausdorff95(a, b) == hausdorff95(b, a)  # symmetric


def test_hd95_of_concentric_disks_is_about_the_radius_difference() -> None:
    assert hausdorff95(_disk((48, 48), 20), _disk((48, 48), 25)) == pytest.approx(5, abs=1)
    assert hausdorff95(_disk((48, 48), 20), _disk((48, 48), 20)) == 0.0


def test_hd95_empty_cases() -> None:
    empty, some = np.zeros((16, 16)), _disk((8, 8), 4, (16, 16))
    assert hausdorff95(empty, empty) == 0.0
    assert hausdorff95(some, empty) == math.inf and hausdorff95(empty, some) == math.inf
    true_to_pred, pred_to_true = surface_distances(some, empty)
    assert np.all(np.isinf(true_to_pred)) and pred_to_true.size == 0


def test_distance_tally_over_planes_equals_pooled_percentiles(rng) -> None:
    stack_a = np.stack([_disk((30, 30 + z), 10 + 2 * z, (64, 64)) for z in range(3)])
    stack_b = np.stack([_disk((34 - z, 30), 12, (64, 64)) for z in range(3)])
    stack_b[1, :, :] = False  # one plane with nothing predicted: infinite distances there
    tally = DistanceTally()
    pooled = [[], []]
    for a, b in zip(stack_a, stack_b):
        tally.add(a, b)
        for k, d in enumerate(surface_distances(a, b)):
            pooled[k].append(d)
    for k in (0, 1):
        d = np.concatenate(pooled[k])
        for q in (0, 50, 90, 95, 100):
            with np.errstate(invalid="ignore"):
                expected = np.percentile(d, q)
            got = tally.percentile(q, k)
            assert got == pytest.approx(expected) or (math.isinf(got) and not np.isfinite(expected))


# --- regions (adapted Rand error, VI) ----------------------------------------------------


def _membranes(rows: list[int], cols: list[int], shape: tuple[int, int] = (41, 41)) -> np.ndarray:
    """A grid of one-pixel membranes (foreground) at the given rows and columns."""
    m = np.zeros(shape, dtype=np.uint8)
    m[rows, :] = 1
    m[:, cols] = 1
    return m


def test_boundary_regions_are_the_cells() -> None:
    regions = boundary_regions(_membranes([20], [20]))
    assert regions.max() == 4 and np.all(regions[20, :] == 0)
    assert np.bincount(regions.ravel())[1:].tolist() == [400] * 4


def test_region_scores_perfect_and_merged() -> None:
    truth = _membranes([20], [20])  # four cells of 20x20
    assert region_scores(truth, truth) == {"rand_error": 0.0, "vi_split": 0.0, "vi_merge": 0.0, "vi": 0.0}
    merged = _membranes([20], [])  # the vertical membrane missed: cells merged in pairs
    scores = region_scores(truth, merged)
    assert scores["vi_split"] == 0.0
    assert scores["vi_merge"] == pytest.approx(1.0)  # bits: one binary choice per pixel
    # Pairs of pixels (ordered, without self-pairs): true cells 4 * 400 * 399, predicted
    # regions restricted to true-cell pixels 2 * 800 * 799, together 4 * 400 * 399.
    together, true_pairs, pred_pairs = 4 * 400 * 399, 4 * 400 * 399, 2 * 800 * 799
    assert scores["rand_error"] == pytest.approx(1 - 2 * together / (true_pairs + pred_pairs))


def test_predicted_membrane_inside_a_cell_is_a_split() -> None:
    truth = _membranes([20], [20])
    split = _membranes([10, 20], [20])  # an extra membrane through the top cells
    scores = region_scores(truth, split)
    assert scores["vi_merge"] == 0.0 and scores["vi_split"] > 0 and scores["rand_error"] > 0
    table = region_table(boundary_regions(truth), boundary_regions(split))
    assert table.sum() == 4 * 400  # true membrane pixels left out, predicted ones kept as singletons


def test_region_scores_edge_cases() -> None:
    assert region_scores(np.zeros((5, 5)), np.zeros((5, 5)))["rand_error"] == 0.0  # one region each
    all_membrane = region_scores(np.ones((5, 5)), np.zeros((5, 5)))
    assert all(math.isnan(v) for v in all_membrane.values())


def test_region_tables_of_planes_combine_block_diagonally() -> None:
    truth, pred = _membranes([20], [20]), _membranes([20], [])
    one = region_table(boundary_regions(truth), boundary_regions(pred))
    both = region_scores_from_table(sparse.block_diag([one, one], format="csr"))
    # Two identical planes: same pair ratios (up to self-pairs), same conditional entropies.
    assert both["vi_merge"] == pytest.approx(1.0)  # bits: one binary choice per pixel
    assert both["rand_error"] == pytest.approx(region_scores(truth, pred)["rand_error"], rel=1e-3)


# --- instances ---------------------------------------------------------------------------


def _labelled_disks(specs: list[tuple[int, int, float]], shape: tuple[int, int] = (96, 96)) -> np.ndarray:
    labels = np.zeros(shape, dtype=np.int32)
    for i, (r, c, radius) in enumerate(specs, start=1):
        labels[disk((r, c), radius, shape=shape)] = i
    return labels


def test_disks_match_until_their_iou() -> None:
    truth = _labelled_disks([(25, 25, 10), (70, 70, 10)])
    pred = _labelled_disks([(25, 28, 10), (70, 70, 10), (10, 80, 4)])
    a, b = truth == 1, pred == 1
    shifted_iou = np.sum(a & b) / np.sum(a | b)
    assert 0.6 < shifted_iou < 0.8
    rows = instance_scores(match_instances(truth, pred))
    for row in rows:
        expected_tp = 2 if row["threshold"] <= shifted_iou else 1
        assert (row["tp"], row["fp"], row["fn"]) == (expected_tp, 3 - expected_tp, 2 - expected_tp)
        assert row["ap"] == pytest.approx(expected_tp / (expected_tp + (3 - expected_tp) + (2 - expected_tp)))
        assert row["precision"] == pytest.approx(expected_tp / 3) and row["recall"] == pytest.approx(expected_tp / 2)
    assert rows[0]["matched_iou"] == pytest.approx((shifted_iou + 1) / 2)
    assert rows[0]["pq"] == pytest.approx((shifted_iou + 1) / (2 + 0.5))
    assert [r["threshold"] for r in rows] == list(THRESHOLDS)


def test_optimal_matching_below_one_half_beats_greedy() -> None:
    # True 0 overlaps predicted 0 (0.45) and 1 (0.35); true 1 overlaps predicted 0 only (0.4).
    # Greedy by IoU matches (0, 0) and stops at one pair; the optimum is (0, 1) and (1, 0).
    ious = sparse.coo_array(([0.45, 0.35, 0.4], ([0, 0, 1], [0, 1, 0])), shape=(2, 2))
    assert sorted(match_pairs(ious, 0.3).tolist()) == [0.35, 0.4]
    assert match_pairs(ious, 0.42).tolist() == [0.45]


def test_two_halves_of_one_object_match_once_at_one_half() -> None:
    truth = np.zeros((10, 10), dtype=int)
    truth[2:6, 2:6] = 1
    pred = np.zeros((10, 10), dtype=int)
    pred[2:6, 2:4], pred[2:6, 4:6] = 1, 2  # each half has IoU exactly 0.5
    row = instance_scores(match_instances(truth, pred, thresholds=[0.5]))[0]
    assert (row["tp"], row["fp"], row["fn"]) == (1, 1, 0)


def test_instance_empty_cases() -> None:
    empty, some = np.zeros((16, 16), dtype=int), _labelled_disks([(8, 8, 4)], (16, 16))
    row = instance_scores(match_instances(empty, empty))[0]
    assert row["precision"] == row["recall"] == row["f1"] == row["ap"] == row["pq"] == 1.0
    assert math.isnan(row["matched_iou"])
    missed = instance_scores(match_instances(some, empty))[0]
    assert (missed["tp"], missed["fn"], missed["precision"], missed["recall"], missed["ap"]) == (0, 1, 0.0, 0.0, 0.0)
    invented = instance_scores(match_instances(empty, some))[0]
    assert (invented["fp"], invented["precision"], invented["recall"]) == (1, 0.0, 0.0)


def test_true_instances_use_ids_or_components() -> None:
    ids = np.zeros((12, 12), dtype=np.uint16)
    ids[2:6, 2:6], ids[2:6, 6:10] = 3, 9  # two touching objects
    assert set(np.unique(true_instances(ids))) == {0, 3, 9}
    binary = (ids > 0).astype(np.uint8) * 255
    assert true_instances(binary).max() == 1  # touching: one component
    listed = np.where(ids > 0, 7, 200)  # foreground listed as a value: components of it
    assert true_instances(listed, [7]).max() == 1
    diagonal = np.eye(4, dtype=bool)
    assert label_objects(diagonal).max() == 1  # objects are 8-connected


def test_instance_counts_add_up_over_planes() -> None:
    truth = _labelled_disks([(25, 25, 10), (70, 70, 10)])
    pred = _labelled_disks([(25, 30, 10), (72, 70, 9)])
    total = InstanceCounts()
    total += match_instances(truth, pred)
    total += match_instances(truth[::-1], pred[::-1])
    flipped_t, flipped_p = truth[::-1] + 2 * (truth[::-1] > 0), pred[::-1] + 2 * (pred[::-1] > 0)
    side_by_side = match_instances(np.hstack([truth, flipped_t]), np.hstack([pred, flipped_p]))
    assert total.tp.tolist() == side_by_side.tp.tolist() and total.n_true == side_by_side.n_true == 4
