"""Batch benchmark: the workflow on N small images with a trained model, against bare forward passes.

The bare forward passes are those of the same model on the same images.

Side by side in one run, on N synthetic 512x512 fluorescence-nuclei images (the demo's
simulator) and one trained model:

(a) the bare forward passes, in a process of their own: the model loaded first (not timed),
    then for each image: read the TIFF, normalise it (the card's percentiles, 1/99.8), one
    forward pass of the (1, 1, 512, 512) tensor under ``torch.inference_mode`` with as many
    torch threads as the workflow gets cores (``--cores``, default 2). Only the loop is
    timed. Run before and after (b); the smaller of the two is the baseline;
(b) the workflow as a user starts it, from a fresh project directory (a copy of Snakefile,
    workflow/, config/, profiles/): ``python -m snakemake --cores 2 --resources gpu=1
    --configfile bench.yaml`` with ``trained_model`` and an ``images`` glob, everything the
    default target makes; wall time of that process from start to finish;
(c) the report of that run: ``python -m snakemake ... --report report.html``.

Then ratios (b)/(a) and ((b)+(c))/(a) and the cost per image. With ``--profile``, one
segment job of the run (a full batch) is replayed in-process (the exact command Snakemake ran, on a
scratch results directory) with every stage of ``BatchSegmenter`` timed, and the Snakemake
jobs' own spans are read from its log: where the time beyond the forward passes goes.

Usage, from the repository root (training a small model first, about 3 minutes, untimed)::

    .venv/bin/python benchmarks/batch/run.py [--n 200] [--model results/demo/model]
        [--samples-per-job 16] [--profile] [--json results.json] [--workdir DIR]

Needs the project's environment (``make test`` or ``pip install -e .``): unetseg, torch,
tifffile and snakemake importable by the Python that runs this file.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
PROJECT_FILES = ("Snakefile", "workflow", "config", "profiles")
SIZE = 512
DATASET = "batch"
VARIANT_IMAGES = 40  # images per forward-pass variant of --profile


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def missing_requirements() -> list[str]:
    """What this benchmark needs and does not find (empty: all there)."""
    missing = [f"the Python module {name!r}" for name in ("unetseg", "torch", "tifffile", "snakemake", "yaml")
               if importlib.util.find_spec(name) is None]  # fmt: skip
    missing += [f"{ROOT / name} (a checkout of the workflow)" for name in PROJECT_FILES if not (ROOT / name).exists()]
    if not shutil.which("unetseg", path=str(Path(sys.executable).parent)):
        missing.append(f"the `unetseg` command beside {sys.executable}")
    return missing


# --- inputs --------------------------------------------------------------------------------


def make_images(directory: Path, n: int, seed: int = 0) -> Path:
    """``n`` synthetic 512x512 uint16 TIFFs ``img_0000.tif``...; existing ones are kept."""
    import tifffile

    from unetseg.data.demo import synthetic_nuclei

    directory.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        path = directory / f"img_{i:04d}.tif"
        if not path.exists():
            image, _ = synthetic_nuclei((SIZE, SIZE), rng=np.random.default_rng([seed, i]))
            tmp = path.with_suffix(".partial")
            tifffile.imwrite(tmp, image)
            tmp.rename(path)
    return directory


def fresh_project(directory: Path) -> Path:
    """A copy of the workflow, as a user's clone has it (as tests/test_workflow.py makes it)."""
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    for name in PROJECT_FILES:
        source = ROOT / name
        (shutil.copytree if source.is_dir() else shutil.copy)(source, directory / name)
    return directory


def snakemake_command(cores: int, *targets: str) -> list[str]:
    # Targets first: --resources and --configfile take every value that follows them.
    return [sys.executable, "-m", "snakemake", *targets, "--cores", str(cores), "--resources", "gpu=1"]


def user_env() -> dict[str, str]:
    """The environment of a user who activated the venv: its bin/ first on PATH."""
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}


LOADS: list[tuple[str, float]] = []  # the 1-minute load average after each timed command


