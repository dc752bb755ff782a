"""Fingerprints for the plan: what the training data looks like and what the machine does.

:func:`data_fingerprint` reads the preprocessed train and val samples (no raw file): image
sizes, channels, pixel size, the foreground fraction and the objects (their equivalent
diameters and how often they touch another object). :func:`compute_fingerprint` names the
device and its memory and measures the seconds of one training step (forward, backward and
optimizer step) of each candidate width at the planned depth, patch and batch.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from unetseg.data.sample import open_sample
from unetseg.data.targets import touching_pixels
from unetseg.objects.labels import label_objects
from unetseg.plan.rules import FIXED_MODEL_KEYS

__all__ = ["data_fingerprint", "compute_fingerprint"]

WARMUP = 2  # untimed steps per width: a new width's first steps run slower

MAX_PLANES = 64  # planes read per sample for the object statistics (stacks are sampled)
SPAN = 0.9  # a largest object spanning this share of both sides is a network (membranes)


def _plane_objects(objects: np.ndarray, truth: np.ndarray, kind: str) -> tuple[np.ndarray, bool]:
    """The objects the network must delineate: the mask's, or the regions it encloses; and
    whether the mask is a network spanning the plane (membranes), whose enclosed regions
    are then the objects whatever ``kind`` says."""
    spans = False
    if kind == "foreground" and objects.any():
        ys, xs = np.nonzero(objects == np.bincount(objects.ravel())[1:].argmax() + 1)
        spans = np.ptp(ys) + 1 >= SPAN * objects.shape[0] and np.ptp(xs) + 1 >= SPAN * objects.shape[1]
    if kind == "background" or spans:  # membranes: the cells between them, 4-connected
        return label_objects(truth == 0, connectivity=1), spans
    return objects, spans


def data_fingerprint(
    train: Sequence[str | os.PathLike], val: Sequence[str | os.PathLike] = (), *, objects: str = "foreground"
) -> dict[str, Any]:
    """Statistics of the preprocessed training data that the planning rules use.

    Parameters
    ----------
    train, val : sequence of path-like
        Preprocessed samples (:mod:`unetseg.data.sample`) with masks.
    objects : {"foreground", "background"}
        As ``tile.weight_map.objects``: the mask's objects (nuclei) or the regions the
        foreground encloses (cells between membranes). A foreground whose largest
        component spans the image (a membrane network) counts as ``background``.

    Returns
    -------
    dict
        ``n_train``, ``n_val``, ``channels``, ``shapes`` (spatial shape per train sample),
        ``min_side`` (smallest plane side), ``train_pixels`` (sum over train planes),
        ``pixel_size``, ``foreground_fraction`` (mean over train samples),
        ``instance_ids`` (any train mask holds ids), ``classes``, ``object_count``,
        ``object_diameter_median`` and ``object_diameter_p90`` (equivalent diameters in
        pixels; NaN without objects) and ``touching_share`` (objects with a pixel next to
        another object's, over all objects).
    """
    shapes, fractions, diameters = [], [], []
    channels: set[int] = set()
    touching = count = pixels = networks = planes_read = 0
    instance_ids, pixel_size, classes = False, None, None
    for path in train:
        sample = open_sample(path)
        shapes.append(list(sample.spatial_shape))
        channels.add(int(sample.attrs["channels"]))
        fractions.append(float(sample.attrs.get("foreground_fraction", np.nan)))
        instance_ids |= sample.instance_ids
        pixel_size = pixel_size or sample.attrs.get("pixel_size")
        classes = classes or sample.attrs.get("classes")
        planes = sample.mask.shape[0]
        pixels += planes * int(np.prod(sample.spatial_shape[-2:]))
        for z in np.linspace(0, planes - 1, min(planes, MAX_PLANES)).astype(int):
            ids, spans = _plane_objects(sample.objects.read(z)[0], sample.mask.read(z)[0], objects)
            networks, planes_read = networks + spans, planes_read + 1
            sizes = np.bincount(ids.ravel())[1:]
            sizes = sizes[sizes > 0]
            diameters += list(np.sqrt(4 * sizes / np.pi))
            count += sizes.size
            touched = np.unique(ids[touching_pixels(ids)])
            touching += int(np.count_nonzero(touched))
    sides = [min(s[-2:]) for s in shapes]
    return {
        "n_train": len(train), "n_val": len(val), "channels": sorted(channels), "shapes": shapes,
        "min_side": int(min(sides)) if sides else 0, "train_pixels": int(pixels),
        "pixel_size": pixel_size, "foreground_fraction": float(np.nanmean(fractions)) if fractions else float("nan"),
        "instance_ids": bool(instance_ids), "classes": classes, "object_count": int(count),
        "objects": "background" if objects == "background" or networks * 2 > planes_read else "foreground",
        "object_diameter_median": float(np.median(diameters)) if diameters else float("nan"),
        "object_diameter_p90": float(np.percentile(diameters, 90)) if diameters else float("nan"),
        "touching_share": touching / count if count else 0.0,
    }  # fmt: skip


def compute_fingerprint(
    *,
    device: str = "auto",
    channels: int = 1,
    depth: int = 4,
    patch: int = 128,
    batch: int = 4,
    widths: Sequence[int] = (8, 16, 32, 64),
    limit_seconds: float = float("inf"),
    steps: int = 3,
    amp: bool = True,
    model: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The device, its memory, and the measured seconds of one training step per patch of
    U-Nets of each of ``widths`` base channels (narrowest first; the median of ``steps``
    steps of ``batch`` patches after ``WARMUP`` steps), with the threads this process has, in
    the precision and memory layout training will use (``amp``: mixed precision where the
    device has it, as the trainer; :func:`unetseg.nn.device.amp_dtype`). ``model`` holds the
    config's fixed network settings (``padding``, ``batch_norm``, ``dropout``,
    ``upsampling``), so that the network timed is the one training will run: without batch
    normalisation a step of 8 base channels takes about two thirds of the time on a CPU.
    A valid-padded network is timed on the next input size it accepts when ``patch`` is not
    one (training then asks for that size).

    Measuring stops after the first width whose step takes longer than ``limit_seconds``
    (wider ones are slower still); a warm-up step over three times the limit is that
    width's measurement. It also stops at the first width whose step runs out of the
    device's memory (wider ones need more): that width is listed in ``out_of_memory`` and
    has no time. On a shared machine the measurement follows its load; ``plan.json``
    records it.

    Returns
    -------
    dict
        ``device``, ``threads``, ``memory_gb`` (device memory: system RAM on the CPU),
        ``measured_at`` (``depth``, ``patch``, ``batch``), ``precision``,
        ``seconds_per_patch`` (``{width: seconds}`` for the widths measured) and
        ``out_of_memory`` (the width that did not fit, if one did not).
    """
    import torch

    from unetseg.nn.device import amp_dtype, pick_device
    from unetseg.nn.model import UNet

    target = pick_device(device)
    if target.type == "cuda":
        memory = torch.cuda.get_device_properties(target).total_memory / 2**30
    else:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    dtype = (amp_dtype(target) if amp else None) or torch.float32
    fixed = {key: value for key, value in (model or {}).items() if key in FIXED_MODEL_KEYS}
    size = _accepted_size(UNet(depth=depth, base_channels=1, **fixed), patch)
    torch.manual_seed(0)
    patches = torch.rand(batch, channels, size, size, device=target)
    layout = target.type in ("cuda", "cpu")  # as the trainer runs it
    if layout:
        patches = patches.contiguous(memory_format=torch.channels_last)
    measured: dict[str, float] = {}
    out_of_memory: list[int] = []
    for width in sorted(widths):
        network = UNet(in_channels=channels, out_channels=1, depth=depth, base_channels=width, **fixed)
        network = network.to(target).train()
        if layout:
            network = network.to(memory_format=torch.channels_last)
        optimizer = torch.optim.AdamW(network.parameters(), lr=1e-4)
        elapsed: list[float] = []
        try:
            for _ in range(steps + WARMUP):
                started = time.perf_counter()
                optimizer.zero_grad()
                with torch.autocast(target.type, dtype=dtype, enabled=dtype != torch.float32):
                    logits = network(patches)
                logits.float().square().mean().backward()
                optimizer.step()
                if target.type == "cuda":
                    torch.cuda.synchronize()
                elapsed.append(time.perf_counter() - started)
                if len(elapsed) == 1 and elapsed[0] > 3 * limit_seconds:
                    break
        except RuntimeError as err:  # torch.OutOfMemoryError on CUDA, a failed allocation on the CPU
            if not _is_out_of_memory(err):
                raise
            out_of_memory.append(width)
        del network, optimizer
        if out_of_memory:
            if target.type == "cuda":
                torch.cuda.empty_cache()
            break
        seconds = float(np.median(elapsed[WARMUP:])) if len(elapsed) > WARMUP else elapsed[0]
        measured[str(width)] = seconds / batch
        if seconds > limit_seconds:
            break
    return {
        "device": target.type, "threads": torch.get_num_threads(), "memory_gb": round(memory, 2),
        "measured_at": {"depth": depth, "patch": patch, "batch": batch},
        "precision": str(dtype).removeprefix("torch."), "seconds_per_patch": measured, "out_of_memory": out_of_memory,
    }  # fmt: skip


def _accepted_size(model: Any, size: int) -> int:
    """``size``, or the next larger input ``model`` accepts (same padding: a multiple of its grid)."""
    while True:
        try:
            model.output_size(size)
            return size
        except ValueError:
            size += 1


def _is_out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` is a device running out of memory: ``torch.OutOfMemoryError`` (CUDA,
    MPS) or the CPU allocator's failure."""
    import torch

    text = str(error)
    return isinstance(error, torch.OutOfMemoryError) or "can't allocate memory" in text or "out of memory" in text
