"""Rotation augmentation: identity at 0 deg, no stretch on the paper's 91x109x91 grid.

Rotations go through ``apply_theta(images, rotation_theta(angles, ...))``, as the trainer applies them."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from defacebench.model.augment import apply_theta, rotation_matrices, rotation_theta, sample_rotation_angles


def rotate(images: torch.Tensor, angles: torch.Tensor, spacing_mm: tuple[float, float, float] = (1.0, 1.0, 1.0), mode: str = "bilinear") -> torch.Tensor:
    """The trainer's rotation of a batch by ``(B, 3)`` angles (degrees)."""
    return apply_theta(images, rotation_theta(angles, images.shape[2:], spacing_mm).float(), mode)


def _ball(shape: tuple[int, int, int], centre_vox: tuple[float, float, float], radius: float) -> torch.Tensor:
    grid = np.indices(shape, dtype=np.float32)
    dist = np.sqrt(sum((g - c) ** 2 for g, c in zip(grid, centre_vox)))
    return torch.from_numpy((dist <= radius).astype(np.float32))[None, None]


def _extent(mask: torch.Tensor, axis: int) -> int:
    other = tuple(a for a in range(3) if a != axis)
    return int((mask[0, 0].sum(dim=other) > 0).sum())


def test_zero_rotation_is_identity() -> None:
    x = torch.randn(2, 1, 7, 8, 9)
    assert torch.allclose(rotate(x, torch.zeros(2, 3)), x, atol=1e-5)
    assert torch.allclose(rotation_matrices(torch.zeros(1, 3))[0], torch.eye(3, dtype=torch.float64))


def test_sphere_stays_a_sphere_on_the_paper_grid() -> None:
    shape = (91, 109, 91)
    centre = tuple((s - 1) / 2 for s in shape)
    ball = _ball(shape, centre, 30.0)
    for angles in ([30.0, 0.0, 0.0], [0.0, 0.0, 40.0], [10.0, -10.0, 10.0]):
        out = rotate(ball, torch.tensor([angles]), mode="bilinear") > 0.5
        overlap = float((out & (ball > 0.5)).sum()) / float(((out | (ball > 0.5))).sum())
        assert overlap > 0.97, (angles, overlap)
        assert all(abs(_extent(out, a) - 61) <= 1 for a in range(3))
    # the uncorrected matrix (R applied to normalised coordinates) stretches: the test can fail
    theta = torch.cat([rotation_matrices(torch.tensor([[30.0, 0.0, 0.0]])).flip(1).flip(2), torch.zeros(1, 3, 1, dtype=torch.float64)], 2)
    bad = F.grid_sample(ball, F.affine_grid(theta.float(), list(ball.shape), align_corners=False), align_corners=False) > 0.5
    assert float((bad & (ball > 0.5)).sum()) / float((bad | (ball > 0.5)).sum()) < 0.97


def test_off_centre_ball_moves_on_a_circle() -> None:
    shape = (31, 41, 35)
    centre = np.array([(s - 1) / 2 for s in shape])
    start = centre + np.array([0.0, 10.0, 0.0])
    ball = _ball(shape, tuple(start), 3.0)
    out = rotate(ball, torch.tensor([[90.0, 0.0, 0.0]]))[0, 0].numpy()
    com = np.array([(g * out).sum() / out.sum() for g in np.indices(shape)])
    assert abs(np.linalg.norm(com - centre) - 10.0) < 0.3  # same distance from the centre
    assert abs(com[1] - centre[1]) < 0.5 and abs(abs(com[2] - centre[2]) - 10.0) < 0.5  # moved from Y onto Z


def test_seeded_angles_replay_and_stay_in_range() -> None:
    x = torch.randn(3, 1, 9, 10, 11)
    angles = sample_rotation_angles(3, 10.0, torch.Generator().manual_seed(3))
    assert angles.shape == (3, 3) and float(angles.abs().max()) <= 10.0 and float(angles.abs().min()) > 0
    assert torch.equal(angles, sample_rotation_angles(3, 10.0, torch.Generator().manual_seed(3)))
    out = rotate(x, angles, (2.0, 2.0, 2.0))
    assert torch.equal(out, rotate(x, angles.clone(), (2.0, 2.0, 2.0)))
    assert not torch.allclose(out, x)
    theta = rotation_theta(torch.tensor([[0.0, 0.0, 5.0]]), (91, 109, 91), (2.0, 2.0, 2.0))
    # x row, y column of S^-1 R S; affine_grid orders coordinates (z, y, x)
    assert math.isclose(float(theta[0, 2, 1]), -math.sin(math.radians(5)) * 109 / 91, rel_tol=1e-6)