def _own_cpu(pid: int) -> float | None:
    """CPU seconds (user + system) of process ``pid`` alone, children not included."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(command: list[str], cwd: Path, log_path: Path) -> dict:
    """Run ``command`` in ``cwd`` (output to ``log_path``): its wall time, the CPU time of
    the whole process tree (``wait4``) and of the process alone (sampled from /proc)."""
    LOADS.append((f"before {log_path.name}", os.getloadavg()[0]))
    own = None
    with open(log_path, "w") as handle:
        started = time.perf_counter()
        process = subprocess.Popen(command, cwd=cwd, env=user_env(), stdout=handle, stderr=subprocess.STDOUT)
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            own = _own_cpu(process.pid) or own
            time.sleep(0.25)
        seconds = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    LOADS.append((f"after {log_path.name}", os.getloadavg()[0]))
    if process.returncode != 0:
        sys.exit(f"failed ({process.returncode}): {shlex.join(command)} in {cwd}\n{log_path.read_text()[-4000:]}")
    return {"wall": seconds, "cpu": usage.ru_utime + usage.ru_stime, "own_cpu": own}


def timed(command: list[str], cwd: Path, log_path: Path) -> float:
    """Run ``command`` in ``cwd`` (output to ``log_path``); its wall time in seconds."""
    return measure(command, cwd, log_path)["wall"]


def train_model(work: Path, cores: int) -> Path:
    """A demo-sized model (config/demo.yaml's model section) trained by the workflow on the
    demo data for at most 2 minutes; reused if ``work`` already holds one. Not timed."""
    import yaml

    root = work / "train"
    model = root / "results" / "benchtrain" / "model"
    if (model / "card.json").is_file():
        log(f"reusing the model trained before: {model}")
        return model
    fresh_project(root)
    (root / "train.yaml").write_text(yaml.safe_dump({"dataset": "benchtrain", "train": {"max_minutes": 2}}))
    log("training a demo-sized model with the workflow (train.max_minutes 2; not part of the measurement)")
    command = [*snakemake_command(cores, "results/benchtrain/model"), "--configfile", "config/demo.yaml", "train.yaml"]
    seconds = timed(command, root, root / "train.log")
    log(f"trained in {seconds:.0f} s: {model}")
    return model


# --- (a) bare forward passes, in a child process ---------------------------------------------


def child_bare(args: argparse.Namespace) -> dict:
    """Load the model, then read, normalise and forward each image; only the loop is timed."""
    import tifffile
    import torch

    from unetseg import load_model, read_card

    torch.set_num_threads(args.threads)
    model = load_model(args.model)
    if args.channels_last:  # as the workflow's inference runs it
        model = model.to(memory_format=torch.channels_last)
    low, high = read_card(args.model)["normalization"]["percentiles"]
    paths = sorted(Path(args.images).glob("img_*.tif"))[: args.n]
    reading, forward = [], []
    started = time.perf_counter()
    with torch.inference_mode():
        for path in paths:
            t0 = time.perf_counter()
            image = tifffile.imread(path).astype(np.float32)
            lo, hi = np.percentile(image, [low, high])
            image = (image - np.float32(lo)) * np.float32(1.0 / (hi - lo) if hi > lo else 0.0)
            if args.pad:  # the halo a tile reads around the image (mirror border)
                image = np.pad(image, args.pad, mode="symmetric")
            x = torch.from_numpy(np.ascontiguousarray(image))[None, None]
            if args.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            t1 = time.perf_counter()
            model(x)
            t2 = time.perf_counter()
            reading.append(t1 - t0)
            forward.append(t2 - t1)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "n": len(paths), "torch_threads": torch.get_num_threads(),
            "read_normalize_seconds": sum(reading), "forward_seconds": sum(forward),
            "first_forward_s": forward[0], "median_forward_s": statistics.median(forward),
            "median_image_s": statistics.median(r + f for r, f in zip(reading, forward))}  # fmt: skip


def run_child(kind: str, extra: list[str], work: Path) -> dict:
    result = work / f"{kind}.result.json"
    result.unlink(missing_ok=True)
    command = [sys.executable, __file__, "_child", kind, "--result", str(result), *extra]
    usage = measure(command, work, work / f"{kind}.log")
    return {**json.loads(result.read_text()), "process_cpu_seconds": usage["cpu"]}


def bare(model: Path, images: Path, n: int, threads: int, work: Path, *, channels_last: bool = False) -> dict:
    extra = ["--model", str(model), "--images", str(images), "--n", str(n), "--threads", str(threads)]
    return run_child("bare", extra + ["--channels-last"] * channels_last, work)


# --- (b), (c): the workflow and its report ------------------------------------------------


JOB_START = re.compile(r"^(?:local)?rule (\w+):")
STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]")
FINISHED = re.compile(r"^Finished jobid: (\d+) \(Rule: (\w+)\)")
JOBID = re.compile(r"^\s+jobid: (\d+)")


def jobs_of(log_text: str, started: float) -> list[dict]:
    """Every job of the run: rule, start and end in seconds since the snakemake process
    started (``started``, a ``time.time()``), from Snakemake's log (1 s resolution)."""
    origin = dt.datetime.fromtimestamp(started)
    stamp, rule, starts, jobs = None, None, {}, []
    for line in log_text.splitlines():
        if m := STAMP.match(line):
            stamp = dt.datetime.strptime(" ".join(m.group(1).split()), "%a %b %d %H:%M:%S %Y")
        elif m := JOB_START.match(line):
            rule = m.group(1)
        elif (m := JOBID.match(line)) and rule:
            starts[m.group(1)] = (rule, stamp)
            rule = None
        elif (m := FINISHED.match(line)) and m.group(1) in starts:
            name, begun = starts.pop(m.group(1))
            jobs.append(
                {"rule": name, "start": (begun - origin).total_seconds(), "end": (stamp - origin).total_seconds()}
            )
    return jobs


def phases(jobs: list[dict], total: float) -> dict[str, float]:
    """The run cut where its critical path changes: before the first job (Snakemake's start-up,
    config checks, DAG), the segment jobs (first start to last end; they take every core),
    the jobs after them (summary, report pages) and the exit."""
    if not jobs:
        return {}
    segment = [j for j in jobs if j["rule"] == "segment"]
    first = min(j["start"] for j in jobs)
    seg_end = max((j["end"] for j in segment), default=first)
    last = max(j["end"] for j in jobs)
    return {
        "start-up (to the first job)": max(0.0, first),
        "segment jobs": seg_end - first,
        "jobs after the last segment job": last - seg_end,
        "exit (after the last job)": max(0.0, total - last),
    }


def segment_commands(log_text: str) -> list[str]:
    """The shell commands of the segment jobs, as Snakemake printed them (printshellcmds)."""
    lines = (line.strip().removeprefix("Shell command:").strip() for line in log_text.splitlines())
    return [line for line in lines if line.startswith("unetseg segment ")]


def inference_settings(overrides: dict, log_text: str) -> dict:
    """The ``inference`` section the run used (config/config.yaml + bench.yaml) and the
    options of its segment jobs as Snakemake ran them."""
    import yaml

    settings = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())["inference"] | overrides
    commands = segment_commands(log_text)
    if commands:
        argv = shlex.split(commands[0])
        for option in ("--threads", "--tile", "--batch-size", "--device"):
            if option in argv:
                settings[f"job {option}"] = argv[argv.index(option) + 1]
    settings["segment jobs"] = len(commands)
    return settings


