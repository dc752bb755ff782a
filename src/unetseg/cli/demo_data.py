"""``unetseg demo-data``: write the synthetic demo dataset and its sample sheet."""

from __future__ import annotations

import argparse
import sys

from unetseg.data.demo import write_demo_dataset


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--output", required=True)
    p.add_argument("--size", type=int, default=256)
    for split, n in (("train", 8), ("val", 2), ("test", 4), ("predict", 1)):
        p.add_argument(f"--n-{split}", type=int, default=n)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--kind", choices=("nuclei", "cells"), default="nuclei",
                   help="nuclei (instance masks) or cells (class masks: 1 = cell body, 2 = nucleus)")  # fmt: skip


def run(args: argparse.Namespace) -> None:
    sheet = write_demo_dataset(
        args.output, shape=(args.size, args.size), n_train=args.n_train, n_val=args.n_val,
        n_test=args.n_test, n_predict=args.n_predict, seed=args.seed, kind=args.kind,
    )  # fmt: skip
    print(f"wrote demo dataset, sample sheet {sheet}", file=sys.stderr)
