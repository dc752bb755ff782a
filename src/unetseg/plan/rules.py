"""The planning rules: from the fingerprints and the budget to the settings left at ``auto``.

Two stages, so that a change of a training setting does not cut new patches: stage 1
(:func:`plan_data`) decides from the data alone what tiling needs, stage 2
(:func:`plan_training`) the rest from the data, stage 1 and the measured compute.

Each rule is a small documented function of the fingerprints, so the plan can be tested on
synthetic fingerprints and explained in ``plan.json`` (``reasons``):

* **depth**: the smallest depth (3 to 5) whose receptive field, ``14 * 2**depth - 9``
  pixels for the same-padded U-Net (:meth:`unetseg.nn.model.UNet.receptive_field`), spans
  :data:`CONTEXT` times the 90th-percentile object diameter (an object and its
  neighbours); at most what the patch allows (a bottleneck of at least 8 pixels).
* **patch size**: the smallest power of two of at least :data:`MIN_PATCH` pixels and
  :data:`PATCH_DIAMETERS` object diameters (an object and its neighbours; the depth rule
  gives the receptive field its context), at most :data:`MAX_PATCH` and the smallest image
  side (rounded down to the network's grid). Larger patches cost steps: on ISBI 2012 in a
  20-minute CPU budget, 512-pixel patches (four diameters) made 138 steps and membrane Dice
  0.795, 256-pixel ones (the hand-tuned config) 400 steps and 0.806.
* **base channels**: the widest of 64, 32, 16, 8 whose measured training step (times
  :data:`OVERHEAD`) allows :data:`MIN_STEPS` optimizer steps within ``train.max_minutes``
  (none: the narrowest).
  Each width is measured at the planned depth, patch and batch, narrowest first, until one
  is too slow or does not fit in the device's memory, which is then no candidate
  (:func:`unetseg.plan.fingerprint.compute_fingerprint`): an estimate from the
  arithmetic of one measured width misses by 2x or more on a CPU, where a narrow network
  uses its vector units worst (on the ISBI machine, bfloat16 with AMX: 32 channels took
  2.4x the step of 16, 64 took 8.2x, against the 4x and 16x of their arithmetic). In a
  budget, steps count more than width: on ISBI in 20 CPU minutes, 16 channels with 2399
  steps gave membrane Dice 0.817 and adapted Rand error 0.048, 32 channels with 1043 steps
  0.813 and 0.068 (with 722 against 297 steps earlier: 0.813 against 0.807). On a CPU
  without AMX, where 16 channels made 1265 steps (0.812, 0.071), 8 channels made 2314 and
  2736 (0.815 and 0.818, adapted Rand 0.069 and 0.062): so 8 is a width too, for machines
  and budgets where 16 cannot reach the steps.
* **batch size**: 8, halved until one epoch has at least 4 batches.
* **epochs**: :data:`MAX_EPOCHS`, so that ``train.max_minutes`` ends training; the trainer
  then fits warm-up and cosine decay to the steps that fit in the budget, measured when
  training starts (an estimate made here, under another load, would cut training short or
  leave it unannealed). The estimated number of epochs that fit is in the reason.
* **weight map**: on when the masks hold instance ids and at least :data:`TOUCHING` of the
  objects touch another (the border weights separate them: demo AP50 0.65 -> 0.86); off for
  membranes (not measured to help there) and for objects that rarely touch.
* **foreground share**: 0.5 when foreground covers less than :data:`SPARSE` of the pixels
  (half of the patches then hold objects), else 0 (plain shuffling).
* **compile**: ``torch.compile`` for the training steps on a CPU (with a C++ compiler on
  ``PATH``, which its CPU kernels need) or a CUDA device, when ``train.max_minutes`` is at
  least :data:`COMPILE_MINUTES`. On the 2-core AVX2 CPU a bare float32 step of the ISBI
  plan's network (depth 4, 8 channels, 8 x 256 px) took 0.70-0.87 of the eager step (four runs) after
  43-56 s of compiling without a cache (``benchmarks/training/compile.py``); in the trainer,
  with augmentation, loss and validation around it, a 20-minute ISBI run got 1147 steps
  against 1102 and 1143 eager: nothing measurable. With about a tenth of each step saved and
  a minute to compile, the gain grows with the budget; from 30 minutes the minute is at most
  a thirtieth of it.
"""