def run_workflow(
    model: Path, images: Path, n: int, cores: int, per_job: int | None, work: Path, border: str | None = None
) -> dict:
    import yaml

    root = fresh_project(work / f"project-n{n}")
    inference = {"samples_per_job": per_job} if per_job else {}
    if border:
        inference["border"] = border
    config = {"dataset": DATASET, "trained_model": str(model), "images": str(images / "img_*.tif")}
    if inference:
        config["inference"] = inference
    (root / "bench.yaml").write_text(yaml.safe_dump(config))
    base = [*snakemake_command(cores), "--configfile", "bench.yaml"]
    log(f"(b) the workflow: {shlex.join(base[1:])}  (in {root})")
    started = time.time()
    flow = measure(base, root, root / "workflow.log")
    workflow_s = flow["wall"]
    log(f"(b) {workflow_s:.1f} s; (c) the report")
    rep = measure([*base, "--report", "report.html"], root, root / "report.log")
    report_s = rep["wall"]
    log(f"(c) {report_s:.1f} s")
    results = root / "results" / DATASET
    masks = len(list((results / "masks").glob("*.tif")))
    if masks != n or not (root / "report.html").is_file():
        sys.exit(f"the run made {masks} masks of {n} (and report.html: {(root / 'report.html').is_file()}); "
                 f"see {root / 'workflow.log'}")  # fmt: skip
    text = (root / "workflow.log").read_text()
    segment_logs = sorted((root / "logs" / DATASET / "segment").glob("*.log"))
    return {"project": str(root), "workflow_seconds": workflow_s, "report_seconds": report_s,
            "workflow_cpu_seconds": flow["cpu"], "snakemake_own_cpu_seconds": flow["own_cpu"],
            "report_cpu_seconds": rep["cpu"],
            "report_bytes": (root / "report.html").stat().st_size, "masks": masks,
            "inference": inference_settings(inference, text), "jobs": jobs_of(text, started),
            "segment_logs": [str(p) for p in segment_logs]}  # fmt: skip


