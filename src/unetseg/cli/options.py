"""Argument types and option groups shared by several commands."""

from __future__ import annotations

import argparse
import json

__all__ = ["json_value", "positive_int", "overlap", "foreground", "add_inference_options"]


def json_value(text: str):
    return json.loads(text)


def int_or_auto(text: str) -> int | str:
    """An integer, or ``auto`` (planned by ``unetseg plan``)."""
    return text if text == "auto" else int(text)


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {text}")
    return value


def overlap(text: str) -> float:
    value = float(text)
    if not 0 <= value < 0.5:
        raise argparse.ArgumentTypeError(f"must be at least 0 and below 0.5, not {text}")
    return value


def foreground(text: str) -> str | list[int]:
    """``nonzero`` or a JSON list of mask values, e.g. ``[0]``."""
    return text if text == "nonzero" else json.loads(text)


def add_inference_options(parser: argparse.ArgumentParser) -> None:
    """The model and tiling options of ``predict`` and ``infer``."""
    parser.add_argument(
        "--model",
        required=True,
        help="trained model: results/<dataset>/model, or a bioimage.io zip exported by unetseg",
    )
    parser.add_argument("--tile", type=positive_int, default=1024,
                        help="tile (write region) size in pixels, rounded up to a multiple of 2^depth")  # fmt: skip
    parser.add_argument("--batch-size", type=positive_int, default=1, help="tiles per forward pass (raise on a GPU)")
    parser.add_argument("--border", choices=("mirror", "zero", "none"), default="mirror",
                        help="beyond the image borders: mirror, zero, or none (the network's own padding)")  # fmt: skip
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (None: all of them)")
    parser.add_argument("--device", default="auto", help="cuda, cpu, mps or auto")
    parser.add_argument("--tta", action="store_true", help="average over flipped copies (4x slower)")
    parser.add_argument(
        "--amp",
        action="store_true",
        help="mixed precision where the device has it natively (CUDA; CPUs with AVX-512 BF16): faster, not bit-equal",
    )
    parser.add_argument("--blend", choices=("none", "gaussian"), default="none",
                        help="none: exact overlap-tile (halo = receptive field); gaussian: weighted "
                             "average of overlapping tiles, as MONAI and nnU-Net")  # fmt: skip
    parser.add_argument("--overlap", type=overlap, default=0.25,
                        help="with --blend gaussian: fraction of a tile shared with each neighbour, below 0.5")  # fmt: skip
    parser.add_argument("--skip-empty", action="store_true",
                        help="no network pass on tiles whose input is constant (background probabilities)")  # fmt: skip
