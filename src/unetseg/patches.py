"""Training and validation patches: a Zarr store chunked by patch, and a torch Dataset.

The store holds one group per split (``train``, ``val``) with

``image`` : (N, C, P, P) float32, one chunk per patch
``mask`` : (N, P, P) uint8, 1 = foreground
``index`` : attribute, ``[sample, z, y, x]`` of every patch's top-left corner

Patches lie on a regular grid with a stride of half a patch (the last row and column
shifted inwards to end at the border); images smaller than a patch are mirror-padded.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import zarr
from torch.utils.data import Dataset

from .errors import InputError
from .inference import read_window
from .io import ImageSource, atomic_path
from .preprocess import open_preprocessed

__all__ = ["patch_origins", "write_patches", "PatchDataset", "augment"]


def patch_origins(n: int, patch: int, stride: int) -> list[int]:
    """Start positions of patches of size ``patch`` covering ``[0, n)`` with ``stride``.

    The last patch ends at ``n``; an axis shorter than a patch gets one patch at 0 (the
    reader mirror-pads the rest).
    """
    if n <= patch:
        return [0]
    starts = list(range(0, n - patch, stride))
    return [*starts, n - patch]


def _sample_patches(path: Path, patch: int, stride: int) -> tuple[list, list, list]:
    group, attrs = open_preprocessed(path)
    if "mask" not in group:
        raise InputError(f"{path}: sample {attrs['sample']!r} has no mask; training and validation samples need one.")
    image = ImageSource(group["image"], "ZCYX")
    mask = ImageSource(group["mask"], "ZYX")
    z_count, _, height, width = image.shape
    images, masks, index = [], [], []
    for z in range(z_count):
        for y in patch_origins(height, patch, stride):
            for x in patch_origins(width, patch, stride):
                window = [(y, y + patch), (x, x + patch)]
                images.append(read_window(image, z, window))
                masks.append(read_window(mask, z, window)[0].astype(np.uint8))
                index.append([attrs["sample"], z, y, x])
    return images, masks, index


def write_patches(
    output: str | os.PathLike,
    splits: dict[str, Sequence[str | os.PathLike]],
    *,
    patch_size: int,
    stride: int | None = None,
) -> dict[str, int]:
    """Cut preprocessed samples into patches and write the patch store atomically.

    Parameters
    ----------
    output : path-like
        The ``.zarr`` store to write.
    splits : dict
        Split name (``"train"``, ``"val"``) to the preprocessed samples of that split.
    patch_size : int
        Side of a square patch; must suit the network (checked when training).
    stride : int, optional
        Distance between patch origins; default half a patch.

    Returns
    -------
    dict
        Number of patches per split.
    """
    stride = stride or max(1, patch_size // 2)
    counts = {}
    with atomic_path(output) as tmp:
        root = zarr.open_group(str(tmp), mode="w")
        channels: dict[int, str] = {}
        for split, paths in splits.items():
            images, masks, index = [], [], []
            for path in paths:
                i, m, idx = _sample_patches(Path(path), patch_size, stride)
                channels.setdefault(i[0].shape[0], idx[0][0])
                if len(channels) > 1:
                    found = ", ".join(f"{n} channel(s) in {sample!r}" for n, sample in channels.items())
                    raise InputError(f"samples differ in their number of channels ({found}); all images must match.")
                images += i
                masks += m
                index += idx
            if not images:
                raise InputError(f"no {split} samples: the sample sheet needs at least one '{split}' row.")
            group = root.create_group(split)
            stack = np.stack(images)
            group.create_array("image", data=stack, chunks=(1, *stack.shape[1:]))
            group.create_array("mask", data=np.stack(masks), chunks=(1, patch_size, patch_size))
            group.attrs["index"] = index
            counts[split] = len(images)
        root.attrs["unetseg"] = {"patch_size": patch_size, "stride": stride, "counts": counts}
    return counts


def augment(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Random flips and 90-degree rotations of a ``(C, P, P)`` image and its ``(P, P)`` mask."""
    k = int(rng.integers(4))
    image, mask = np.rot90(image, k, axes=(1, 2)), np.rot90(mask, k)
    if rng.random() < 0.5:
        image, mask = image[:, :, ::-1], mask[:, ::-1]
    return np.ascontiguousarray(image), np.ascontiguousarray(mask)


class PatchDataset(Dataset):
    """Patches of one split of a patch store, optionally augmented.

    Augmentation is seeded by ``(seed, epoch, index)``, so a run is reproducible whatever
    the number of DataLoader workers. Call :meth:`set_epoch` at the start of every epoch.
    """

    def __init__(self, store: str | os.PathLike, split: str, *, augment: bool = False, seed: int = 0):
        self.store, self.split, self.do_augment, self.seed = str(store), split, augment, seed
        self.epoch = 0
        group = zarr.open_group(self.store, mode="r")[split]
        self.length = group["image"].shape[0]
        self.channels = group["image"].shape[1]
        self.patch_size = group["image"].shape[-1]
        self._group = None  # opened lazily, once per worker process

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self._group is None:
            self._group = zarr.open_group(self.store, mode="r")[self.split]
        image, mask = self._group["image"][i], self._group["mask"][i]
        if self.do_augment:
            image, mask = augment(image, mask, np.random.default_rng([self.seed, self.epoch, i]))
        return torch.from_numpy(image), torch.from_numpy(mask.astype(np.float32))