def dry_run(project: Path, cores: int) -> float:
    """Snakemake's start-up alone: parsing, config checks and the DAG, nothing to run."""
    return timed([*snakemake_command(cores), "--configfile", "bench.yaml", "-n"], project, project / "dryrun.log")


# --- --profile: one segment job replayed in-process, every stage timed ------------------------


def child_profile(args: argparse.Namespace) -> dict:
    """Replay ``args.command`` (a segment job's shell command) with its outputs redirected to
    ``args.scratch``, timing each stage of :class:`unetseg.batch.segment.BatchSegmenter`."""
    started = time.perf_counter()
    from collections import defaultdict

    import torch

    import unetseg.batch.segment as segment
    from unetseg.cli.app import build_parser
    from unetseg.inference.forward import Forward
    from unetseg.inference.predictor import TiledPredictor

    imports_s = time.perf_counter() - started
    totals: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    shapes: set = set()
    threads: set = set()

    def wrap(owner, name, label=None):
        original = getattr(owner, name, None)
        if original is None:  # not (or no longer) a stage of this version
            return

        def timed_call(*a, **k):
            t = time.perf_counter()
            try:
                return original(*a, **k)
            finally:
                totals[label or name] += time.perf_counter() - t
                counts[label or name] += 1

        setattr(owner, name, timed_call)

    # _infer runs in the job's main thread, _prepare and _finish (and the functions they call)
    # in its worker thread, at the same time: their seconds overlap.
    for name in ("preprocess_sample", "open_sample", "check_channels", "write_mask", "label_components",
                 "label_array", "measure_sample", "measure_labels", "write_tiff_array", "overlay_figure",
                 "write_json", "_read_state"):  # fmt: skip
        wrap(segment, name)
    for name in ("fingerprint", "_prepare", "_infer", "_finish", "_outputs_exist", "__init__"):
        wrap(segment.BatchSegmenter, name, f"BatchSegmenter.{name}")
    wrap(TiledPredictor, "predict", "TiledPredictor.predict")
    wrap(TiledPredictor, "create_output", "TiledPredictor.create_output")
    original_call = Forward.__call__

    def forward(self, batch):
        shapes.add(tuple(batch.shape))
        threads.add(torch.get_num_threads())
        t = time.perf_counter()
        try:
            return original_call(self, batch)
        finally:
            totals["Forward.__call__"] += time.perf_counter() - t
            counts["Forward.__call__"] += 1

    Forward.__call__ = forward
    argv = shlex.split(args.command)
    argv = argv[1 : argv.index("2>")] if "2>" in argv else argv[1:]
    scratch = Path(args.scratch)
    shutil.rmtree(scratch, ignore_errors=True)
    for option, value in (("--results", scratch / "results"), ("--manifest", scratch / "manifest.tsv"),
                          ("--overlays", scratch / "overlays")):  # fmt: skip
        argv[argv.index(option) + 1] = str(value)
    parsed = build_parser("segment").parse_args(argv)
    t = time.perf_counter()
    parsed.func(parsed)
    run_s = time.perf_counter() - t
    samples = len(parsed.samples)
    return {"samples": samples, "imports_s": imports_s, "run_s": run_s, "forward_input_shapes": sorted(shapes),
            "torch_threads_in_forward": sorted(threads),
            "stages": {k: {"seconds": totals[k], "calls": counts[k]} for k in totals}}  # fmt: skip


