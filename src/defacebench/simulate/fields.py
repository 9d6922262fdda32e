"""Smooth, fold-free deformation fields.

A velocity field ``v`` (mm, on a coarse grid) is integrated to a diffeomorphism
``exp(v)`` by scaling and squaring. Velocities with a prescribed divergence (the
log-Jacobian rate of each region) come from a Poisson solve by FFT: ``v = grad u``
with ``laplacian u = f``, so ``div v = f`` exactly on the grid.
All displacement fields here are arrays of shape ``(3, X, Y, Z)`` in voxel units of
their grid unless a name says ``_mm``.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi


def poisson_velocity(source: np.ndarray, spacing_mm: float, pad: int = 8) -> np.ndarray:
    """Velocity ``grad u`` (mm) with ``laplacian u = source`` (1/unit time), by FFT.

    The source's mean is removed (a periodic domain has no net source); ``pad`` voxels of
    zero padding on every side keep the periodic images apart.
    """
    from scipy import fft

    src = np.pad(source.astype(np.float32), pad)
    src -= src.mean()
    shape = src.shape
    freqs = [2 * np.pi * np.fft.fftfreq(n, d=spacing_mm) for n in shape[:-1]] + [2 * np.pi * np.fft.rfftfreq(shape[-1], d=spacing_mm)]
    kx, ky, kz = np.meshgrid(*freqs, indexing="ij", sparse=True)
    k2 = kx**2 + ky**2 + kz**2
    k2[0, 0, 0] = 1.0
    u_hat = (-fft.rfftn(src, workers=1) / k2).astype(np.complex64)
    u_hat[0, 0, 0] = 0.0
    crop = tuple(slice(pad, n - pad) for n in shape)
    v = np.empty((3,) + source.shape, np.float32)
    for i, k in enumerate((kx, ky, kz)):
        v[i] = fft.irfftn(1j * k.astype(np.float32) * u_hat, s=shape, workers=1)[crop]
    return v


def bspline_basis(n_out: int, n_control: int) -> np.ndarray:
    """Cubic B-spline weights (n_out, n_control) of control points spread evenly over n_out samples."""
    t = np.linspace(0, n_control - 1, n_out)[:, None] - np.arange(n_control)[None, :]
    a = np.abs(t)
    return np.where(a < 1, 2 / 3 - a**2 + a**3 / 2, np.where(a < 2, (2 - a) ** 3 / 6, 0.0))


def smooth_random_field(shape: tuple[int, int, int], n_control: int, seed: int, components: int = 3) -> np.ndarray:
    """Smooth random components of unit RMS on ``shape``: cubic B-splines on a ``n_control``^3 noise grid."""
    rng = np.random.default_rng(seed)
    coarse = rng.standard_normal((components, n_control, n_control, n_control))
    bx, by, bz = (bspline_basis(n, n_control) for n in shape)
    out = np.einsum("kc,nabc->nabk", bz, coarse)
    out = np.einsum("jb,nabk->najk", by, out)
    out = np.einsum("ia,najk->nijk", bx, out).astype(np.float32)
    return out / np.float32(np.sqrt(np.mean(out**2)))


def _warp_field(field: np.ndarray, disp: np.ndarray) -> np.ndarray:
    """``field(x + disp(x))`` for each component (linear, edge values outside)."""
    coords = np.indices(disp.shape[1:], dtype=np.float32) + disp
    return np.stack([ndi.map_coordinates(c, coords, order=1, mode="nearest") for c in field])


def n_squarings(velocity_vox: np.ndarray) -> int:
    """Squaring steps that bring the velocity under a quarter voxel and its gradient under 0.25."""
    vmax = float(np.sqrt((velocity_vox**2).sum(0)).max())
    gmax = max(float(np.abs(np.diff(velocity_vox, axis=a + 1)).max()) for a in range(3))
    need = max(vmax / 0.25, gmax / 0.25, 1.0)
    return int(np.clip(np.ceil(np.log2(need)), 0, 12))


def exp_velocity(velocity_vox: np.ndarray) -> np.ndarray:
    """Displacement of ``exp(v)`` by scaling and squaring (both in voxels of the grid)."""
    n = n_squarings(velocity_vox)
    disp = (velocity_vox / 2**n).astype(np.float32)
    for _ in range(n):
        disp = disp + _warp_field(disp, disp)
    return disp


def integrate_points(velocity_vox: np.ndarray, points_vox: np.ndarray, steps: int = 64) -> np.ndarray:
    """Flow points (N, 3) along the stationary velocity for unit time (midpoint rule)."""
    p = np.asarray(points_vox, np.float64).T.copy()
    h = 1.0 / steps
    sample = lambda q: np.stack([ndi.map_coordinates(c, q, order=1, mode="nearest") for c in velocity_vox])  # noqa: E731
    for _ in range(steps):
        mid = p + 0.5 * h * sample(p)
        p = p + h * sample(mid)
    return p.T


def jacobian_determinant(disp: np.ndarray) -> np.ndarray:
    """Determinant of the Jacobian of ``x -> x + disp(x)`` (central differences)."""
    g = [np.gradient(disp[i]) for i in range(3)]
    a = [[g[i][j] + (1.0 if i == j else 0.0) for j in range(3)] for i in range(3)]
    return (a[0][0] * (a[1][1] * a[2][2] - a[1][2] * a[2][1]) - a[0][1] * (a[1][0] * a[2][2] - a[1][2] * a[2][0])
            + a[0][2] * (a[1][0] * a[2][1] - a[1][1] * a[2][0]))


def smoothstep(x: np.ndarray) -> np.ndarray:
    """0 below 0, 1 above 1, C1-smooth in between."""
    t = np.clip(x, 0.0, 1.0)
    return t * t * (3 - 2 * t)
