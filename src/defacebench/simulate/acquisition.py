"""Acquisition effects: head pose, field of view, bias field, intensity scale and gamma, Rician noise.

Each effect has a ``sample_*`` function that draws its parameters (a plain dict, stored in the
subject's JSON) and a deterministic twin that applies them.
"""

from __future__ import annotations

import numpy as np

BIAS_ORDER = 3


def sample_pose(rng: np.random.Generator) -> dict:
    """Rotations (deg, about x, y, z; pitch up to 15) and shifts (mm, up to 15)."""
    return {
        "rotation_deg": [float(rng.uniform(-15, 15)), float(rng.uniform(-8, 8)), float(rng.uniform(-10, 10))],
        "translation_mm": [float(v) for v in rng.uniform(-15, 15, 3)],
    }


def rotation_matrix(rotation_deg: list[float]) -> np.ndarray:
    """Rotation ``Rz @ Ry @ Rx`` from angles in degrees."""
    ax, ay, az = np.deg2rad(rotation_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def sample_fov(rng: np.random.Generator) -> dict:
    """How much of the neck the field of view leaves out (mm cut from the bottom)."""
    return {"neck_cut_mm": float(rng.uniform(0, 45))}


def sample_bias(rng: np.random.Generator) -> dict:
    """A smooth multiplicative bias field spanning +-5 to +-20 % over the head."""
    n_terms = sum(1 for i in range(BIAS_ORDER + 1) for j in range(BIAS_ORDER + 1 - i) for _ in range(BIAS_ORDER + 1 - i - j))
    return {"span": float(rng.uniform(0.05, 0.20)), "coefficients": [float(c) for c in rng.uniform(-1, 1, n_terms)]}


def bias_field(shape: tuple[int, int, int], span: float, coefficients: list[float]) -> np.ndarray:
    """``exp(p)`` of a degree-3 polynomial in [-1, 1] coordinates, scaled so ``|p| <= log(1 + span)``."""
    axes = [np.linspace(-1, 1, n, dtype=np.float64) for n in shape]
    c = iter(coefficients)
    planes = []  # planes[i](y, z) = sum_j y^j * zpoly_ij(z): one full-volume term per power of x
    for i in range(BIAS_ORDER + 1):
        plane = np.zeros(shape[1:], np.float64)
        for j in range(BIAS_ORDER + 1 - i):
            zpoly = sum(next(c) * axes[2] ** k for k in range(BIAS_ORDER + 1 - i - j))
            plane += (axes[1][:, None] ** j) * zpoly[None, :]
        planes.append(plane.astype(np.float32))
    poly = np.zeros(shape, np.float32)
    x = axes[0].astype(np.float32)
    for i, plane in enumerate(planes):
        poly += (x[:, None, None] ** i) * plane[None, :, :]
    peak = float(np.abs(poly).max()) or 1.0
    poly *= np.float32(np.log1p(span) / peak)
    return np.exp(poly, out=poly)


def sample_intensity(rng: np.random.Generator) -> dict:
    """Global intensity scale, gamma and Rician noise level (fraction of white matter)."""
    return {
        "scale": float(rng.uniform(0.7, 1.4)),
        "gamma": float(rng.uniform(0.85, 1.15)),
        "noise_fraction_wm": float(rng.uniform(0.01, 0.05)),
        "noise_seed": int(rng.integers(2**31)),
    }


def apply_intensity(image: np.ndarray, bias: np.ndarray, scale: float, gamma: float, noise_fraction_wm: float, noise_seed: int, wm: float = 1000.0) -> np.ndarray:
    """Bias, gamma, scale, then Rician noise; returns int16-ready float32 (non-negative)."""
    out = image * bias
    np.maximum(out, 0, out=out)
    out /= wm
    out **= np.float32(gamma)
    out *= np.float32(wm * scale)
    sigma = np.float32(noise_fraction_wm * wm * scale)
    rng = np.random.default_rng(noise_seed)
    real = out + sigma * rng.standard_normal(out.shape, dtype=np.float32)
    imag = sigma * rng.standard_normal(out.shape, dtype=np.float32)
    return np.sqrt(real * real + imag * imag)
