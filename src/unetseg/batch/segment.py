"""Segmenting a batch of images with a trained model, many images per process.

One call of :meth:`BatchSegmenter.run` takes a list of samples (the ``test`` and ``predict``
rows of a sample sheet, or the files of an ``images`` glob) through the whole chain of one
image: preprocessing, tiled inference, the mask, instance labels, per-object measurements,
the report's overlay and, optionally, an OME-Zarr. The model is loaded once and torch is
imported once, so a batch of many small images costs about their forward passes rather than
a Python start-up per image and step. The network runs in the calling thread while a worker
thread prepares the next image and finishes the previous one, so the work outside the network
overlaps the forward passes. An image that fits one labelling block (1024x1024,
or 256^3 for a stack) has its mask, instance labels and measurements computed in memory
and each file written once; larger images go through the out-of-core path (written mask,
block-wise labels and measurements), with the same files as the result.

Each sample's outputs are written atomically under their final names; a small state file,
written last, records a fingerprint of everything the outputs depend on (model, options,
input files). A later run skips samples whose state matches, so adding a row to a batch
recomputes only the new sample, and a run killed half-way resumes where it stopped.

One bad image does not sink a batch: a sample whose file cannot be read or processed is
recorded as failed, with the reason, and the others go on. Only a full disk stops the batch.
"""

from __future__ import annotations

import errno
import hashlib
import json
import shutil
import sys
import tempfile
import traceback
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from unetseg.batch.measure import measure_labels, measure_sample
from unetseg.data.preprocess import preprocess_sample
from unetseg.data.sample import open_sample
from unetseg.data.targets import LINE_WIDTH
from unetseg.inference.masks import FOREGROUND, add_object_pixels, object_seeds, probabilities_to_labels, write_mask
from unetseg.inference.run import InferenceOptions, check_channels
from unetseg.inference.scheduler import dask_client
from unetseg.io.files import write_json, write_tiff_array
from unetseg.nn.card import read_card
from unetseg.objects.components import fits_one_block, label_array, label_components
from unetseg.report.overlays import overlay_figure

__all__ = ["BatchSample", "SegmentSettings", "BatchSegmenter", "sample_paths"]


@dataclass(frozen=True)
class BatchSample:
    """One row to segment: its id, image, ground truth (test rows) and split."""

    sample: str
    image: str
    mask: str = ""
    split: str = "predict"


@dataclass(frozen=True)
class SegmentSettings:
    """What to write besides the mask, and how to read the inputs."""

    results: str  # results/{dataset}
    overlays: str | None = None  # directory of the report's overlay PNGs
    foreground: Any = "nonzero"  # labels.foreground of test masks
    axes: str | None = None
    pixel_size: tuple[float, ...] | None = None  # data.pixel_size; else read from each file
    instances: bool = True
    measure: bool = True
    ome_zarr: bool = False
    probabilities_dtype: str = "uint8"
    min_size: int = 0  # objects of fewer pixels are dropped from the instance labels


@dataclass
class _Job:
    """One sample on its way through the stages of :meth:`BatchSegmenter.run`."""

    sample: BatchSample
    paths: dict[str, Path]
    fingerprint: str
    row: dict[str, Any] | None = None  # set when the sample is done: up to date, finished or failed
    up_to_date: bool = False  # its outputs of an earlier run are kept
    attrs: dict[str, Any] = field(default_factory=dict)  # of the preprocessed sample
    source: Any = None  # the preprocessed image, (Z, C, Y, X)
    spatial_axes: str = "YX"
    in_memory: bool = False
    probs: Any = None  # (Z, K, Y, X) probabilities: an array, or a Zarr array in scratch
    mask: np.ndarray | None = None  # the final mask, when computed in memory
    scratch: tempfile.TemporaryDirectory | None = None

    def close(self) -> None:
        """Drop the probabilities and their scratch directory."""
        self.probs = self.source = None
        if self.scratch is not None:
            self.scratch.cleanup()
            self.scratch = None


def sample_paths(results: str | Path, sample: str) -> dict[str, Path]:
    """Where the outputs of ``sample`` go under ``results`` (the contract's paths)."""
    results = Path(results)
    return {
        "preprocessed": results / "preprocessed" / f"{sample}.zarr",
        "mask": results / "masks" / f"{sample}.tif",
        "instances": results / "instances" / f"{sample}.tif",
        "measurements": results / "measurements" / f"{sample}.csv",
        "ome_zarr": results / "ome-zarr" / f"{sample}.ome.zarr",
        "state": results / "segment" / "state" / f"{sample}.json",
    }


