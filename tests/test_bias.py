from __future__ import annotations

import numpy as np
import pytest

from defacebench.io.errors import StageError
from defacebench.imaging.blocks import block_mean
from defacebench.imaging.masks import tissue_mask as head_mask
from defacebench.preprocess.bias import BiasField, block_factors, compartment_bias_field, estimate_bias_field, non_brain_head


def synthetic_head(shape=(46, 55, 50), voxel_mm=4.0, seed=0, with_field=True):
    """An ellipsoid head (scalp shell, dark skull, brain with two tissues), a smooth multiplicative field, noise."""
    rng = np.random.default_rng(seed)
    g = [(np.arange(n) - (n - 1) / 2) * voxel_mm for n in shape]
    x, y, z = np.meshgrid(*g, indexing="ij")
    head = (x / 80) ** 2 + (y / 100) ** 2 + (z / 95) ** 2 < 1
    inner = (x / 72) ** 2 + (y / 92) ** 2 + (z / 87) ** 2 < 1
    brain = (x / 64) ** 2 + (y / 84) ** 2 + (z / 79) ** 2 < 1
    wm = np.sin(x / 9) * np.sin(y / 11) * np.sin(z / 10) > 0
    tissue = np.where(brain, np.where(wm, 110.0, 70.0), np.where(inner, 15.0, np.where(head, 60.0, 1.0)))
    field = np.exp(0.25 * x / 80 - 0.2 * (z / 95) ** 2 + 0.15 * x * y / 8000).astype(np.float32)
    data = tissue * (field if with_field else 1.0) + rng.normal(0, 1.5, shape)
    return np.clip(data, 0, None).astype(np.float32), field, head


def test_recovers_a_known_smooth_field() -> None:
    data, field, head = synthetic_head()
    flat, _, _ = synthetic_head(with_field=False)
    estimate = estimate_bias_field(data, (4.0, 4.0, 4.0), resolution_mm=12.0)
    full = estimate.full()
    assert full.shape == data.shape and full.dtype == np.float32 and np.all(full > 0)
    # the field estimated with the applied field, over the one estimated without it, is the applied field
    ratio = full / estimate_bias_field(flat, (4.0, 4.0, 4.0), resolution_mm=12.0).full()
    r = np.corrcoef(np.log(ratio[head]), np.log(field[head]))[0, 1]
    assert r > 0.95, r
    # after correction the two white-matter halves (left, right: field differs by ~1.5x) match
    corrected = estimate.correct(data)
    wm = (flat > 95) & head
    x = np.arange(data.shape[0])[:, None, None] * np.ones(data.shape)
    left, right = wm & (x < data.shape[0] / 2 - 3), wm & (x > data.shape[0] / 2 + 3)
    before = np.median(data[right]) / np.median(data[left])
    after = np.median(corrected[right]) / np.median(corrected[left])
    assert before > 1.15 and abs(np.log(after)) < 0.3 * abs(np.log(before)), (before, after)


def test_compartment_fields_keep_brain_and_face_apart() -> None:
    """The brain darkening (ageing) changes nothing in the field outside the brain, and the
    rest of the head changing changes nothing inside it; each compartment's field still
    follows the applied field."""
    data, field, head = synthetic_head()
    g = [(np.arange(n) - (n - 1) / 2) * 4.0 for n in data.shape]
    x, y, z = np.meshgrid(*g, indexing="ij")
    brain = (x / 64) ** 2 + (y / 84) ** 2 + (z / 79) ** 2 < 1
    base = compartment_bias_field(data, (4.0,) * 3, brain, resolution_mm=12.0)
    darker = compartment_bias_field(np.where(brain, 0.85 * data, data), (4.0,) * 3, brain, resolution_mm=12.0)
    np.testing.assert_array_equal(darker[~brain], base[~brain])
    fatter = compartment_bias_field(np.where(brain, data, 1.2 * data), (4.0,) * 3, brain, resolution_mm=12.0)
    np.testing.assert_array_equal(fatter[brain], base[brain])
    # whole-head N4 lets the brain's darkening into the scalp's correction: the reason for compartments
    whole = [estimate_bias_field(d, (4.0,) * 3, resolution_mm=12.0).full() for d in (data, np.where(brain, 0.85 * data, data))]
    assert np.abs(np.log(whole[1][head & ~brain] / whole[0][head & ~brain])).max() > 1e-3
    flat, _, _ = synthetic_head(with_field=False)
    ratio = base / compartment_bias_field(flat, (4.0,) * 3, brain, resolution_mm=12.0)
    for region in (brain, head & ~brain):
        assert np.corrcoef(np.log(ratio[region]), np.log(field[region]))[0, 1] > 0.9
    outer = non_brain_head(data, brain)
    assert not (outer & brain).any() and outer.sum() > 0.5 * (head & ~brain).sum()


def test_field_interpolation_is_exact_for_constant_and_linear_logs() -> None:
    constant = BiasField(np.full((5, 6, 7), np.log(2.0), np.float32), (3, 3, 3), (15, 18, 21))
    np.testing.assert_allclose(constant.full(), 2.0, rtol=1e-6)
    ramp = BiasField(np.broadcast_to(np.arange(6, dtype=np.float32)[None, :, None], (5, 6, 7)).copy() * 0.1, (2, 2, 2), (10, 12, 14))
    full = np.log(ramp.full())
    inner = full[:, 1:-1, :]  # between block centres: exactly linear, 0.1 per block = 0.05 per voxel
    np.testing.assert_allclose(np.diff(inner, axis=1), 0.05, atol=1e-5)


def test_head_mask_and_blocks() -> None:
    data, _, head = synthetic_head()
    mask = head_mask(data)
    assert (mask & head).sum() / head.sum() > 0.9 and (mask & ~head).sum() / head.sum() < 0.05
    assert block_factors((1.0, 1.0, 1.2), 8.0) == (8, 8, 7)
    assert block_mean(np.ones((9, 10, 11)), (2, 3, 4)).shape == (4, 3, 2)
    with pytest.raises(StageError, match="no head"):
        head_mask(np.zeros((20, 20, 20), np.float32))


def test_field_is_bit_identical_whatever_the_thread_setting() -> None:
    """N4 runs with one ITK thread, set before ITK's first use (sums differ with the thread count)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import hashlib, sys; sys.path.insert(0, %r)\n"
        "from test_bias import synthetic_head\n"
        "from defacebench.preprocess.bias import estimate_bias_field\n"
        "d, _, _ = synthetic_head((30, 36, 33), 6.0)\n"
        "print(hashlib.sha256(estimate_bias_field(d, (6.0,) * 3, resolution_mm=12.0).full().tobytes()).hexdigest())\n"
    ) % str(Path(__file__).parent)
    digests = set()
    for threads in (None, "2"):
        env = {k: v for k, v in os.environ.items() if k != "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"}
        if threads:
            env["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = threads
        digests.add(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout.strip())
    assert len(digests) == 1
