"""Training patches held in memory: the patch store's split read once instead of per patch.

Reading a patch from the Zarr store costs a chunk read per array (image, mask, weights):
31 to 66 ms for a batch of 8 demo patches on the 2-core test machine, a large share of a
training step of the demo's network (benchmarks/training/README.md). :class:`PatchesInMemory`
reads each split once,
when it fits in :data:`MEMORY_LIMIT`, and gives the same items as
:class:`~unetseg.data.patches.PatchDataset` (the same augmentation, seeded the same way).
"""

from __future__ import annotations

import os

import numpy as np
import torch
import zarr

from unetseg.data.patches import PatchDataset, augment

__all__ = ["MEMORY_LIMIT", "PatchesInMemory"]

MEMORY_LIMIT = 2**30  # bytes of one split's arrays held in memory; larger splits are read per patch


class PatchesInMemory(PatchDataset):
    """A :class:`~unetseg.data.patches.PatchDataset` read into memory when it fits.

    Parameters
    ----------
    store, split, augment, seed :
        As for :class:`~unetseg.data.patches.PatchDataset`.
    limit : int
        Largest size in bytes of the split's arrays (image, mask, weights) to read into
        memory; a larger split is read patch by patch from the store, as by the parent.
    """

    def __init__(
        self, store: str | os.PathLike, split: str, *, augment: bool = False, seed: int = 0, limit: int = MEMORY_LIMIT
    ):
        super().__init__(store, split, augment=augment, seed=seed)
        group = zarr.open_group(self.store, mode="r")[split]
        names = ["image", "mask"] + (["weight"] if self.has_weights else [])
        self.in_memory = sum(group[name].nbytes for name in names) <= limit
        self.arrays = {name: group[name][:] for name in names} if self.in_memory else {}

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(image, mask, weight)``, as :meth:`PatchDataset.__getitem__ <unetseg.data.patches.PatchDataset>`."""
        if not self.in_memory:
            return super().__getitem__(i)
        image, mask = self.arrays["image"][i], self.arrays["mask"][i]
        weight = self.arrays["weight"][i] if self.has_weights else np.ones(mask.shape, np.float32)
        if self.do_augment:
            image, mask, weight = augment(image, mask, weight, rng=np.random.default_rng([self.seed, self.epoch, i]))
        # copies: the batch must not share memory with the arrays kept here
        return torch.tensor(image), torch.from_numpy(mask.astype(np.float32)), torch.tensor(weight)