from __future__ import annotations

import math
import shutil
from typing import Any

__all__ = [
    "AUTO", "PLANNED", "plan_data", "plan_training", "plan_settings", "receptive_field", "resolve", "patch_count",
    "merge", "training_batch", "widths_to_measure", "step_limit",
]  # fmt: skip

AUTO = "auto"
# The settings a plan decides, as (section, key) or (section, key, subkey).
PLANNED = (
    ("tile", "patch_size"), ("tile", "weight_map", "enabled"), ("model", "depth"), ("model", "base_channels"),
    ("train", "batch_size"), ("train", "epochs"), ("train", "foreground_share"), ("train", "compile"),
)  # fmt: skip
CONTEXT = 2.0  # receptive field / 90th-percentile object diameter
MIN_PATCH, MAX_PATCH = 128, 512
PATCH_DIAMETERS = 2  # patch side / 90th-percentile object diameter, at least
MIN_STEPS = 2000  # optimizer steps a width must allow within the budget (ISBI: 16 channels' 2399 beat 32's 1043)
MAX_EPOCHS = 300
OVERHEAD = 1.3  # data loading, augmentation and validation on top of the measured steps
TOUCHING = 0.10
SPARSE = 0.05
FIXED_MODEL_KEYS = ("padding", "batch_norm", "dropout", "upsampling")  # never planned; the plan times them
COMPILE_MINUTES = 30  # budgets from which torch.compile is on (its first calls: about 1 min on 2 CPU cores)
WIDTHS = (64, 32, 16, 8)


def receptive_field(depth: int) -> int:
    """Receptive field (pixels per axis) of the same-padded U-Net of ``depth`` poolings."""
    return 14 * 2**depth - 9


def training_batch(data: dict[str, Any], tiling: dict[str, Any], config: dict[str, dict[str, Any]]) -> int:
    """The batch size training will use: the config's, else 8 halved until one epoch has at
    least 4 batches (the compute is measured at it)."""
    return _batch_rule(data, tiling, _Chooser(config))


def widths_to_measure(config: dict[str, dict[str, Any]]) -> list[int]:
    """Base channels to measure, narrowest first: the config's, else :data:`WIDTHS`."""
    given = _Chooser(config).given("model", "base_channels")
    return [int(given)] if given is not None else sorted(WIDTHS)


def step_limit(config: dict[str, dict[str, Any]]) -> float:
    """The slowest measured step (seconds) of a width that still allows :data:`MIN_STEPS`
    steps in the budget: measuring stops at the first width slower than this."""
    return _budget(config) / MIN_STEPS / OVERHEAD


def _budget(config: dict[str, dict[str, Any]]) -> float:
    return float(config.get("train", {}).get("max_minutes", 60.0)) * 60


def _batch_rule(data: dict[str, Any], tiling: dict[str, Any], choose: _Chooser) -> int:
    patches = patch_count(data["shapes"], tiling["tile"]["patch_size"])
    return choose(
        ("train", "batch_size"), _batch_for(patches), f"8, fewer when an epoch has < 4 batches ({patches} patches)"
    )


