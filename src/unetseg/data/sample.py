"""The preprocessed sample: what preprocessing writes once and every later stage reads.

A preprocessed sample is a Zarr group with

``image`` : (Z, C, Y, X) float32
    Intensities normalised per channel by percentiles of the whole image.
``mask`` : (Z, Y, X) uint8, optional
    1 where the ground truth is foreground (after ``labels.foreground``), else 0; with
    ``labels.classes``, the class index 1..C (0 = background).
``objects`` : (Z, Y, X) int32, optional (with ``mask``)
    The true objects of each plane: the mask's own instance ids where it holds them,
    else the connected components of the foreground (of each class, with classes).
``target`` : (Z, Y, X) uint8, optional (masks with instance ids)
    What the network learns: ``mask`` with a two-pixel background line between touching
    objects (:mod:`unetseg.data.targets`). Without instance ids the target is ``mask``.

and attributes under ``"unetseg"`` recording the sample, its source files, axes, spatial
shape, the normalisation applied, ``labels.classes`` (``classes``, None for binary masks) and
whether ``objects`` are instance ids. 2D images have
``Z = 1``. Stages after preprocessing read only this group, never the raw files again, so
every file a workflow rule reads is one of its declared inputs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zarr

from unetseg.errors import InputError
from unetseg.io.images import ImageSource

__all__ = ["FORMAT", "PreprocessedSample", "open_sample", "open_preprocessed"]

FORMAT = 2


@dataclass(frozen=True)
class PreprocessedSample:
    """A preprocessed sample opened for reading (see the module docstring for its layout)."""

    path: Path
    group: zarr.Group
    attrs: dict[str, Any]

    @property
    def name(self) -> str:
        return self.attrs["sample"]

    @property
    def spatial_axes(self) -> str:
        return self.attrs["spatial_axes"]

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return tuple(self.attrs["spatial_shape"])

    @property
    def has_mask(self) -> bool:
        return "mask" in self.group

    @property
    def image(self) -> ImageSource:
        """Normalised intensities, ``(Z, C, Y, X)``."""
        return ImageSource(self.group["image"], "ZCYX", self.path)

    @property
    def mask(self) -> ImageSource:
        """Ground truth, ``(Z, 1, Y, X)``: 0/1, or class indices 0..C."""
        return ImageSource(self._array("mask"), "ZYX", self.path)

    @property
    def target(self) -> ImageSource:
        """Training target, ``(Z, 1, Y, X)`` of 0/1 (touching objects separated) or class indices."""
        return ImageSource(self._array("target" if "target" in self.group else "mask"), "ZYX", self.path)

    @property
    def objects(self) -> ImageSource:
        """True objects, ``(Z, 1, Y, X)`` of int32 (0 = background)."""
        return ImageSource(self._array("objects"), "ZYX", self.path)

    @property
    def classes(self) -> list[str] | None:
        """Class names of ``labels.classes`` (mask value ``i`` is ``classes[i - 1]``); None: binary."""
        classes = self.attrs.get("classes")
        return list(classes) if classes else None

    @property
    def instance_ids(self) -> bool:
        """Whether :attr:`objects` are the mask's own instance ids (not components)."""
        return bool(self.attrs.get("instance_ids", False))

    def _array(self, name: str) -> zarr.Array:
        if name not in self.group:
            raise InputError(
                f"{self.path}: sample {self.name!r} has no ground truth mask; training, validation and "
                "test samples need one (the mask column of the sample sheet)."
            )
        return self.group[name]


def open_sample(path: str | os.PathLike) -> PreprocessedSample:
    """Open a preprocessed sample written by :func:`unetseg.data.preprocess.preprocess_sample`."""
    path = Path(path)
    if not path.is_dir():
        raise InputError(f"{path}: preprocessed sample not found; run the workflow's preprocess step first.")
    group = zarr.open_group(str(path), mode="r")
    attrs = dict(group.attrs).get("unetseg")
    if not attrs or attrs.get("format") != FORMAT:
        raise InputError(f"{path}: not a preprocessed unetseg sample (format {FORMAT}); rerun preprocessing.")
    return PreprocessedSample(path, group, attrs)


def open_preprocessed(path: str | os.PathLike) -> tuple[zarr.Group, dict[str, Any]]:
    """The group and attributes of a preprocessed sample (:func:`open_sample` is the richer form)."""
    sample = open_sample(path)
    return sample.group, sample.attrs
