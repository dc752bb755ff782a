"""Training and validation patches: a Zarr store chunked by patch, and a torch Dataset.

The store holds one group per split (``train``, ``val``) with

``image`` : (N, C, P, P) float32, one chunk per patch
``mask`` : (N, P, P) uint8, 1 = foreground (class indices 0..C with ``labels.classes``)
``index`` : attribute, ``[sample, z, y, x]`` of every patch's top-left corner

Patches lie on a regular grid with a stride of half a patch (the last row and column
shifted inwards to end at the border); images smaller than a patch are mirror-padded.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import zarr
from torch.utils.data import Dataset, Sampler

from unetseg.data.augment import augment
from unetseg.data.sample import PreprocessedSample, open_sample
from unetseg.errors import InputError
from unetseg.io.files import atomic_path
from unetseg.io.images import ImageSource
from unetseg.io.windows import read_window
from unetseg.nn.weights import unet_weight_map
from unetseg.objects.labels import label_objects

__all__ = ["patch_origins", "write_patches", "PatchDataset", "ForegroundSampler", "augment"]


def patch_origins(n: int, patch: int, stride: int) -> list[int]:
    """Start positions of patches of size ``patch`` covering ``[0, n)`` with ``stride``.

    The last patch ends at ``n``; an axis shorter than a patch gets one patch at 0 (the
    reader mirror-pads the rest).
    """
    if n <= patch:
        return [0]
    starts = list(range(0, n - patch, stride))
    return [*starts, n - patch]


def _plane_weights(sample: PreprocessedSample, z: int, weight_map: dict) -> np.ndarray:
    """The paper's weight map of plane ``z`` (computed on the whole plane, then cut)."""
    target = sample.target.read(z)[0]
    truth = target > 0
    if sample.attrs.get("target") == "contact":
        # Objects without their contact pixels: the border term peaks on the contacts.
        objects = np.where(target == 1, sample.objects.read(z)[0], 0)
        return unet_weight_map(truth, objects, w0=weight_map.get("w0", 10.0), sigma=weight_map.get("sigma", 5.0))
    if weight_map.get("objects", "foreground") == "background":
        # The cells that membranes enclose, 4-connected as the region scores count them
        # (a one-pixel diagonal membrane separates two cells).
        objects = label_objects(~truth, connectivity=1)
    else:
        # The instance ids where the target keeps them: touching objects are apart, so the
        # border term peaks on the lines between them.
        objects = np.where(truth, sample.objects.read(z)[0], 0)
    return unet_weight_map(truth, objects, w0=weight_map.get("w0", 10.0), sigma=weight_map.get("sigma", 5.0))


def _sample_patches(path: Path, patch: int, stride: int, weight_map: dict | None, context: int = 0) -> dict[str, list]:
    sample = open_sample(path)
    if not sample.has_mask:
        raise InputError(f"{path}: sample {sample.name!r} has no mask; training and validation samples need one.")
    image, mask, attrs = sample.image, sample.target, sample.attrs
    z_count, _, height, width = image.shape
    out: dict[str, Any] = {
        "image": [],
        "mask": [],
        "weight": [],
        "index": [],
        "classes": sample.attrs.get("classes"),
        "separated": "target" in sample.group,
        "target": attrs.get("target") or ("line" if "target" in sample.group else "foreground"),
    }
    for z in range(z_count):
        weights = ImageSource(_plane_weights(sample, z, weight_map), "YX") if weight_map else None
        target = patch - 2 * context  # what a valid-padded network outputs for a patch
        for y in patch_origins(height, target, stride):
            for x in patch_origins(width, target, stride):
                window = [(y - context, y - context + patch), (x - context, x - context + patch)]
                out["image"].append(read_window(image, z, window))
                out["mask"].append(read_window(mask, z, window)[0].astype(np.uint8))
                if weights is not None:
                    out["weight"].append(read_window(weights, 0, window)[0])
                out["index"].append([attrs["sample"], z, y, x])
    return out


