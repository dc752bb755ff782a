"""The device a network runs on."""

from __future__ import annotations

import torch

from unetseg.errors import InputError

__all__ = ["pick_device"]


def pick_device(device: str | None = None) -> torch.device:
    """``device`` if given, else CUDA when available, else Apple MPS, else the CPU."""
    if device and device != "auto":
        chosen = torch.device(device)
        if chosen.type == "cuda" and not torch.cuda.is_available():
            raise InputError(f"device {device!r}: this PyTorch has no usable CUDA device; use --device cpu or auto.")
        if chosen.type == "mps" and not torch.backends.mps.is_available():
            raise InputError(f"device {device!r}: Apple MPS is not available here; use --device cpu or auto.")
        return chosen
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")
