"""Per-object measurements of one segmented sample, from its files.

The labels are the sample's ``instances`` file and the intensities its raw image (not the
normalised one), so the measurements are in the units of the microscope. Images up to
:data:`IN_MEMORY_PIXELS` are measured in memory; larger ones block by block, out of core,
with the same results (:func:`unetseg.objects.measure.measure_objects_chunked`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from unetseg.io.files import atomic_path
from unetseg.io.images import ImageSource, open_image
from unetseg.objects.measure import measure_objects, measure_objects_chunked, summarize

__all__ = ["IN_MEMORY_PIXELS", "ChannelsFirst", "measure_sample", "measure_labels"]

IN_MEMORY_PIXELS = 2**26  # 64 Mpixel: a few hundred MB per channel as float64


class ChannelsFirst:
    """A lazy ``(C, Y, X)`` or ``(C, Z, Y, X)`` view of an image, sliced block by block."""

    def __init__(self, source: ImageSource):
        self.source = source
        z_count, channels, height, width = source.shape
        self.stack = "Z" in source.axes
        self.shape = (channels, z_count, height, width) if self.stack else (channels, height, width)
        self.ndim, self.dtype = len(self.shape), source.dtype

    def __getitem__(self, key: tuple[slice, ...]) -> np.ndarray:
        channels, *spatial = key
        if not self.stack:
            return self.source.read(0, *spatial)[channels]
        zs, ys, xs = spatial
        planes = [self.source.read(z, ys, xs)[channels] for z in range(*zs.indices(self.shape[1]))]
        return np.stack(planes, axis=1)


def measure_sample(
    image: str | Path, instances: str | Path, mask: str | Path, output: str | Path, *, sample: str,
    axes: str | None = None, pixel_size: Any = None, classes: list[str] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Measure every object of ``instances`` in the raw ``image``; write the CSV atomically.

    With ``classes`` (the model's class names; ``mask`` then holds class indices), every
    object gets a ``class`` column (an object lies in one class, see
    :mod:`unetseg.objects.components`) and the summary counts the objects of each class.

    Returns
    -------
    dict
        The sample's row of ``measurements/summary.csv``
        (:func:`unetseg.objects.measure.summarize`), with ``object_count_{class}`` columns.
    """
    with open_image(image, axes=axes) as raw, open_image(instances) as labels_file:
        labels = labels_file.array if "Z" in labels_file.axes else _plane(labels_file)
        view = ChannelsFirst(raw)
        pixel_size = None if pixel_size is None else tuple(pixel_size)[-labels.ndim :]
        if np.prod(labels.shape) <= IN_MEMORY_PIXELS:
            table = measure_objects(np.asarray(labels[...]), view[(slice(None),) * view.ndim], pixel_size=pixel_size)
        else:
            table = measure_objects_chunked(labels, view, pixel_size=pixel_size)
    lookup = _object_classes(instances, mask) if classes else None
    return _finish(table, output, sample, _foreground_fraction(mask), classes, lookup)


def measure_labels(
    image: str | Path, labels: np.ndarray, mask: np.ndarray, output: str | Path, *, sample: str,
    axes: str | None = None, pixel_size: Any = None, classes: list[str] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """:func:`measure_sample` of labels and a mask held in memory (the batch's path for
    images that fit in memory): the same table and row, without reading them back."""
    with open_image(image, axes=axes) as raw:
        view = ChannelsFirst(raw)
        pixel_size = None if pixel_size is None else tuple(pixel_size)[-labels.ndim :]
        table = measure_objects(labels, view[(slice(None),) * view.ndim], pixel_size=pixel_size)
    lookup = None
    if classes:
        lookup = np.zeros(int(labels.max(initial=0)) + 1, dtype=np.int64)
        lookup[labels] = mask  # every pixel of an object has its class
    fraction = np.count_nonzero(mask) / mask.size if mask.size else float("nan")
    return _finish(table, output, sample, fraction, classes, lookup)


def _finish(
    table: Any, output: str | Path, sample: str, fraction: float, classes: list[str] | None, lookup: Any
) -> dict[str, Any]:
    """Add the class column, write the CSV atomically, return the summary row."""
    row: dict[str, Any] = {}
    if classes:
        names = np.array(["background", *classes], dtype=object)
        table.insert(1, "class", names[lookup[table["label"].to_numpy()]])
        row = {f"object_count_{name}": int((table["class"] == name).sum()) for name in classes}
    with atomic_path(output) as tmp:
        table.to_csv(tmp, index=False)
    return {**summarize(table, sample=sample, foreground_fraction=fraction), **row}


def _object_classes(instances: str | Path, mask: str | Path) -> np.ndarray:
    """``lookup[id]``: the class index of every object id, read plane by plane."""
    lookup = np.zeros(1, dtype=np.int64)
    with open_image(instances) as labels, open_image(mask) as classes:
        for z in range(labels.shape[0]):
            ids, values = labels.read(z)[0].astype(np.int64), classes.read(z)[0]
            if ids.max(initial=0) >= len(lookup):
                lookup = np.concatenate([lookup, np.zeros(int(ids.max()) + 1 - len(lookup), np.int64)])
            lookup[ids] = values  # every pixel of an object has its class
    return lookup


def _plane(source: ImageSource) -> Any:
    """The ``(Y, X)`` array of a 2D label file (its array may carry singleton axes)."""
    array = source.array
    return array if array.ndim == 2 else np.asarray(source.read(0)[0])


def _foreground_fraction(mask: str | Path) -> float:
    """Share of foreground pixels of a mask file, read plane by plane."""
    total = foreground = 0
    with open_image(mask) as source:
        for z in range(source.shape[0]):
            plane = source.read(z)[0]
            total, foreground = total + plane.size, foreground + int(np.count_nonzero(plane))
    return foreground / total if total else float("nan")
