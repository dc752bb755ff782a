# Config and sample sheet: loaded and checked once, when the workflow starts.
# Every input function of the workflow lives here and is named get_<what>.

import json
import math
import os
import re
import sys
from pathlib import Path

from snakemake.utils import validate

from unetseg.workflow.config import check_config
from unetseg.data.demo import demo_sample_sheet
from unetseg.errors import InputError
from unetseg.workflow.command import ensure_command_on_path
from unetseg.workflow.runlock import clear_stale_locks, forget_run, record_run
from unetseg.workflow.command import report_failed_samples
from unetseg.data.samples import check_sample_sheet, read_sample_sheet, rows_from_glob
from unetseg.export.bioimageio import citation_url
from unetseg.export.unpack import open_exported
from unetseg.workflow.trained import check_init_from, check_trained_model
from unetseg.plan.rules import FIXED_MODEL_KEYS
import pandas as pd

SCHEMAS = Path(workflow.current_basedir).parent / "schemas"
# One software environment for every rule (used with --software-deployment-method conda).
ENV = "../envs/unetseg.yaml"

# A run killed with SIGKILL leaves Snakemake's lock; clear it if that run is gone, so that
# `snakemake --rerun-incomplete` continues without a separate `--unlock`.
_stale = clear_stale_locks()
if _stale:
    print(f"unetseg: {_stale}", file=sys.stderr)


onstart:
    record_run()


onsuccess:
    forget_run()
    report_failed_samples(f"{RESULTS}/measurements/summary.csv")


onerror:
    forget_run()


# Our check first (it names the key and suggests the closest one), then Snakemake's
# validate, which also fills in the schema's defaults.
check_config(
    config,
    SCHEMAS / "config.schema.yaml",
    source="config (config/config.yaml + --configfile/--config)",
)
validate(config, "../schemas/config.schema.yaml")

# The rules run the `unetseg` command; found beside the Python that runs Snakemake too.
ensure_command_on_path()
RESULTS = f"results/{config['dataset']}"
LOGS = f"logs/{config['dataset']}"
DEMO = config["demo"]
DEMO_SHEET = Path(DEMO["directory"]) / "samples.tsv"
USES_DEMO = Path(config["samples"]) == DEMO_SHEET
# The rows that demo_data writes (its outputs), or None where it does not run. A run with
# the demo's sheet (the default) generates the demo, except an apply run over a folder
# (`images` with `trained_model`), whose files are the whole sheet. Only these rows are
# demo_data's outputs, never the user's images.
DEMO_ROWS = (
    demo_sample_sheet(
        DEMO["directory"],
        **{k: DEMO[k] for k in ("n_train", "n_val", "n_test", "n_predict")},
    )
    if USES_DEMO and not (config["images"] and config["trained_model"])
    else None
)


def load_sample_sheet():
    """The sample sheet, checked; for the demo, the rows its generator will write."""
    # The package's checks first: their messages name the line and the fix.
    training = not config["trained_model"]
    if USES_DEMO and DEMO_ROWS is None:
        # An apply run over a folder: the glob's files are the whole sheet.
        sheet = check_sample_sheet(
            rows_from_glob(config["images"]), "images", training=False
        )
    elif USES_DEMO:
        rows = DEMO_ROWS
        if config["images"]:
            rows = pd.concat(
                [rows, rows_from_glob(config["images"])], ignore_index=True
            )
        sheet = check_sample_sheet(rows, config["samples"])
    else:
        sheet = read_sample_sheet(config["samples"], training=training)
        if config["images"]:
            rows = pd.concat(
                [sheet, rows_from_glob(config["images"])], ignore_index=True
            )
            sheet = check_sample_sheet(
                rows, f"{config['samples']} + images", training=training
            )
    validate(sheet, "../schemas/samples.schema.yaml")
    return sheet


samples = load_sample_sheet()


wildcard_constraints:
    sample="|".join(re.escape(s) for s in samples["sample"]) or "sample",


def samples_of(*splits):
    return samples.loc[samples["split"].isin(splits), "sample"].tolist()


def get_preprocessed(sample_ids):
    return [f"{RESULTS}/preprocessed/{s}.zarr" for s in sample_ids]


