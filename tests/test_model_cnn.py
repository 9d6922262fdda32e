"""The brain-age CNN: parameter counts, shapes, output bias, fused first block."""

from __future__ import annotations

import pytest
import torch

from defacebench.model.cnn import HEADS, PAPER_REPORTED_PARAMETERS, BrainAgeCNN, count_parameters, parameter_breakdown
from defacebench.model.accel.fast import FusedBrainAgeCNN, fused_first_block, fused_forward, patch_moments, patches


def test_paper_parameter_counts() -> None:
    model = BrainAgeCNN()
    counts = parameter_breakdown(model)
    assert counts["conv"] == 335_488  # the paper's widths, kernel 3: 3,584 + 221,248 + 110,656
    assert counts["norm"] == 512  # affine instance norms: 2 x (128 + 64 + 64)
    assert counts["head"] == 64 * 11 * 13 * 11 + 1  # 91x109x91 pooled three times -> 11x13x11
    assert counts["total"] == count_parameters(model) == 436_673
    assert count_parameters(BrainAgeCNN(head="gap")) == 335_488 + 512 + 65
    assert PAPER_REPORTED_PARAMETERS not in {count_parameters(BrainAgeCNN(head=h)) for h in HEADS}


def test_width_multiplier_and_grid() -> None:
    model = BrainAgeCNN(input_shape=(9, 10, 11), width_multiplier=0.125)
    assert model.widths == (16, 8, 8)
    assert model(torch.zeros(2, 1, 9, 10, 11)).shape == (2,)
    with pytest.raises(ValueError):
        BrainAgeCNN(input_shape=(7, 10, 11))
    with pytest.raises(ValueError):
        BrainAgeCNN(head="mlp-guess")


def test_output_bias_is_mean_age_and_gradcam_target() -> None:
    model = BrainAgeCNN(input_shape=(9, 10, 11), width_multiplier=0.125, output_bias=71.5)
    assert float(model.output.bias.detach()) == 71.5
    with torch.no_grad():
        model.output.weight.zero_()
    assert torch.allclose(model(torch.randn(3, 1, 9, 10, 11)), torch.full((3,), 71.5))
    assert model.last_conv is model.features[-1].conv
    assert isinstance(model.last_conv, torch.nn.Conv3d) and model.last_conv.out_channels == 8


def test_patches_match_conv() -> None:
    x = torch.randn(2, 1, 5, 6, 7, dtype=torch.float64)
    w = torch.randn(4, 1, 3, 3, 3, dtype=torch.float64)
    ref = torch.nn.functional.conv3d(x, w, padding=1).reshape(2, 4, -1)
    assert torch.allclose(w.view(4, 27) @ patches(x), ref)
    mean, cov = patch_moments(x)
    p = patches(x)
    assert torch.allclose(mean.double(), p.mean(2), atol=1e-5)
    assert torch.allclose(cov.double(), torch.stack([torch.cov(p[i], correction=0) for i in range(2)]), atol=1e-5)


def test_patch_moments_in_the_convolutions_precision_are_those_of_the_rounded_image() -> None:
    """``dtype`` rounds the image first (what a bf16 convolution sees), then sums in float32."""
    x = torch.rand(2, 1, 7, 8, 9, generator=torch.Generator().manual_seed(0)) * 2
    for dtype in (torch.bfloat16, torch.float16):
        p = patches(x.to(dtype).double())
        mean, cov = patch_moments(x, dtype)
        assert mean.dtype == cov.dtype == torch.float32
        assert torch.allclose(mean.double(), p.mean(2), atol=1e-6)
        assert torch.allclose(cov.double(), torch.stack([torch.cov(p[i], correction=0) for i in range(2)]), atol=1e-6)
        # the rounding is not lost: fp16 moves these means by ~1e-5, float32 summation by ~1e-8
        assert float((mean - patch_moments(x)[0]).abs().max()) > 1e-6


@pytest.mark.parametrize("shape", [(9, 10, 11), (12, 13, 10)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_fused_forward_equals_reference(shape: tuple[int, int, int], channels_last: bool) -> None:
    torch.manual_seed(0)
    model = BrainAgeCNN(input_shape=shape, width_multiplier=0.125, output_bias=60.0).double()
    with torch.no_grad():  # negative gammas and a conv bias exercise the sign handling
        model.features[0].norm.weight.uniform_(-1, 1)
        model.features[0].norm.bias.uniform_(-1, 1)
        model.features[0].conv.bias.uniform_(-1, 1)
    x = torch.rand(3, 1, *shape, dtype=torch.float64) + 0.2
    ref = model(x)
    g_ref = torch.autograd.grad(ref.sum(), list(model.parameters()))
    if channels_last:
        model = model.to(memory_format=torch.channels_last_3d)
        assert model.features[1].conv.weight.is_contiguous(memory_format=torch.channels_last_3d)
        assert fused_first_block(model, x, True).is_contiguous(memory_format=torch.channels_last_3d)
    fast = FusedBrainAgeCNN(model, channels_last)(x)
    assert torch.allclose(ref, fast.double(), atol=1e-4)
    g_fast = torch.autograd.grad(fused_forward(model, x, channels_last).sum(), list(model.parameters()))
    for a, b in zip(g_ref, g_fast):
        assert torch.allclose(a, b, atol=1e-4 * (1 + float(a.abs().max())))


def test_fused_forward_on_the_pooled_grid_equals_forward_downsampled() -> None:
    """With ``input_pool`` the trainer feeds pooled images; the fused path starts there too."""
    torch.manual_seed(0)
    model = BrainAgeCNN(input_shape=(26, 30, 22), width_multiplier=0.125, input_pool=2, output_bias=60.0).double()
    x = torch.rand(2, 1, 26, 30, 22, dtype=torch.float64)
    pooled = model.downsample(x)
    ref = model.forward_downsampled(pooled)
    assert torch.allclose(ref, model(x))
    for channels_last in (False, True):
        assert torch.allclose(fused_forward(model, pooled, channels_last).double(), ref, atol=1e-8)
