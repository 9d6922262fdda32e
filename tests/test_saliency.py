"""Grad-CAM: the maths against an independent autograd computation, a planted dependence
found in the right place, and the study-level maps and face/brain shares."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from defacebench.analysis import saliency as sal
from defacebench.model.cnn import BrainAgeCNN

SHAPE = (12, 14, 16)


def test_grad_cam_matches_manual_computation() -> None:
    torch.manual_seed(0)
    model = BrainAgeCNN(input_shape=SHAPE, widths=(3, 4, 5), head="flatten").eval()
    x = torch.randn(2, 1, *SHAPE)
    cams = sal.grad_cam(model, x, upsample=False)
    for b in range(2):  # one sample at a time, the last block's output as an explicit leaf
        a = model.features(x[b : b + 1]).detach().requires_grad_(True)
        y = model.head(a).squeeze()
        (g,) = torch.autograd.grad(y, a)
        expected = (g.mean(dim=(2, 3, 4), keepdim=True) * a).sum(dim=1)[0]
        torch.testing.assert_close(cams[b], expected.detach(), rtol=1e-4, atol=1e-5)
    up = sal.grad_cam(model, x)
    assert up.shape == (2, *SHAPE)
    assert (up < 0).any() and (up > 0).any()  # signed, not rectified or min-max scaled


def test_grad_cam_on_conv_before_instance_norm_is_degenerate() -> None:
    """Why the default target is the block: instance norm zeroes the pre-norm channel weights."""
    torch.manual_seed(0)
    model = BrainAgeCNN(input_shape=SHAPE, widths=(3, 4, 5)).eval()
    x = torch.randn(2, 1, *SHAPE)
    pre_norm = sal.grad_cam(model, x, target_layer=model.last_conv, upsample=False)
    block = sal.grad_cam(model, x, upsample=False)
    assert pre_norm.abs().max() < 1e-4 * block.abs().max()


class PlantedModel(torch.nn.Module):
    """Age = mean intensity of region R; region Q is computed but ignored by the head.

    The last block (``features[-1]``) pools to half resolution, so the test also checks
    that the map is upsampled back onto the right voxels (axis order, position).
    """

    def __init__(self, shape: tuple[int, int, int], region_r: tuple[slice, ...], region_q: tuple[slice, ...]) -> None:
        super().__init__()
        masks = torch.zeros(2, *shape)
        masks[(0, *region_r)] = 1.0
        masks[(1, *region_q)] = 1.0
        self.register_buffer("masks", masks)

        class Block(torch.nn.Module):
            def forward(inner, x):  # noqa: N805
                return torch.nn.functional.avg_pool3d(x * self.masks, 2)

        self.features = torch.nn.Sequential(Block())
        self.head = torch.nn.Sequential(torch.nn.AdaptiveAvgPool3d(1), torch.nn.Flatten(), torch.nn.Linear(2, 1))
        with torch.no_grad():
            self.head[-1].weight.copy_(torch.tensor([[40.0, 0.0]]))
            self.head[-1].bias.fill_(50.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x)).squeeze(-1)


def test_grad_cam_highlights_planted_region() -> None:
    shape = (12, 14, 16)
    r = (slice(0, 4), slice(8, 14), slice(2, 6))
    q = (slice(6, 12), slice(0, 4), slice(10, 16))
    model = PlantedModel(shape, r, q).eval()
    x = torch.rand(5, 1, *shape, generator=torch.Generator().manual_seed(0)) + 0.5
    mean_map = sal.grad_cam(model, x).mean(dim=0).numpy()
    positive = np.clip(mean_map, 0, None)
    near_r = np.zeros(shape, bool)
    near_r[0:5, 7:14, 1:7] = True  # R plus the one-voxel blur of trilinear upsampling
    in_q = np.zeros(shape, bool)
    in_q[q] = True
    assert positive[near_r].sum() / positive.sum() > 0.95
    assert np.abs(mean_map[in_q]).max() < 1e-6
    # the sign follows the dependence: a negative weight gives a negative map
    with torch.no_grad():
        model.head[-1].weight.mul_(-1)
    assert sal.grad_cam(model, x).mean(dim=0).numpy()[r].mean() < 0


def test_saliency_shares() -> None:
    m = np.zeros((4, 4, 4))
    face, brain = np.zeros_like(m, bool), np.zeros_like(m, bool)
    face[0], brain[3] = True, True
    m[0] = 3.0
    m[3] = 1.0
    m[1] = -5.0  # negative saliency does not count
    shares = sal.saliency_shares(m, face, brain)
    assert shares["face_share"] == pytest.approx(0.75)
    assert shares["brain_share"] == pytest.approx(0.25)
    assert shares["other_share"] == pytest.approx(0.0)
    assert shares["positive_fraction"] == pytest.approx(4.0 / 9.0)


def test_removal_frequency() -> None:
    images = np.zeros((4, 3, 3, 3), np.float16)
    images[:3, 0, 0, 0] = 1
    images[0, 1, 1, 1] = -2
    freq = sal.removal_frequency(images)
    assert freq[0, 0, 0] == pytest.approx(0.75) and freq[1, 1, 1] == pytest.approx(0.25) and freq[2, 2, 2] == 0


def test_compute_saliency_on_tiny_study(tmp_path: Path) -> None:
    from defacebench.io.store import write_condition, write_index

    affine = np.array([[-8.0, 0, 0, 90], [0, 8, 0, -126], [0, 0, 8, -72], [0, 0, 0, 1]])
    shape = (16, 18, 17)
    n = 6
    index = pd.DataFrame({"participant_id": [f"sub-{i}" for i in range(n)], "session_id": "", "run": "", "age": np.linspace(50, 80, n), "split": ["train", "train", "val", "test", "test", "test"]})
    write_index(tmp_path, "tiny", index)
    rng = np.random.default_rng(0)
    face = np.zeros((n, *shape), np.float32)
    face[:, :, 14:, :6] = 1.0  # anterior-inferior block removed in every scan
    write_condition(tmp_path, "tiny", "face-fsl", face, index, affine)
    write_condition(tmp_path, "tiny", "raw", rng.normal(size=(n, *shape)).astype(np.float32), index, affine)
    torch.manual_seed(0)
    models = {}
    for condition in ("raw", "face-fsl"):
        d = tmp_path / "runs" / condition / "run-1"
        d.mkdir(parents=True)
        (d / "model.pt").write_bytes(b"")
        (d / "predictions.csv").write_text("")
        (d / "run.json").write_text('{"best_val_mae": 1.0, "complete": true}')  # a trusted run (analysis/runs.py)
        models[d] = BrainAgeCNN(input_shape=shape, widths=(2, 2, 2)).eval()
    table = sal.compute_saliency(tmp_path, "tiny", model_loader=lambda p: models[Path(p)])
    assert list(table["condition"]) == ["raw", "face-fsl"]
    assert (table["n_scans"] == 3).all()
    maps = sal.load_saliency(tmp_path, "tiny")
    assert maps["raw"].shape == shape
    assert "face-fsl" in table["face_region"].iloc[0] or "fsl" in table["face_region"].iloc[0]
    shares = table[["face_share", "brain_share", "other_share"]].to_numpy()
    assert np.all((shares >= 0) & (shares <= 1))
    np.testing.assert_allclose(shares.sum(axis=1), 1.0, atol=1e-6)


def test_removed_tissue_is_read_in_the_raw_placement(tmp_path: Path) -> None:
    """A face-only store placed elsewhere (face_placement head/cut/common, issue 22) does not move
    what the analyses count as removed from the raw image: raw - defaced-<m> is read instead."""
    from defacebench.analysis.removed import removed_images
    from defacebench.io.store import open_condition, write_condition, write_index

    affine = np.array([[-8.0, 0, 0, 90], [0, 8, 0, -126], [0, 0, 8, -72], [0, 0, 0, 1]])
    shape, n = (7, 8, 9), 4
    index = pd.DataFrame({"participant_id": [f"sub-{i}" for i in range(n)], "session_id": "", "run": "", "age": np.linspace(50, 80, n), "split": "test"})
    write_index(tmp_path, "tiny", index)
    raw = np.random.default_rng(0).uniform(1.0, 2.0, size=(n, *shape)).astype(np.float32)
    cut = np.zeros(shape, bool)
    cut[:, 6:, :3] = True  # what fsl removed, in the raw placement
    write_condition(tmp_path, "tiny", "raw", raw, index, affine)
    write_condition(tmp_path, "tiny", "defaced-fsl", np.where(cut, 0, raw), index, affine)
    write_condition(tmp_path, "tiny", "face-fsl", np.roll(np.where(cut, raw, 0), 2, axis=2), index, affine)  # placed 16 mm higher
    removed = removed_images(tmp_path, "tiny", "fsl")
    assert removed.shape == raw.shape and len(removed) == n
    frequency = sal.removal_frequency(removed, reference=open_condition(tmp_path, "tiny", "raw").images)
    np.testing.assert_array_equal(frequency == 1, cut)
    np.testing.assert_array_equal(frequency[~cut], 0)
    # without the defaced store, the face-only store is all there is
    (tmp_path / "stores" / "tiny" / "defaced-fsl.json").unlink()
    assert np.array_equal(np.asarray(removed_images(tmp_path, "tiny", "fsl")[0], np.float32), np.roll(np.where(cut, raw, 0), 2, axis=2)[0].astype(np.float16).astype(np.float32))