def profile(result: dict, work: Path, model: Path, images: Path, n: int, cores: int) -> dict:
    commands = segment_commands((Path(result["project"]) / "workflow.log").read_text())
    if not commands:
        return {}
    log(f"--profile: replaying the largest segment job in-process ({work / 'profile'})")
    command = max(commands, key=lambda c: c.count('"sample":'))  # a full batch
    extra = ["--command", command, "--scratch", str(work / "profile")]
    t = time.perf_counter()
    # Same cwd as the job: its paths (the model, the images) are those Snakemake gave it.
    try:
        out = run_child("profile", extra, Path(result["project"]))
    except SystemExit as failure:  # the measurement stands without the profile
        log(f"--profile failed; the results above stand:\n{failure}")
        return {}
    out["process_s"] = time.perf_counter() - t
    # `unetseg segment --help`: Python and the command's imports alone, as each job pays them.
    unetseg = shutil.which("unetseg", path=str(Path(sys.executable).parent))
    t = time.perf_counter()
    subprocess.run([unetseg, "segment", "--help"], capture_output=True, check=True)
    out["segment_help_s"] = time.perf_counter() - t
    # The forward pass as the job runs it (input with its halo, its torch threads) against
    # the bare one, on the same images, back to back.
    shape = max(out["forward_input_shapes"], key=lambda s: s[-1] * s[-2]) if out["forward_input_shapes"] else None
    job_threads = max(out["torch_threads_in_forward"] or [cores])
    variants = []
    pads = [0] + ([(shape[-1] - SIZE) // 2] if shape and shape[-1] > SIZE else [])
    for pad in pads:
        for threads in sorted({cores, job_threads}, reverse=True):
            extra = ["--model", str(model), "--images", str(images), "--n", str(min(n, VARIANT_IMAGES)),
                     "--threads", str(threads), "--pad", str(pad)]  # fmt: skip
            row = run_child("bare", extra, work)
            variants.append({"input": SIZE + 2 * pad, "threads": threads, "images": row["n"],
                             "forward_ms": 1000 * row["forward_seconds"] / row["n"],
                             "median_forward_ms": 1000 * row["median_forward_s"]})  # fmt: skip
            log(f"forward {SIZE + 2 * pad}^2, {threads} thread(s): {variants[-1]['forward_ms']:.0f} ms per image")
    out["forward_variants"] = variants
    return out


# --- main ------------------------------------------------------------------------------------


def git_state() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--", *PROJECT_FILES, "src"], cwd=ROOT,
                               capture_output=True, text=True).stdout.strip()  # fmt: skip
        return head.stdout.strip() + (" (with uncommitted changes in src/ or workflow/)" if dirty else "")
    except OSError:
        return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=200, help="number of 512x512 images")
    parser.add_argument("--model", type=Path, default=None,
                        help="a trained model directory (weights.pt + card.json), e.g. results/demo/model; "
                             "default: train one with the workflow (about 3 minutes, not timed)")  # fmt: skip
    parser.add_argument("--samples-per-job", type=int, default=None,
                        help="inference.samples_per_job (default: config/config.yaml's)")  # fmt: skip
    parser.add_argument("--border", choices=("mirror", "zero", "none"), default=None,
                        help="inference.border (default: config/config.yaml's)")  # fmt: skip
    parser.add_argument("--cores", type=int, default=2, help="snakemake --cores, and torch threads of (a)")
    parser.add_argument("--workdir", type=Path, default=None, help="work directory (default: a temporary one)")
    parser.add_argument("--json", type=Path, default=None, help="write the results there")
    parser.add_argument("--profile", action="store_true", help="also replay one segment job with its stages timed")
    args = parser.parse_args()

    missing = missing_requirements()
    if missing:
        print("benchmarks/batch: skipped; this benchmark needs " + "; ".join(missing) + ".\n"
              "Run it with the project's Python, e.g. `.venv/bin/python benchmarks/batch/run.py` after "
              "`make test` (or `pip install -e .`).", file=sys.stderr)  # fmt: skip
        sys.exit(2)
    if args.model is not None and not (args.model / "card.json").is_file():
        print(f"benchmarks/batch: skipped; {args.model} holds no trained model (weights.pt + card.json). "
              "Run `make demo` for results/demo/model, or leave --model out to train one.", file=sys.stderr)  # fmt: skip
        sys.exit(2)
    work = (args.workdir or Path(tempfile.mkdtemp(prefix="unetseg-batch-bench-"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    log(f"work directory: {work}")
    model = args.model.resolve() if args.model else train_model(work, args.cores)
    images = make_images(work / "images", args.n)
    if len(list(images.glob("img_*.tif"))) != args.n:
        # A work directory reused with a different --n: the glob must match N files exactly.
        images = make_images(work / f"images-n{args.n}", args.n)
    log(f"{args.n} images of {SIZE}x{SIZE} in {images}")

    log("(a) bare forward passes, before")
    before = bare(model, images, args.n, args.cores, work)
    run = run_workflow(model, images, args.n, args.cores, args.samples_per_job, work, args.border)
    log("(a) bare forward passes, after")
    after = bare(model, images, args.n, args.cores, work)
    log("(a') bare forward passes, channels-last as the workflow runs them")
    fast = bare(model, images, args.n, args.cores, work, channels_last=True)
    run["dry_run_seconds"] = dry_run(Path(run["project"]), args.cores)
    results = {
        "date": dt.datetime.now().isoformat(timespec="seconds"), "commit": git_state(),
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "load_average": os.getloadavg()},
        "n": args.n, "size": SIZE, "cores": args.cores, "model": str(model), "bare_before": before,
        "bare_after": after, "bare_channels_last": fast, "workflow": run,
    }  # fmt: skip
    import torch

    results["machine"]["torch"] = torch.__version__
    results["machine"]["cuda"] = torch.cuda.is_available()
    if args.profile:
        results["profile"] = profile(run, work, model, images, args.n, args.cores)
    results["machine"]["load_averages"] = LOADS
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str) + "\n")
    report(results)


