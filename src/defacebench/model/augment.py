"""Random-rotation augmentation on the device, in batches (``affine_grid``/``grid_sample``).

Drawing and applying are apart, so any augmented batch can be replayed:
:func:`sample_rotation_angles` draws the angles (from a seeded generator),
:func:`rotation_theta` turns them into ``affine_grid`` matrices and :func:`apply_theta`
resamples the batch (on the device; :mod:`defacebench.model.accel.triton_rotate` is the
same resampling as one Triton kernel).

``affine_grid`` works in normalised coordinates (-1..1 along every axis), so a plain
rotation matrix would also stretch a non-cubic grid such as 91x109x91. The matrix
handed to it is ``theta = S^-1 R S`` with ``S`` the half-extents of the grid in mm:
normalised coordinates -> mm about the centre, rotate, back to normalised coordinates.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F


def rotation_matrices(angles_deg: torch.Tensor) -> torch.Tensor:
    """Rotation matrices ``R = Rz @ Ry @ Rx`` for ``(B, 3)`` angles about the array axes.

    Angles are in degrees about array axes 0, 1, 2 (X, Y, Z of the store); the result
    acts on ``(x, y, z)`` column vectors in that order. Returns ``(B, 3, 3)`` float64.
    """
    a = torch.as_tensor(angles_deg, dtype=torch.float64) * (math.pi / 180.0)
    cx, cy, cz = torch.cos(a).unbind(-1)
    sx, sy, sz = torch.sin(a).unbind(-1)
    one, zero = torch.ones_like(cx), torch.zeros_like(cx)
    rx = torch.stack([one, zero, zero, zero, cx, -sx, zero, sx, cx], -1).view(-1, 3, 3)
    ry = torch.stack([cy, zero, sy, zero, one, zero, -sy, zero, cy], -1).view(-1, 3, 3)
    rz = torch.stack([cz, -sz, zero, sz, cz, zero, zero, zero, one], -1).view(-1, 3, 3)
    return rz @ ry @ rx


def rotation_theta(angles_deg: torch.Tensor, shape: Sequence[int], spacing_mm: Sequence[float] = (1.0, 1.0, 1.0)) -> torch.Tensor:
    """``affine_grid`` matrices ``(B, 3, 4)`` rotating about the grid centre without stretch.

    ``theta = S^-1 R S`` where ``S = diag(size * spacing / 2)`` (``align_corners=False``),
    reordered to ``affine_grid``'s coordinate order (last array axis first).
    """
    rot = rotation_matrices(angles_deg)
    half = torch.tensor([s * d / 2.0 for s, d in zip(shape, spacing_mm)], dtype=torch.float64)
    theta = rot * half[None, None, :] / half[None, :, None]  # S^-1 R S
    theta = theta.flip(1).flip(2)  # (x, y, z) array order -> (W, H, D) order of affine_grid
    return torch.cat([theta, torch.zeros(theta.shape[0], 3, 1, dtype=theta.dtype)], dim=2)


def apply_theta(images: torch.Tensor, theta: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
    """Resample ``(B, C, X, Y, Z)`` images with ``affine_grid`` matrices ``(B, 3, 4)``.

    ``theta`` from :func:`rotation_theta`, already on the images' device (so a training
    loop can move a whole epoch's matrices to the GPU at once, without a copy per step).
    """
    work = images if images.dtype in (torch.float32, torch.float64) else images.float()
    grid = F.affine_grid(theta.to(work.dtype), list(work.shape), align_corners=False)
    out = F.grid_sample(work, grid, mode=mode, padding_mode="zeros", align_corners=False)
    return out.to(images.dtype)


def sample_rotation_angles(n: int, max_deg: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """``(n, 3)`` angles drawn uniformly in ``[-max_deg, max_deg]`` (CPU, float64)."""
    u = torch.rand(n, 3, generator=generator, dtype=torch.float64)
    return (2.0 * u - 1.0) * float(max_deg)
