"""Physical pixel size of image files, in micrometres, and how to record it.

Sizes are tuples with one value per spatial axis, in array order: ``(Y, X)`` for 2D
images, ``(Z, Y, X)`` for stacks, always in micrometres (µm). ``None`` means the file
does not say (uncalibrated, or calibrated in a unit that is not a length).

Sources, tried in this order for TIFF files (the first that knows wins):

* OME-TIFF: ``PhysicalSizeX/Y/Z`` and their ``...Unit`` attributes of the first
  ``Pixels`` element of the OME-XML (unit default ``µm``, as in the OME schema).
* ImageJ TIFF: the ``XResolution``/``YResolution`` tags (pixels per unit) with the
  ``unit`` of the ImageJ description and its ``spacing`` (Z size; ImageJ's own default
  is 1 unit when a stack has no ``spacing``).
* Baseline TIFF: the resolution tags with ``ResolutionUnit`` centimetre (or tifffile's
  millimetre and micrometre extensions). Inch is treated as unknown: generic software
  writes 72 or 300 dpi there, never a microscope calibration.

For OME-Zarr (NGFF 0.4 ``attrs["multiscales"]`` or 0.5 ``attrs["ome"]["multiscales"]``)
the ``scale`` transformations of dataset 0 (times any multiscale-level scale) on the
axes of type ``space`` are used, when every such axis has a length unit.
"""

from __future__ import annotations

import math
import os
import xml.etree.ElementTree as ElementTree
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import tifffile
import zarr

__all__ = ["read_pixel_size", "tiff_resolution_kwargs", "ngff_scale", "ngff_axes"]

PixelSize = tuple[float, ...]

# Micrometres per unit; keys are lower-case and use the micro sign U+00B5 for "micro".
_UM_PER_UNIT = {
    "pm": 1e-6, "picometer": 1e-6, "å": 1e-4, "angstrom": 1e-4,
    "nm": 1e-3, "nanometer": 1e-3, "nanometre": 1e-3,
    "µm": 1.0, "um": 1.0, "micron": 1.0, "microns": 1.0, "micrometer": 1.0, "micrometre": 1.0,
    "mm": 1e3, "millimeter": 1e3, "millimetre": 1e3,
    "cm": 1e4, "centimeter": 1e4, "centimetre": 1e4,
    "m": 1e6, "meter": 1e6, "metre": 1e6,
}  # fmt: skip
# TIFF ResolutionUnit -> micrometres per unit (2, inch, deliberately absent; see above).
_UM_PER_RESUNIT = {3: 1e4, 4: 1e3, 5: 1.0}
_TIFF_SUFFIXES = (".tif", ".tiff", ".btf")
_SPATIAL = ("z", "y", "x")


def _um_per(unit: Any) -> float | None:
    """Micrometres per ``unit`` (a unit name as written by OME, ImageJ or NGFF), or None."""
    if not isinstance(unit, str):
        return None
    name = unit.strip().replace("\\u00B5", "µ").replace("\u03bc", "µ").lower()
    return _UM_PER_UNIT.get(name)


def _valid(size: Sequence[float]) -> PixelSize | None:
    """``size`` as floats if every value is finite and positive, else None."""
    values = tuple(float(v) for v in size)
    return values if all(math.isfinite(v) and v > 0 for v in values) else None


