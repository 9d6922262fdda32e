"""Block means: the one way defacebench shrinks a volume by whole voxels.

Averaging non-overlapping blocks is linear (so ``defaced + face == raw`` survives it) and
cheap; every downsampling step (registration at 4 mm, the N4 fit at 10 mm, anti-aliasing
before a coarse grid, the template pyramid, the simulator's coarse fields) uses it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

__all__ = ["block_affine", "block_mean"]


def _factors(factors: int | Sequence[int]) -> tuple[int, int, int]:
    if isinstance(factors, (int, np.integer)):
        return (int(factors),) * 3
    fx, fy, fz = (int(f) for f in factors)
    return fx, fy, fz


def block_mean(data: np.ndarray, factors: int | Sequence[int], pad: Literal["crop", "edge", "zero"] = "crop") -> np.ndarray:
    """Mean over non-overlapping blocks of ``factors`` voxels, in float32.

    Parameters
    ----------
    data : ndarray
        A 3D volume (any real dtype; averaged in float32).
    factors : int or sequence of 3 int
        Block size per axis.
    pad : {"crop", "edge", "zero"}
        ``crop`` drops trailing voxels that do not fill a block; ``edge`` and ``zero``
        pad the volume to a multiple of the block size (repeating the edge, or with 0).

    Returns
    -------
    ndarray
        float32, shape ``size // factor`` per axis (``ceil`` when padded).
    """
    fx, fy, fz = _factors(factors)
    volume = np.asarray(data, dtype=np.float32)
    if pad != "crop":
        widths = [(0, (-s) % f) for s, f in zip(volume.shape, (fx, fy, fz))]
        if any(w for _, w in widths):
            volume = np.pad(volume, widths, mode="edge" if pad == "edge" else "constant")
    nx, ny, nz = (s // f for s, f in zip(volume.shape, (fx, fy, fz)))
    cropped = volume[: nx * fx, : ny * fy, : nz * fz]
    return cropped.reshape(nx, fx, ny, fy, nz, fz).mean(axis=(1, 3, 5), dtype=np.float32)


def block_affine(affine: np.ndarray, factors: int | Sequence[int]) -> np.ndarray:
    """The voxel -> world affine of a block mean: each block's centre keeps its world position."""
    f = np.asarray(_factors(factors), dtype=float)
    scale = np.diag([*f, 1.0])
    scale[:3, 3] = (f - 1) / 2.0
    return np.asarray(affine, dtype=float) @ scale
