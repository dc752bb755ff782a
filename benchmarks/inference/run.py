"""Tiled inference benchmark: unetseg predict against the compute bound and MONAI.

On one trained model and one 4096x4096 image, side by side in one run:

(a) one forward pass over the whole (mirror-padded) image: the compute bound here;
(b) ``unetseg predict``, the command users run (start-up, reading the TIFF, normalising,
    tiled inference, writing the mask and the probabilities included);
(c) MONAI's ``sliding_window_inference`` (roi 512, overlap 0.25, Gaussian blending) on the
    image held in memory, with the same normalisation and model.

then the peak resident memory of (b) at 8192x8192 (same model) and 20000x20000 (a small
untrained model of the same depth, to keep it short: memory does not depend on weights).
Every measurement runs in its own process; peak memory is that process's ``ru_maxrss``.

Usage, from the repository root, after ``make demo`` (which trains results/demo/model)::

    .venv/bin/python benchmarks/inference/run.py [--model results/demo/model] [--sizes 4096 8192 20000]

Needs MONAI for (c): ``.venv/bin/pip install -c constraints.txt -e ".[bench]"`` (``--no-monai``
skips it).
Inputs and outputs go to ``--work`` (default ``benchmarks/inference/work``, a few GB at
20000x20000); the results are printed as Markdown and written to ``results.json`` there.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
BLOCK = 2048  # side of the synthetic block that large test images repeat
TIFF_TILE = 512


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- inputs -------------------------------------------------------------------------------


def make_image(path: Path, size: int, seed: int = 0) -> Path:
    """A ``size`` x ``size`` uint16 tiled TIFF of synthetic nuclei (the demo's simulator).

    One ``BLOCK``-sized synthetic image is repeated (mirrored, so there are no seams) and
    written tile by tile: the benchmark's own memory stays small at any size.
    """
    import tifffile

    from unetseg.data.demo import synthetic_nuclei

    if path.exists():
        return path
    block, _ = synthetic_nuclei((BLOCK, BLOCK), rng=np.random.default_rng(seed))
    period = np.concatenate([block, block[::-1]], axis=0)
    period = np.concatenate([period, period[:, ::-1]], axis=1)  # 2 BLOCK, mirror-periodic

    def tiles():
        for y in range(0, size, TIFF_TILE):
            for x in range(0, size, TIFF_TILE):
                ys = np.arange(y, y + TIFF_TILE) % (2 * BLOCK)
                xs = np.arange(x, x + TIFF_TILE) % (2 * BLOCK)
                yield period[np.ix_(ys, xs)]

    tmp = path.with_suffix(".partial.tif")
    tifffile.imwrite(
        tmp, tiles(), shape=(size, size), dtype=np.uint16, tile=(TIFF_TILE, TIFF_TILE),
        bigtiff=size * size * 2 > 2**31, photometric="minisblack", metadata={"axes": "YX"},
    )  # fmt: skip
    tmp.rename(path)
    return path


def make_small_model(directory: Path, like: Path) -> Path:
    """An untrained U-Net with 4 base channels, same depth and card as ``like``."""
    import torch

    from unetseg.nn.model import UNet
    from unetseg.nn.modelcard import read_card, save_model

    if directory.exists():
        return directory
    card = read_card(like)
    settings = {k: v for k, v in card["architecture"].items() if k != "name"}
    settings["base_channels"] = 4
    torch.manual_seed(0)
    model = UNet(**settings).eval()
    keep = {k: card[k] for k in ("normalization", "threshold") if k in card}
    save_model(model, directory, {**keep, "note": "untrained; memory benchmark only"})
    return directory


# --- children: each measurement in a fresh process -------------------------------------------


def load_normalized(model_dir: str, image: str) -> np.ndarray:
    """The whole image, normalised as the model's card says: ``(C, Y, X)`` float32."""
    from unetseg.data.normalize import normalize, percentile_stats
    from unetseg.io.images import open_image
    from unetseg.nn.modelcard import read_card

    card = read_card(model_dir)
    with open_image(image) as source:
        stats = percentile_stats(source, *card["normalization"]["percentiles"])
        return normalize(source.read(0), stats)


def child_whole(args: argparse.Namespace) -> dict:
    """(a) one forward pass over the whole padded image."""
    from unetseg.inference.predictor import TiledPredictor
    from unetseg.nn.modelcard import load_model

    image = load_normalized(args.model, args.image)
    predictor = TiledPredictor(load_model(args.model), tile=args.tile, device="cpu")
    started = time.perf_counter()
    probs = predictor.predict_whole(image)
    seconds = time.perf_counter() - started
    np.save(args.output, probs.astype(np.float32))
    return {"seconds": seconds}


def child_monai(args: argparse.Namespace) -> dict:
    """(c) MONAI sliding-window inference on the image in memory."""
    import torch
    from monai.inferers import sliding_window_inference

    from unetseg.nn.modelcard import load_model

    model = load_model(args.model)
    image = torch.from_numpy(load_normalized(args.model, args.image))[None]
    started = time.perf_counter()
    with torch.inference_mode():
        logits = sliding_window_inference(
            image, roi_size=(512, 512), sw_batch_size=4, predictor=model, overlap=0.25, mode="gaussian"
        )
        probs = torch.sigmoid(logits) if logits.shape[1] == 1 else torch.softmax(logits, dim=1)
    seconds = time.perf_counter() - started
    np.save(args.output, probs[0].numpy())
    return {"seconds": seconds}


def run_measured(command: list[str], log_path: Path) -> dict:
    """Run ``command``; its wall time and peak resident memory.

    The command runs under a lean wrapper process (this file with ``_measure``, which
    imports no PyTorch): Linux counts the memory a process had before ``exec`` into its
    peak, so the command must not be forked from this process, which holds PyTorch.
    """
    result_file = log_path.with_suffix(".rusage.json")
    wrapper = [sys.executable, __file__, "_measure", str(result_file), str(log_path), *command]
    status = subprocess.run(wrapper, cwd=ROOT).returncode
    if status != 0:
        sys.exit(f"failed ({status}): {' '.join(command)}\nsee {log_path}:\n" + log_path.read_text()[-3000:])
    return json.loads(result_file.read_text())


def _measure(result_file: str, log_file: str, *command: str) -> int:
    """The lean wrapper: run ``command``, record its ``ru_maxrss`` (from ``wait4``) and time."""
    started = time.perf_counter()
    with open(log_file, "w") as log_handle:
        process = subprocess.Popen(command, stdout=log_handle, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    Path(result_file).write_text(json.dumps({"wall_seconds": seconds, "peak_rss_mib": usage.ru_maxrss / 1024}))
    return os.waitstatus_to_exitcode(status)


def measure_child(kind: str, args: argparse.Namespace, image: Path, output: Path) -> dict:
    result_file = output.with_suffix(".json")
    command = [sys.executable, __file__, "_child", kind, "--model", str(args.model), "--image", str(image),
               "--output", str(output), "--result", str(result_file), "--tile", str(args.tile)]  # fmt: skip
    measured = run_measured(command, output.with_suffix(".log"))
    return {**measured, **json.loads(result_file.read_text())}


def measure_predict(model: Path, image: Path, work: Path, name: str, args: argparse.Namespace) -> dict:
    """(b) the ``unetseg predict`` command, timed from outside."""
    mask, probs = work / f"{name}.mask.tif", work / f"{name}.probabilities.zarr"
    for path in (mask, probs):
        shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
    unetseg = shutil.which("unetseg", path=str(Path(sys.executable).parent)) or "unetseg"
    command = [unetseg, "predict", "--model", str(model), "--input", str(image), "--output", str(mask),
               "--probabilities", str(probs), "--probabilities-dtype", "float32",
               "--tile", str(args.tile), "--threads", str(args.threads), *args.predict_args]  # fmt: skip
    run = run_measured(command, work / f"{name}.log")
    # The command's own report of its tiled inference alone (without start-up and writing).
    found = re.search(r"segmented .* \(([0-9.]+) Mpixel/s\)", (work / f"{name}.log").read_text())
    run["inference_mpix_s"] = float(found.group(1)) if found else None
    return {**run, "mask": str(mask), "probabilities": str(probs)}


# --- main ----------------------------------------------------------------------------------


def compare(a: Path, other: Path | str, border: int = 64) -> dict:
    """How far a probability map is from (a): largest absolute difference over the whole
    image and away from its borders, mean absolute difference, share of mask pixels that
    differ at threshold 0.5 (first class, first plane)."""
    from unetseg.io.images import open_image

    ref = np.load(a)[0]
    if str(other).endswith(".npy"):
        values = np.load(other)[0]
    else:
        with open_image(other) as source:
            values = np.asarray(source.read(0))[0].astype(np.float32)
    diff = np.abs(ref - values)
    return {
        "max_abs_diff_vs_a": float(diff.max()),
        "max_abs_diff_vs_a_interior": float(diff[border:-border, border:-border].max()),
        "mean_abs_diff_vs_a": float(diff.mean()),
        "mask_pixels_differing_vs_a": float(((ref >= 0.5) != (values >= 0.5)).mean()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=ROOT / "results/demo/model")
    parser.add_argument("--sizes", type=int, nargs="+", default=[4096, 8192, 20000],
                        help="first size: the comparison; all sizes: peak memory of unetseg predict")  # fmt: skip
    parser.add_argument("--work", type=Path, default=HERE / "work")
    parser.add_argument("--tile", type=int, default=1024, help="unetseg predict --tile")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--no-monai", action="store_true", help="skip (c)")
    parser.add_argument("--small-model-from", type=int, default=10000,
                        help="sizes from this one on use the small untrained model")  # fmt: skip
    parser.add_argument("predict_args", nargs="*", help="extra arguments for unetseg predict (after --)")
    args = parser.parse_args()
    if not (args.model / "card.json").is_file():
        sys.exit(f"{args.model}: no trained model there; run `make demo` first or pass --model DIR.")
    args.model = args.model.resolve()
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    import torch

    results: dict = {"model": str(args.model), "tile": args.tile, "threads": args.threads,
                     "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "runs": {}}  # fmt: skip
    first = args.sizes[0]
    image = make_image(work / f"image_{first}.tif", first)
    log(f"(a) whole-image forward pass, {first}^2")
    runs = results["runs"]
    runs["a"] = measure_child("whole", args, image, work / "a.npy")
    log(f"(b) unetseg predict, {first}^2")
    runs["b"] = measure_predict(args.model, image, work, "b", args)
    if not args.no_monai:
        log(f"(c) MONAI sliding_window_inference, {first}^2")
        runs["c"] = measure_child("monai", args, image, work / "c.npy")
    pixels = first * first
    runs["a"]["mpix_s"] = pixels / runs["a"]["seconds"] / 1e6
    runs["b"]["mpix_s"] = pixels / runs["b"]["wall_seconds"] / 1e6
    runs["b"].update(compare(work / "a.npy", runs["b"]["probabilities"]))
    if "c" in runs:
        runs["c"]["mpix_s"] = pixels / runs["c"]["seconds"] / 1e6
        runs["c"].update(compare(work / "a.npy", work / "c.npy"))
    memory = results["memory"] = {first: runs["b"]["peak_rss_mib"]}
    for size in args.sizes[1:]:
        model = args.model if size < args.small_model_from else make_small_model(work / "small_model", args.model)
        image = make_image(work / f"image_{size}.tif", size)
        log(f"unetseg predict, {size}^2 ({'small model' if model != args.model else 'same model'})")
        run = measure_predict(model, image, work, f"b_{size}", args)
        run["model"] = "small" if model != args.model else "same"
        run["mpix_s"] = size * size / run["wall_seconds"] / 1e6
        runs[f"b_{size}"] = run
        memory[size] = run["peak_rss_mib"]
    (work / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    report(results, first)


def report(results: dict, first: int) -> None:
    runs = results["runs"]
    print(f"\n{first}x{first}, model {results['model']}, tile {results['tile']}, "
          f"{results['threads']} threads ({results['cpu_count']} cores)\n")  # fmt: skip
    print(
        "| run | time (s) | Mpixel/s | peak RSS (MiB) | max abs diff vs (a) | same, 64 px from the border | mean abs diff | mask pixels differing |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    names = {"a": "(a) whole-image forward (forward only)", "b": "(b) unetseg predict (whole command)",
             "c": "(c) MONAI sliding_window_inference (inference only)"}  # fmt: skip
    for key in ("a", "b", "c"):
        if key in runs:
            run = runs[key]
            seconds = run.get("seconds", run["wall_seconds"])
            diffs = [run.get(k) for k in ("max_abs_diff_vs_a", "max_abs_diff_vs_a_interior", "mean_abs_diff_vs_a",
                                          "mask_pixels_differing_vs_a")]  # fmt: skip
            cells = " | ".join("-" if d is None else f"{d:.2e}" for d in diffs)
            print(f"| {names[key]} | {seconds:.1f} | {run['mpix_s']:.3f} | {run['peak_rss_mib']:.0f} | {cells} |")
    print(f"\n(b)'s tiled inference alone, as the command reports it: {runs['b']['inference_mpix_s']} Mpixel/s")
    print(f"ratio (b)/(a) throughput: {runs['b']['mpix_s'] / runs['a']['mpix_s']:.2f}")
    if "c" in runs:
        print(f"ratio (b)/(c) throughput: {runs['b']['mpix_s'] / runs['c']['mpix_s']:.2f}")
    print(
        "\n| image | model | unetseg predict time (s) | Mpixel/s (whole command) | Mpixel/s (inference) | peak RSS (MiB) |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for key, run in runs.items():
        if key == "b" or key.startswith("b_"):
            size = key[2:] or str(first)
            print(f"| {size}^2 | {run.get('model', 'same')} | {run['wall_seconds']:.1f} | {run['mpix_s']:.3f} | "
                  f"{run['inference_mpix_s']} | {run['peak_rss_mib']:.0f} |")  # fmt: skip
    memory = results["memory"]
    sizes = sorted(memory, key=int)
    if len(sizes) > 1:
        print(f"\nratio peak RSS {sizes[1]}^2 / {sizes[0]}^2: {memory[sizes[1]] / memory[sizes[0]]:.2f}")


def child_main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=("whole", "monai"))
    for name in ("--model", "--image", "--output", "--result"):
        parser.add_argument(name, required=True)
    parser.add_argument("--tile", type=int, default=1024)
    args = parser.parse_args(sys.argv[2:])
    result = child_whole(args) if args.kind == "whole" else child_monai(args)
    Path(args.result).write_text(json.dumps(result))


if __name__ == "__main__":
    if sys.argv[1:2] == ["_measure"]:
        sys.exit(_measure(*sys.argv[2:]))
    elif sys.argv[1:2] == ["_child"]:
        child_main()
    else:
        main()
