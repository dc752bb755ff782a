"""Synthetic fluorescence data for demos and end-to-end tests.

Irregular, partly touching nuclei of varied brightness, blurred by a Gaussian
PSF on an uneven background, with shot and read noise; seeded, so the same
arguments always give byte-identical files. The two-class variant
(:func:`synthetic_cells`) has dim cell bodies, each around a bright nucleus,
with a class mask (1 = cell body, 2 = nucleus) for ``labels.classes``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import tifffile
from scipy import ndimage as ndi

from unetseg.io.files import atomic_path

__all__ = ["demo_sample_sheet", "synthetic_nuclei", "synthetic_cells", "write_demo_dataset", "KINDS"]

# Fixed codes keep each split's generators independent of the other splits'
# sizes, so adding training samples leaves validation and test data unchanged.
_SPLITS = {"train": 0, "val": 1, "test": 2, "predict": 3}


def demo_sample_sheet(
    directory: str | os.PathLike,
    *,
    n_train: int = 8,
    n_val: int = 2,
    n_test: int = 4,
    n_predict: int = 1,
) -> pd.DataFrame:
    """Return the sample sheet that :func:`write_demo_dataset` writes.

    Pure and cheap, so the workflow can learn sample ids at parse time.

    Parameters
    ----------
    directory : str or os.PathLike
        Dataset directory, used as given (not resolved).
    n_train, n_val, n_test, n_predict : int
        Number of samples in each split.

    Returns
    -------
    sheet : (n_train + n_val + n_test + n_predict, 4) DataFrame
        Columns ``sample, image, mask, split``; ``mask`` is ``""`` for
        ``predict`` rows, which have no ground truth.
    """
    root = Path(directory)
    rows = []
    for split, count in zip(_SPLITS, (n_train, n_val, n_test, n_predict)):
        if count < 0:
            raise ValueError(f"n_{split} must be >= 0, got {count}")
        for i in range(count):
            sample = f"{split}_{i:02d}"
            mask = "" if split == "predict" else (root / "masks" / f"{sample}.tif").as_posix()
            rows.append((sample, (root / "images" / f"{sample}.tif").as_posix(), mask, split))
    return pd.DataFrame(rows, columns=["sample", "image", "mask", "split"])


def _smooth_noise(shape: tuple[int, ...], sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian-filtered white noise rescaled to zero mean and unit std."""
    field = ndi.gaussian_filter(rng.standard_normal(shape), sigma, mode="reflect")
    return (field - field.mean()) / (field.std() + 1e-12)


