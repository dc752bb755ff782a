"""Training-time augmentation and foreground sampling."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from unetseg.data.augment import AugmentConfig, affine_grid, augment_batch, elastic_grid
from unetseg.data.patches import ForegroundSampler


def test_zero_displacement_is_the_identity():
    grid = elastic_grid((2, 20, 30), sigma=0.0, points=3, generator=torch.Generator().manual_seed(0))
    image = torch.rand(2, 1, 20, 30)
    out = torch.nn.functional.grid_sample(image, grid, mode="bilinear", align_corners=True)
    torch.testing.assert_close(out, image)


def test_elastic_deformation_moves_image_mask_and_weights_together():
    generator = torch.Generator().manual_seed(1)
    mask = torch.zeros(3, 64, 64)
    mask[:, 20:44, 16:40] = 1
    image = mask[:, None].clone()  # the image is the mask: deformed alike, they must agree
    weight = mask * 5 + 1
    config = AugmentConfig(elastic=True, elastic_sigma=6, intensity=False)
    out_image, out_mask, out_weight = augment_batch(image, mask, weight, config, generator=generator)
    assert not torch.equal(out_mask, mask)  # it did deform
    assert set(out_mask.unique().tolist()) <= {0.0, 1.0}  # nearest for masks: still labels
    assert set(out_weight.unique().tolist()) <= {1.0, 6.0}
    agree = ((out_image[:, 0] > 0.5) == (out_mask > 0.5)).float().mean()
    assert agree > 0.98  # bilinear and nearest differ only along edges
    assert torch.equal(out_weight, out_mask * 5 + 1)


def test_affine_grid_without_rotation_or_zoom_is_the_identity():
    grid = affine_grid((2, 20, 30), rotate=0.0, scale=0.0, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(grid, elastic_grid((2, 20, 30), sigma=0.0, points=3, generator=None))


def test_affine_grid_rotates_about_the_centre_by_at_most_its_angle():
    # a 180-degree bound on a 64-pixel patch: rotated pixels keep their distance to the centre
    grid = affine_grid((50, 64, 64), rotate=180.0, scale=0.0, generator=torch.Generator().manual_seed(2))
    identity = elastic_grid((1, 64, 64), sigma=0.0, points=3, generator=None)
    torch.testing.assert_close(grid.norm(dim=-1), identity.norm(dim=-1).expand(50, -1, -1))
    corner, reference = grid[:, 0, -1], identity[0, 0, -1]  # top-right corner: angle of each draw
    angles = torch.rad2deg(torch.atan2(corner[:, 1], corner[:, 0]) - torch.atan2(reference[1], reference[0]))
    angles = (angles + 180) % 360 - 180
    assert angles.abs().max() <= 180 and angles.std() > 60  # spread over the whole range
    small = affine_grid((50, 64, 64), rotate=10.0, scale=0.0, generator=torch.Generator().manual_seed(2))
    corner = small[:, 0, -1]
    angles = torch.rad2deg(torch.atan2(corner[:, 1], corner[:, 0]) - torch.atan2(reference[1], reference[0]))
    assert angles.abs().max() <= 10 + 1e-4


def test_affine_grid_zooms_within_its_range_without_shear():
    # 40 x 80 pixels: the zoom is the same along both axes in pixels, not in [-1, 1] units
    grid = affine_grid((30, 40, 80), rotate=0.0, scale=0.25, generator=torch.Generator().manual_seed(3))
    identity = elastic_grid((1, 40, 80), sigma=0.0, points=3, generator=None)[0]
    zoom_x = identity[0, -1, 0] / grid[:, 0, -1, 0]  # > 1: magnified (reads a smaller region)
    zoom_y = identity[-1, 0, 1] / grid[:, -1, 0, 1]
    torch.testing.assert_close(zoom_x, zoom_y)
    assert zoom_x.min() >= 1 / 1.25 - 1e-5 and zoom_x.max() <= 1.25 + 1e-5
    assert zoom_x.min() < 0.9 and zoom_x.max() > 1.1


def test_rotation_moves_image_mask_and_weights_together():
    mask = torch.zeros(4, 64, 64)
    mask[:, 10:30, 12:50] = 1
    image, weight = mask[:, None].clone(), mask * 5 + 1
    config = AugmentConfig(rotate=180.0, scale=0.2, elastic=True, elastic_sigma=4, intensity=False)
    out_image, out_mask, out_weight = augment_batch(image, mask, weight, config,
                                                    generator=torch.Generator().manual_seed(4))  # fmt: skip
    assert not torch.equal(out_mask, mask)
    assert set(out_mask.unique().tolist()) <= {0.0, 1.0}
    assert ((out_image[:, 0] > 0.5) == (out_mask > 0.5)).float().mean() > 0.97
    assert torch.equal(out_weight, out_mask * 5 + 1)


def test_augmentation_is_reproducible_from_its_seed():
    image, mask, weight = torch.rand(2, 2, 32, 32), torch.zeros(2, 32, 32), torch.ones(2, 32, 32)
    first = augment_batch(image, mask, weight, AugmentConfig(), generator=torch.Generator().manual_seed(7))
    again = augment_batch(image, mask, weight, AugmentConfig(), generator=torch.Generator().manual_seed(7))
    other = augment_batch(image, mask, weight, AugmentConfig(), generator=torch.Generator().manual_seed(8))
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.equal(first[0], other[0])


def test_foreground_sampler_forces_its_share():
    flags = np.zeros(100, bool)
    flags[:10] = True
    sampler = ForegroundSampler(flags, 0.5, seed=3)
    picks = list(sampler)
    assert len(picks) == 100 and sum(flags[picks]) >= 50
    sampler.set_epoch(1)
    assert list(sampler) != picks
    assert sum(flags[list(ForegroundSampler(flags, 0.0))]) < 40
    assert len(list(ForegroundSampler(np.zeros(5, bool), 0.9))) == 5  # no foreground anywhere: plain draws
    with pytest.raises(ValueError):
        ForegroundSampler(flags, 1.5)
