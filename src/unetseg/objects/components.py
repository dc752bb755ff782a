"""Instance labels: the connected components of a mask, out of core.

Pixels of different nonzero values (the classes of a multi-class mask) never belong to
the same object: each class's components are labelled, and a binary mask gets the
components of its foreground.

The mask is labelled in blocks, in two passes, so memory holds a few blocks, the faces
between blocks and one integer per label, never the whole image:

1. label every block with :func:`scipy.ndimage.label` (in parallel, with dask) and keep
   its number of labels and its outer faces. For every chunk border, the two faces that
   meet there (the last plane before the border and the first after it, across the whole
   image) are labelled together: labels joined there belong to one object. The connected
   components of that graph of labels (:func:`scipy.sparse.csgraph.connected_components`)
   give a table from block labels to final ids.
2. label every block again (same input, same labels), map it through the table and
   write it.

Every pair of touching pixels in different blocks lies on both sides of some chunk
border, within the two planes labelled there, so no contact is missed, including
diagonal ones across block corners. ``dask_image.ndmeasure.label`` merges labels the same
way but in one dask graph that keeps every block's labels in memory until the merge is
solved (4 bytes per pixel) and whose construction grows with the square of the number of
chunks (dask/dask-image#391; about a minute for 130 chunks with dask 2026.8), so it is
not used here.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np
import scipy.ndimage as ndi
import zarr
from scipy import sparse
from scipy.sparse.csgraph import connected_components
from skimage.segmentation import expand_labels

from unetseg.errors import InputError
from unetseg.io.files import TIFF_TILE, atomic_path, write_tiled_tiff
from unetseg.io.images import is_tiff_path, is_zarr_path

__all__ = ["DEFAULT_CHUNK", "label_components", "label_array", "fits_one_block", "fill_gaps"]

DEFAULT_CHUNK = {"YX": 1024, "ZYX": 256}  # edge of a labelling block, per spatial axis
MAX_LABELS = np.iinfo(np.int32).max  # scipy labels blocks and components in int32


def _name(array: Any) -> str:
    """How to call ``array`` in an error message: its store for a Zarr array."""
    if isinstance(array, zarr.Array):
        return f"Zarr array {array.store_path}"
    return f"{type(array).__name__} of shape {tuple(np.shape(array))}"


def _lazy_mask(mask: Any, spatial_axes: str, chunk: int, output: Path) -> da.Array:
    """A dask view of ``mask`` in blocks of ``chunk`` (a Zarr array is read chunk by chunk)."""
    shape = tuple(mask.shape)
    squeeze = spatial_axes == "YX" and len(shape) == 3 and shape[0] == 1  # a one-plane stack
    if len(shape) != len(spatial_axes) + squeeze:
        raise InputError(
            f"{output}: the mask ({_name(mask)}) has {len(shape)} dimensions but "
            f"spatial_axes={spatial_axes!r} needs {len(spatial_axes)}; pass a (Y, X) mask with "
            "'YX' or a (Z, Y, X) stack with 'ZYX'."
        )
    chunks = (chunk,) * len(shape)
    if isinstance(mask, da.Array):
        blocks = mask.rechunk(chunks)
    elif isinstance(mask, zarr.Array):
        blocks = da.from_zarr(mask, chunks=chunks)
    else:
        blocks = da.from_array(np.asarray(mask), chunks=chunks)
    return blocks[0] if squeeze else blocks


def _label(block: np.ndarray, structure: np.ndarray) -> tuple[np.ndarray, int]:
    """Connected components of each nonzero value of ``block`` (int32 labels, count)."""
    values = np.unique(block)
    if np.count_nonzero(values) <= 1:  # binary: one value besides the background
        return ndi.label(block, structure=structure)
    labels = np.zeros(block.shape, dtype=np.int32)
    count = 0
    for value in values[values != 0]:
        found, n = ndi.label(block == value, structure=structure)
        labels[found > 0] = found[found > 0] + count
        count += n
    return labels, count


def _label_faces(block: np.ndarray, structure: np.ndarray) -> tuple[int, list[tuple[np.ndarray, ...]], np.ndarray]:
    """A block's number of labels, per axis its labels and values on the first and last
    plane, and the pixel count of each label."""
    labels, count = _label(block, structure)
    sizes = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    faces = [
        (labels.take(0, axis=a), labels.take(-1, axis=a), block.take(0, axis=a), block.take(-1, axis=a))
        for a in range(block.ndim)
    ]
    return count, faces, sizes


def _joined(faces: np.ndarray, values: np.ndarray, structure: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pairs of labels connected within ``faces`` (two planes meeting at a chunk border)
    through pixels of one value (``values``: the mask there)."""
    components, _ = _label(values, structure)
    found = components > 0
    pairs = np.unique(np.stack([components[found], faces[found]]), axis=1)  # sorted by component
    same = pairs[0, 1:] == pairs[0, :-1]
    return pairs[1, :-1][same], pairs[1, 1:][same]


