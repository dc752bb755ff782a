"""Lazy image reading (TIFF, Zarr, OME-Zarr) and atomic writing.

Every image is seen through :class:`ImageSource`, a lazy view in canonical ``(Z, C, Y, X)``
order, whatever the file's own axis order. Nothing reads the whole image unless asked.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
import zarr

from unetseg.errors import InputError

__all__ = ["ImageSource", "open_image", "read_mask", "is_zarr_path", "is_zarr_store", "is_tiff_path"]

TIFF_SUFFIXES = (".tif", ".tiff")
# tifffile's axis letters that we read as a stack of 2D planes, and as channels.
_STACK_AXES = "ZQITR"
_CHANNEL_AXES = "CS"


def is_zarr_path(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() == ".zarr"


def is_zarr_store(path: str | os.PathLike) -> bool:
    """A directory holding Zarr metadata (v3 ``zarr.json``, or v2 ``.zarray`` / ``.zgroup``)."""
    return any((Path(path) / name).exists() for name in ("zarr.json", ".zarray", ".zgroup"))


def is_tiff_path(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in TIFF_SUFFIXES


def _canonical_axes(axes: str, shape: tuple[int, ...], path: Path) -> str:
    """Map a file's axis letters onto ``Z``, ``C``, ``Y``, ``X``."""
    out = []
    for letter in axes.upper():
        if letter in _STACK_AXES:
            out.append("Z")
        elif letter in _CHANNEL_AXES:
            out.append("C")
        elif letter in "YX":
            out.append(letter)
        else:
            out.append("?")
    canon = "".join(out)
    if "?" in canon or sorted(canon) != sorted(set(canon)) or not {"Y", "X"} <= set(canon) or len(canon) != len(shape):
        raise InputError(
            f"{path}: cannot interpret image axes {axes!r} for shape {shape}. unetseg reads "
            "2D (YX), 2D with channels (CYX or YXC), 3D stacks (ZYX) and ZCYX; say how this file's "
            "axes are ordered with 'data.axes' in the workflow config or --axes of unetseg predict "
            "(e.g. 'CYX')."
        )
    return canon


def _guess_axes(shape: tuple[int, ...]) -> str:
    if len(shape) == 2:
        return "YX"
    if len(shape) == 3:
        return "YXC" if shape[-1] <= 4 < min(shape[:2]) else "ZYX"
    if len(shape) == 4:
        return "ZCYX"
    return "?" * len(shape)


def _open_zarr(path: Path) -> tuple[Any, str | None]:
    node = zarr.open(str(path), mode="r")
    if isinstance(node, zarr.Array):
        axes = node.attrs.get("axes") or node.attrs.get("_ARRAY_DIMENSIONS")
        return node, "".join(axes) if axes else None
    attrs = dict(node.attrs)
    multiscales = attrs.get("multiscales") or attrs.get("ome", {}).get("multiscales")
    if multiscales:
        ms = multiscales[0]
        axes = "".join(a["name"] if isinstance(a, dict) else a for a in ms["axes"])
        return node[ms["datasets"][0]["path"]], axes
    arrays = sorted(name for name, _ in node.arrays())
    if len(arrays) == 1:
        return node[arrays[0]], None
    raise InputError(
        f"{path}: a Zarr group without OME-NGFF 'multiscales' metadata and with "
        f"{len(arrays)} arrays; give the path of the array itself (e.g. {path}/0)."
    )


def _open_tiff(path: Path) -> tuple[Any, str, Any]:
    store = None
    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            axes, shape = series.axes, tuple(series.shape)
        store = tifffile.imread(path, aszarr=True)
        node = zarr.open(store, mode="r")
    except (tifffile.TiffFileError, OSError, ValueError, IndexError, KeyError) as err:
        if store is not None:
            store.close()
        raise InputError(
            f"{path}: not a readable TIFF ({type(err).__name__}: {err}). Check that the file "
            "is complete (not truncated by a copy) and is a TIFF; re-export it if needed."
        ) from err
    if isinstance(node, zarr.Group):  # a pyramid: level 0 is full resolution
        node = node["0"]
    if tuple(node.shape) != shape:
        store.close()
        raise InputError(f"{path}: TIFF series shape {shape} != stored shape {node.shape}")
    return node, axes, store


