"""The CUDA training path: bf16 fused forward in both layouts, and a compiled run end to end.

Skipped without a GPU (CI has none); run on a GPU machine with ``bench/gpu_check.sh``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from defacebench.model.cnn import BrainAgeCNN
from defacebench.model.accel.fast import fused_forward, patch_moments, patches
from defacebench.model.accel.settings import get_speed
from defacebench.model.profiles import get_profile
from defacebench.model.train import train_condition

from full_float32 import full_float32
from model_stores import make_blob_store

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture()
def no_tf32():
    """Full float32 convolutions and matrix products for the reference (restored after)."""
    with full_float32():
        yield


def _cosines(reference: list[torch.Tensor], other: list[torch.Tensor], names: list[str]) -> dict[str, float]:
    """Cosine of each parameter's gradient with the reference's; conv biases left out (a conv
    followed by instance norm has a zero bias gradient, so its direction is rounding noise)."""
    return {n: float(torch.nn.functional.cosine_similarity(a.flatten().float(), b.flatten().float(), dim=0))
            for n, a, b in zip(names, reference, other) if not n.endswith("conv.bias")}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_16_bit_patch_moments_on_the_tensor_cores_are_float32_accurate(dtype: torch.dtype) -> None:
    """bf16/fp16 products are exact and cuBLAS sums them in float32. Against float64, the
    covariance errs by < 1e-4 of its diagonal (sigma by < 5e-5, far below bf16's 2^-9 that the
    normalised activations carry); a bf16 output of the chunk products would err ~1e-4."""
    torch.manual_seed(0)
    x = (torch.rand(4, 1, 91, 109, 91, device="cuda") * 2).to(torch.float16).float()  # a real grid, store precision
    x[:, :, :10] = 0  # background
    p = patches(x.to(dtype).double())
    ref_mean = p.mean(2)
    ref_cov = torch.stack([torch.cov(p[i], correction=0) for i in range(4)])
    mean, cov = patch_moments(x, dtype)
    assert mean.dtype == cov.dtype == torch.float32
    _, f32_cov = patch_moments(x.to(dtype).float())  # float32 arithmetic (the m32 path)
    scale = float(ref_cov.diagonal(dim1=1, dim2=2).max())
    err, f32_err = float((cov.double() - ref_cov).abs().max()), float((f32_cov.double() - ref_cov).abs().max())
    print(f"{dtype}: covariance error {err / scale:.2e} of the diagonal (float32 path {f32_err / scale:.2e})")
    torch.testing.assert_close(mean.double(), ref_mean, rtol=1e-6, atol=1e-7)
    assert err < 1e-4 * scale


@pytest.mark.parametrize(("channels_last", "triton_block"), [(False, False), (True, False), (False, True), (True, True)])
def test_bf16_fused_forward_is_as_accurate_as_plain_bf16(channels_last: bool, triton_block: bool, no_tf32) -> None:
    """Against the float32 reference, the fused bf16 path errs no more than ``model(x)`` under bf16 autocast."""
    torch.manual_seed(0)
    shape = (45, 54, 46)  # odd and even sizes: the first block's crop is exercised
    model = BrainAgeCNN(shape, width_multiplier=0.5, output_bias=70.0).cuda()
    names = [n for n, _ in model.named_parameters()]
    x = torch.rand(4, 1, *shape, device="cuda") * 2
    ref = model(x)
    g_ref = torch.autograd.grad(ref.sum(), list(model.parameters()))
    with torch.autocast("cuda", dtype=torch.bfloat16):
        plain = model(x).float()
    g_plain = torch.autograd.grad(plain.sum(), list(model.parameters()))
    if channels_last:
        model = model.to(memory_format=torch.channels_last_3d)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        # compiled in one graph with the Triton block (a custom op), as training runs it
        fast = (torch.compile(fused_forward, fullgraph=True) if triton_block else fused_forward)(model, x, channels_last, triton_block).float()
    g_fast = torch.autograd.grad(fast.sum(), list(model.parameters()))
    assert float((fast - ref).detach().abs().max()) <= 2 * float((plain - ref).detach().abs().max()) + 0.05
    cos_plain, cos_fast = _cosines(g_ref, g_plain, names), _cosines(g_ref, g_fast, names)
    for n in cos_plain:
        assert 1 - cos_fast[n] <= 2 * (1 - cos_plain[n]) + 0.005, (n, cos_fast[n], cos_plain[n])


OFF = {"channels_last": False, "triton_block": False, "triton_rotate": False, "fused_adam": False}


@pytest.mark.parametrize("settings", [OFF, {**OFF, "channels_last": True}, {}], ids=["plain-ncdhw", "plain-ndhwc", "defaults"])
def test_compiled_cuda_run_learns_and_records_its_layout(tmp_path: Path, settings: dict[str, bool]) -> None:
    """The paper profile's CUDA defaults (``{}``: NDHWC, Triton block and rotation, fused Adam,
    CUDA graphs) and the cuBLAS paths without them."""
    # as tests/test_train.py, which learns it on CPU; 61 training scans: each epoch ends with a batch of 1
    study = make_blob_store(tmp_path, n=102, shape=(12, 14, 13), planted=True)
    profile = get_profile("paper", grid="tiny", max_epochs=10, patience=10, learning_rate=1e-2, width_multiplier=0.125, rotation_deg=5.0)
    out = train_condition(study, "tiny", "raw", 1, profile, device="cuda", progress=False, log=None, speed=get_speed("paper", **settings))
    meta = json.loads((out / "run.json").read_text())
    expected = {"channels_last": True, "triton_block": True, "triton_rotate": True, "fused_adam": True, **settings}
    assert meta["compiled"] and meta["fused_first_block"] and {k: meta[k] for k in expected} == expected
    pred = pd.read_csv(out / "predictions.csv")
    test = pred[pred["split"] == "test"]
    assert np.isfinite(test["predicted_age"]).all()
    baseline = float((test["age"] - test["age"].mean()).abs().mean())
    mae = float((test["predicted_age"] - test["age"]).abs().mean())
    print(f"cuda {settings or 'defaults'}: test MAE {mae:.2f} vs ~{baseline:.2f}, {meta['samples_per_s']:.0f} samples/s")
    assert mae < 0.7 * baseline, (mae, baseline)


def test_grad_cam_on_the_gpu_matches_the_cpu(no_tf32) -> None:
    from defacebench.analysis.saliency import mean_saliency

    torch.manual_seed(0)
    shape = (24, 28, 26)
    model = BrainAgeCNN(shape, width_multiplier=0.25, output_bias=70.0).eval()
    images = np.random.default_rng(0).random((6, *shape), dtype=np.float32)
    rows = np.arange(6)
    cpu = mean_saliency(model, images, rows)
    gpu = mean_saliency(model.cuda(), images, rows, device="cuda")
    scale = float(np.abs(cpu).max())
    assert scale > 0 and np.allclose(gpu, cpu, atol=1e-3 * scale), float(np.abs(gpu - cpu).max() / scale)
