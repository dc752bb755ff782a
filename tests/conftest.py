"""Shared fixtures: small synthetic data and tiny models, so the suite runs offline and fast."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from unetseg.data.demo import write_demo_dataset
from unetseg.data.patches import write_patches
from unetseg.data.preprocess import preprocess_sample
from unetseg.nn.model import UNet

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


@pytest.fixture(scope="session")
def tiny_patches(tmp_path_factory):
    """A patch store cut from three 64x64 demo images (two train, one val), patches of 32;
    binary targets (touching nuclei apart by a background line), so one sigmoid output."""
    root = tmp_path_factory.mktemp("patches")
    write_demo_dataset(root / "data", shape=(64, 64), n_train=2, n_val=1, n_test=0, n_predict=0)
    pre = {}
    for sample in ("train_00", "train_01", "val_00"):
        pre[sample] = root / f"{sample}.zarr"
        image, mask = root / f"data/images/{sample}.tif", root / f"data/masks/{sample}.tif"
        preprocess_sample(sample, image, pre[sample], mask_path=mask, separate="line")
    store = root / "patches.zarr"
    splits = {"train": [pre["train_00"], pre["train_01"]], "val": [pre["val_00"]]}
    assert write_patches(store, splits, patch_size=32) == {"train": 18, "val": 9}
    return store