def _offsets(counts: np.ndarray) -> np.ndarray:
    """Labels in the blocks before each block (C order): block labels + offset are global."""
    return (np.cumsum(counts) - counts.ravel()).reshape(counts.shape)


def _merge_table(
    counts: np.ndarray, faces: dict, chunks: tuple[tuple[int, ...], ...], structure: np.ndarray
) -> np.ndarray:
    """The table from global block labels to final ids (``table[0] == 0``).

    ``counts[b]`` is the number of labels of block ``b`` and ``faces[b][axis]`` its labels
    on its first and last plane along ``axis``, then its mask values there; ``chunks`` are
    the blocks' sizes.
    """
    grid, offsets = counts.shape, _offsets(counts)
    bounds = [np.cumsum((0,) + c) for c in chunks]
    shape = tuple(int(b[-1]) for b in bounds)
    edges = [(np.zeros(0, np.int64), np.zeros(0, np.int64))]
    for axis, border in ((a, k) for a in range(len(grid)) for k in range(grid[a] - 1)):
        pair = np.zeros(shape[:axis] + (2,) + shape[axis + 1 :], dtype=np.int32)  # planes either side
        values = None
        for rest in np.ndindex(*grid[:axis], *grid[axis + 1 :]):
            index, after = (rest[:axis] + (k,) + rest[axis:] for k in (border, border + 1))
            region = [slice(bounds[a][i], bounds[a][i + 1]) for a, i in enumerate(index)]
            last, first = faces[index][axis], faces[after][axis]
            for side, (block, plane, value) in enumerate(((index, last[1], last[3]), (after, first[0], first[2]))):
                if values is None:
                    values = np.zeros(pair.shape, dtype=value.dtype)
                region[axis] = side
                pair[tuple(region)] = np.where(plane > 0, plane + offsets[block], 0)
                values[tuple(region)] = value
        edges.append(_joined(pair, values, structure))
    i, j = (np.concatenate(ends) for ends in zip(*edges))
    total = int(counts.sum())
    graph = sparse.coo_array((np.ones(len(i), np.int8), (i, j)), shape=(total + 1, total + 1))
    _, table = connected_components(graph.tocsr(), directed=False)
    background = table[0]  # swap ids so that the background (label 0) stays 0
    return np.where(table == background, 0, np.where(table == 0, background, table))


def _drop_small(table: np.ndarray, sizes: np.ndarray, min_size: int) -> np.ndarray:
    """``table`` with objects of fewer than ``min_size`` pixels mapped to 0, the rest
    renumbered 1..n in their order. ``sizes[i]`` is the pixel count of global block label
    ``i + 1``."""
    totals = np.bincount(table[1:], weights=sizes, minlength=int(table.max()) + 1)
    keep = totals >= min_size
    keep[0] = False
    renumber = np.cumsum(keep) * keep
    return renumber[table]


def fill_gaps(labels: np.ndarray, gap: int) -> np.ndarray:
    """Close the lines between touching objects, plane by plane: a background pixel with
    two different objects within ``gap`` pixels (a ``2 gap + 1`` square) joins the nearer
    one (Euclidean distance at most ``gap``; :func:`skimage.segmentation.expand_labels`).

    A model trained on separated targets (:mod:`unetseg.data.targets`) predicts touching
    objects with a background line between them; this gives the line's pixels back to the
    objects without merging them, and leaves free borders and isolated specks alone.

    Parameters
    ----------
    labels : (Y, X) or (Z, Y, X) ndarray of int
        Instance ids, 0 = background; stacks are filled plane by plane.
    """
    if labels.ndim == 3:
        return np.stack([fill_gaps(plane, gap) for plane in labels])
    if gap < 1 or not labels.any():
        return labels
    size = 2 * gap + 1
    empty = np.iinfo(labels.dtype).max
    highest = ndi.maximum_filter(labels, size=size)
    lowest = ndi.minimum_filter(np.where(labels > 0, labels, empty), size=size)
    between = (labels == 0) & (highest > 0) & (lowest != empty) & (lowest != highest)
    if not between.any():
        return labels
    return np.where(between, expand_labels(labels, gap), labels).astype(labels.dtype)