class ImageSource:
    """A lazy image in canonical ``(Z, C, Y, X)`` order.

    Parameters
    ----------
    array : array-like
        Anything sliceable with NumPy basic indexing (a zarr array, a NumPy array).
    axes : str
        The array's axes, a permutation of a subset of ``"ZCYX"`` containing ``Y`` and ``X``.
    path : Path, optional
        Where it came from, for error messages.
    """

    def __init__(self, array: Any, axes: str, path: Path | None = None, *, store: Any = None):
        self.array, self.axes, self.path, self._store = array, axes, path, store
        dims = dict(zip(axes, array.shape))
        self.shape = tuple(dims.get(a, 1) for a in "ZCYX")
        self.dtype = np.dtype(array.dtype)

    def close(self) -> None:
        """Close the file behind the image, if any (TIFF files stay open while read)."""
        if self._store is not None:
            self._store.close()
            self._store = None

    def __enter__(self) -> ImageSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def spatial_axes(self) -> str:
        """``"YX"`` or ``"ZYX"``: the axes of a mask of this image."""
        return "ZYX" if "Z" in self.axes else "YX"

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        z, _, y, x = self.shape
        return (z, y, x) if "Z" in self.axes else (y, x)

    def read(self, z: int, ys: slice = slice(None), xs: slice = slice(None)) -> np.ndarray:
        """Plane ``z``, rows ``ys``, columns ``xs`` as a ``(C, y, x)`` array (source dtype)."""
        index = {"Z": z, "C": slice(None), "Y": ys, "X": xs}
        block = np.asarray(self.array[tuple(index[a] for a in self.axes)])
        kept = [a for a in self.axes if a != "Z"]
        if "C" not in kept:
            return block[np.newaxis]
        return np.moveaxis(block, kept.index("C"), 0)


def open_image(path: str | os.PathLike, *, axes: str | None = None) -> ImageSource:
    """Open a TIFF or Zarr image lazily.

    Parameters
    ----------
    path : path-like
        ``.tif``/``.tiff`` (read through tifffile's Zarr interface) or ``.zarr`` (a Zarr
        array, or an OME-Zarr image whose first multiscale level is read).
    axes : str, optional
        The file's axis order (letters from ``ZCYX``, ``S`` for samples, ``Q``/``I``/``T``
        for stacks). Default: the file's metadata, else a guess from the shape.

    Raises
    ------
    InputError
        The file is missing, unreadable or has axes unetseg cannot interpret.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: file not found; check the path (in the sample sheet, or the command line).")
    store = None
    if is_zarr_path(path) or path.is_dir():
        if not is_zarr_store(path):
            raise InputError(
                f"{path}: not a Zarr store (a directory without zarr.json, .zarray or .zgroup); give a TIFF "
                "file or a Zarr store."
            )
        array, file_axes = _open_zarr(path)
    elif is_tiff_path(path):
        array, file_axes, store = _open_tiff(path)
    else:
        raise InputError(f"{path}: unsupported file type; use TIFF (.tif, .tiff) or Zarr (.zarr).")
    shape = tuple(array.shape)
    if axes is None or axes == "auto":
        axes = file_axes if file_axes and set(file_axes) - set("Q") else _guess_axes(shape)
    try:
        canonical = _canonical_axes(axes, shape, path)
    except InputError:
        if store is not None:
            store.close()
        raise
    return ImageSource(array, canonical, path, store=store)


def read_mask(path: str | os.PathLike, spatial_shape: tuple[int, ...]) -> np.ndarray:
    """Read a mask with the given spatial shape, dropping singleton non-spatial axes."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: mask file not found; check the 'mask' column of the sample sheet.")
    with open_image(path) as source:
        mask = np.asarray(source.array[...])

    def _non_singleton(shape: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(d for d in shape if d != 1)

    if _non_singleton(mask.shape) == _non_singleton(tuple(spatial_shape)):
        mask = mask.reshape(spatial_shape)  # singleton axes, e.g. (1, Y, X) for a 2D image
    if mask.shape != tuple(spatial_shape):
        raise InputError(
            f"{path}: mask shape {mask.shape} does not match the image's spatial shape "
            f"{tuple(spatial_shape)}; masks must have one value per image pixel (no channels)."
        )
    return mask
