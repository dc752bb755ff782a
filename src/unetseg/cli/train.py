"""``unetseg train``: train a U-Net on a patch store; writes the model directory."""

from __future__ import annotations

import argparse
import json
import sys

from unetseg.cli.options import json_value
from unetseg.errors import InputError
from unetseg.plan.rules import resolve
from unetseg.plan.run import read_plan
from unetseg.report.provenance import collect_provenance
from unetseg.training.run import train_model


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--patches", required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--model-settings", type=json_value, default={}, help="JSON: the config's model section")
    p.add_argument("--train-settings", type=json_value, default={}, help="JSON: the config's train section")
    p.add_argument("--card", type=json_value, default={}, help="JSON: extra model-card entries")
    p.add_argument("--card-file", default=None, help="JSON file of extra model-card entries (instead of --card)")
    p.add_argument("--checkpoint", default=None, help="training state file: resumed from if present")
    p.add_argument("--workflow-dir", default=None, help="directory of the workflow, for its git commit")
    p.add_argument("--val-images", nargs="*", default=None,
                   help="preprocessed validation samples: validate on whole images and tune the threshold")  # fmt: skip
    p.add_argument("--plan", default=None, help="plan.json of unetseg plan: the values of auto settings")
    p.add_argument("--border", choices=("mirror", "zero"), default="mirror", help="border padding of that validation")


def run(args: argparse.Namespace) -> None:
    card = dict(args.card)
    if args.card_file:
        with open(args.card_file) as f:
            card.update(json.load(f))
    plan = read_plan(args.plan) if args.plan else None
    if plan:
        card["plan"] = plan
    try:
        model_settings = resolve("model", args.model_settings, plan and plan["settings"])
        train_settings = resolve("train", args.train_settings, plan and plan["settings"])
    except ValueError as err:
        raise InputError(str(err)) from None
    card["provenance"] = collect_provenance(
        inputs=card.get("data", {}).get("files", {}),
        sample_sheet=card.get("config", {}).get("samples"),
        workflow_dir=args.workflow_dir,
    )
    summary = train_model(
        args.patches, args.output, model_settings=model_settings, train_settings=train_settings,
        card=card, checkpoint=args.checkpoint, val_images=args.val_images, border=args.border,
    )  # fmt: skip
    print(f"training done: {json.dumps(summary)}", file=sys.stderr)
