"""Tiled inference over images of any size, Dask-parallel, streamed to Zarr.

The contract of :meth:`TiledPredictor.predict` with ``blend="none"`` (the default): the result
equals, up to float rounding, :meth:`TiledPredictor.predict_whole` (one forward pass over the
whole image padded with the same border mode), because every tile reads a halo of at least
the network's receptive-field radius and starts on the network's pooling grid. The test
suite checks this to 1e-5 for several tile sizes, odd image sizes and both borders.

``blend="gaussian"`` is the alternative of MONAI and nnU-Net: tiles overlap by a fraction of
their size and overlapping predictions are averaged with a Gaussian weight that favours tile
centres. It needs less context per tile than the receptive field but is not exact.
"""

from __future__ import annotations

import functools
import math
import os
import shutil
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import dask
import numpy as np
import torch
import zarr
from tqdm.auto import tqdm

from .errors import InputError
from .model import UNet
from .preprocess import check_finite, normalize
from .tiling import Border, Tile, border_indices, round_up, tile_grid

Blend = Literal["none", "gaussian"]

__all__ = [
    "PlaneSource",
    "NormalizedSource",
    "TileLedger",
    "TiledPredictor",
    "dask_client",
    "read_window",
    "pick_device",
]


class PlaneSource(Protocol):
    """Anything with a ``(Z, C, Y, X)`` shape that reads ``(C, y, x)`` blocks of a plane."""

    shape: tuple[int, int, int, int]

    def read(self, z: int, ys: slice, xs: slice) -> np.ndarray: ...


class NormalizedSource:
    """A :class:`PlaneSource` that normalises blocks of another one by fixed statistics."""

    def __init__(self, source: PlaneSource, stats: Sequence[tuple[float, float]]):
        self.source, self.stats, self.shape = source, list(stats), source.shape

    def read(self, z: int, ys: slice = slice(None), xs: slice = slice(None)) -> np.ndarray:
        block = normalize(self.source.read(z, ys, xs), self.stats)
        check_finite(block, getattr(self.source, "path", "image"), z, ys.start or 0, xs.start or 0)
        return block


class TileLedger:
    """Which tiles of an output are finished: one empty marker file per tile.

    A marker is created only after the tile's probabilities are written, and creating an
    empty file is atomic, so after a crash every marked tile is complete and an unmarked
    one (perhaps half-written) is computed again.
    """

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)

    def _marker(self, z: int, index: int) -> Path:
        return self.directory / f"{z}.{index}"

    def done(self) -> set[tuple[int, int]]:
        return {tuple(int(part) for part in p.name.split(".")) for p in self.directory.iterdir()}

    def mark(self, z: int, index: int) -> None:
        self._marker(z, index).touch()


def pick_device(device: str | None = None) -> torch.device:
    """``device`` if given, else CUDA when available, else Apple MPS, else the CPU."""
    if device and device != "auto":
        chosen = torch.device(device)
        if chosen.type == "cuda" and not torch.cuda.is_available():
            raise InputError(f"device {device!r}: this PyTorch has no usable CUDA device; use --device cpu or auto.")
        if chosen.type == "mps" and not torch.backends.mps.is_available():
            raise InputError(f"device {device!r}: Apple MPS is not available here; use --device cpu or auto.")
        return chosen
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


@contextmanager
def dask_client(scheduler: str | None, *, workers: int = 2) -> Iterator[Any]:
    """A ``dask.distributed`` client for ``scheduler``, or ``None`` for local threads.

    Parameters
    ----------
    scheduler : str or None
        ``None``, ``""`` or ``"threads"``: threads in this process (no client).
        ``"local"``: a local cluster of ``workers`` single-threaded processes.
        Anything else: the address of a running scheduler, e.g. ``tcp://10.0.0.5:8786``
        (one started by dask-jobqueue's ``SLURMCluster``, or ``dask scheduler``).
    """
    if not scheduler or scheduler == "threads":
        yield None
        return
    from distributed import Client, LocalCluster

    if scheduler == "local":
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None)
        with cluster, Client(cluster) as client:
            yield client
    else:
        with Client(scheduler) as client:
            yield client


