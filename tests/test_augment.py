"""Training-time augmentation and foreground sampling."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from unetseg.data.augment import AugmentConfig, augment_batch, elastic_grid
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
