"""``unetseg summarize``: ``measurements/summary.csv`` and the report's Measurements figure."""

from __future__ import annotations

import argparse
import sys

from unetseg.batch.manifest import write_summary
from unetseg.report.measurements import measurements_figure


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--manifests", nargs="+", required=True, help="manifests written by unetseg segment")
    p.add_argument("--output", required=True, help="summary CSV to write (measurements/summary.csv)")
    p.add_argument("--measurements", nargs="*", default=[], help="per-object CSVs (for the figure)")
    p.add_argument("--figure", default=None, help="PNG to write: counts, areas and intensities")


def run(args: argparse.Namespace) -> None:
    summary = write_summary(args.manifests, args.output)
    if args.figure:
        measurements_figure(summary, args.measurements, args.figure)
    failed = summary[summary["status"] == "failed"]
    print(f"{len(summary) - len(failed)} sample(s) segmented, {len(failed)} failed", file=sys.stderr)