def fits_one_block(spatial_shape: tuple[int, ...], spatial_axes: str = "YX") -> bool:
    """Whether :func:`label_components` labels a mask of this shape as one block (with
    the default chunk), so that :func:`label_array` gives the very same ids."""
    return all(n <= DEFAULT_CHUNK[spatial_axes] for n in spatial_shape)


def label_array(
    mask: np.ndarray, *, connectivity: int | None = None, min_size: int = 0, gap: int = 0, within: Any = None
) -> tuple[np.ndarray, int]:
    """The labels of :func:`label_components` for a mask held in memory, with no Dask
    graph and no file: ``(labels, number of objects)``, labels uint32 of the mask's shape.

    For a mask that fits one labelling block (:func:`fits_one_block`) the ids are those
    :func:`label_components` writes; for larger masks the objects are the same but may be
    numbered in another order. The options are those of :func:`label_components`.
    """
    mask = np.asarray(mask)
    structure = ndi.generate_binary_structure(mask.ndim, mask.ndim if connectivity is None else connectivity)
    labels, count = _label(mask, structure)
    table = np.arange(count + 1)
    if min_size > 1:
        table = _drop_small(table, np.bincount(labels.ravel(), minlength=count + 1)[1:], min_size)
    labels = table.astype(np.uint32)[labels]
    if gap > 0:
        labels = fill_gaps(labels, gap)
    if within is not None:
        labels[np.asarray(within) == 0] = 0
    return labels, int(table.max(initial=0))


def _relabel(
    block: np.ndarray, structure: np.ndarray, table: np.ndarray, offsets: np.ndarray, block_info: dict
) -> np.ndarray:
    """Pass 2: label one block as pass 1 did and map its labels to final ids."""
    labels, count = _label(block, structure)
    offset = int(offsets[block_info[0]["chunk-location"]])
    lookup = np.concatenate([[0], table[offset + 1 : offset + count + 1]]).astype(np.uint32)
    return lookup[labels]


def _write_tiff(labels: da.Array, tmp: Path, output: Path, spatial_axes: str, pixel_size: Any = None) -> None:
    """Write via a scratch Zarr array in TIFF tiles, so no tile is labelled twice."""
    stack = labels if labels.ndim == 3 else labels[np.newaxis]
    with tempfile.TemporaryDirectory(dir=output.parent, prefix=f".{output.name}.", suffix=".tmp") as scratch:
        tiles = zarr.create_array(
            str(Path(scratch) / "labels.zarr"), shape=stack.shape, dtype=stack.dtype,
            chunks=(1, TIFF_TILE, TIFF_TILE),
        )  # fmt: skip
        da.store(stack.rechunk(tiles.chunks), tiles, lock=False)
        write_tiled_tiff(
            tmp,
            lambda z, rows, columns: tiles[z, rows, columns],
            labels.shape,
            labels.dtype,
            spatial_axes,
            pixel_size=pixel_size,
        )