def read_pixel_size(path: str | os.PathLike) -> PixelSize | None:
    """Read the physical pixel size of an image file.

    Parameters
    ----------
    path : str or os.PathLike
        A TIFF file (``.tif``, ``.tiff``, ``.btf``: OME, ImageJ or baseline) or an
        OME-Zarr group (a directory). Other files give None.

    Returns
    -------
    tuple of float or None
        Size per spatial axis in µm: ``(Y, X)``, or ``(Z, Y, X)`` when the image has a Z
        axis; None when the file does not record a usable calibration.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(path)
    if path.is_dir():
        return _zarr_pixel_size(path)
    if path.name.lower().endswith(_TIFF_SUFFIXES):
        with tifffile.TiffFile(path) as tif:
            return _tiff_pixel_size(tif)
    return None


def _tiff_pixel_size(tif: tifffile.TiffFile) -> PixelSize | None:
    """Pixel size from the OME-XML, else the ImageJ description, else the tags."""
    has_z = bool(tif.series) and "Z" in tif.series[0].axes
    size = _ome_pixel_size(tif.ome_metadata) if tif.is_ome and tif.ome_metadata else None
    if size is None and tif.is_imagej and tif.imagej_metadata:
        size = _imagej_pixel_size(tif.pages[0], tif.imagej_metadata, has_z)
    if size is None and not tif.is_imagej:
        size = _tag_pixel_size(tif.pages[0], has_z)
    return size


def _ome_pixel_size(xml: str) -> PixelSize | None:
    """``PhysicalSize`` attributes of the first OME ``Pixels`` element, in µm.

    None unless every spatial axis has one (a Z stack without ``PhysicalSizeZ`` too).
    """
    root = ElementTree.fromstring(xml)
    pixels = next((el for el in root.iter() if el.tag.rsplit("}", 1)[-1] == "Pixels"), None)
    if pixels is None:
        return None
    axes = "ZYX" if int(pixels.get("SizeZ", "1")) > 1 else "YX"
    size = []
    for axis in axes:
        value, factor = pixels.get(f"PhysicalSize{axis}"), _um_per(pixels.get(f"PhysicalSize{axis}Unit", "µm"))
        if value is None or factor is None:
            return None
        size.append(float(value) * factor)
    return _valid(size)


def _resolution_sizes(page: Any) -> tuple[float, float] | None:
    """Unit lengths per pixel ``(Y, X)`` from the XResolution/YResolution tags."""
    sizes = []
    for code in (283, 282):  # YResolution, XResolution
        value = page.tags.valueof(code)
        if value is None:
            return None
        numerator, denominator = value if isinstance(value, tuple) else (value, 1)
        if not numerator or not denominator:
            return None
        sizes.append(denominator / numerator)
    return sizes[0], sizes[1]


def _imagej_pixel_size(page: Any, metadata: Mapping[str, Any], has_z: bool) -> PixelSize | None:
    """Pixel size of an ImageJ TIFF: resolution tags and ``unit``/``spacing``."""
    factor = _um_per(metadata.get("unit"))
    yx = _resolution_sizes(page)
    if factor is None or yx is None:
        return None
    size = [yx[0] * factor, yx[1] * factor]
    has_z = has_z or int(metadata.get("slices", 1) or 1) > 1
    if has_z:
        size.insert(0, float(metadata.get("spacing", 1.0)) * factor)
    return _valid(size)


def _tag_pixel_size(page: Any, has_z: bool) -> PixelSize | None:
    """Pixel size of a baseline TIFF from its resolution tags (unknown for stacks)."""
    factor = _UM_PER_RESUNIT.get(int(page.tags.valueof(296, default=2)))
    yx = _resolution_sizes(page)
    if factor is None or yx is None or has_z:
        return None
    return _valid((yx[0] * factor, yx[1] * factor))


def _zarr_pixel_size(path: Path) -> PixelSize | None:
    """Pixel size of an OME-Zarr image group (NGFF 0.4 or 0.5)."""
    try:
        group = zarr.open_group(path, mode="r")
    except (FileNotFoundError, zarr.errors.BaseZarrError):  # not a group (a plain directory, an array)
        return None
    attrs = group.attrs.asdict()
    multiscales = attrs.get("ome", {}).get("multiscales") or attrs.get("multiscales")
    if not multiscales:
        return None
    multiscale = multiscales[0]
    axes = multiscale.get("axes", [])
    datasets = multiscale.get("datasets") or [{}]
    scale = _scale_of(datasets[0].get("coordinateTransformations", []), len(axes))
    outer = _scale_of(multiscale.get("coordinateTransformations", []), len(axes))
    if scale is None or not axes or any(isinstance(axis, str) for axis in axes):
        return None  # NGFF <= 0.3 (axes as plain names) has no units
    scale = [a * b for a, b in zip(scale, outer or [1.0] * len(axes))]
    size = []
    for axis, value in zip(axes, scale):
        if axis.get("type", "space" if axis.get("name") in _SPATIAL else None) == "space":
            factor = _um_per(axis.get("unit"))
            if factor is None:
                return None
            size.append(value * factor)
    return _valid(size) if size else None


def _scale_of(transformations: Sequence[Mapping[str, Any]], ndim: int) -> list[float] | None:
    """The ``scale`` of an NGFF coordinateTransformations list, if it has ``ndim`` values."""
    for transformation in transformations:
        if transformation.get("type") == "scale" and len(transformation.get("scale", ())) == ndim:
            return [float(v) for v in transformation["scale"]]
    return None


def tiff_resolution_kwargs(pixel_size: Sequence[float], *, imagej: bool = True) -> dict[str, Any]:
    """Keyword arguments for ``tifffile.imwrite`` / ``TiffWriter.write`` recording a pixel size.

    Fiji opens ``.tif`` files with ImageJ's own reader, which takes the unit from the
    ImageJ description (``unit=um`` shows as µm) and pixels per unit from the resolution
    tags; a plain TIFF with ``ResolutionUnit`` centimetre is shown in cm by that reader
    (it converts to µm only when its "convert to microns" preference is set), and a
    baseline TIFF has no place for the Z size. So the default writes ImageJ style:
    ``resolution=(1/x, 1/y)`` and ``metadata={'unit': 'um'[, 'spacing': z]}``. The
    caller writes with ``imagej=True`` (``uint8``, ``uint16``, ``int16`` or
    ``float32`` data) and merges any metadata of its own (such as ``axes``) into
    ``kwargs['metadata']``.

    With ``imagej=False`` the result is ``resolution=(1e4/x, 1e4/y)`` with
    ``resolutionunit='CENTIMETER'``: baseline TIFF, any dtype, read as µm by
    Bio-Formats, QuPath and :func:`read_pixel_size`; 2D only.

    Parameters
    ----------
    pixel_size : sequence of float
        ``(Y, X)`` or ``(Z, Y, X)`` in µm, each finite and positive.
    imagej : bool, default True
        ImageJ style (see above) or baseline TIFF tags.

    Returns
    -------
    dict
        Keyword arguments: ``resolution`` and ``metadata`` (ImageJ) or ``resolution`` and
        ``resolutionunit`` (baseline).

    Raises
    ------
    ValueError
        If ``pixel_size`` has not 2 or 3 positive finite values, or is 3D with
        ``imagej=False``.
    """
    size = _valid(pixel_size) if len(pixel_size) in (2, 3) else None
    if size is None:
        raise ValueError(f"pixel_size must be 2 or 3 positive finite values (µm), got {pixel_size!r}")
    y, x = size[-2:]
    if imagej:
        metadata: dict[str, Any] = {"unit": "um"}
        if len(size) == 3:
            metadata["spacing"] = size[0]
        return {"resolution": (1.0 / x, 1.0 / y), "metadata": metadata}
    if len(size) == 3:
        raise ValueError("a baseline TIFF cannot record the Z size; use imagej=True (or OME-TIFF)")
    return {"resolution": (1e4 / x, 1e4 / y), "resolutionunit": "CENTIMETER"}


def _axis_names(axes: str | Sequence[str | Mapping[str, Any]]) -> list[str]:
    """Lower-case axis names from ``'czyx'``, ``['c', 'y', 'x']`` or NGFF axis dicts."""
    return [str(a["name"] if isinstance(a, Mapping) else a).lower() for a in axes]


def ngff_scale(pixel_size: Sequence[float] | None, axes: str | Sequence[str | Mapping[str, Any]]) -> list[float]:
    """Per-axis ``scale`` of an OME-Zarr ``coordinateTransformations`` entry.

    Parameters
    ----------
    pixel_size : sequence of float or None
        ``(Y, X)`` or ``(Z, Y, X)`` in µm, one value per spatial axis of ``axes``;
        None gives 1.0 everywhere.
    axes : str or sequence
        The array's axes: a string such as ``"czyx"``, a list of names, or NGFF axis
        dicts. Spatial axes are ``z``, ``y`` and ``x``; all others get 1.0.

    Returns
    -------
    list of float
        One value per axis, in the order of ``axes``.

    Raises
    ------
    ValueError
        If ``pixel_size`` has not one positive value per spatial axis.
    """
    names = _axis_names(axes)
    spatial = [name for name in names if name in _SPATIAL]
    if pixel_size is None:
        return [1.0] * len(names)
    size = _valid(pixel_size)
    if size is None or len(size) != len(spatial):
        raise ValueError(f"pixel_size {pixel_size!r} does not fit the spatial axes {spatial} of {names}")
    by_axis = dict(zip(spatial, size))
    return [by_axis.get(name, 1.0) for name in names]


def ngff_axes(axes: str | Sequence[str], *, unit: str = "micrometer") -> list[dict[str, str]]:
    """NGFF axis dicts for ``axes`` (e.g. ``"czyx"``), spatial axes in ``unit``.

    Without units a reader cannot tell micrometres from pixels, so
    :func:`read_pixel_size` needs them; ``t`` is time, every other non-spatial axis a
    channel axis.
    """
    result = []
    for name in _axis_names(axes):
        if name in _SPATIAL:
            result.append({"name": name, "type": "space", "unit": unit})
        else:
            result.append({"name": name, "type": "time" if name == "t" else "channel"})
    return result
