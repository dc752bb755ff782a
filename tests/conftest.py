"""Shared fixtures: small synthetic data and tiny models, so the suite runs offline and fast."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from unetseg.model import UNet

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def randomize_batch_norm(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give batch-norm layers non-trivial running statistics, as after training."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.copy_(torch.rand(module.num_features, generator=generator) * 0.2 - 0.1)
            module.running_var.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
    return model


@pytest.fixture
def tiny_unet():
    """A factory of small random U-Nets in eval mode."""

    def make(**settings):
        torch.manual_seed(settings.pop("seed", 0))
        defaults = dict(depth=2, base_channels=4)
        return randomize_batch_norm(UNet(**{**defaults, **settings})).eval()

    return make


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