def label_components(
    mask: Any,
    output: str | os.PathLike,
    *,
    spatial_axes: str = "YX",
    chunk: int | None = None,
    connectivity: int | None = None,
    pixel_size: Any = None,
    min_size: int = 0,
    gap: int = 0,
    within: Any = None,
) -> int:
    """Label the connected components of a mask and write the labels, atomically.

    Parameters
    ----------
    mask : (Y, X) or (Z, Y, X) array-like
        Nonzero pixels are foreground; pixels of different values are never one object
        (a multi-class mask's classes are labelled apart). A Zarr array (read chunk by chunk, never whole), a
        dask array or a NumPy array. With ``"YX"``, a ``(1, Y, X)`` stack is accepted.
    output : path-like
        ``.tif``/``.tiff`` (tiled, zlib, BigTIFF when over 2 GiB) or ``.zarr`` (a Zarr
        array chunked like the labelling, ``(1, chunk, chunk)`` per plane for stacks).
    spatial_axes : {"YX", "ZYX"}
        ``"ZYX"`` labels the stack in 3D: pixels touching across planes are one object.
    chunk : int, optional
        Edge of a labelling block along every spatial axis. Memory holds a few blocks at
        a time (about 10 bytes per pixel each), the labels on every block's faces (4 bytes
        per face pixel) and a table of 4 bytes per label (labels counted block by block).
        Default :data:`DEFAULT_CHUNK` (1024 in 2D, 256 in 3D).
    connectivity : int
        Pixels are neighbours if they differ by 1 in at most ``connectivity``
        coordinates (as :func:`scipy.ndimage.generate_binary_structure`): 1 is
        4-connectivity in 2D (6 in 3D), ``ndim`` is 8 (26). Default ``ndim``, as the
        object matching of the evaluation (:func:`unetseg.objects.labels.label_objects`).
    pixel_size : sequence of float, optional
        µm per pixel, recorded in a TIFF output.
    min_size : int
        Objects of fewer pixels are dropped (set to 0); the others keep ids ``1..n``.
        Sizes are summed over blocks, so an object cut by chunk borders counts whole.
    gap : int
        With ``gap > 0``, close the lines of up to ``2 gap`` pixels between touching
        objects (:func:`fill_gaps`), consistently across blocks; 0: the bare components.
    within : array-like, optional
        Same shape as ``mask`` (same kinds of array): the labels are cut to its nonzero
        pixels after the gaps are closed, e.g. a contact model's mask, so that its objects
        grow over their contact pixels and nowhere else.

    Returns
    -------
    int
        The number of objects; ids are ``1..n`` (0 is background), dtype uint32.

    Raises
    ------
    InputError
        The mask's dimensions do not fit ``spatial_axes``, the output is neither TIFF nor
        Zarr, an option is out of range, or the mask has more pieces than int32 labels.
    """
    output = Path(output)
    if spatial_axes not in DEFAULT_CHUNK:
        raise InputError(f"{output}: spatial_axes must be 'YX' or 'ZYX', not {spatial_axes!r}.")
    if not (is_tiff_path(output) or is_zarr_path(output)):
        raise InputError(f"{output}: instance labels are written as TIFF or Zarr; name the output *.tif or *.zarr.")
    ndim = len(spatial_axes)
    connectivity = ndim if connectivity is None else connectivity
    if not 1 <= connectivity <= ndim:
        raise InputError(f"{output}: connectivity must be 1 to {ndim} for a {spatial_axes} mask, not {connectivity}.")
    chunk = DEFAULT_CHUNK[spatial_axes] if chunk is None else int(chunk)
    if chunk < 1:
        raise InputError(f"{output}: chunk must be a positive number of pixels, not {chunk}.")
    blocks = _lazy_mask(mask, spatial_axes, chunk, output)
    structure = ndi.generate_binary_structure(ndim, connectivity)
    summaries = dask.compute(*(dask.delayed(_label_faces)(b, structure) for b in blocks.to_delayed().ravel()))
    counts = np.array([count for count, _, _ in summaries], dtype=np.int64).reshape(blocks.numblocks)
    if counts.sum() > MAX_LABELS:
        raise InputError(
            f"{output}: the mask ({_name(mask)}) has {counts.sum()} connected pieces "
            f"(counted block by block), more than int32 labels hold ({MAX_LABELS}); split "
            "the image into parts and label them separately."
        )
    faces = dict(zip(np.ndindex(*blocks.numblocks), (f for _, f, _ in summaries)))
    table = _merge_table(counts, faces, blocks.chunks, structure)
    if min_size > 1:
        table = _drop_small(table, np.concatenate([s for _, _, s in summaries]), min_size)
    offsets = _offsets(counts)
    labels = blocks.map_blocks(_relabel, structure, table, offsets, dtype=np.uint32)
    if gap > 0:  # final ids are global, so a halo of `gap` pixels fills every block alike
        depth = {0: 0, 1: gap, 2: gap} if ndim == 3 else gap
        labels = labels.map_overlap(fill_gaps, depth=depth, boundary="none", dtype=np.uint32, gap=gap)
    if within is not None:
        labels = da.where(_lazy_mask(within, spatial_axes, chunk, output) > 0, labels, np.uint32(0))
    with atomic_path(output) as tmp:
        if is_zarr_path(output):
            target = zarr.create_array(
                str(tmp), shape=labels.shape, dtype=labels.dtype,
                chunks=(chunk,) * 2 if ndim == 2 else (1, chunk, chunk),
                attributes={"axes": spatial_axes, "content": "instances", "connectivity": connectivity},
            )  # fmt: skip
            da.store(labels.rechunk(target.chunks), target, lock=False)
        else:
            _write_tiff(labels, tmp, output, spatial_axes, pixel_size)
    return int(table.max())
