"""``unetseg figure``: the report's figures and pages (the pages load neither torch nor matplotlib)."""

from __future__ import annotations

import argparse

from unetseg.errors import InputError
from unetseg.report.pages import data_page, model_card_page

NEEDED = {"overlay": ("preprocessed", "prediction"), "training": ("history",), "data": ("preprocessed", "splits"),
          "card": ("model",)}  # fmt: skip


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("kind", choices=tuple(NEEDED),
                   help="overlay: contours and error map of one sample; training: training curve; "
                        "data: HTML table of the samples; card: HTML page of a model card")  # fmt: skip
    p.add_argument("--output", required=True)
    p.add_argument("--preprocessed", nargs="+", help="preprocessed sample(s): one for overlay, all for data")
    p.add_argument("--prediction", help="mask file (overlay)")
    p.add_argument("--history", help="history.csv of a model (training)")
    p.add_argument("--splits", nargs="+", help="split of each preprocessed sample (data)")
    p.add_argument("--model", help="model directory (card)")


def run(args: argparse.Namespace) -> None:
    missing = [f"--{name}" for name in NEEDED[args.kind] if not getattr(args, name)]
    if missing:
        raise InputError(f"figure {args.kind} needs {' and '.join(missing)}")
    if args.kind == "training":
        from unetseg.report.figures import training_curve_figure  # matplotlib: only here

        training_curve_figure(args.history, args.output)
    elif args.kind == "data":
        data_page(args.preprocessed, args.splits, args.output)
    elif args.kind == "card":
        model_card_page(args.model, args.output)
    else:
        from unetseg.report.overlays import overlay_figure

        overlay_figure(args.preprocessed[0], args.prediction, args.output)