def write_patches(
    output: str | os.PathLike,
    splits: dict[str, Sequence[str | os.PathLike]],
    *,
    patch_size: int,
    stride: int | None = None,
    weight_map: dict | None = None,
    context: int = 0,
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
    weight_map : dict, optional
        Store the U-Net paper's loss weights beside the patches (see
        :func:`unetseg.weights.unet_weight_map`): ``w0``, ``sigma``, and ``objects``
        (``"foreground"``: the mask's objects, e.g. nuclei; ``"background"``: the regions
        the foreground encloses, e.g. cells between membranes).
    context : int
        For valid-padded networks, their margin: patches are placed so that their central
        ``patch - 2 * context`` pixels (what the network outputs) tile the image, and read
        with mirror padding beyond its borders, the paper's overlap-tile strategy.

    Returns
    -------
    dict
        Number of patches per split.
    """
    if not 0 <= 2 * context < patch_size:
        raise InputError(f"patch size {patch_size} leaves no output for a network margin of {context} pixels.")
    stride = stride or max(1, (patch_size - 2 * context) // 2)
    counts = {}
    with atomic_path(output) as tmp:
        root = zarr.open_group(str(tmp), mode="w")
        channels: dict[int, str] = {}
        classes: dict[str, Any] = {}  # class names of the first sample with each labelling
        separated = False  # any target with lines between touching objects
        kinds: dict[str, str] = {}  # target kind -> first sample with it
        for split, paths in splits.items():
            parts: dict[str, list] = {"image": [], "mask": [], "weight": [], "index": []}
            for path in paths:
                sample = _sample_patches(Path(path), patch_size, stride, weight_map, context)
                channels.setdefault(sample["image"][0].shape[0], sample["index"][0][0])
                if len(channels) > 1:
                    found = ", ".join(f"{n} channel(s) in {name!r}" for n, name in channels.items())
                    raise InputError(f"samples differ in their number of channels ({found}); all images must match.")
                classes.setdefault(repr(sample["classes"]), (sample["index"][0][0], sample["classes"]))
                if len(classes) > 1:
                    found = "; ".join(f"{name!r}: {names or 'binary'}" for name, names in classes.values())
                    raise InputError(
                        f"samples were preprocessed with different labels.classes ({found}); "
                        "preprocess them all with the same labels."
                    )
                separated |= sample["separated"]
                if sample["target"] != "foreground":
                    kinds.setdefault(sample["target"], sample["index"][0][0])
                if len(kinds) > 1:
                    found = ", ".join(f"{kind} in {name!r}" for kind, name in kinds.items())
                    raise InputError(
                        f"samples were preprocessed with different labels.separate_touching ({found}); "
                        "preprocess them all with the same setting."
                    )
                for key in parts:
                    parts[key] += sample[key]
            if not parts["image"]:
                raise InputError(f"no {split} samples: the sample sheet needs at least one '{split}' row.")
            group = root.create_group(split)
            stack = np.stack(parts["image"])
            group.create_array("image", data=stack, chunks=(1, *stack.shape[1:]))
            group.create_array("mask", data=np.stack(parts["mask"]), chunks=(1, patch_size, patch_size))
            if parts["weight"]:
                group.create_array("weight", data=np.stack(parts["weight"]), chunks=(1, patch_size, patch_size))
            group.attrs["index"] = parts["index"]
            group.attrs["foreground"] = [bool(m.any()) for m in parts["mask"]]
            counts[split] = len(parts["image"])
        root.attrs["unetseg"] = {
            "patch_size": patch_size, "stride": stride, "counts": counts, "weight_map": weight_map,
            "context": context, "classes": next(iter(classes.values()))[1] if classes else None,
            "separated_target": separated and "contact" not in kinds,
            "target": next(iter(kinds), "foreground"),
        }  # fmt: skip
    return counts


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
        self.has_weights = "weight" in group
        # labels.classes ({name: mask values}) or None for binary masks: the network's outputs.
        attrs = zarr.open_group(self.store, mode="r").attrs.get("unetseg", {})
        self.classes = attrs.get("classes")
        # Whether touching objects were kept apart in the targets (unetseg.data.targets), and
        # how: "line" (binary target), "contact" (three classes) or "foreground" (not kept apart).
        self.separated_target = bool(attrs.get("separated_target", False))
        self.target = attrs.get("target") or ("line" if self.separated_target else "foreground")
        flags = group.attrs.get("foreground")
        self.has_foreground = (
            np.asarray(flags, bool) if flags is not None else np.array([m.any() for m in group["mask"][:]], bool)
        )
        self._group = None  # opened lazily, once per worker process

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(image, mask, weight)``; the weight is 1 everywhere without a stored weight map."""
        if self._group is None:
            self._group = zarr.open_group(self.store, mode="r")[self.split]
        image, mask = self._group["image"][i], self._group["mask"][i]
        weight = self._group["weight"][i] if self.has_weights else np.ones(mask.shape, np.float32)
        if self.do_augment:
            image, mask, weight = augment(image, mask, weight, rng=np.random.default_rng([self.seed, self.epoch, i]))
        return torch.from_numpy(image), torch.from_numpy(mask.astype(np.float32)), torch.from_numpy(weight)


class ForegroundSampler(Sampler[int]):
    """Patch indices for one epoch, a share of them forced to contain foreground.

    Each epoch draws ``len(dataset)`` indices: ``round(share * n)`` among the patches with
    foreground, the rest among all patches, shuffled; seeded by ``(seed, epoch)``.
    """

    def __init__(self, has_foreground: np.ndarray, share: float, *, seed: int = 0):
        if not 0 <= share <= 1:
            raise ValueError(f"foreground share must be in [0, 1], not {share}")
        self.has_foreground, self.share, self.seed, self.epoch = np.asarray(has_foreground, bool), share, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.has_foreground)

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.epoch])
        n = len(self.has_foreground)
        with_foreground = np.flatnonzero(self.has_foreground)
        forced = round(self.share * n) if with_foreground.size else 0
        picks = np.concatenate([rng.choice(with_foreground, forced), rng.choice(n, n - forced)])
        return iter(rng.permutation(picks).tolist())
