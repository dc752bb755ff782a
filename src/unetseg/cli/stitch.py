"""``unetseg stitch``: the final mask from a probability map, thresholded as the model's card says."""

from __future__ import annotations

import argparse

import zarr

from unetseg.inference.masks import write_mask
from unetseg.nn.card import read_card


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True)
    p.add_argument("--probabilities", required=True)
    p.add_argument("--output", required=True)


def run(args: argparse.Namespace) -> None:
    probs = zarr.open_array(args.probabilities, mode="r")
    card = read_card(args.model)
    write_mask(probs, args.output, threshold=card.get("threshold", 0.5), spatial_axes=probs.attrs["spatial_axes"],
               contact=card.get("target") == "contact")  # fmt: skip
