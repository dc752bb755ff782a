"""The U-Net's shapes, sizes and receptive field."""

from __future__ import annotations

import pytest
import torch

from unetseg.nn.model import UNet


@pytest.mark.parametrize("depth", [1, 2, 3, 4])
@pytest.mark.parametrize("upsampling", ["transpose", "bilinear"])
def test_same_padding_keeps_the_spatial_size(depth, upsampling):
    model = UNet(in_channels=3, out_channels=2, depth=depth, base_channels=4, upsampling=upsampling).eval()
    size = 2**depth * 3
    out = model(torch.zeros(2, 3, size, 2 * size))
    assert out.shape == (2, 2, size, 2 * size)


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_valid_padding_output_size_matches_the_forward_pass(depth):
    model = UNet(depth=depth, base_channels=2, padding="valid").eval()
    size = model.valid_input_size(20)
    out = model(torch.zeros(1, 1, size, size + 2**depth))
    assert out.shape[-2:] == (model.output_size(size), model.output_size(size + 2**depth))
    assert out.shape[-1] - out.shape[-2] == 2**depth
    assert size - out.shape[-2] == 2 * model.margin


def test_paper_geometry_572_to_388():
    model = UNet(depth=4, base_channels=64, out_channels=2, padding="valid", batch_norm=False)
    assert model.output_size(572) == 388
    assert model.margin == 92
    assert model.valid_input_size(388) == 572


def test_full_size_parameter_count():
    # 1 input channel, 2 classes, transposed-convolution up-sampling, no batch norm.
    model = UNet(depth=4, base_channels=64, out_channels=2, batch_norm=False)
    assert sum(p.numel() for p in model.parameters()) == 31_030_658


def test_same_padding_rejects_sizes_off_the_grid():
    model = UNet(depth=3, base_channels=2)
    with pytest.raises(ValueError, match="multiple of the grid 8"):
        model.output_size(100)
    assert model.valid_input_size(100) == 104


@pytest.mark.parametrize("upsampling", ["transpose", "bilinear"])
@pytest.mark.parametrize("depth", [1, 2, 3])
def test_receptive_field_matches_the_impulse_response(depth, upsampling):
    # The gradient of one output pixel is nonzero exactly where the input can change it;
    # pixels of every phase of the pooling grid are probed.
    size = 2**depth * 16
    low, high = 0, 0
    for seed in range(2):
        torch.manual_seed(seed)
        model = UNet(depth=depth, base_channels=4, upsampling=upsampling, batch_norm=False).eval()
        for centre in (size // 2, size // 2 + 1, size // 2 + 2 ** (depth - 1) + 1, size // 2 + 2**depth - 1):
            x = torch.randn(1, 1, size, size, requires_grad=True)
            model(x)[0, 0, centre, centre].backward()
            rows = torch.nonzero(x.grad[0, 0].abs().sum(dim=1) > 0)[:, 0]
            low, high = min(low, int(rows.min()) - centre), max(high, int(rows.max()) - centre)
    bound_low, bound_high = model.receptive_field()
    assert bound_low <= low and high <= bound_high  # a halo of the radius is enough
    assert (low - bound_low) + (bound_high - high) <= 2**depth  # and not much more than needed
    assert model.receptive_field_radius() == max(-bound_low, bound_high)


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="padding"):
        UNet(padding="reflect")
    with pytest.raises(ValueError, match="upsampling"):
        UNet(upsampling="nearest")


def test_mixed_precision_only_where_the_device_computes_it_natively(tmp_path, monkeypatch):
    import torch

    from unetseg.nn import device as devices

    with_bf16, without = tmp_path / "bf16", tmp_path / "avx512"
    with_bf16.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx512f avx512bw avx512_bf16\n")
    without.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx512f avx512bw\n")
    assert not devices.cpu_has_native_bf16(str(without))  # AVX-512 alone emulates bfloat16: slower
    assert not devices.cpu_has_native_bf16(str(tmp_path / "missing"))
    assert devices.cpu_has_native_bf16(str(with_bf16)) == torch.ops.mkldnn._is_mkldnn_bf16_supported()
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: False)
    assert devices.amp_dtype(torch.device("cpu")) is None
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: True)
    assert devices.amp_dtype(torch.device("cpu")) == torch.bfloat16
    assert devices.amp_dtype(torch.device("meta")) is None
