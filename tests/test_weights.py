"""The paper's weight map on hand-made cells."""

from __future__ import annotations

import math

import numpy as np
import pytest

from unetseg.nn.weights import border_weights, class_balance_weights, unet_weight_map


def two_cells(gap: int) -> np.ndarray:
    objects = np.zeros((40, 60), dtype=np.int32)
    objects[10:30, 5:25] = 1
    objects[10:30, 25 + gap : 45 + gap] = 2
    return objects


def test_gap_between_touching_cells_gets_the_largest_weight():
    objects = two_cells(gap=2)  # columns 25 and 26 lie between the cells
    border = border_weights(objects, w0=10, sigma=5)
    # Column 25: 1 px from cell 1, 2 px from cell 2 (distances between pixel centres).
    assert border[20, 25] == pytest.approx(10 * math.exp(-((1 + 2) ** 2) / 50), rel=1e-5)
    assert border[20, 26] == pytest.approx(border[20, 25], rel=1e-5)  # symmetric gap
    assert border[20, 25] == border.max()
    assert (border[objects > 0] == 0).all()  # nothing inside the cells
    # Beside only one cell: d2 is the distance across to the other cell, so small weight.
    assert border[20, 2] < 0.1 * border[20, 25]
    assert border[0, 59] == 0  # far from both


def test_lone_object_gets_no_border_term():
    objects = np.zeros((30, 30), np.int32)
    objects[10:20, 10:20] = 1
    assert border_weights(objects).max() == 0


def test_class_balance_has_mean_one_and_inverse_frequencies():
    foreground = np.zeros((10, 10), bool)
    foreground[:2] = True  # 20 %
    weights = class_balance_weights(foreground)
    assert weights.mean() == pytest.approx(1.0)
    assert weights[0, 0] / weights[9, 9] == pytest.approx(0.8 / 0.2)
    assert (class_balance_weights(np.zeros((4, 4), bool)) == 1).all()


def test_weight_map_is_the_sum():
    objects = two_cells(gap=1)
    total = unet_weight_map(objects > 0, objects, w0=10, sigma=5)
    np.testing.assert_allclose(total, class_balance_weights(objects > 0) + border_weights(objects), rtol=1e-6)
    assert total.dtype == np.float32
