"""Entry point: a parser with one subcommand per module of this package.

Only the module of the command being run is imported, so a command that needs neither torch
nor dask (``preprocess``, ``figure``, ``summarize``...) starts without loading them.
"""

from __future__ import annotations

import argparse
import sys
from importlib import import_module

from unetseg import __version__
from unetseg.errors import InputError

__all__ = ["COMMANDS", "build_parser", "main"]

# Subcommand -> its one-line help; the module is unetseg.cli.<name with _ for ->.
COMMANDS = {
    "predict": "segment one image of any size with a trained model",
    "demo-data": "write the synthetic demo dataset and its sample sheet",
    "preprocess": "check, normalise and store one sample as Zarr",
    "plan": "plan the auto settings of training from the data and the machine",
    "tile": "cut training and validation patches into a Zarr store",
    "train": "train a U-Net on a patch store",
    "infer": "tiled inference of a preprocessed sample into a probability Zarr",
    "stitch": "final mask from a probability map",
    "instances": "instance labels (connected components) of a mask, out of core",
    "ome-zarr": "probabilities and labels as an OME-Zarr pyramid",
    "segment": "segment a batch of images: mask, instances, measurements, overlays",
    "summarize": "per-sample summary of the measurements of a run",
    "evaluate": "Dice, IoU and more over a split",
    "figure": "report figures and pages",
    "export": "a trained model as a bioimage.io package for Fiji, ilastik and QuPath",
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The ``unetseg`` parser; with ``only``, the options of that one subcommand alone."""
    parser = argparse.ArgumentParser(prog="unetseg", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"unetseg {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help in COMMANDS.items():
        command = sub.add_parser(name, help=help, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        if only in (None, name):
            module = import_module(f"unetseg.cli.{name.replace('-', '_')}")
            module.add_arguments(command)
            command.set_defaults(func=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(command if command in COMMANDS else None).parse_args(argv)
    try:
        args.func(args)
    except InputError as err:
        print(f"unetseg {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"unetseg {args.command}: interrupted; finished tiles are kept: rerun the same command to resume.",
              file=sys.stderr)  # fmt: skip
        return 130
    except OSError as err:  # disk full, permission denied, ...: say which file and why
        where = f" {err.filename}:" if err.filename else ""
        print(
            f"unetseg {args.command}: error:{where} {err.strerror or err}. Outputs written before are "
            "intact and nothing partial was left under a final name; free space or fix permissions, "
            "then rerun.",
            file=sys.stderr,
        )
        return 1
    return 0