def get_pred_instances_arg(wildcards):
    """The instance labels segment delivers, scored as the predicted objects (if written)."""
    if not config["inference"]["instances"]:
        return ""
    files = expand(f"{RESULTS}/instances/{{sample}}.tif", sample=samples_of("test"))
    return "--pred-instances " + " ".join(files)


def get_image(wildcards):
    return samples.loc[wildcards.sample, "image"]


def get_preprocess_input(wildcards):
    row = samples.loc[wildcards.sample]
    return (
        {"image": row["image"], "mask": row["mask"]}
        if row["mask"]
        else {"image": row["image"]}
    )


def get_output_directory(wildcards, output):
    """The directory of a rule's first output."""
    return str(Path(output[0]).parent)


def get_mask_arg(wildcards, input):
    return f"--mask {input.mask}" if "mask" in input.keys() else ""


def per_attempt(base):
    """A resource (mem_mb, runtime) that doubles with each retry: base, 2 x base, 4 x base."""

    def scaled(wildcards, attempt):
        return base * 2 ** (attempt - 1)

    return scaled


def get_train_runtime(wildcards, attempt):
    """Minutes for train: its time budget (train.max_minutes) plus loading and saving."""
    return (math.ceil(config["train"]["max_minutes"]) + 30) * attempt


def get_separation_arg():
    """labels.separate_touching as preprocess's option: true is the default separation."""
    separate = config["labels"]["separate_touching"]
    if separate is False:
        return "--no-separate"
    return "" if separate is True else f"--separation {separate}"


def get_weight_map_args():
    weights = config["tile"]["weight_map"]
    if not weights["enabled"]:
        return ""
    enabled = "auto" if weights["enabled"] == "auto" else "on"
    return (
        f"--weight-map {enabled} --w0 {weights['w0']} --sigma {weights['sigma']}"
        f" --weight-objects {weights['objects']}"
    )


def get_report_pages():
    """The data table and the model card page of `snakemake --report`."""
    return [f"{RESULTS}/report/data.html", f"{RESULTS}/report/model_card.html"]


def get_final_output():
    """Everything a run makes: segmentations (through the batch manifests), measurements,
    evaluation of the test split and the report's pages and figures."""
    outputs = get_manifests() + get_report_pages()
    if not TRAINED:
        outputs.append(f"{RESULTS}/report/training_curve.png")
    if APPLY and config["inference"]["instances"] and config["inference"]["measure"]:
        outputs.append(f"{RESULTS}/measurements/summary.csv")
    if config["export"]:
        outputs.append(f"{RESULTS}/export/{config['dataset']}.bioimageio.zip")
    if samples_of("test"):
        outputs += [
            f"{RESULTS}/evaluation/summary.json",
            f"{RESULTS}/evaluation/per_image.csv",
        ]
    return outputs


def as_json(value):
    return json.dumps(value, sort_keys=True)


# Relative, so that moving the checkout (with its results) changes no rule's params.
WORKFLOW_DIR = os.path.relpath(workflow.basedir)
# The config sections that decide the model: only these reach the train rule.
MODEL_SECTIONS = ("labels", "data", "preprocess", "tile", "model", "train")


MODEL_CARD = as_json(
    {
        "normalization": {
            "method": "percentile",
            "percentiles": config["preprocess"]["percentiles"],
        },
        "labels": config["labels"],
        "data": {
            "dataset": config["dataset"],
            "train": samples_of("train"),
            "val": samples_of("val"),
            "files": {
                s: [samples.loc[s, "image"], samples.loc[s, "mask"]]
                for s in samples_of("train", "val")
            },
        },
        "config": {key: config[key] for key in ("dataset", "samples", *MODEL_SECTIONS)}
        | {"data": {"axes": config["data"]["axes"]}},
    }
)


# --- Training or a trained model -------------------------------------------------------------

# With trained_model set, nothing is trained: every segmentation uses that model.
TRAINED = bool(config.get("trained_model"))
MODEL = config["trained_model"] if TRAINED else f"{RESULTS}/model"
if TRAINED:
    check_trained_model(
        MODEL,
        samples,
        axes=config["data"]["axes"],
        border=config["inference"]["border"],
    )
    # A bioimage.io package exported by unetseg is unpacked beside it, once.
    MODEL = str(open_exported(MODEL))