def _call(predictor: TiledPredictor, method: str, *args: Any) -> Any:
    """A predictor method as a Dask task (module level, so that it pickles by reference)."""
    return getattr(predictor, method)(*args)


@functools.lru_cache(maxsize=8)
def _gaussian_weights(shape: tuple[int, ...]) -> np.ndarray:
    weights = np.ones(shape, dtype=np.float32)
    for axis, n in enumerate(shape):
        centre, sigma = (n - 1) / 2, n / 8
        profile = np.exp(-((np.arange(n) - centre) ** 2) / (2 * sigma**2)).astype(np.float32)
        weights *= profile.reshape([-1 if a == axis else 1 for a in range(len(shape))])
    weights = np.maximum(weights, 1e-6)
    weights.flags.writeable = False
    return weights


@dataclass(frozen=True)
class Skip:
    """Which tiles need no network pass: constant windows, or none of a tissue mask."""

    constant: bool = False
    tissue: PlaneSource | None = None

    def has_tissue(self, z: int, window: Sequence[slice]) -> bool:
        return self.tissue is None or bool(np.asarray(self.tissue.read(z, *window)).any())


def read_window(
    source: PlaneSource, z: int, window: Sequence[tuple[int, int]], border: Border = "mirror"
) -> np.ndarray:
    """Read a ``(C, h, w)`` float32 window that may extend past the image borders.

    Only the bounding box of the needed pixels is read from ``source``; the rest comes from
    mirroring (or zeros), exactly as if the whole image had been padded first.
    """
    _, channels, height, width = source.shape
    (y0, y1), (x0, x1) = window
    iy, ix = border_indices(y0, y1, height, border), border_indices(x0, x1, width, border)
    out = np.zeros((channels, y1 - y0, x1 - x0), dtype=np.float32)
    vy, vx = iy >= 0, ix >= 0
    if not vy.any() or not vx.any():
        return out
    ylo, yhi = int(iy[vy].min()), int(iy[vy].max()) + 1
    xlo, xhi = int(ix[vx].min()), int(ix[vx].max()) + 1
    block = np.asarray(source.read(z, slice(ylo, yhi), slice(xlo, xhi)), dtype=np.float32)
    out[np.ix_(np.arange(channels), np.flatnonzero(vy), np.flatnonzero(vx))] = block[
        np.ix_(np.arange(channels), iy[vy] - ylo, ix[vx] - xlo)
    ]
    return out


