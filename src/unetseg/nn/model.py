"""The U-Net of Ronneberger, Fischer & Brox (MICCAI 2015), for 2D images.

Contracting path: per level two 3x3 convolutions with ReLU (optionally batch-normalised),
then 2x2 max pooling; a bottleneck; expanding path: 2x2 up-convolution halving the
channels, concatenation on the channel axis with the matching encoder map (centre-cropped
when the convolutions are unpadded), two 3x3 convolutions; a 1x1 convolution to the classes.
The network returns logits: sigmoid for one output channel (binary), softmax otherwise.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn

__all__ = ["UNet"]

Padding = Literal["same", "valid"]
Upsampling = Literal["transpose", "bilinear"]


class DoubleConv(nn.Sequential):
    """Two 3x3 convolutions, each followed by optional batch norm and ReLU."""

    def __init__(self, in_ch: int, out_ch: int, *, padding: Padding, batch_norm: bool):
        pad = 1 if padding == "same" else 0
        layers: list[nn.Module] = []
        for ch_in in (in_ch, out_ch):
            layers.append(nn.Conv2d(ch_in, out_ch, 3, padding=pad, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(out_ch))
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


def _upsampler(in_ch: int, out_ch: int, mode: Upsampling) -> nn.Module:
    if mode == "transpose":
        return nn.ConvTranspose2d(in_ch, out_ch, kernel_size=2, stride=2)
    return nn.Sequential(
        nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
        nn.Conv2d(in_ch, out_ch, kernel_size=1),
    )


def _center_crop(x: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    dy = (x.shape[-2] - shape[-2]) // 2
    dx = (x.shape[-1] - shape[-1]) // 2
    return x[..., dy : dy + shape[-2], dx : dx + shape[-1]]


class UNet(nn.Module):
    """U-Net for 2D images of any number of channels.

    Parameters
    ----------
    in_channels : int
        Channels of the input image.
    out_channels : int
        1 for binary segmentation (sigmoid of the logit), else the number of classes (softmax).
    depth : int
        Number of 2x2 poolings (the paper uses 4). Same-padded inputs must be divisible by
        ``2 ** depth`` (:attr:`grid`).
    base_channels : int
        Channels of the first level; doubled at every pooling (the paper uses 64).
    padding : {"same", "valid"}
        "same" keeps the spatial size; "valid" is the paper's unpadded convolutions, whose
        output is smaller by ``2 * margin`` (572 -> 388 at depth 4).
    batch_norm : bool
        Batch normalisation after every 3x3 convolution.
    dropout : float
        Dropout probability at the end of the contracting path (the paper used 0.5).
    upsampling : {"transpose", "bilinear"}
        2x2 transposed convolution (the paper) or bilinear interpolation plus a 1x1 convolution.
    """

    def __init__(
        self,
        *,
        in_channels: int = 1,
        out_channels: int = 1,
        depth: int = 4,
        base_channels: int = 64,
        padding: Padding = "same",
        batch_norm: bool = True,
        dropout: float = 0.0,
        upsampling: Upsampling = "transpose",
    ):
        super().__init__()
        if padding not in ("same", "valid"):
            raise ValueError(f"padding must be 'same' or 'valid', not {padding!r}")
        if upsampling not in ("transpose", "bilinear"):
            raise ValueError(f"upsampling must be 'transpose' or 'bilinear', not {upsampling!r}")
        if depth < 1 or base_channels < 1 or in_channels < 1 or out_channels < 1:
            raise ValueError("depth, base_channels, in_channels and out_channels must be >= 1")
        self.settings: dict[str, Any] = dict(
            in_channels=in_channels, out_channels=out_channels, depth=depth,
            base_channels=base_channels, padding=padding, batch_norm=batch_norm,
            dropout=dropout, upsampling=upsampling,
        )  # fmt: skip
        widths = [base_channels * 2**level for level in range(depth + 1)]
        conv = dict(padding=padding, batch_norm=batch_norm)
        self.encoders = nn.ModuleList(
            DoubleConv(c_in, c_out, **conv) for c_in, c_out in zip([in_channels, *widths[:-2]], widths[:-1])
        )
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = DoubleConv(widths[-2], widths[-1], **conv)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.upsamplers = nn.ModuleList(
            _upsampler(widths[level + 1], widths[level], upsampling) for level in reversed(range(depth))
        )
        self.decoders = nn.ModuleList(
            DoubleConv(2 * widths[level], widths[level], **conv) for level in reversed(range(depth))
        )
        self.head = nn.Conv2d(widths[0], out_channels, kernel_size=1)

    @property
    def depth(self) -> int:
        return self.settings["depth"]

    @property
    def grid(self) -> int:
        """Inputs (same padding) and tile origins must be multiples of this."""
        return 2**self.depth

    @property
    def margin(self) -> int:
        """Pixels the network trims from each side of its input (0 for same padding)."""
        if self.settings["padding"] == "same":
            return 0
        size = self.valid_input_size(1)
        return (size - self.output_size(size)) // 2

    def receptive_field(self) -> tuple[int, int]:
        """Offsets ``(low, high)`` of the input pixels an output pixel can depend on.

        Exact interval arithmetic over the layers of a same-padded network (per axis): a
        3x3 convolution at stride ``s`` widens it by ``s`` on each side, a 2x2 pooling by
        ``s`` on the high side, a 2x2 transposed convolution by ``s`` on the low side,
        bilinear up-sampling by ``2s`` low and ``s`` high; a concatenation takes the union.
        The test suite compares it with the measured impulse response.
        """
        low, high, stride = 0, 0, 1
        skips = []
        for _ in range(self.depth):
            low, high = low - 2 * stride, high + 2 * stride
            skips.append((low, high))
            high += stride
            stride *= 2
        low, high = low - 2 * stride, high + 2 * stride
        for skip_low, skip_high in reversed(skips):
            stride //= 2
            if self.settings["upsampling"] == "transpose":
                low -= stride
            else:
                low, high = low - 2 * stride, high + stride
            low, high = min(low, skip_low), max(high, skip_high)
            low, high = low - 2 * stride, high + 2 * stride
        return low, high

    def receptive_field_radius(self) -> int:
        """How far (pixels, either side) an output can depend on the input around it.

        Same padding: from :meth:`receptive_field`. Valid padding: the exact :attr:`margin`.
        """
        if self.settings["padding"] == "valid":
            return self.margin
        low, high = self.receptive_field()
        return max(-low, high)

    def output_size(self, size: int) -> int:
        """Spatial output size for an input of ``size`` pixels; raises if not allowed."""
        if self.settings["padding"] == "same":
            if size % self.grid:
                raise ValueError(f"input size {size} is not a multiple of the grid {self.grid}")
            return size
        for _ in range(self.depth):
            size -= 4
            if size <= 0 or size % 2:
                raise ValueError("input size not allowed for a valid-padded U-Net")
            size //= 2
        size -= 4
        if size <= 0:
            raise ValueError("input size too small for a valid-padded U-Net")
        for _ in range(self.depth):
            size = 2 * size - 4
        return size

    def valid_input_size(self, output: int) -> int:
        """Smallest allowed input size whose output has at least ``output`` pixels."""
        if self.settings["padding"] == "same":
            return -(-output // self.grid) * self.grid
        size = output
        while True:
            try:
                if self.output_size(size) >= output:
                    return size
            except ValueError:
                pass
            size += 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, out_channels, Y', X')`` for an input ``(N, in_channels, Y, X)``."""
        skips = []
        for encoder in self.encoders:
            x = encoder(x)
            skips.append(x)
            x = self.pool(x)
        x = self.dropout(self.bottleneck(x))
        for up, decoder, skip in zip(self.upsamplers, self.decoders, reversed(skips)):
            x = up(x)
            x = decoder(torch.cat([_center_crop(skip, x.shape), x], dim=1))
        return self.head(x)
