"""``unetseg evaluate``: Dice, IoU and more over a split, with the report's tables and figures."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from unetseg.batch.manifest import read_manifests
from unetseg.cli.options import foreground
from unetseg.data.sample import open_sample
from unetseg.errors import InputError
from unetseg.evaluation.evaluate import evaluate, write_evaluation
from unetseg.nn.card import read_card
from unetseg.report import figures
from unetseg.report.pages import metrics_page
from unetseg.report.provenance import collect_provenance, sha256_path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--samples", nargs="+", required=True)
    p.add_argument("--truth", nargs="+", required=True, help="preprocessed samples, same order")
    p.add_argument("--prediction", nargs="+", required=True, help="mask files, same order")
    p.add_argument("--foreground", type=foreground, default="nonzero",
                   help='labels.foreground the truth was preprocessed with: "nonzero" or a JSON list')  # fmt: skip
    p.add_argument("--pred-instances", nargs="*", default=None,
                   help="instance labels of the predictions, same order: the predicted objects")  # fmt: skip
    p.add_argument("--json", required=True, help="summary.json to write")
    p.add_argument("--csv", required=True, help="per-image CSV to write")
    p.add_argument("--metrics-table", help="CSV to write: statistics of every score over the split")
    p.add_argument("--metrics-page", help="HTML page to write: the statistics and per-image tables")
    p.add_argument("--distributions", help="PNG to write: distributions of the per-image scores")
    p.add_argument("--instances", help="PNG to write: object precision/recall against the IoU threshold")
    p.add_argument("--confusion", help="PNG to write: the pooled pixel confusion matrix of the classes")
    p.add_argument("--gallery", help="PNG to write: error maps of the worst images by Dice")
    p.add_argument("--model", help="model directory that made the predictions, for provenance")
    p.add_argument("--sample-sheet", help="sample sheet, for provenance")
    p.add_argument("--workflow-dir", help="directory of the workflow, for its git commit")
    p.add_argument("--manifests", nargs="*", default=[],
                   help="manifests of unetseg segment: test samples that failed are left out and listed")  # fmt: skip


def run(args: argparse.Namespace) -> None:
    started = time.perf_counter()
    failed = _drop_failed(args)
    if not args.samples:
        raise InputError(
            f"every test sample failed to segment ({', '.join(f['sample'] for f in failed)}); see the logs."
        )
    summary = evaluate(args.samples, args.truth, args.prediction, foreground=args.foreground,
                       instances=args.pred_instances or None)  # fmt: skip
    summary["failed"] = failed
    summary["provenance"] = provenance(args)
    summary["provenance"]["evaluation_seconds"] = round(time.perf_counter() - started, 3)
    write_evaluation(summary, args.json, args.csv, metrics_csv=args.metrics_table)
    if args.metrics_page:
        metrics_page(summary, args.metrics_page)
    if args.distributions:
        figures.metric_distributions_figure(args.csv, args.distributions)
    if args.instances:
        figures.instance_curve_figure(summary, args.instances)
    if args.confusion:
        figures.confusion_figure(summary, args.confusion)
    if args.gallery:
        rows = [(r["sample"], r["dice"], t, p) for r, t, p in zip(summary["per_image"], args.truth, args.prediction)]
        figures.gallery_figure(rows, args.gallery)
    print(f"mean Dice {summary['mean_dice']}, mean IoU {summary['mean_iou']}", file=sys.stderr)


def _drop_failed(args: argparse.Namespace) -> list[dict[str, str]]:
    """Leave the test samples that failed to segment out of the evaluation; list them."""
    if not args.manifests:
        return []
    status = read_manifests(args.manifests).set_index("sample")
    failed = [s for s in args.samples if s in status.index and status.loc[s, "status"] == "failed"]
    keep = [i for i, s in enumerate(args.samples) if s not in failed]
    args.samples, args.truth, args.prediction = (
        [v[i] for i in keep] for v in (args.samples, args.truth, args.prediction)
    )
    if args.pred_instances:
        args.pred_instances = [args.pred_instances[i] for i in keep]
    return [{"sample": s, "error": str(status.loc[s, "error"])} for s in failed]


def provenance(args: argparse.Namespace) -> dict:
    """Checksums of the test inputs and of the model, commit and versions."""
    inputs = {}
    for truth in args.truth:
        attrs = open_sample(truth).attrs
        inputs[attrs["sample"]] = [attrs["image"], attrs["mask"] or ""]
    record = collect_provenance(inputs=inputs, sample_sheet=args.sample_sheet, workflow_dir=args.workflow_dir)
    if args.model:
        card = read_card(args.model)
        record["model"] = {"path": args.model, "weights_sha256": sha256_path(Path(args.model) / "weights.pt")}
        # How the model was made: device, seed, timings and the whole config of the run.
        record["training"] = card.get("training", {})
        record["seed"] = card.get("train_config", {}).get("seed")
        record["config"] = card.get("config")
    return record
