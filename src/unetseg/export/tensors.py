"""What an exported package's tensors are: the sizes the network accepts, the test input and output, the cover."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from unetseg.errors import InputError

INPUT_ID = "raw"


OUTPUT_ID = "probabilities"


TEST_SIZE = 256  # largest side of a test image taken from --sample-image (unless the network needs more)


SYNTHETIC_SIZE = 128  # smallest side of the synthetic test image


@dataclass(frozen=True)
class Geometry:
    """Input sizes a U-Net accepts and how its output relates to them (per spatial axis).

    ``min + n * step`` are the described input sizes (the test input's size must be one of
    them). Same padding: the output has the input's size and ``halo`` pixels on each side of
    it suffer from the zero padding (the receptive-field radius rounded up to the grid, the
    halo of unetseg's exact tiling); ``min`` leaves one grid cell inside the halo, as the
    spec requires. Valid padding: the output is ``2 * margin`` smaller than the input and
    has no halo.
    """

    padding: str
    min: int
    step: int
    halo: int
    margin: int

    def accepts(self, size: int) -> bool:
        """Whether an input side of ``size`` is one of the described sizes (as the test input's must be)."""
        return size >= self.min and (size - self.min) % self.step == 0

    def largest(self, at_most: int) -> int | None:
        """The largest described input size up to ``at_most``."""
        return self.min + (at_most - self.min) // self.step * self.step if at_most >= self.min else None

    def smallest(self, at_least: int) -> int:
        """The smallest described input size from ``at_least`` on."""
        return self.min + max(0, -(-(at_least - self.min) // self.step)) * self.step


def geometry(model: Any) -> Geometry:
    """The :class:`Geometry` of a :class:`~unetseg.nn.model.UNet`."""
    grid = model.grid
    if model.settings["padding"] == "same":
        halo = -(-model.receptive_field_radius() // grid) * grid  # as TiledPredictor(blend="none")
        return Geometry("same", min=2 * halo + grid, step=grid, halo=halo, margin=0)
    return Geometry("valid", min=model.valid_input_size(1), step=grid, halo=0, margin=model.margin)


def _sample_image(path: str | os.PathLike, axes: str | None, channels: int, fits: Geometry) -> np.ndarray:
    """A ``(C, S, S)`` float32 square from the middle of the middle plane of an image file."""
    from unetseg.data.normalize import check_finite
    from unetseg.io.images import open_image

    with open_image(path, axes=axes) as source:
        z_count, image_channels, height, width = source.shape
        if image_channels != channels:
            raise InputError(
                f"{path}: {image_channels} channel(s), but the model takes {channels}; give a validation "
                f"image with {channels} channel(s) as --sample-image (or set --axes if they were read wrongly)."
            )
        size = fits.largest(min(height, width, max(TEST_SIZE, fits.min)))
        if size is None:
            raise InputError(
                f"{path}: {height}x{width} pixels is smaller than the {fits.min}x{fits.min} this model needs; "
                "give a larger --sample-image."
            )
        y0, x0 = (height - size) // 2, (width - size) // 2
        block = np.asarray(source.read(z_count // 2, slice(y0, y0 + size), slice(x0, x0 + size)), dtype=np.float32)
    check_finite(block, path, z_count // 2, y0, x0)
    return block


def _synthetic_image(channels: int, fits: Geometry) -> np.ndarray:
    from unetseg.data.demo import synthetic_nuclei

    size = fits.smallest(SYNTHETIC_SIZE)
    planes = [synthetic_nuclei((size, size), rng=np.random.default_rng(c))[0] for c in range(channels)]
    return np.stack(planes).astype(np.float32)


def _reference_output(model: Any, image: np.ndarray, percentiles: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """unetseg's normalised input and probabilities for ``image`` ``(C, S, S)``: one pass of
    the whole image through the network (no tiling, no padding), as the spec's test runs it."""
    from unetseg.data.normalize import normalize, percentile_stats
    from unetseg.inference.forward import Forward
    from unetseg.io.images import ImageSource

    stats = percentile_stats(ImageSource(image, "CYX"), *percentiles)
    normalized = normalize(image, stats)
    probabilities = Forward(model, device="cpu")(normalized[np.newaxis])
    return normalized, probabilities.astype(np.float32)


def _cover(normalized: np.ndarray, probabilities: np.ndarray, path: Path) -> None:
    """A 2:1 PNG: the (first channel of the) normalised test input beside the foreground
    probability of the test output."""
    from matplotlib import cm
    from matplotlib.image import imsave

    image = np.clip(normalized[0], 0, 1)
    foreground = probabilities[0, -1] if probabilities.shape[1] > 1 else probabilities[0, 0]
    left = cm.gray(image)[..., :3]
    right = cm.magma(np.clip(foreground, 0, 1))[..., :3]
    height = max(left.shape[0], right.shape[0])  # valid padding: the output is smaller
    pad = (height - right.shape[0]) // 2
    right = np.pad(right, ((pad, height - right.shape[0] - pad), (pad, height - right.shape[1] - pad), (0, 0)))
    imsave(path, np.concatenate([left, right], axis=1))
