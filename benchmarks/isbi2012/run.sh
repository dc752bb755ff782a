#!/usr/bin/env bash
# ISBI 2012 membrane benchmark: check the data, run the workflow, print the test scores.
#
# Needs the ISBI 2012 training stack at ../shared/data/isbi2012 (relative to the repository
# root; images/slice_00.tif ... slice_29.tif and labels/slice_00.tif ... slice_29.tif). The
# project does not ship that data. Needs the `unetseg` and `snakemake` commands on PATH
# (e.g. `source .venv/bin/activate` after `make test`).
#
# Usage, from anywhere:  benchmarks/isbi2012/run.sh [extra snakemake arguments]
#   CORES=2 by default; e.g.  CORES=8 benchmarks/isbi2012/run.sh --rerun-incomplete
#   CONFIG=benchmarks/isbi2012/config_only.yaml: the planned run (a config of four keys)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
data=../shared/data/isbi2012
config=${CONFIG:-benchmarks/isbi2012/config.yaml}
dataset=$(sed -n 's/^dataset: *\([A-Za-z0-9_.-]*\).*/\1/p' "$config")
summary=results/$dataset/evaluation/summary.json

missing=()
for i in $(seq -w 0 29); do
    for kind in images labels; do
        [[ -f "$data/$kind/slice_$i.tif" ]] || missing+=("$data/$kind/slice_$i.tif")
    done
done
if ((${#missing[@]})); then
    echo "run.sh: the ISBI 2012 data is missing: ${#missing[@]} of 60 files, e.g. ${missing[0]}" >&2
    echo "run.sh: this benchmark needs $data (relative to $root), with images/ and labels/" >&2
    echo "run.sh: slice_00.tif ... slice_29.tif; see benchmarks/isbi2012/README.md." >&2
    exit 2
fi
for cmd in snakemake unetseg; do
    command -v "$cmd" >/dev/null || { echo "run.sh: '$cmd' is not on PATH; activate the project's environment." >&2; exit 2; }
done

start=$(date +%s)
snakemake --cores "${CORES:-2}" --resources gpu=1 --configfile "$config" "$@"
snakemake --cores 1 --configfile "$config" --report "results/$dataset/report.html"
echo "wall time: $(( ($(date +%s) - start) / 60 )) min $(( ($(date +%s) - start) % 60 )) s"

python3 - "$summary" "results/$dataset/model/card.json" <<'EOF'
import json, sys

summary = json.load(open(sys.argv[1]))
card = json.load(open(sys.argv[2]))
training = card["training"]
if card.get("plan"):
    print("plan:", json.dumps(card["plan"]["settings"]))
metrics = summary["metrics"]


def row(label, name, mean=None):
    stats = metrics.get(name, {})
    mean = stats.get("mean") if mean is None else mean
    low, high = stats.get("ci95", [None, None])
    ci = f"{low:.4f} - {high:.4f}" if low is not None else "n/a"
    print(f"| {label} | {mean:.4f} | {ci} |")


print(f"\nISBI 2012, test slices 25-29 ({summary['n_images']} images), membranes = foreground")
print(f"training: {training['epochs_run']} epochs in {training['seconds'] / 60:.1f} min, "
      f"best validation Dice {training['best_val_dice']:.4f} at epoch {training['best_epoch']}\n")
print("| score | mean over slices 25-29 | bootstrap 95% CI |")
print("| --- | --- | --- |")
row("membrane Dice", "dice", summary["mean_dice"])
row("membrane IoU", "iou", summary["mean_iou"])
row("pixel error", "pixel_error", summary["mean_pixel_error"])
row("adapted Rand error (cells)", "rand_error")
EOF
