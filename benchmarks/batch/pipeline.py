"""Per-image time of one segment process, with and without the worker thread.

Runs :meth:`unetseg.batch.segment.BatchSegmenter.run` in this process on the first N images
of a directory (e.g. the images ``benchmarks/batch/run.py`` writes) and prints the wall time
per image. ``--serial`` replaces the worker thread by running every stage in turn, so the
two can be compared side by side:

    .venv/bin/python benchmarks/batch/pipeline.py --model results/demo/model --images DIR --threads 2
    .venv/bin/python benchmarks/batch/pipeline.py --model results/demo/model --images DIR --threads 2 --serial

Two images are segmented first and thrown away (imports, first passes); the rest is timed.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import shutil
import tempfile
import time
from pathlib import Path

import unetseg.batch.segment as segment
from unetseg.batch.segment import BatchSample, BatchSegmenter, SegmentSettings
from unetseg.inference.run import InferenceOptions


class _InTurn:
    """An executor that runs each task at once, in the calling thread."""

    def __init__(self, *args, **kwargs):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None

    def submit(self, function, *args):
        future = concurrent.futures.Future()
        future.set_result(function(*args))
        return future


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--images", required=True, help="directory of img_*.tif")
    parser.add_argument("--n", type=int, default=60)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--border", default="mirror", choices=("mirror", "none"))
    parser.add_argument("--serial", action="store_true", help="no worker thread: every stage in turn")
    args = parser.parse_args()
    if args.serial:
        segment.ThreadPoolExecutor = _InTurn
    files = sorted(Path(args.images).glob("img_*.tif"))[: args.n + 2]
    samples = [BatchSample(path.stem, str(path)) for path in files]
    options = InferenceOptions(threads=args.threads, border=args.border)
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch)
        settings = SegmentSettings(results=str(out / "results"), overlays=str(out / "overlays"), min_size=15)
        segmenter = BatchSegmenter(args.model, options, settings)
        segmenter.run(samples[:2])
        shutil.rmtree(out / "results")
        started = time.perf_counter()
        segmenter.run(samples[2:])
        seconds = time.perf_counter() - started
    mode = "in turn" if args.serial else "worker thread"
    print(f"{len(samples) - 2} images, border {args.border}, {args.threads} torch threads, {mode}: "
          f"{1000 * seconds / (len(samples) - 2):.0f} ms per image")  # fmt: skip


if __name__ == "__main__":
    main()