def _identity(path: str) -> list | None:
    if not path:
        return None
    stat = Path(path).stat()
    # The path as given (relative in the workflow), so that a moved project stays up to date.
    return [str(path), stat.st_size, stat.st_mtime_ns]


class BatchSegmenter:
    """Segments samples with one loaded model; see the module docstring.

    Parameters
    ----------
    model_dir : path-like
        A model directory (weights and card).
    options : InferenceOptions
        Tiling and device options.
    settings : SegmentSettings
        Outputs and input handling.
    """

    def __init__(
        self,
        model_dir: str | Path,
        options: InferenceOptions,
        settings: SegmentSettings,
        *,
        scheduler: str | None = None,
    ):
        self.model_dir, self.options, self.settings = Path(model_dir), options, settings
        self.scheduler, self.client = scheduler, None
        self.card = read_card(model_dir)
        self.predictor = options.predictor(model_dir)
        self.threshold = self.card.get("threshold", 0.5)
        # Trained on contact targets (background, object, contact): the mask is everything
        # not background, the instances the objects grown back over their contacts.
        self.contact = self.card.get("target") == "contact"
        self.percentiles = tuple(self.card["normalization"]["percentiles"])
        digest = hashlib.sha256()
        for name in ("weights.pt", "card.json"):
            digest.update((self.model_dir / name).read_bytes())
        self.model_digest = digest.hexdigest()
        self.up_to_date = 0  # samples of the last run whose outputs were up to date, kept

    def fingerprint(self, sample: BatchSample) -> str:
        """Everything a sample's outputs depend on: model, options and its input files."""
        record = {
            "model": self.model_digest, "options": asdict(self.options) | {"threads": None},
            "settings": asdict(self.settings) | {"results": None}, "sample": asdict(sample),
            "image": _identity(sample.image), "mask": _identity(sample.mask),
        }  # fmt: skip
        return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()

    def run(self, samples: list[BatchSample]) -> list[dict[str, Any]]:
        """Segment every sample; one status row per sample (``ok`` or ``failed``), in order.

        The network runs in this thread while one worker thread prepares the next sample
        (reading, normalising, writing the preprocessed Zarr) and finishes the previous one
        (mask, instances, measurements, overlay, state file): on a GPU the forward passes
        and the CPU work overlap; on a CPU the worker takes a core from torch's threads, and
        still beats the stages in turn on 2 cores (benchmarks/batch). Each sample goes
        through its stages in order and only one stage at a time, so its outputs and state
        file are written exactly as one after the other.
        """
        rows: list[dict[str, Any] | None] = [None] * len(samples)
        finishing: list[tuple[int, Future]] = []
        self.up_to_date = 0
        with (
            dask_client(self.scheduler, workers=self.options.threads or 2) as self.client,
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="unetseg-segment") as worker,
        ):
            upcoming = worker.submit(self._prepare, samples[0]) if samples else None
            for i, sample in enumerate(samples):
                job = upcoming.result()
                kept = " (up to date: outputs kept)" if job.up_to_date else ""
                print(f"[{i + 1}/{len(samples)}] {sample.sample}{kept}", file=sys.stderr)
                self.up_to_date += job.up_to_date
                upcoming = worker.submit(self._prepare, samples[i + 1]) if i + 1 < len(samples) else None
                if job.row is None:
                    self._guarded(job, self._infer)
                if job.row is not None:  # up to date, or failed before or in the network
                    rows[i] = job.row
                    continue
                finishing.append((i, worker.submit(self._guarded, job, self._finish)))
            for i, future in finishing:
                rows[i] = future.result().row
        return rows  # type: ignore[return-value]

    def _prepare(self, sample: BatchSample) -> _Job:
        """Stage 1 (worker thread): up to date already, or preprocessed and ready for the network."""
        paths = sample_paths(self.settings.results, sample.sample)
        job = _Job(sample, paths, self.fingerprint(sample))
        state = _read_state(paths["state"])
        if state.get("fingerprint") == job.fingerprint and state.get("status") == "ok" and self._outputs_exist(sample):
            # Up to date. The overlays are the job's directory output, which Snakemake
            # empties before every run: draw the missing one again, from the files kept.
            if self.settings.overlays and not self._overlay(sample).exists():
                overlay_figure(paths["preprocessed"], paths["mask"], self._overlay(sample))
            job.row, job.up_to_date = {**state["row"], "status": "ok"}, True
            return job
        paths["state"].unlink(missing_ok=True)
        return self._guarded(job, self._preprocess)

    def _guarded(self, job: _Job, stage: Any) -> _Job:
        """Run one stage of ``job``; a failure fails the sample (state file written), except
        a full disk, which stops the batch: the next sample would fail the same way."""
        try:
            stage(job)
        except OSError as err:
            if err.errno in (errno.ENOSPC, errno.EDQUOT):
                job.close()
                raise
            self._fail(job, err)
        except Exception as err:  # noqa: BLE001 - any bad input fails only its own sample
            self._fail(job, err)
        return job

    def _outputs_exist(self, sample: BatchSample) -> bool:
        paths = sample_paths(self.settings.results, sample.sample)
        needed = ["preprocessed", "mask"]
        needed += ["instances"] * self.settings.instances + ["measurements"] * self.settings.measure
        needed += ["ome_zarr"] * self.settings.ome_zarr
        return all(paths[key].exists() for key in needed)

    def _overlay(self, sample: BatchSample) -> Path:
        return Path(self.settings.overlays) / f"{sample.sample}.png"

    def _fail(self, job: _Job, err: Exception) -> None:
        """Fail the sample: its outputs removed, the reason in its row and state file."""
        traceback.print_exc(file=sys.stderr)
        job.close()
        sample, paths = job.sample, job.paths
        for key in ("preprocessed", "mask", "instances", "measurements", "ome_zarr"):
            target = paths[key]
            shutil.rmtree(target, ignore_errors=True) if target.is_dir() else target.unlink(missing_ok=True)
        if self.settings.overlays:
            self._overlay(sample).unlink(missing_ok=True)
        reason = f"{type(err).__name__}: {err}".replace("\t", " ").replace("\n", " ")
        if sample.image not in reason:  # e.g. a decoder's message about a truncated file
            reason = f"{sample.image}: {reason}; check that the file opens in Fiji, or export it again"
        print(f"warning: sample {sample.sample} failed, the batch goes on: {reason}", file=sys.stderr)
        job.row = {"sample": sample.sample, "split": sample.split, "status": "failed", "error": reason,
                   "object_count": 0, "foreground_fraction": float("nan")}  # fmt: skip
        write_json(paths["state"], {"fingerprint": job.fingerprint, "status": "failed", "row": job.row})

    def _preprocess(self, job: _Job) -> None:
        sample, paths = job.sample, job.paths
        job.attrs = preprocess_sample(
            sample.sample, sample.image, paths["preprocessed"], mask_path=sample.mask or None,
            foreground=self.settings.foreground, percentiles=self.percentiles, axes=self.settings.axes,
            missing="fill", pixel_size=self.settings.pixel_size, classes=self.card.get("classes"),
        )  # fmt: skip
        preprocessed = open_sample(paths["preprocessed"])
        job.source, job.spatial_axes = preprocessed.image, preprocessed.spatial_axes
        check_channels(self.predictor, job.source.shape[1], sample.image)
        z_count, _, height, width = job.source.shape
        spatial = (height, width) if job.spatial_axes == "YX" else (z_count, height, width)
        # Small images keep their probabilities in memory (not with a distributed cluster,
        # whose workers write them): mask, instances and measurements are computed there.
        job.in_memory = fits_one_block(spatial, job.spatial_axes) and self.client is None
        if job.in_memory:
            job.probs = np.zeros((z_count, self.predictor.classes, height, width), np.float32)
        else:
            job.scratch = tempfile.TemporaryDirectory(dir=paths["mask"].parent.parent, prefix=".segment-")
            job.probs = self.predictor.create_output(Path(job.scratch.name) / "probabilities.zarr",
                                                     (z_count, height, width))  # fmt: skip

    def _infer(self, job: _Job) -> None:
        """Stage 2 (the calling thread): the network's probabilities."""
        self.predictor.predict(job.source, job.probs, threads=self.options.threads, progress=False,
                               skip_constant=self.options.skip_empty, client=self.client)  # fmt: skip

    def _finish(self, job: _Job) -> None:
        """Stage 3 (worker thread): mask, instances, measurements, overlay, OME-Zarr, state."""
        sample, paths, probs, spatial_axes = job.sample, job.paths, job.probs, job.spatial_axes
        pixel_size = job.attrs.get("pixel_size")
        try:
            if job.in_memory:
                row, job.mask = self._objects_in_memory(sample, paths, probs, spatial_axes, pixel_size)
            else:
                write_mask(probs, paths["mask"], threshold=self.threshold, spatial_axes=spatial_axes,
                           pixel_size=pixel_size, contact=self.contact)  # fmt: skip
                row = self._objects(sample, paths, spatial_axes, pixel_size, probs)
            if self.settings.ome_zarr:
                self._write_ome_zarr(paths, probs, spatial_axes, pixel_size)
        finally:
            job.close()
        if self.settings.overlays:
            mask = paths["mask"] if job.mask is None else job.mask
            overlay_figure(paths["preprocessed"], mask, self._overlay(sample))
        job.mask = None
        fraction = job.attrs.get("foreground_fraction")
        job.row = {"sample": sample.sample, "split": sample.split, "status": "ok", "error": "",
                   **row, **({"true_foreground_fraction": fraction} if fraction is not None else {})}  # fmt: skip
        write_json(paths["state"], {"fingerprint": job.fingerprint, "status": "ok", "row": job.row})

    def _gap(self) -> int:
        # A model trained with lines between touching objects predicts them: the instances
        # give the line pixels back to the objects, and the mask takes them too. A contact
        # model's objects without their contact pixels are grown back over them the same way.
        return LINE_WIDTH if self.card.get("separated_target") or self.contact else 0

    def _objects_in_memory(
        self, sample: BatchSample, paths: dict[str, Path], probs: Any, spatial_axes: str, pixel_size: Any
    ) -> tuple[dict[str, Any], np.ndarray]:
        """Mask, instance labels and measurements of an image that fits one labelling block,
        computed in memory: the files :meth:`_objects` writes, without reading any back.
        Returns the summary row and the mask."""
        planes = [probabilities_to_labels(np.asarray(probs[z]), self.threshold, contact=self.contact)
                  for z in range(probs.shape[0])]  # fmt: skip
        mask = planes[0] if spatial_axes == "YX" else np.stack(planes)
        row: dict[str, Any] = {}
        if self.settings.instances:
            gap = self._gap()
            objects = object_seeds(probs, spatial_axes) if self.contact else mask
            labels, row["object_count"] = label_array(objects, min_size=self.settings.min_size, gap=gap,
                                                      within=mask if self.contact else None)  # fmt: skip
            if gap:  # as add_object_pixels
                mask = np.where((labels > 0) & (mask == 0), FOREGROUND, mask).astype(np.uint8)
            write_tiff_array(paths["instances"], labels, spatial_axes, pixel_size=pixel_size)
        write_tiff_array(paths["mask"], mask, spatial_axes, pixel_size=pixel_size)
        if self.settings.instances and self.settings.measure:
            row.update(measure_labels(sample.image, labels, mask, paths["measurements"], sample=sample.sample,
                                      axes=self.settings.axes, pixel_size=pixel_size,
                                      classes=list(self.card.get("classes") or [])))  # fmt: skip
        return row, mask

    def _objects(
        self, sample: BatchSample, paths: dict[str, Path], spatial_axes: str, pixel_size: Any, probs: Any
    ) -> dict[str, Any]:
        """Instance labels and measurements of the written mask, out of core."""
        from unetseg.io.images import open_image

        row: dict[str, Any] = {}
        gap = self._gap()
        with open_image(paths["mask"], axes=spatial_axes) as mask:
            if self.settings.instances:
                objects = object_seeds(probs, spatial_axes) if self.contact else mask.array
                row["object_count"] = label_components(
                    objects, paths["instances"], spatial_axes=spatial_axes, pixel_size=pixel_size,
                    min_size=self.settings.min_size, gap=gap, within=mask.array if self.contact else None,
                )  # fmt: skip
        if self.settings.instances and gap:
            add_object_pixels(paths["mask"], paths["instances"], pixel_size=pixel_size)
        if self.settings.instances and self.settings.measure:
            row.update(measure_sample(sample.image, paths["instances"], paths["mask"], paths["measurements"],
                                      sample=sample.sample, axes=self.settings.axes, pixel_size=pixel_size,
                                      classes=list(self.card.get("classes") or [])))  # fmt: skip
        return row

    def _write_ome_zarr(self, paths: dict[str, Path], probs: Any, spatial_axes: str, pixel_size: Any) -> None:
        from unetseg.io.images import open_image
        from unetseg.io.ngff import write_ome_zarr

        with open_image(paths["mask"], axes=spatial_axes) as mask:
            instances = open_image(paths["instances"], axes=spatial_axes) if self.settings.instances else None
            try:
                write_ome_zarr(paths["ome_zarr"], probabilities=probs, mask=mask.array, spatial_axes=spatial_axes,
                               instances=None if instances is None else instances.array,
                               dtype=self.settings.probabilities_dtype, pixel_size=pixel_size)  # fmt: skip
            finally:
                if instances is not None:
                    instances.close()


def _read_state(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