elif config["train"]["init_from"]:
    _card = check_init_from(config["train"]["init_from"], config["model"])
    for _key in (
        "depth",
        "base_channels",
    ):  # fine-tuning keeps the model's architecture
        if config["model"][_key] == "auto":
            config["model"][_key] = _card["architecture"][_key]
if config["export"]:
    citation_url(
        config["export_software_url"] or None
    )  # a package must cite the software


# --- Batches of test and predict samples ----------------------------------------------------

APPLY = samples_of("test", "predict")
PER_JOB = config["inference"]["samples_per_job"]
# Batches follow the sheet's order: appending rows changes only the last batch, and within
# a batch unchanged samples are skipped (see unetseg.batch.segment).
BATCHES = {
    f"batch{i // PER_JOB:04d}": APPLY[i : i + PER_JOB]
    for i in range(0, len(APPLY), PER_JOB)
}


wildcard_constraints:
    batch="|".join(BATCHES) or "batch",


def get_segment_input(wildcards):
    rows = samples.loc[BATCHES[wildcards.batch]]
    return {
        "model": MODEL,
        "images": rows["image"].tolist(),
        "masks": [m for m in rows["mask"] if m],
    }


def get_segment_samples(wildcards):
    rows = samples.loc[BATCHES[wildcards.batch], ["sample", "image", "mask", "split"]]
    return as_json(rows.to_dict(orient="records"))


def get_segment_options():
    """The command-line options of `unetseg segment` from the inference config."""
    inference = config["inference"]
    options = [
        f"--tile {inference['tile']} --batch-size {inference['batch_size']}",
        f"--border {inference['border']} --device {inference['device']}",
        f"--blend {inference['blend']} --overlap {inference['overlap']}",
        f"--probabilities-dtype {inference['probabilities_dtype']}",
        f"--min-size {inference['min_object_size']}",
        f"--dask-scheduler {inference['dask_scheduler']}",
        f"--foreground {as_json(config['labels']['foreground'])!r} --axes {config['data']['axes']}",
    ]
    flags = {
        "--tta": inference["tta"],
        "--amp": inference["amp"],
        "--skip-empty": inference["skip_empty"],
        "--ome-zarr": inference["ome_zarr"],
        "--no-instances": not inference["instances"],
        "--no-measure": not inference["measure"],
    }
    options += [flag for flag, on in flags.items() if on]
    if config["data"]["pixel_size"]:
        options.append(
            "--pixel-size " + " ".join(map(str, config["data"]["pixel_size"]))
        )
    return " ".join(options)


def get_manifests(splits=("test", "predict")):
    """The manifests of the batches that hold samples of ``splits``."""
    wanted = set(samples_of(*splits))
    return [
        f"{RESULTS}/segment/{batch}.tsv"
        for batch, ids in BATCHES.items()
        if wanted.intersection(ids)
    ]


def get_measurement_tables():
    return [f"{RESULTS}/measurements/{s}.csv" for s in APPLY]


def get_init_from():
    """The model that training starts from (train.init_from), as an input: new weights there retrain."""
    return [config["train"]["init_from"]] if config["train"]["init_from"] else []


def get_plan_settings(stage):
    """The config values each plan stage reads: only these make it plan again."""
    tile, model, train = config["tile"], config["model"], config["train"]
    if stage == "data":
        return {
            "tile": {
                "patch_size": tile["patch_size"],
                "weight_map": tile["weight_map"],
            },
            "model": {"depth": model["depth"], "padding": model["padding"]},
        }
    keys = (
        "batch_size",
        "epochs",
        "foreground_share",
        "compile",
        "max_minutes",
        "device",
        "amp",
    )
    # the network whose step the plan times: its fixed settings too
    return {
        "model": {
            "base_channels": model["base_channels"],
            **{key: model[key] for key in FIXED_MODEL_KEYS},
        },
        "train": {key: train[key] for key in keys},
    }


def get_export_sample():
    """A real image for the package's test tensors: the first val image, else the first to segment."""
    rows = samples_of("val") or APPLY
    return samples.loc[rows[0], "image"]


def get_results_directory(wildcards, output):
    """results/{dataset}, from a batch manifest's path (results/{dataset}/segment/...)."""
    return str(Path(output.manifest).parents[1])