def patch_count(shapes: list[list[int]], patch: int) -> int:
    """Training patches per epoch: the half-overlapping grid of :mod:`unetseg.data.patches`."""
    stride = max(1, patch // 2)
    total = 0
    for shape in shapes:
        planes = shape[0] if len(shape) == 3 else 1
        per_axis = [1 if n <= patch else math.ceil((n - patch) / stride) + 1 for n in shape[-2:]]
        total += planes * per_axis[0] * per_axis[1]
    return total


def _depth_for(diameter: float) -> int:
    if not math.isfinite(diameter):
        return 4  # no objects to measure: the paper's depth
    return next((d for d in (3, 4, 5) if receptive_field(d) >= CONTEXT * diameter), 5)


def _patch_for(diameter: float, min_side: int, grid: int) -> int:
    wanted = max(MIN_PATCH, PATCH_DIAMETERS * diameter if math.isfinite(diameter) else 0, 8 * grid)
    patch = min(2 ** math.ceil(math.log2(wanted)), MAX_PATCH)
    fits = (min_side // grid) * grid
    return max(min(patch, fits), 4 * grid) if fits else patch


class _Chooser:
    """Explicit config values win; otherwise the rule's value, with its reason recorded."""

    def __init__(self, config: dict[str, dict[str, Any]]):
        self.config, self.reasons = config, {}

    def given(self, *path: str) -> Any:
        node: Any = self.config
        for part in path:
            node = (node or {}).get(part, AUTO)
        return None if node == AUTO else node

    def __call__(self, path: tuple[str, ...], value: Any, reason: str) -> Any:
        explicit = self.given(*path)
        self.reasons[".".join(path)] = "set in the config" if explicit is not None else reason
        return explicit if explicit is not None else value


def plan_data(data: dict[str, Any], config: dict[str, dict[str, Any]]) -> tuple[dict[str, Any], dict[str, str]]:
    """Stage 1, from the data alone: what tiling needs (patch size, depth, weight map).

    Parameters
    ----------
    data : dict
        :func:`unetseg.plan.fingerprint.data_fingerprint`.
    config : dict
        The config's ``tile``, ``model`` and ``train`` sections; values other than ``auto``
        are kept and constrain the rest.

    Returns
    -------
    settings : dict
        ``{"tile": {"patch_size", "weight_map": {"enabled"}}, "model": {"depth"}}``.
    reasons : dict
        ``"section.key"`` -> why it has its value (``"set in the config"`` for explicit ones).
    """
    choose = _Chooser(config)
    p90 = data.get("object_diameter_p90", float("nan"))
    need = _depth_for(p90)
    depth = choose.given("model", "depth") or need
    patch = choose(
        ("tile", "patch_size"), _patch_for(p90, data["min_side"], 2**depth),
        f"a power of two >= {MIN_PATCH} px and {PATCH_DIAMETERS} object diameters (90th percentile {p90:.0f} px), "
        f"<= {MAX_PATCH} px and the smallest image side ({data['min_side']} px)",
    )  # fmt: skip
    depth = choose(
        ("model", "depth"), min(need, max(1, int(math.log2(max(patch // 8, 2))))),
        f"receptive field {receptive_field(need)} px >= {CONTEXT:g} x the 90th-percentile object diameter "
        f"({p90:.0f} px), a bottleneck of >= 8 px in a {patch} px patch",
    )  # fmt: skip
    touching, ids = data.get("touching_share", 0.0), data.get("instance_ids", False)
    weight_map = choose(
        ("tile", "weight_map", "enabled"), bool(ids and data.get("objects") == "foreground" and touching >= TOUCHING),
        f"{touching:.0%} of the objects touch another (on from {TOUCHING:.0%}, with instance ids)",
    )  # fmt: skip
    settings = {
        "tile": {"patch_size": int(patch), "weight_map": {"enabled": bool(weight_map)}},
        "model": {"depth": int(depth)},
    }
    return settings, choose.reasons


def plan_training(
    data: dict[str, Any], tiling: dict[str, Any], compute: dict[str, Any], config: dict[str, dict[str, Any]]
) -> tuple[dict[str, Any], dict[str, str], dict[str, float]]:
    """Stage 2, from the data, stage 1 (``tiling``) and the measured compute: base channels,
    batch size, epochs and foreground sampling.

    Returns
    -------
    settings : dict
        ``{"model": {"base_channels"}, "train": {"batch_size", "epochs", "foreground_share", "compile"}}``.
    reasons : dict
        As :func:`plan_data`.
    estimates : dict
        ``seconds_per_step``, ``seconds_per_epoch``, ``patches_per_epoch`` and
        ``budget_seconds`` of the planned network.
    """
    choose = _Chooser(config)
    patch = tiling["tile"]["patch_size"]
    patches = patch_count(data["shapes"], patch)
    batch = _batch_rule(data, tiling, choose)
    budget = _budget(config)
    step = {int(w): float(s) * batch for w, s in compute["seconds_per_patch"].items()}  # measured

    def seconds_per_step(width: int) -> float:
        return step.get(width, math.inf) * OVERHEAD

    fitting = [w for w in WIDTHS if budget / seconds_per_step(w) >= MIN_STEPS]
    width = choose(
        ("model", "base_channels"), fitting[0] if fitting else min(step),
        f"the widest of {list(WIDTHS)} allowing {MIN_STEPS} steps in {budget / 60:g} min (measured "
        + ", ".join(f"{w} channels {step[w]:.2f} s" for w in sorted(step))
        + f" per step of {batch} on {compute['device']}, x {OVERHEAD} for data and validation"
        + "".join(f"; {w} channels ran out of memory" for w in compute.get("out_of_memory", []))
        + ")",
    )  # fmt: skip
    if width not in step:
        raise ValueError(f"model.base_channels {width} was not measured (measured: {sorted(step)})")
    epoch_seconds = seconds_per_step(width) * math.ceil(patches / batch)
    fit = int(budget // epoch_seconds)
    epochs = choose(
        ("train", "epochs"), MAX_EPOCHS,
        f"the {budget / 60:g} min budget ends training (about {fit} epochs of an estimated {epoch_seconds:.1f} s "
        "fit) and the learning-rate schedule runs over the steps that fit",
    )  # fmt: skip
    fraction = data.get("foreground_fraction", float("nan"))
    share = choose(
        ("train", "foreground_share"), 0.5 if fraction < SPARSE else 0.0,
        f"foreground covers {fraction:.1%} of the training pixels (0.5 below {SPARSE:.0%})",
    )  # fmt: skip
    compiler = compute["device"] == "cuda" or any(shutil.which(c) for c in ("c++", "g++", "clang++"))
    compiling = choose(
        ("train", "compile"), compute["device"] in ("cpu", "cuda") and compiler and budget >= 60 * COMPILE_MINUTES,
        f"torch.compile on a CPU with a C++ compiler or on CUDA, for budgets of >= {COMPILE_MINUTES} min (its first "
        f"calls take about a minute, then steps are about a tenth cheaper); {compute['device']}"
        + ("" if compiler else " without a C++ compiler") + f", {budget / 60:g} min",
    )  # fmt: skip
    settings = {
        "model": {"base_channels": int(width)},
        "train": {"batch_size": int(batch), "epochs": int(epochs), "foreground_share": float(share),
                  "compile": bool(compiling)},
    }  # fmt: skip
    estimates = {
        "seconds_per_step": seconds_per_step(width), "seconds_per_epoch": epoch_seconds,
        "patches_per_epoch": patches, "budget_seconds": budget,
    }  # fmt: skip
    return settings, choose.reasons, estimates


def plan_settings(
    data: dict[str, Any], compute: dict[str, Any], config: dict[str, dict[str, Any]]
) -> tuple[dict[str, Any], dict[str, str], dict[str, float]]:
    """Both stages: every planned setting, the reasons and the estimates."""
    tiling, reasons = plan_data(data, config)
    training, more, estimates = plan_training(data, tiling, compute, config)
    return merge(tiling, training), {**reasons, **more}, estimates


def merge(first: dict[str, Any], second: dict[str, Any]) -> dict[str, Any]:
    """Two nested settings dicts in one (the second's keys win)."""
    merged = {k: dict(v) if isinstance(v, dict) else v for k, v in first.items()}
    for key, value in second.items():
        merged[key] = merge(merged.get(key, {}), value) if isinstance(value, dict) else value
    return merged


def _batch_for(patches: int) -> int:
    batch = 8
    while batch > 1 and patches < 4 * batch:
        batch //= 2
    return batch


def resolve(section: str, values: dict[str, Any], planned: dict[str, Any] | None) -> dict[str, Any]:
    """``values`` (a config section) with every ``auto`` replaced by the plan's value.

    Raises
    ------
    ValueError
        If a value is ``auto`` and there is no plan (the workflow's plan rule makes one).
    """
    resolved = dict(values)
    for path in (p[1:] for p in PLANNED if p[0] == section):
        node, plan_node = resolved, (planned or {}).get(section, {})
        for part in path[:-1]:
            node[part] = node = dict(node.get(part, {}))
            plan_node = plan_node.get(part, {})
        if node.get(path[-1]) == AUTO:
            if path[-1] not in plan_node:
                raise ValueError(f"{section}.{'.'.join(path)} is 'auto' but no plan gives it; pass --plan plan.json")
            node[path[-1]] = plan_node[path[-1]]
    return resolved
