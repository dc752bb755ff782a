"""Tiled inference over images of any size, Dask-parallel, streamed to Zarr.

The contract of :meth:`TiledPredictor.predict` with ``blend="none"`` (the default): the result
equals, up to float rounding, :meth:`TiledPredictor.predict_whole` (one forward pass over the
whole image padded with the same border mode), because every tile reads a halo of at least
the network's receptive-field radius and starts on the network's pooling grid. The test
suite checks this to 1e-5 for several tile sizes, odd image sizes and both borders.

``blend="gaussian"`` is the alternative of MONAI and nnU-Net: tiles overlap by a fraction of
their size and overlapping predictions are averaged with a Gaussian weight that favours tile
centres. It needs less context per tile than the receptive field but is not exact.

The pieces live beside this module: the tiling maths (:mod:`.tiling`), the forward passes
(:mod:`.forward`), the blending maths (:mod:`.blending`), where tasks run
(:mod:`.scheduler`) and the resumable output (:mod:`.ledger`). This class plans the tiles
and builds the task graph.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import dask
import numpy as np
import torch
import zarr

from unetseg.inference import ledger as outputs
from unetseg.inference.blending import blend_region, gaussian_weights
from unetseg.inference.forward import Forward
from unetseg.inference.ledger import TileLedger
from unetseg.inference.scheduler import _call, run_tasks
from unetseg.inference.tiling import Border, Tile, round_up, tile_grid
from unetseg.io.images import ImageSource
from unetseg.io.windows import PlaneSource, read_window
from unetseg.nn.model import UNet

Blend = Literal["none", "gaussian"]

__all__ = ["TiledPredictor", "Skip"]


@dataclass(frozen=True)
class Skip:
    """Which tiles need no network pass: constant windows, or none of a tissue mask."""

    constant: bool = False
    tissue: PlaneSource | None = None

    def has_tissue(self, z: int, window: Sequence[slice]) -> bool:
        return self.tissue is None or bool(np.asarray(self.tissue.read(z, *window)).any())

    @staticmethod
    def is_constant(window: np.ndarray) -> bool:
        flat = window.reshape(window.shape[0], -1)
        return bool((flat.min(axis=1) == flat.max(axis=1)).all())


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
    border : {"mirror", "zero", "none"}
        How pixels beyond the image border are filled: mirrored (the paper's overlap-tile
        strategy), zeros, or ``"none"``: no halo is read beyond the image, so the network's
        own zero padding acts there, as in training, where every patch border is seen that
        way (same padding only; the image is mirrored only up to a multiple of the grid).
        For an image that fits one tile, ``"none"`` is a single forward pass of the image
        itself, without the halo's extra pixels.
    device, amp, tta, channels_last
        As :class:`~unetseg.inference.forward.Forward` (``channels_last``: the inference
        commands convert their own model; validation during training leaves the training
        model's layout alone).
    blend : {"none", "gaussian"}
        ``"none"``: every tile reads a halo of the network's whole receptive field and keeps
        only its centre, which makes the result equal a whole-image pass. ``"gaussian"``:
        tiles overlap by ``overlap`` of their read window, and overlapping predictions are
        averaged with Gaussian weights (sigma 1/8 of the tile, as MONAI and nnU-Net do).
    overlap : float
        For ``blend="gaussian"``: fraction of a read window shared with each neighbour.
    """

    def __init__(
        self, model: UNet, *, tile: int = 1024, batch_size: int = 1, border: Border = "mirror",
        device: str | None = None, amp: bool = False, tta: bool = False, blend: Blend = "none", overlap: float = 0.25,
        channels_last: bool = False,
    ):  # fmt: skip
        if border == "none" and (model.settings["padding"] != "same" or blend != "none"):
            raise ValueError(
                "border 'none' needs a same-padded network and blend 'none'; a valid-padded network or "
                "Gaussian blending needs context beyond the image: use border 'mirror'"
            )
        if blend not in ("none", "gaussian"):
            raise ValueError(f"blend must be 'none' or 'gaussian', not {blend!r}")
        if not 0 <= overlap < 0.5:
            raise ValueError(f"overlap must be in [0, 0.5), not {overlap}")
        self._forward = self.forward = Forward(model, device=device, amp=amp, tta=tta, channels_last=channels_last)
        self.model, self.device, self.classes = self._forward.model, self._forward.device, self._forward.classes
        self.grid, self.margin = model.grid, model.margin
        self.tile = round_up(tile, self.grid)
        self.batch_size, self.border, self.blend, self.overlap = batch_size, border, blend, overlap
        if blend == "gaussian":
            # Output pixels predicted beyond the write region on each side, so that a read
            # window of size T shares about overlap * T with its neighbour.
            self.context = round_up(math.ceil(self.tile * overlap / (1 - overlap) / 2), self.grid)
            self.halo = self.context + self.margin
        else:
            self.context = 0
            radius = model.receptive_field_radius()
            self.halo = radius if model.settings["padding"] == "valid" else round_up(radius, self.grid)

    def tiles(self, spatial_shape: tuple[int, int]) -> list[Tile]:
        return tile_grid(spatial_shape, self.tile, halo=self.halo, grid=self.grid, margin=self.margin,
                         read_size=self._read_size, clip=self.border == "none")  # fmt: skip

    def _read_size(self, size: int) -> int:
        if self.margin:
            return self.model.valid_input_size(size + 2 * self.context)
        return size + 2 * self.halo

    def predict_whole(self, image: np.ndarray) -> np.ndarray:
        """Reference result: one forward pass over the whole padded ``(C, Y, X)`` image.

        Returns ``(K, Y, X)`` probabilities. Needs the whole image in memory; for testing
        :meth:`predict` and for small images.
        """
        _, height, width = image.shape
        if self.border == "none":  # the image itself, rounded up to the grid
            halo, window = 0, [(0, round_up(n, self.grid)) for n in (height, width)]
        else:
            halo = self.halo
            window = [(-halo, -halo + self._read_size(round_up(n, self.grid))) for n in (height, width)]
        probs = self.forward(read_window(ImageSource(image, "CYX"), 0, window, self.border)[np.newaxis])[0]
        off = halo - self.margin
        return probs[:, off : off + height, off : off + width]

    def empty_probabilities(self, shape: tuple[int, ...]) -> np.ndarray:
        """Probabilities of skipped pixels: certain background."""
        return self._forward.empty(shape)

    gaussian_weights = staticmethod(gaussian_weights)

    # --- tasks ------------------------------------------------------------------------------

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
        windows, skipped = [], []
        for tile in tiles:
            if not skip.has_tissue(z, self._output_window(tile, source.shape[2:])):
                skipped.append(True)
                continue
            window = read_window(source, z, tile.read, self.border)
            skipped.append(skip.constant and skip.is_constant(window))
            if not skipped[-1]:
                windows.append(window)
        # Windows of one shape go through the network together (clipped tiles at the image
        # border are smaller than the others).
        results: list[Any] = [None] * len(windows)
        for shape in dict.fromkeys(w.shape for w in windows):
            group = [i for i, w in enumerate(windows) if w.shape == shape]
            for i, prob in zip(group, self.forward(np.stack([windows[i] for i in group]))):
                results[i] = prob
        probs = iter(results)
        return [None if s else next(probs) for s in skipped]

    def _write_tiles(
        self,
        source: PlaneSource,
        out: Any,
        z: int,
        tiles: list[tuple[int, Tile]],
        ledger: TileLedger | None,
        skip: Skip,
    ) -> tuple[int, int]:
        """Exact mode: predict a batch of tiles and write their centres."""
        probs = self._predict_tiles(source, z, [tile for _, tile in tiles], skip)
        for (index, tile), prob in zip(tiles, probs):
            if prob is None:
                out[(z, slice(None), *tile.write)] = self.empty_probabilities(
                    tuple(s.stop - s.start for s in tile.write)
                )
            else:
                out[(z, slice(None), *tile.write)] = prob[(slice(None), *tile.crop)]
            if ledger is not None:
                ledger.mark(z, index)
        return len(tiles), sum(p is None for p in probs)

    def _blend_chunk(
        self, out: Any, z: int, index: int, tile: Tile, ledger: TileLedger | None, *neighbours: tuple[Tile, Any]
    ) -> tuple[int, int]:
        """Blending mode: the write region of ``tile`` from the outputs of every tile that
        covers it (``neighbours``: pairs of tile and probabilities, ``None`` if skipped)."""
        empty = self.empty_probabilities(tuple(s.stop - s.start for s in tile.write))
        origins = [([start + self.margin for start, _ in other.read], prob) for other, prob in neighbours]
        out[(z, slice(None), *tile.write)] = blend_region(tile.write, origins, empty)
        if ledger is not None:
            ledger.mark(z, index)
        return 1, 0

    def _graph(
        self, source: PlaneSource, out: Any, tiles: list[Tile], finished: set, ledger: TileLedger | None,
        skip: Skip, predictor: Any,
    ) -> list[Any]:  # fmt: skip
        """Dask tasks whose results are ``(tiles done, tiles skipped)``, one per write task.

        ``predictor`` is this object, or its ``distributed`` future, so that the model is
        shipped to each worker once rather than with every task.
        """
        rows = len({tile.write[0].start for tile in tiles})
        cols = len(tiles) // rows

        def neighbours(i: int) -> list[int]:
            row, col = divmod(i, cols)
            return [r * cols + c for r in range(max(0, row - 1), min(rows, row + 2))
                    for c in range(max(0, col - 1), min(cols, col + 2))]  # fmt: skip

        tasks = []
        for z in range(source.shape[0]):
            pending = [i for i in range(len(tiles)) if (z, i) not in finished]
            if self.blend == "none":
                for start in range(0, len(pending), self.batch_size):
                    chunk = [(i, tiles[i]) for i in pending[start : start + self.batch_size]]
                    tasks.append(dask.delayed(_call)(predictor, "_write_tiles", source, out, z, chunk, ledger, skip))
                continue
            needed = sorted({j for i in pending for j in neighbours(i)})
            outputs_of = {}
            for start in range(0, len(needed), self.batch_size):
                group = needed[start : start + self.batch_size]
                batch = dask.delayed(_call)(predictor, "_predict_tiles", source, z, [tiles[j] for j in group], skip)
                outputs_of.update({j: batch[k] for k, j in enumerate(group)})
            for i in pending:
                pairs = [(tiles[j], outputs_of[j]) for j in neighbours(i)]
                tasks.append(dask.delayed(_call)(predictor, "_blend_chunk", out, z, i, tiles[i], ledger, *pairs))
        return tasks

    def predict(
        self, source: PlaneSource, out: Any, *, threads: int | None = None, progress: bool = True,
        ledger: TileLedger | None = None, client: Any = None, skip_constant: bool = False,
        tissue: PlaneSource | None = None,
    ) -> None:  # fmt: skip
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
        if tissue is not None and (tissue.shape[0], *tissue.shape[2:]) != (z_count, height, width):
            raise ValueError(f"tissue mask of shape {tissue.shape} does not match the image's {source.shape}")
        skip = Skip(constant=skip_constant, tissue=tissue)
        finished = ledger.done() if ledger is not None else set()
        if finished and progress:
            print(f"resuming: {len(finished)} of {z_count * len(tiles)} tiles already done", file=sys.stderr)
        threads = threads or os.cpu_count() or 1
        workers = min(2, threads) if self.device.type == "cpu" else 2
        # One tile in all (a small image): one worker, and torch gets every thread.
        workers = max(1, min(workers, z_count * len(tiles) - len(finished)))
        previous_threads = torch.get_num_threads()
        if self.device.type == "cpu":
            torch.set_num_threads(max(1, threads // workers))
        started = time.perf_counter()
        try:
            skipped = run_tasks(
                lambda owner: self._graph(source, out, tiles, finished, ledger, skip, owner), self, client=client,
                workers=workers, total=z_count * len(tiles), initial=len(finished), progress=progress,
            )  # fmt: skip
        finally:
            # torch's thread count is global: leave it as found (training validates with this).
            torch.set_num_threads(previous_threads)
        computed = z_count * len(tiles) - len(finished)
        if progress and computed:
            seconds = time.perf_counter() - started
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
        return outputs.create_output(path, self.classes, self.tile, spatial_zyx, attributes=attributes)

    def resumable_output(
        self, path: str | os.PathLike, spatial_zyx: tuple[int, int, int], *, fingerprint: str,
        attributes: dict | None = None,
    ) -> tuple[zarr.Array, TileLedger]:  # fmt: skip
        """The output at ``path`` and its ledger, reopened after an interrupted run with the
        same ``fingerprint`` (see :func:`unetseg.inference.ledger.resumable_output`)."""
        return outputs.resumable_output(path, self.classes, self.tile, spatial_zyx, fingerprint=fingerprint,
                                        attributes=attributes)  # fmt: skip