def report(results: dict) -> None:
    n, run = results["n"], results["workflow"]
    before, after = results["bare_before"]["seconds"], results["bare_after"]["seconds"]
    base = min(before, after)
    flow, rep = run["workflow_seconds"], run["report_seconds"]
    settings = run["inference"]
    print(f"\n{n} images of {results['size']}x{results['size']}, {results['cores']} cores, "
          f"model {results['model']}, commit {results['commit']}, {results['date']}\n")  # fmt: skip
    print("| N | bare forward (s) | workflow (s) | report (s) | workflow / bare | (workflow + report) / bare |")
    print("| --- | --- | --- | --- | --- | --- |")
    print(f"| {n} | {base:.1f} | {flow:.1f} | {rep:.1f} | **{flow / base:.2f}** | **{(flow + rep) / base:.2f}** |")
    print("\n| per image (ms) | bare forward | workflow | workflow + report |")
    print("| --- | --- | --- | --- |")
    print(f"| {n} images | {1000 * base / n:.0f} | {1000 * flow / n:.0f} | {1000 * (flow + rep) / n:.0f} |")
    a1, a2 = results["bare_before"], results["bare_after"]
    print(f"\n(a) before (b): {before:.2f} s, after: {after:.2f} s (mean {(before + after) / 2:.2f} s; the "
          f"baseline is the smaller); of which read + normalise {a1['read_normalize_seconds']:.2f} / "
          f"{a2['read_normalize_seconds']:.2f} s, forward {a1['forward_seconds']:.2f} / {a2['forward_seconds']:.2f} s; "
          f"median forward {1000 * a1['median_forward_s']:.0f} / {1000 * a2['median_forward_s']:.0f} ms, "
          f"torch threads {a1['torch_threads']}")  # fmt: skip
    if "bare_channels_last" in results:
        fast = results["bare_channels_last"]["seconds"]
        print(
            f"(a') channels-last bare forward passes, as the workflow runs the network: {fast:.2f} s; "
            f"workflow / that: {flow / fast:.2f}; (workflow + report) / that: {(flow + rep) / fast:.2f}"
        )
    print(f"workflow / mean bare: {flow / ((before + after) / 2):.2f}; (workflow + report) / mean bare: "
          f"{(flow + rep) / ((before + after) / 2):.2f}")  # fmt: skip
    if "median_image_s" in a1:
        # Other work on a shared machine adds spikes to single passes; the median pass does not
        # see them. The workflow's wall time has no such filter: read this as an upper bound.
        robust = n * min(a1["median_image_s"], a2["median_image_s"])
        print(f"(a) estimated from the median image (N x {1000 * robust / n:.0f} ms): {robust:.1f} s; "
              f"workflow / that: {flow / robust:.2f}; (workflow + report) / that: {(flow + rep) / robust:.2f}")  # fmt: skip
    cpu_bare = min(a1["process_cpu_seconds"], a2["process_cpu_seconds"])
    print(f"CPU time (user + system, all processes): bare {a1['process_cpu_seconds']:.1f} / "
          f"{a2['process_cpu_seconds']:.1f} s (process, model loading included), workflow "
          f"{run['workflow_cpu_seconds']:.1f} s, of which the snakemake process itself "
          f"{run['snakemake_own_cpu_seconds'] or 0:.1f} s, report {run['report_cpu_seconds']:.1f} s; "
          f"ratio workflow / bare {run['workflow_cpu_seconds'] / cpu_bare:.2f}")  # fmt: skip
    loads = results["machine"].get("load_averages", [])
    if loads:
        print("1-minute load average (other work on the machine): " + ", ".join(f"{w} {v:.1f}" for w, v in loads))
        if max(v for _, v in loads) > results["cores"] + 0.5:
            print(f"WARNING: the machine was busy (load up to {max(v for _, v in loads):.1f} on "
                  f"{os.cpu_count()} cores). torch's {results['cores']}-thread forward passes slow down far more "
                  "under contention than the workflow's single-threaded stages, so (a) grows and the ratios come "
                  "out too LOW; compare (a)'s median pass with a quiet run before trusting them.")  # fmt: skip
    print("\ninference settings: " + ", ".join(f"{k} {v}" for k, v in settings.items()))
    print(f"snakemake dry run after the run (start-up, checks, DAG; nothing to do): {run['dry_run_seconds']:.1f} s")
    jobs = run["jobs"]
    if jobs:
        print("\n| phase of (b) | s | per image (ms) |")
        print("| --- | --- | --- |")
        for name, seconds in phases(jobs, flow).items():
            print(f"| {name} | {seconds:.0f} | {1000 * seconds / n:.0f} |")
        print("\n| job | start (s) | end (s) | span (s) |")
        print("| --- | --- | --- | --- |")
        for job in jobs:
            print(f"| {job['rule']} | {job['start']:.0f} | {job['end']:.0f} | {job['end'] - job['start']:.0f} |")
        print("(times from Snakemake's log, 1 s resolution, since the snakemake process started)")
    prof = results.get("profile")
    if prof:
        k = prof["samples"]
        stages = prof["stages"]
        print(f"\nOne segment job replayed in-process ({k} samples, torch threads in the forward pass "
              f"{prof['torch_threads_in_forward']}, forward input {prof['forward_input_shapes']}):")  # fmt: skip
        print(f"process {prof['process_s']:.1f} s = imports {prof['imports_s']:.1f} s + segment command "
              f"{prof['run_s']:.1f} s + interpreter start and exit; `unetseg segment --help` alone: "
              f"{prof['segment_help_s']:.1f} s\n")  # fmt: skip
        print("| stage | calls | total (s) | per sample (ms) |")
        print("| --- | --- | --- | --- |")
        for name, entry in sorted(stages.items(), key=lambda item: -item[1]["seconds"]):
            print(f"| {name} | {entry['calls']} | {entry['seconds']:.2f} | {1000 * entry['seconds'] / k:.0f} |")
        if prof.get("forward_variants"):
            print("\n| forward pass only | images | ms per image (mean) | median |")
            print("| --- | --- | --- | --- |")
            for v in prof["forward_variants"]:
                print(f"| {v['input']}x{v['input']}, {v['threads']} torch thread(s) | {v['images']} | "
                      f"{v['forward_ms']:.0f} | {v['median_forward_ms']:.0f} |")  # fmt: skip


def child_main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=("bare", "profile"))
    parser.add_argument("--result", required=True)
    parser.add_argument("--model")
    parser.add_argument("--images")
    parser.add_argument("--n", type=int)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--pad", type=int, default=0)
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--command")
    parser.add_argument("--scratch")
    args = parser.parse_args(sys.argv[2:])
    result = child_bare(args) if args.kind == "bare" else child_profile(args)
    Path(args.result).write_text(json.dumps(result, default=str))


if __name__ == "__main__":
    if sys.argv[1:2] == ["_child"]:
        child_main()
    else:
        main()