def _nucleus_distance(
    yy: np.ndarray, xx: np.ndarray, centre: np.ndarray, radii: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Normalised radial distance to an irregular ellipse (<= 1 is inside)."""
    theta = rng.uniform(0, np.pi)
    dy, dx = yy - centre[0], xx - centre[1]
    u = (dx * np.cos(theta) + dy * np.sin(theta)) / radii[0]
    v = (-dx * np.sin(theta) + dy * np.cos(theta)) / radii[1]
    angle = np.arctan2(v, u)
    # Low-order harmonics of the outline make blobs look like nuclei rather
    # than perfect ellipses, without creating holes or spikes.
    outline = np.ones_like(angle)
    for k in (2, 3, 4):
        outline += rng.uniform(0, 0.06) * np.cos(k * angle + rng.uniform(0, 2 * np.pi))
    return np.hypot(u, v) / outline


def _propose(
    shape: tuple[int, int],
    centres: list[np.ndarray],
    sizes: list[float],
    rng: np.random.Generator,
    radius: tuple[float, float] = (6, 14),
) -> tuple[np.ndarray, np.ndarray]:
    """Draw a candidate nucleus: centre ``(y, x)`` and radii ``(major, minor)``."""
    scale = np.sqrt(shape[0] * shape[1]) / 256
    a = rng.uniform(*radius) * scale
    # The 2 px floor keeps nuclei recognisable in tiny test images.
    radii = np.maximum([a, max(a * rng.uniform(0.6, 1.0), 5 * scale)], 2.0)
    if centres and rng.random() < 0.4:
        # Right next to an existing nucleus: clusters of touching nuclei are
        # the hard case for instance separation, so make them common.
        j = rng.integers(len(centres))
        phi = rng.uniform(0, 2 * np.pi)
        gap = (sizes[j] + radii.mean()) * rng.uniform(0.8, 1.0)
        return centres[j] + gap * np.array([np.sin(phi), np.cos(phi)]), radii
    return rng.uniform(0, 1, 2) * np.array(shape), radii


def _paint_nuclei(
    shape: tuple[int, int],
    rng: np.random.Generator,
    *,
    radius: tuple[float, float] = (6, 14),
    fraction: tuple[float, float] = (0.22, 0.32),
) -> tuple[np.ndarray, np.ndarray]:
    """Place nuclei (radii in ``radius`` at 256 px) up to a random foreground ``fraction``;
    return labels and the normalised distance of each pixel to its nucleus centre."""
    labels = np.zeros(shape, dtype=np.int32)
    dist = np.full(shape, np.inf)
    target = rng.uniform(*fraction) * labels.size
    centres, sizes, area = [], [], 0
    for _ in range(2000):
        if area >= target:
            break
        centre, radii = _propose(shape, centres, sizes, rng, radius)
        r = int(np.ceil(radii[0] * 1.25)) + 1
        # Centres may lie outside the image (nuclei cut by the border); clip
        # both ends so negative bounds never wrap around as Python indices.
        lo = np.floor(centre).astype(int) - r
        box = tuple(slice(*np.clip([a, a + 2 * r + 1], 0, n)) for a, n in zip(lo, shape))
        if labels[box].size == 0:
            continue
        yy, xx = np.mgrid[box]
        d = _nucleus_distance(yy, xx, centre, radii, rng)
        # Where outlines overlap, the pixel goes to the nucleus whose centre
        # is nearer in normalised distance, giving a natural shared border.
        win = (d <= 1) & (d < dist[box])
        if not _acceptable(labels, labels[box], win, d <= 1):
            continue
        area += int(np.count_nonzero(win & (labels[box] == 0)))
        labels[box][win] = len(centres) + 1
        dist[box][win] = d[win]
        centres.append(centre)
        sizes.append(float(radii.mean()))
    # _acceptable never lets a nucleus vanish, so ids are already 1..n, and
    # the attempt cap keeps them far below the uint16 limit.
    return labels.astype(np.uint16), dist


def _acceptable(labels: np.ndarray, window: np.ndarray, win: np.ndarray, inside: np.ndarray) -> bool:
    """Accept a candidate only if it keeps 70 % of its outline in one piece and
    takes at most a fifth of any nucleus without splitting it, so nuclei touch."""
    if win.sum() < 0.7 * max(inside.sum(), 1) or ndi.label(win)[1] != 1:
        return False
    stolen = np.bincount(window[win], minlength=labels.max() + 1)
    owned = np.bincount(labels.ravel(), minlength=labels.max() + 1)
    for j in np.flatnonzero(stolen[1:]) + 1:
        if stolen[j] > 0.2 * owned[j] or ndi.label((window == j) & ~win)[1] > 1:
            return False
    return True


def _render(labels: np.ndarray, dist: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Expected camera counts (float) for a label image, before noise."""
    shape = labels.shape
    brightness = rng.uniform(0.55, 1.4, int(labels.max()) + 1)
    # Chromatin texture plus a gentle dome: nuclei are brighter in the middle.
    texture = 1 + 0.2 * _smooth_noise(shape, 1.2, rng)
    dome = 1 - 0.3 * np.minimum(dist, 1) ** 2
    signal = 2500 * brightness[labels] * texture * np.where(labels > 0, dome, 0)
    signal = ndi.gaussian_filter(signal, rng.uniform(1.0, 1.5))
    # Uneven illumination / out-of-focus haze: a tilt plus very smooth blobs.
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]] / max(shape)
    phi = rng.uniform(0, 2 * np.pi)
    tilt = 150 * (np.cos(phi) * (xx - 0.5) + np.sin(phi) * (yy - 0.5))
    haze = 60 * _smooth_noise(shape, max(shape) / 8, rng)
    background = rng.uniform(250, 400) + tilt + haze
    return np.clip(signal + background, 0, None)