class TiledPredictor:
    """Overlap-tile inference with a trained U-Net.

    Parameters
    ----------
    model : UNet
        The network; put in eval mode and moved to ``device``.
    tile : int
        Write-region size of a tile (rounded up to the network grid).
    batch_size : int
        Tiles per forward pass.
    border : {"mirror", "zero"}
        How pixels beyond the image border are filled.
    device : str, optional
        ``"cuda"``, ``"cpu"``...; default: CUDA when available.
    amp : bool
        Mixed precision (bfloat16 or float16) on CUDA; ignored on the CPU.
    tta : bool
        Test-time augmentation: average the probabilities of the image and its horizontal,
        vertical and double flips (4x the compute).
    blend : {"none", "gaussian"}
        ``"none"``: every tile reads a halo of the network's whole receptive field and keeps
        only its centre, which makes the result equal a whole-image pass. ``"gaussian"``:
        tiles overlap by ``overlap`` of their read window, and overlapping predictions are
        averaged with Gaussian weights (sigma 1/8 of the tile, as MONAI and nnU-Net do).
    overlap : float
        For ``blend="gaussian"``: fraction of a read window shared with each neighbour.
    """

    def __init__(
        self,
        model: UNet,
        *,
        tile: int = 1024,
        batch_size: int = 1,
        border: Border = "mirror",
        device: str | None = None,
        amp: bool = False,
        tta: bool = False,
        blend: Blend = "none",
        overlap: float = 0.25,
    ):
        if blend not in ("none", "gaussian"):
            raise ValueError(f"blend must be 'none' or 'gaussian', not {blend!r}")
        if not 0 <= overlap < 0.5:
            raise ValueError(f"overlap must be in [0, 0.5), not {overlap}")
        self.device = pick_device(device)
        self.model = model.to(self.device).eval()
        self.grid, self.margin = model.grid, model.margin
        self.tile = round_up(tile, self.grid)
        self.batch_size, self.border = batch_size, border
        self.amp = amp and self.device.type == "cuda"
        self.tta, self.blend, self.overlap = tta, blend, overlap
        if blend == "gaussian":
            # Output pixels predicted beyond the write region on each side, so that a read
            # window of size T shares about overlap * T with its neighbour.
            self.context = round_up(math.ceil(self.tile * overlap / (1 - overlap) / 2), self.grid)
            self.halo = self.context + self.margin
        else:
            self.context = 0
            radius = model.receptive_field_radius()
            self.halo = radius if model.settings["padding"] == "valid" else round_up(radius, self.grid)
        self.classes = model.settings["out_channels"]

    def tiles(self, spatial_shape: tuple[int, int]) -> list[Tile]:
        return tile_grid(
            spatial_shape, self.tile, halo=self.halo, grid=self.grid, margin=self.margin,
            read_size=self._read_size,
        )  # fmt: skip

    def _read_size(self, size: int) -> int:
        if self.margin:
            return self.model.valid_input_size(size + 2 * self.context)
        return size + 2 * self.halo

    @torch.inference_mode()
    def forward(self, batch: np.ndarray) -> np.ndarray:
        """Probabilities ``(B, K, h, w)`` for a normalised batch ``(B, C, H, W)``."""
        x = torch.from_numpy(np.ascontiguousarray(batch))
        if self.device.type == "cuda":
            x = x.pin_memory().to(self.device, non_blocking=True)
        x = x.to(self.device)
        dtype = torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else torch.float16
        flips = [(), (-1,), (-2,), (-2, -1)] if self.tta else [()]
        probs = None
        for dims in flips:  # test-time augmentation: average over mirrored copies
            with torch.autocast(self.device.type, dtype=dtype, enabled=self.amp):
                logits = self.model(x.flip(dims) if dims else x).float()
            p = torch.sigmoid(logits) if self.classes == 1 else torch.softmax(logits, dim=1)
            p = p.flip(dims) if dims else p
            probs = p if probs is None else probs + p
        return (probs / len(flips)).cpu().numpy()

    def predict_whole(self, image: np.ndarray) -> np.ndarray:
        """Reference result: one forward pass over the whole padded ``(C, Y, X)`` image.

        Returns ``(K, Y, X)`` probabilities. Needs the whole image in memory; for testing
        :meth:`predict` and for small images.
        """
        from .io import ImageSource

        _, height, width = image.shape
        source = ImageSource(image, "CYX")
        window = [(-self.halo, -self.halo + self._read_size(round_up(n, self.grid))) for n in (height, width)]
        probs = self.forward(read_window(source, 0, window, self.border)[np.newaxis])[0]
        off = self.halo - self.margin
        return probs[:, off : off + height, off : off + width]

    # --- tasks ------------------------------------------------------------------------------

    def empty_probabilities(self, shape: tuple[int, ...]) -> np.ndarray:
        """Probabilities of skipped pixels: certain background."""
        probs = np.zeros((self.classes, *shape), dtype=np.float32)
        if self.classes > 1:
            probs[0] = 1.0
        return probs

    @staticmethod
    def _constant(window: np.ndarray) -> bool:
        flat = window.reshape(window.shape[0], -1)
        return bool((flat.min(axis=1) == flat.max(axis=1)).all())

    def _read_tiles(self, source: PlaneSource, z: int, tiles: list[Tile], skip: Skip) -> tuple[np.ndarray, list[bool]]:
        """Read windows of ``tiles``; which ones can be skipped (no tissue, or constant)."""
        windows, skipped = [], []
        for tile in tiles:
            if not skip.has_tissue(z, self._output_window(tile, source.shape[2:])):
                skipped.append(True)
                continue
            window = read_window(source, z, tile.read, self.border)
            skipped.append(skip.constant and self._constant(window))
            if not skipped[-1]:
                windows.append(window)
        return (np.stack(windows) if windows else None), skipped

    def _output_window(self, tile: Tile, shape: Sequence[int]) -> tuple[slice, ...]:
        """The image pixels a tile's prediction is used for (write region, or with blending,
        everything its output covers), clipped to the image."""
        if self.blend == "none":
            return tile.write
        return tuple(
            slice(max(0, start + self.margin), min(n, stop - self.margin)) for (start, stop), n in zip(tile.read, shape)
        )

    def _predict_tiles(self, source: PlaneSource, z: int, tiles: list[Tile], skip: Skip) -> list[np.ndarray | None]:
        """Probabilities of the whole output of each tile; ``None`` for a skipped tile."""
        batch, skipped = self._read_tiles(source, z, tiles, skip)
        probs = iter(self.forward(batch)) if batch is not None else iter(())
        return [None if s else next(probs) for s in skipped]

    def _write_tiles(
        self, source: PlaneSource, out: Any, z: int, tiles: list[tuple[int, Tile]], ledger: TileLedger | None, skip: Skip
    ) -> tuple[int, int]:
        """Exact mode: predict a batch of tiles and write their centres."""
        probs = self._predict_tiles(source, z, [tile for _, tile in tiles], skip)
        for (index, tile), prob in zip(tiles, probs):
            if prob is None:
                out[(z, slice(None), *tile.write)] = self.empty_probabilities(tuple(s.stop - s.start for s in tile.write))
            else:
                out[(z, slice(None), *tile.write)] = prob[(slice(None), *tile.crop)]
            if ledger is not None:
                ledger.mark(z, index)
        return len(tiles), sum(p is None for p in probs)

    @staticmethod
    def gaussian_weights(shape: tuple[int, ...]) -> np.ndarray:
        """Blending weights of a tile output: a Gaussian with sigma 1/8 of each side, peak 1.

        Computed once per shape (every tile of a grid has the same); read-only.
        """
        return _gaussian_weights(tuple(int(n) for n in shape))

    def _blend_chunk(
        self, out: Any, z: int, index: int, tile: Tile, ledger: TileLedger | None, *neighbours: tuple[Tile, Any]
    ) -> tuple[int, int]:
        """Blending mode: the write region of ``tile`` as the weighted mean of the outputs
        of every tile that covers it (``neighbours``: pairs of tile and probabilities, or
        ``None`` for a skipped tile, which is left out of the mean)."""
        shape = tuple(s.stop - s.start for s in tile.write)
        total = np.zeros((self.classes, *shape), dtype=np.float32)
        weight = np.zeros(shape, dtype=np.float32)
        for other, prob in neighbours:
            if prob is None:  # a skipped tile does not take part in the mean
                continue
            origin = [start + self.margin for start, _ in other.read]  # of its output window
            src, dst = [], []
            for axis, region in enumerate(tile.write):
                low, high = max(region.start, origin[axis]), min(region.stop, origin[axis] + prob.shape[1 + axis])
                src.append(slice(low - origin[axis], high - origin[axis]))
                dst.append(slice(low - region.start, high - region.start))
            if any(s.stop <= s.start for s in src):
                continue
            w = self.gaussian_weights(prob.shape[1:])[tuple(src)]
            total[(slice(None), *dst)] += prob[(slice(None), *src)] * w
            weight[tuple(dst)] += w
        covered = weight > 0  # pixels no computed tile covers are background
        result = np.where(covered, total / np.where(covered, weight, 1), self.empty_probabilities(shape))
        out[(z, slice(None), *tile.write)] = result
        if ledger is not None:
            ledger.mark(z, index)
        return 1, 0

    def _graph(
        self, source: PlaneSource, out: Any, tiles: list[Tile], finished: set, ledger: TileLedger | None,
        skip: Skip, predictor: Any,
    ) -> list[Any]:
        """Dask tasks whose results are ``(tiles done, tiles skipped)``, one per write task.

        ``predictor`` is this object, or its ``distributed`` future, so that the model is
        shipped to each worker once rather than with every task.
        """
        z_count = source.shape[0]
        rows = len({tile.write[0].start for tile in tiles})
        cols = len(tiles) // rows
        tasks = []
        for z in range(z_count):
            pending = [i for i in range(len(tiles)) if (z, i) not in finished]
            if self.blend == "none":
                for start in range(0, len(pending), self.batch_size):
                    chunk = [(i, tiles[i]) for i in pending[start : start + self.batch_size]]
                    tasks.append(dask.delayed(_call)(predictor, "_write_tiles", source, out, z, chunk, ledger, skip))
                continue

            def neighbours(i: int) -> list[int]:
                row, col = divmod(i, cols)
                return [
                    r * cols + c
                    for r in range(max(0, row - 1), min(rows, row + 2))
                    for c in range(max(0, col - 1), min(cols, col + 2))
                ]

            needed = sorted({j for i in pending for j in neighbours(i)})
            outputs = {}
            for start in range(0, len(needed), self.batch_size):
                group = needed[start : start + self.batch_size]
                batch = dask.delayed(_call)(predictor, "_predict_tiles", source, z, [tiles[j] for j in group], skip)
                outputs.update({j: batch[k] for k, j in enumerate(group)})
            for i in pending:
                pairs = [(tiles[j], outputs[j]) for j in neighbours(i)]
                tasks.append(dask.delayed(_call)(predictor, "_blend_chunk", out, z, i, tiles[i], ledger, *pairs))
        return tasks

    def predict(
        self,
        source: PlaneSource,
        out: Any,
        *,
        threads: int | None = None,
        progress: bool = True,
        ledger: TileLedger | None = None,
        client: Any = None,
        skip_constant: bool = False,
        tissue: PlaneSource | None = None,
    ) -> None:
        """Segment every plane of ``source`` into ``out``, tile by tile, in parallel.

        Parameters
        ----------
        source : PlaneSource
            Normalised image, ``(Z, C, Y, X)``.
        out : zarr.Array or ndarray
            ``(Z, K, Y, X)`` probabilities, written tile by tile. With chunks of the tile
            size, no two tasks write to the same chunk.
        threads : int, optional
            CPU threads in all (default: all cores), split between Dask workers that read,
            write and run batches, and torch's intra-op threads.
        progress : bool
            Show a progress bar on stderr.
        ledger : TileLedger, optional
            Records finished tiles; tiles it already lists are skipped, so a rerun after a
            crash computes only what is missing.
        client : distributed.Client, optional
            Run the tasks on a ``dask.distributed`` cluster instead of local threads. The
            source and output must then be reachable from the workers (Zarr on a shared
            file system); each worker holds one copy of the model.
        skip_constant : bool
            Do not run the network on tiles whose whole read window is constant (e.g.
            the empty margin of a slide scan); they get background probabilities.
        tissue : PlaneSource, optional
            ``(Z, 1, Y, X)`` mask of the image (e.g. a tissue mask): tiles without a nonzero
            pixel of it where their prediction is used get background probabilities.
        """
        z_count, _, height, width = source.shape
        tiles = self.tiles((height, width))
        threads = threads or os.cpu_count() or 1
        workers = min(2, threads) if self.device.type == "cpu" else 2
        previous_threads = torch.get_num_threads()
        if self.device.type == "cpu":
            torch.set_num_threads(max(1, threads // workers))
        if tissue is not None and (tissue.shape[0], *tissue.shape[2:]) != (z_count, height, width):
            raise ValueError(f"tissue mask of shape {tissue.shape} does not match the image's {source.shape}")
        skip = Skip(constant=skip_constant, tissue=tissue)
        finished = ledger.done() if ledger is not None else set()
        if finished and progress:
            print(f"resuming: {len(finished)} of {z_count * len(tiles)} tiles already done", file=sys.stderr)
        bar = tqdm(total=z_count * len(tiles), initial=len(finished), unit="tile", disable=None if progress else True)
        started, skipped = time.perf_counter(), 0
        try:
            if client is not None:
                from distributed import as_completed

                remote = client.scatter(self, broadcast=True, hash=False)
                futures = client.compute(self._graph(source, out, tiles, finished, ledger, skip, remote))
                for future in as_completed(futures):
                    done, skip_count = future.result()
                    bar.update(done)
                    skipped += skip_count
            else:
                lock = threading.Lock()
                counts = [0]

                def report(result: tuple[int, int]) -> tuple[int, int]:
                    with lock:
                        bar.update(result[0])
                        counts[0] += result[1]
                    return result

                graph = self._graph(source, out, tiles, finished, ledger, skip, self)
                dask.compute(*[dask.delayed(report)(task) for task in graph], scheduler="threads", num_workers=workers)
                skipped = counts[0]
        finally:
            bar.close()
            # torch's thread count is global: leave it as found (training validates with this).
            torch.set_num_threads(previous_threads)
        seconds = time.perf_counter() - started
        computed = z_count * len(tiles) - len(finished)
        if progress and computed:
            share = computed / (z_count * len(tiles))  # of the image, this run (less when resuming)
            print(
                f"segmented {z_count} plane(s) of {height}x{width} in {len(tiles)} tile(s) each"
                f"{f', {computed} this run' if finished else ''}"
                f"{f' ({skipped} skipped: constant or outside the tissue mask)' if skipped else ''}, "
                f"{seconds:.1f} s ({share * z_count * height * width / seconds / 1e6:.2f} Mpixel/s) on {self.device}",
                file=sys.stderr,
            )

    def create_output(
        self, path: str | os.PathLike, spatial_zyx: tuple[int, int, int], *, attributes: dict | None = None
    ) -> zarr.Array:
        """A ``(Z, K, Y, X)`` float32 Zarr array chunked by tile, for :meth:`predict`."""
        z_count, height, width = spatial_zyx
        return zarr.create_array(
            str(path), shape=(z_count, self.classes, height, width), dtype="float32",
            chunks=(1, self.classes, min(self.tile, height), min(self.tile, width)), fill_value=np.nan,
            attributes={"axes": "ZCYX", "content": "probabilities", **(attributes or {})}, overwrite=True,
        )  # fmt: skip

    def resumable_output(
        self, path: str | os.PathLike, spatial_zyx: tuple[int, int, int], *, fingerprint: str, attributes: dict | None = None
    ) -> tuple[zarr.Array, TileLedger]:
        """The output array at ``path`` and its ledger: reopened if an interrupted run with
        the same ``fingerprint`` left them there, else created afresh."""
        path = Path(path)
        ledger_dir = path.with_name(path.name + ".tiles")
        try:
            existing = zarr.open_array(str(path), mode="r+")
            if existing.attrs.get("fingerprint") == fingerprint and ledger_dir.is_dir():
                return existing, TileLedger(ledger_dir)
        except (FileNotFoundError, ValueError, KeyError, zarr.errors.BaseZarrError):
            pass
        shutil.rmtree(ledger_dir, ignore_errors=True)
        shutil.rmtree(path, ignore_errors=True)
        out = self.create_output(path, spatial_zyx, attributes={**(attributes or {}), "fingerprint": fingerprint})
        return out, TileLedger(ledger_dir)
