"""Training patches held in memory give the items the patch store gives."""

from __future__ import annotations

import pytest
import torch

from unetseg.data.patches import PatchDataset
from unetseg.training.loading import PatchesInMemory


@pytest.mark.parametrize("limit", [2**30, 0])
def test_patches_in_memory_match_the_store(tmp_path, limit):
    from test_training import one_train_one_val

    store, _ = one_train_one_val(tmp_path, weight_map={"w0": 10, "sigma": 5, "objects": "foreground"})
    for split, augment in (("train", True), ("val", False)):
        ours, theirs = (
            PatchesInMemory(store, split, augment=augment, seed=7, limit=limit),
            PatchDataset(store, split, augment=augment, seed=7),
        )
        assert ours.in_memory == (limit > 0) and len(ours) == len(theirs) > 1
        for epoch in (0, 3):
            ours.set_epoch(epoch)
            theirs.set_epoch(epoch)
            for i in range(len(ours)):
                for a, b in zip(ours[i], theirs[i]):
                    assert a.dtype == b.dtype and torch.equal(a, b)


def test_items_do_not_share_memory_with_the_patches_kept(tiny_patches):
    dataset = PatchesInMemory(tiny_patches, "val")
    image, mask, weight = dataset[0]
    kept = dataset.arrays["image"][0].copy()
    image += 1
    weight += 1
    assert (dataset.arrays["image"][0] == kept).all() and not dataset.has_weights
