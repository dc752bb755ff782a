"""Batch augmentation on the training device: rotations by any angle and scaling, the
paper's elastic deformations, intensity.

Everything random is drawn from a generator seeded by ``(seed, epoch, step)``, so a run
(and a run resumed from a checkpoint) is reproducible whatever the device.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["AugmentConfig", "affine_grid", "augment_batch", "elastic_grid"]


@dataclass(frozen=True)
class AugmentConfig:
    """The config's ``train.augment`` section."""

    rotate: float = 45.0
    scale: float = 0.2
    elastic: bool = True
    elastic_sigma: float = 10.0
    elastic_grid: int = 3
    intensity: bool = True
    contrast: float = 0.25
    brightness: float = 0.1
    gamma: float = 0.3
    noise: float = 0.05


def _identity(height: int, width: int) -> torch.Tensor:
    """The sampling grid ``(H, W, 2)`` that reads every pixel in place, as ``(x, y)`` in [-1, 1]."""
    ys = torch.linspace(-1, 1, height)
    xs = torch.linspace(-1, 1, width)
    return torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)


def elastic_displacement(
    shape: tuple[int, int, int], *, sigma: float, points: int, generator: torch.Generator
) -> torch.Tensor:
    """Smooth random displacements ``(B, H, W, 2)`` in normalised ``(x, y)`` coordinates.

    Standard deviation ``sigma`` pixels on a coarse ``points x points`` grid (the U-Net
    paper: 3 x 3, 10 px), interpolated bicubically to every pixel.
    """
    batch, height, width = shape
    coarse = torch.randn(batch, 2, points, points, generator=generator) * sigma
    dense = F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=True)
    # pixels -> normalised [-1, 1] coordinates (x first, as grid_sample wants)
    dense = dense * torch.tensor([2 / max(width - 1, 1), 2 / max(height - 1, 1)]).view(1, 2, 1, 1)
    return dense.permute(0, 2, 3, 1)


def elastic_grid(shape: tuple[int, int, int], *, sigma: float, points: int, generator: torch.Generator) -> torch.Tensor:
    """Sampling grids ``(B, H, W, 2)`` of smooth random deformations (:func:`elastic_displacement`)."""
    displacement = elastic_displacement(shape, sigma=sigma, points=points, generator=generator)
    return _identity(*shape[1:]).unsqueeze(0) + displacement


def affine_grid(
    shape: tuple[int, int, int], *, rotate: float, scale: float, generator: torch.Generator
) -> torch.Tensor:
    """Sampling grids ``(B, H, W, 2)`` of random rotations and zooms about the patch centre.

    The angle is uniform in ``+-rotate`` degrees, the zoom factor log-uniform in
    ``[1 / (1 + scale), 1 + scale]``; both in pixel units, so a non-square patch is not sheared.
    """
    batch, height, width = shape
    angle = (torch.rand(batch, generator=generator) * 2 - 1) * np.deg2rad(rotate)
    zoom = torch.exp((torch.rand(batch, generator=generator) * 2 - 1) * np.log1p(scale))
    ys = torch.linspace(-1, 1, height) * (height - 1) / 2  # pixels from the centre
    xs = torch.linspace(-1, 1, width) * (width - 1) / 2
    y, x = torch.meshgrid(ys, xs, indexing="ij")
    cos, sin = (torch.cos(angle) / zoom).view(-1, 1, 1), (torch.sin(angle) / zoom).view(-1, 1, 1)
    # output pixel (x, y) reads the input at R(angle) (x, y) / zoom; back to [-1, 1]
    source_x = (cos * x - sin * y) * 2 / max(width - 1, 1)
    source_y = (sin * x + cos * y) * 2 / max(height - 1, 1)
    return torch.stack([source_x, source_y], dim=-1)


def _intensity(image: torch.Tensor, config: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    batch = image.shape[0]

    def uniform(spread: float) -> torch.Tensor:
        return (torch.rand(batch, 1, 1, 1, generator=generator) * 2 - 1) * spread

    low = image.amin(dim=(1, 2, 3), keepdim=True)
    high = image.amax(dim=(1, 2, 3), keepdim=True)
    span = (high - low).clamp_min(1e-6)
    gamma = torch.exp(uniform(config.gamma)).to(image.device)
    image = low + span * ((image - low) / span).clamp(0, 1) ** gamma
    mean = image.mean(dim=(1, 2, 3), keepdim=True)
    image = (image - mean) * (1 + uniform(config.contrast).to(image.device)) + mean
    image = image + uniform(config.brightness).to(image.device)
    noise = (
        torch.randn(image.shape, generator=generator) * torch.rand(batch, 1, 1, 1, generator=generator) * config.noise
    )
    return image + noise.to(image.device)


def augment_batch(
    image: torch.Tensor,
    mask: torch.Tensor,
    weight: torch.Tensor,
    config: AugmentConfig,
    *,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rotate, zoom and deform ``image (B, C, H, W)``, ``mask (B, H, W)`` and ``weight
    (B, H, W)`` alike in one resampling (bilinear for the image, nearest for mask and
    weights; reflection beyond the patch), then vary the image's intensity.
    """
    affine = config.rotate > 0 or config.scale > 0
    if config.elastic or affine:
        if affine:
            grid = affine_grid(mask.shape, rotate=config.rotate, scale=config.scale, generator=generator)
        else:
            grid = _identity(*mask.shape[1:]).unsqueeze(0)
        if config.elastic:
            grid = grid + elastic_displacement(mask.shape, sigma=config.elastic_sigma, points=config.elastic_grid,
                                               generator=generator)  # fmt: skip
        grid = grid.to(image.device, image.dtype)
        image = F.grid_sample(image, grid, mode="bilinear", padding_mode="reflection", align_corners=True)
        maps = torch.stack([mask, weight], dim=1).to(image.dtype)
        maps = F.grid_sample(maps, grid, mode="nearest", padding_mode="reflection", align_corners=True)
        mask, weight = maps[:, 0], maps[:, 1]
    if config.intensity:
        image = _intensity(image, config, generator)
    return image, mask, weight


def augment(image: np.ndarray, *maps: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """Random flips and 90-degree rotations of a ``(C, P, P)`` image and ``(P, P)`` maps
    (mask, weights), all transformed alike."""
    k = int(rng.integers(4))
    flip = rng.random() < 0.5
    out = []
    for array in (image, *maps):
        array = np.rot90(array, k, axes=(-2, -1))
        out.append(np.ascontiguousarray(array[..., ::-1] if flip else array))
    return tuple(out)
