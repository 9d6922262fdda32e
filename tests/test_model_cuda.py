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
from defacebench.model.fast import fused_forward
from defacebench.model.profiles import get_profile
from defacebench.model.train import train_condition

from model_stores import make_blob_store

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture()
def no_tf32():
    """Full float32 convolutions and matrix products for the reference (restored after)."""
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before


@pytest.mark.parametrize("channels_last", [False, True])
def test_bf16_fused_forward_and_gradients_match_fp32_reference(channels_last: bool, no_tf32) -> None:
    torch.manual_seed(0)
    shape = (45, 54, 46)  # odd and even sizes: the first block's crop is exercised
    model = BrainAgeCNN(shape, width_multiplier=0.5, output_bias=70.0).cuda()
    x = torch.rand(4, 1, *shape, device="cuda") * 2
    ref = model(x)
    g_ref = torch.autograd.grad(ref.sum(), list(model.parameters()))
    if channels_last:
        model = model.to(memory_format=torch.channels_last_3d)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        fast = fused_forward(model, x, channels_last)
    g_fast = torch.autograd.grad(fast.float().sum(), list(model.parameters()))
    assert torch.allclose(fast.float(), ref, atol=0.5, rtol=0.01), (fast, ref)  # bf16: ~3 significant digits
    for a, b in zip(g_ref, g_fast):
        cos = torch.nn.functional.cosine_similarity(a.flatten().float(), b.flatten().float(), dim=0)
        assert cos > 0.99, float(cos)


@pytest.mark.parametrize("channels_last", [False, True])
def test_compiled_cuda_run_learns_and_records_its_layout(tmp_path: Path, channels_last: bool) -> None:
    study = make_blob_store(tmp_path, n=100, shape=(12, 14, 13), planted=True)  # as tests/test_train.py, which learns it on CPU
    profile = get_profile("paper", grid="tiny", max_epochs=10, patience=10, learning_rate=1e-2, width_multiplier=0.125, rotation_deg=5.0, channels_last=channels_last)
    out = train_condition(study, "tiny", "raw", 1, profile, device="cuda", progress=False, log=None)
    meta = json.loads((out / "run.json").read_text())
    assert meta["compiled"] and meta["fused_first_block"] and meta["channels_last"] is channels_last
    pred = pd.read_csv(out / "predictions.csv")
    test = pred[pred["split"] == "test"]
    assert np.isfinite(test["predicted_age"]).all()
    baseline = float((test["age"] - test["age"].mean()).abs().mean())
    mae = float((test["predicted_age"] - test["age"]).abs().mean())
    print(f"cuda channels_last={channels_last}: test MAE {mae:.2f} vs ~{baseline:.2f}, {meta['samples_per_s']:.0f} samples/s")
    assert mae < 0.7 * baseline, (mae, baseline)


def test_grad_cam_on_the_gpu_matches_the_cpu(no_tf32) -> None:
    from defacebench.model.saliency import mean_saliency

    torch.manual_seed(0)
    shape = (24, 28, 26)
    model = BrainAgeCNN(shape, width_multiplier=0.25, output_bias=70.0).eval()
    images = np.random.default_rng(0).random((6, *shape), dtype=np.float32)
    rows = np.arange(6)
    cpu = mean_saliency(model, images, rows)
    gpu = mean_saliency(model.cuda(), images, rows, device="cuda")
    scale = float(np.abs(cpu).max())
    assert scale > 0 and np.allclose(gpu, cpu, atol=1e-3 * scale), float(np.abs(gpu - cpu).max() / scale)
