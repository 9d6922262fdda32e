"""The first block's Triton kernels (conv + max pool, weight gradient), on CPU through
Triton's interpreter; on a GPU machine the same tests run the compiled kernels."""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # read when the kernels are defined
pytest.importorskip("triton")

from defacebench.model.cnn import BrainAgeCNN  # noqa: E402
from defacebench.model.accel.fast import FusedBrainAgeCNN, fused_forward  # noqa: E402
from defacebench.model.accel.triton_block import _padded, conv_pool, conv_pool_padded, conv_pool_weight_grad  # noqa: E402
from full_float32 import full_float32  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture(autouse=True)
def _no_tf32():
    """Full float32 references on a GPU: cuDNN's default TF32 convolutions err by ~1e-3."""
    with full_float32():
        yield


def _reference(weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``max_pool3d(conv3d(x, w))`` flattened to ``(B, U, C)`` like :func:`conv_pool`'s output."""
    c = weight.shape[0]
    ref = F.max_pool3d(F.conv3d(x, weight.view(c, 1, 3, 3, 3), padding=1), 2)
    return ref.permute(0, 2, 3, 4, 1).reshape(x.shape[0], -1, c)


@pytest.mark.parametrize(("shape", "channels"), [((7, 8, 9), 16), ((12, 14, 10), 24), ((5, 18, 6), 40)])
def test_conv_pool_equals_conv_then_max_pool(shape: tuple[int, int, int], channels: int) -> None:
    g = torch.Generator().manual_seed(sum(shape))
    x = torch.rand(2, 1, *shape, generator=g).to(DEVICE)
    w = torch.randn(channels, 27, generator=g).to(DEVICE).requires_grad_(True)
    out = conv_pool(w, x)
    ref = _reference(w, x)
    assert out.shape == ref.shape
    assert torch.allclose(out, ref, atol=1e-5)
    grad = torch.randn(ref.shape, generator=g).to(DEVICE)
    gw, gw_ref = torch.autograd.grad(out, w, grad)[0], torch.autograd.grad(ref, w, grad)[0]
    assert torch.allclose(gw, gw_ref, atol=1e-4 * float(gw_ref.abs().max()))


def test_half_precision_weights_give_the_same_pooled_values() -> None:
    """The 16-bit path (tensor-core inputs, float32 accumulation), checked in float16: Triton's
    interpreter multiplies bfloat16 bit patterns in ``tl.dot`` (triton-lang/triton#11584), so
    bfloat16 is checked on a GPU only (tests/test_model_cuda.py)."""
    g = torch.Generator().manual_seed(5)
    x = torch.rand(2, 1, 8, 9, 10, generator=g).to(DEVICE)
    w = torch.randn(16, 27, generator=g).to(DEVICE, torch.float16).requires_grad_(True)
    out = conv_pool(w, x)
    assert out.dtype == torch.float16
    ref = _reference(w.float(), x.half().float())
    assert torch.allclose(out.float(), ref, atol=2e-2 * float(ref.detach().abs().max()))
    grad = torch.randn(ref.shape, generator=g).to(DEVICE)
    gw = torch.autograd.grad(out, w, grad.half())[0]
    gw_ref = torch.autograd.grad(ref, w, grad)[0]
    assert gw.dtype == torch.float16
    assert torch.allclose(gw.float(), gw_ref.float(), atol=2e-2 * float(gw_ref.abs().max()))


def test_ties_go_to_the_first_voxel_of_the_window_as_in_max_pool3d() -> None:
    """Integer images and weights make many exact ties; the gradient must still match."""
    g = torch.Generator().manual_seed(3)
    x = torch.randint(0, 2, (2, 1, 8, 9, 10), generator=g).float().to(DEVICE)
    w = torch.randint(-1, 2, (16, 27), generator=g).float().to(DEVICE).requires_grad_(True)
    out, ref = conv_pool(w, x), _reference(w, x)
    assert torch.equal(out, ref)
    grad = torch.randn(ref.shape, generator=g).to(DEVICE)
    assert torch.allclose(torch.autograd.grad(out, w, grad)[0], torch.autograd.grad(ref, w, grad)[0], atol=1e-4)


@pytest.mark.parametrize("channels_last", [False, True])
def test_fused_forward_with_the_triton_block_equals_the_model(channels_last: bool) -> None:
    torch.manual_seed(0)
    model = BrainAgeCNN((9, 12, 11), width_multiplier=0.125, output_bias=60.0).to(DEVICE)
    with torch.no_grad():  # negative gammas and a conv bias exercise the sign handling
        model.features[0].norm.weight.uniform_(-1, 1)
        model.features[0].conv.bias.uniform_(-1, 1)
    x = torch.rand(3, 1, 9, 12, 11, device=DEVICE) + 0.2
    ref = model(x)
    g_ref = torch.autograd.grad(ref.sum(), list(model.parameters()))
    if channels_last:
        model = model.to(memory_format=torch.channels_last_3d)
    out = fused_forward(model, x, channels_last, triton_block=True)
    g_out = torch.autograd.grad(out.sum(), list(model.parameters()))
    assert torch.allclose(out, ref, atol=1e-3)
    for a, b in zip(g_ref, g_out):
        assert torch.allclose(a, b, atol=1e-3 * (1 + float(a.abs().max())))


def test_the_custom_operator_is_registered_correctly() -> None:
    """Schema, fake (meta) implementation and autograd registration, as torch.compile needs them."""
    g = torch.Generator().manual_seed(2)
    xp = _padded(torch.rand(2, 1, 5, 6, 7, generator=g).to(DEVICE), torch.float32)
    w = torch.randn(16, 27, generator=g).to(DEVICE).requires_grad_(True)
    checks = ("test_schema", "test_autograd_registration", "test_faketensor")
    torch.library.opcheck(conv_pool_padded, (w, xp), test_utils=checks)
    out, code = conv_pool_padded(w, xp)
    torch.library.opcheck(conv_pool_weight_grad, (xp, torch.randn(out.shape, generator=g).to(DEVICE), code), test_utils=checks)


@pytest.mark.slow
def test_compiled_model_with_the_triton_block_equals_the_model() -> None:
    """``torch.compile`` keeps the kernels in its graph (``fullgraph``: no break), as training does."""
    torch.manual_seed(0)
    model = BrainAgeCNN((13, 14, 15), width_multiplier=0.125, output_bias=60.0).to(DEVICE).to(memory_format=torch.channels_last_3d)
    x = torch.rand(2, 1, 13, 14, 15, device=DEVICE)
    ref = model(x)
    g_ref = torch.autograd.grad(ref.sum(), list(model.parameters()))
    out = torch.compile(FusedBrainAgeCNN(model, True, triton_block=True), fullgraph=True)(x)
    g_out = torch.autograd.grad(out.sum(), list(model.parameters()))
    assert torch.allclose(out, ref, atol=1e-3)
    for a, b in zip(g_ref, g_out):
        assert torch.allclose(a, b, atol=1e-3 * (1 + float(a.abs().max())))


@pytest.mark.skipif(torch.cuda.is_available(), reason="CPU wiring test through the interpreter; on a GPU tests/test_model_cuda.py trains with them")
def test_the_trainer_runs_the_triton_kernels_when_its_speed_settings_ask(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both Triton settings wired through ``train_condition`` (CUDA-only settings, so the
    device checks are patched here): the same weights as the PyTorch path, to rounding."""
    import json

    from defacebench.model import inference, trainer as trainer_module, train as train_module
    from defacebench.model.profiles import get_profile
    from model_stores import make_blob_store

    shape = (12, 14, 13)
    profile = get_profile("cpu", grid="tiny", input_pool=1, width_multiplier=0.125, max_epochs=1, learning_rate=1e-2, rotation_deg=5.0)
    plain = train_module.train_condition(make_blob_store(tmp_path / "a", n=12, shape=shape, planted=True), "tiny", "raw", 1, profile,
                                         device="cpu", progress=False, log=None)
    for name in ("uses_triton_block", "uses_triton_rotate"):
        monkeypatch.setattr(trainer_module, name, lambda speed, device_type: True)
    fast_run = train_module.train_condition(make_blob_store(tmp_path / "b", n=12, shape=shape, planted=True), "tiny", "raw", 1, profile,
                                            device="cpu", progress=False, log=None)
    meta = json.loads((fast_run / "run.json").read_text())
    assert meta["triton_block"] and meta["triton_rotate"]
    reference = inference.load_model(plain).state_dict()
    for key, value in inference.load_model(fast_run).state_dict().items():
        if key.endswith("conv.bias"):  # zero gradient before instance norm: Adam moves it by rounding noise
            continue
        assert torch.allclose(value, reference[key], atol=1e-3 * (1 + float(reference[key].abs().max()))), key