def _camera(expected: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Apply shot noise (gain 4 counts per photo-electron) and read noise."""
    gain, read_noise, offset = 4.0, 15.0, 100.0
    counts = gain * rng.poisson(expected / gain) + rng.normal(offset, read_noise, expected.shape)
    return np.clip(np.rint(counts), 0, np.iinfo(np.uint16).max).astype(np.uint16)


def synthetic_nuclei(shape: tuple[int, int] = (256, 256), *, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Simulate one widefield fluorescence image of nuclei with ground truth.

    Parameters
    ----------
    shape : tuple of int
        Image size ``(Y, X)``; nucleus radii scale with it (5-14 px at 256).
    rng : numpy.random.Generator
        Source of all randomness.

    Returns
    -------
    image : (Y, X) ndarray of uint16
        Camera counts: background of a few hundred, nuclei a few thousand,
        with Poisson and Gaussian read noise.
    labels : (Y, X) ndarray of uint16
        Instance ids, 0 = background and 1..n = nuclei; roughly 20-35 % of
        pixels are foreground and touching nuclei carry distinct ids.
    """
    if len(shape) != 2 or min(shape) < 16:
        raise ValueError(f"shape must be 2-D with sides >= 16, got {shape}")
    labels, dist = _paint_nuclei(tuple(int(s) for s in shape), rng)
    image = _camera(_render(labels, dist, rng), rng)
    return image, labels


def synthetic_cells(shape: tuple[int, int] = (256, 256), *, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Simulate a fluorescence image of cells: a dim cell body around a bright nucleus.

    Cell outlines are the irregular blobs of :func:`synthetic_nuclei`, twice as large
    (radii 12-24 px at 256) and partly touching; each holds a nucleus of 40-60 % of its
    radius, off centre. Cell bodies are a fifth to a third as bright as nuclei, so the two
    classes differ in intensity and in shape.

    Returns
    -------
    image : (Y, X) ndarray of uint16
        Camera counts, with Poisson and Gaussian read noise.
    classes : (Y, X) ndarray of uint8
        0 = background, 1 = cell body (cytoplasm), 2 = nucleus.
    """
    if len(shape) != 2 or min(shape) < 16:
        raise ValueError(f"shape must be 2-D with sides >= 16, got {shape}")
    shape = tuple(int(s) for s in shape)
    cells, _ = _paint_nuclei(shape, rng, radius=(12, 24), fraction=(0.35, 0.5))
    count = int(cells.max()) + 1
    size = rng.uniform(0.4, 0.6, count)
    # An off-centre nucleus: the distance to a point shifted towards the outline.
    shift = rng.uniform(-0.25, 0.25, (count, 2))
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    inside = cells > 0
    centre = np.zeros((count, 2))
    for axis, grid in enumerate((yy, xx)):
        totals = np.bincount(cells.ravel(), weights=grid.ravel(), minlength=count)
        centre[:, axis] = totals / np.maximum(np.bincount(cells.ravel(), minlength=count), 1)
    extent = np.sqrt(np.bincount(cells.ravel(), minlength=count) / np.pi)  # equivalent radius
    offset = centre + shift * extent[:, None]
    radial = np.hypot(yy - offset[cells, 0], xx - offset[cells, 1]) / np.maximum(extent[cells], 1)
    nucleus = inside & (radial <= size[cells])
    classes = np.where(nucleus, 2, np.where(inside, 1, 0)).astype(np.uint8)
    brightness = rng.uniform(0.7, 1.3, count)
    texture = 1 + 0.2 * _smooth_noise(shape, 1.2, rng)
    level = np.where(nucleus, 2500, rng.uniform(0.2, 0.33) * 2500) * brightness[cells]
    signal = ndi.gaussian_filter(np.where(inside, level * texture, 0), rng.uniform(1.0, 1.5))
    background = rng.uniform(250, 400) + 60 * _smooth_noise(shape, max(shape) / 8, rng)
    return _camera(np.clip(signal + background, 0, None), rng), classes


# The demo datasets: nuclei with instance ids, or two classes (cell bodies and nuclei).
KINDS = {"nuclei": synthetic_nuclei, "cells": synthetic_cells}


def write_demo_dataset(
    directory: str | os.PathLike,
    *,
    shape: tuple[int, int] = (256, 256),
    n_train: int = 8,
    n_val: int = 2,
    n_test: int = 4,
    n_predict: int = 1,
    seed: int = 0,
    kind: str = "nuclei",
) -> Path:
    """Write a synthetic dataset of images, masks and a sample sheet.

    The sheet is written last, so its presence means the dataset is complete.

    Parameters
    ----------
    directory : str or os.PathLike
        Output directory; created with ``images/`` and ``masks/`` inside.
    shape : tuple of int
        Image size ``(Y, X)``.
    n_train, n_val, n_test, n_predict : int
        Number of samples per split; ``predict`` samples get no mask.
    seed : int
        Base seed. Sample ``i`` of a split uses its own generator derived
        from ``(seed, split, i)``, so adding samples never changes others.
    kind : {"nuclei", "cells"}
        :func:`synthetic_nuclei` (instance masks) or :func:`synthetic_cells` (class masks).

    Returns
    -------
    sheet : pathlib.Path
        ``{directory}/samples.tsv``, equal to :func:`demo_sample_sheet`.
    """
    if kind not in KINDS:
        raise ValueError(f"demo kind must be one of {sorted(KINDS)}, not {kind!r}")
    root = Path(directory)
    counts = dict(n_train=n_train, n_val=n_val, n_test=n_test, n_predict=n_predict)
    sheet = demo_sample_sheet(root, **counts)
    for row in sheet.itertuples(index=False):
        index = int(row.sample.rsplit("_", 1)[1])
        rng = np.random.default_rng([seed, _SPLITS[row.split], index])
        image, labels = KINDS[kind](shape, rng=rng)
        with atomic_path(row.image) as tmp:
            tifffile.imwrite(tmp, image)
        if row.mask:
            with atomic_path(row.mask) as tmp:
                tifffile.imwrite(tmp, labels)
    path = root / "samples.tsv"
    with atomic_path(path) as tmp:
        tmp.write_text(sheet.to_csv(sep="\t", index=False, lineterminator="\n"), encoding="utf-8")
    return path
