"""``unetseg plan``: plan the ``auto`` settings of a training run from the data and the machine.

``--stage data`` fingerprints the training samples and plans what tiling needs (patch size,
depth, weight map); ``--stage training`` reads that plan, measures a training step on the
device and plans the rest (base channels, batch size, epochs, foreground sampling).
"""

from __future__ import annotations

import argparse
import json
import sys

from unetseg.cli.options import json_value
from unetseg.errors import InputError
from unetseg.plan.run import make_data_plan, make_plan, read_plan


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--stage", choices=("data", "training"), required=True)
    p.add_argument("--train", nargs="+", help="preprocessed training samples (stage data)")
    p.add_argument("--val", nargs="*", default=[], help="preprocessed validation samples (stage data)")
    p.add_argument("--data-plan", help="the stage data plan (stage training)")
    p.add_argument("--settings", type=json_value, required=True,
                   help='JSON: the tile, model and train sections of the config ("auto" where planned)')  # fmt: skip
    p.add_argument("--output", required=True, help="plan file to write")


def run(args: argparse.Namespace) -> None:
    if args.stage == "data":
        if not args.train:
            raise InputError("plan --stage data needs --train")
        plan = make_data_plan(args.train, args.val, args.settings, args.output)
    else:
        if not args.data_plan:
            raise InputError("plan --stage training needs --data-plan")
        plan = make_plan(read_plan(args.data_plan), args.settings, args.output)
    print(f"plan: {json.dumps(plan['settings'])}", file=sys.stderr)
    for key, reason in plan["reasons"].items():
        print(f"  {key}: {reason}", file=sys.stderr)
