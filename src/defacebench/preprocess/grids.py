"""Target grids in MNI space, and linear resampling of many images into one grid.

Built-in grids (all in MNI152 2009 world mm, x stored decreasing like FSL's templates):

``mni2mm``
    The paper's grid: 91 x 109 x 91 at 2 mm, affine
    ``[[-2,0,0,90],[0,2,0,-126],[0,0,2,-72],[0,0,0,1]]``. It spans x -90..90,
    y -126..90, z -72..108 mm, so it cuts off the nose tip (y > 90), the chin and
    the jaw (z < -72): face-only images on it hold only part of the face.
    (nilearn's own 2 mm MNI grid is 99 x 117 x 95, a different box.)
``mni2mm-head``
    2 mm, x -98..98, y -134..114, z -136..108 mm: the whole head with nose tip, chin,
    jaw and ears (99 x 125 x 123 voxels, 1.69 times the paper's voxels).
``mni4mm``
    4 mm over the same head box (50 x 63 x 62): CPU demos.

Other grids: :func:`grid_from_bounds`, or a JSON file ``{"name", "shape", "affine"}``
passed to :func:`get_grid`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from defacebench.io.errors import InputError

#: The paper's 91x109x91 2 mm box (FSL's MNI152 2 mm grid).
PAPER_AFFINE = np.array([[-2.0, 0, 0, 90], [0, 2, 0, -126], [0, 0, 2, -72], [0, 0, 0, 1]])
#: World-mm box of the head grids: x, y, z (lo, hi) voxel centres.
HEAD_BOUNDS_MM: tuple[tuple[float, float], ...] = ((-98.0, 98.0), (-134.0, 114.0), (-136.0, 108.0))


@dataclass(frozen=True, eq=False)
class Grid:
    """A voxel grid in template (MNI) world space.

    Attributes
    ----------
    name : str
        Name used for ``stores/<name>`` and ``work/<name>``.
    shape : tuple of int
        Voxels along x, y, z.
    affine : ndarray
        4x4 voxel -> MNI world mm.
    """

    name: str
    shape: tuple[int, int, int]
    affine: np.ndarray

    @property
    def voxel_mm(self) -> tuple[float, float, float]:
        return tuple(float(v) for v in np.linalg.norm(self.affine[:3, :3], axis=0))  # type: ignore[return-value]

    @property
    def bounds_mm(self) -> np.ndarray:
        """(3, 2) world-mm range (min, max) of the voxel centres along x, y, z."""
        corners = np.array([[i, j, k, 1] for i in (0, self.shape[0] - 1) for j in (0, self.shape[1] - 1) for k in (0, self.shape[2] - 1)], dtype=float)
        world = (self.affine @ corners.T)[:3]
        return np.stack([world.min(axis=1), world.max(axis=1)], axis=1)

    def contains(self, points_mm: np.ndarray) -> np.ndarray:
        """Whether world points (N, 3) fall inside the grid (within half a voxel)."""
        ijk = apply_affine(np.linalg.inv(self.affine), np.asarray(points_mm, dtype=float))
        return np.all((ijk >= -0.5) & (ijk <= np.array(self.shape) - 0.5), axis=1)

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "shape": list(self.shape), "affine": np.asarray(self.affine).tolist()}

    def _key(self) -> tuple:
        return (self.name, tuple(self.shape), tuple(np.round(np.asarray(self.affine, dtype=float), 9).ravel()))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Grid) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())


def grid_from_bounds(name: str, voxel_mm: float, bounds_mm: Iterable[tuple[float, float]] = HEAD_BOUNDS_MM, flip_x: bool = True) -> Grid:
    """A grid of ``voxel_mm`` voxels whose centres cover ``bounds_mm`` (x, y, z ranges).

    With ``flip_x`` the x axis is stored decreasing (right to left), as in the
    paper's grid, so images of every grid display the same way.
    """
    bounds = [tuple(map(float, b)) for b in bounds_mm]
    shape = tuple(int(math.floor((hi - lo) / voxel_mm + 1e-6)) + 1 for lo, hi in bounds)
    affine = np.diag([voxel_mm, voxel_mm, voxel_mm, 1.0])
    affine[:3, 3] = [b[0] for b in bounds]
    if flip_x:
        affine[0, 0] = -voxel_mm
        affine[0, 3] = bounds[0][0] + (shape[0] - 1) * voxel_mm
    return Grid(name, shape, affine)  # type: ignore[arg-type]


GRIDS: dict[str, Grid] = {
    "mni2mm": Grid("mni2mm", (91, 109, 91), PAPER_AFFINE),
    "mni2mm-head": grid_from_bounds("mni2mm-head", 2.0),
    "mni4mm": grid_from_bounds("mni4mm", 4.0),
}


def get_grid(name: str | Path) -> Grid:
    """A built-in grid by name, or a grid from a JSON file ``{"name", "shape", "affine"}``."""
    key = str(name)
    if key in GRIDS:
        return GRIDS[key]
    path = Path(key)
    if path.suffix == ".json" and path.is_file():
        try:
            spec = json.loads(path.read_text())
            affine = np.asarray(spec["affine"], dtype=float)
            shape = tuple(int(v) for v in spec["shape"])
            if affine.shape != (4, 4) or len(shape) != 3 or min(shape) < 1:
                raise ValueError("need a 4x4 affine and three positive sizes")
            return Grid(str(spec.get("name", path.stem)), shape, affine)  # type: ignore[arg-type]
        except (KeyError, ValueError, TypeError) as exc:
            raise InputError(f"bad grid file ({exc})", path) from None
    raise InputError(f"unknown grid {key!r}; choose from {', '.join(GRIDS)} or give a grid .json file")


# --------------------------------------------------------------------------- resampling
def apply_affine(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 4x4 matrix to (N, 3) points."""
    return points @ matrix[:3, :3].T + matrix[:3, 3]


def block_average(data: np.ndarray, affine: np.ndarray, factors: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Average non-overlapping blocks of voxels (a linear anti-aliasing step).

    Returns the smaller array and its affine. Trailing voxels that do not fill a
    block are dropped.
    """
    if all(f == 1 for f in factors):
        return data, affine
    fx, fy, fz = factors
    nx, ny, nz = (s // f for s, f in zip(data.shape, factors))
    cropped = data[: nx * fx, : ny * fy, : nz * fz]
    out = cropped.reshape(nx, fx, ny, fy, nz, fz).mean(axis=(1, 3, 5), dtype=np.float32)
    scale = np.diag([fx, fy, fz, 1.0])
    scale[:3, 3] = (np.array(factors) - 1) / 2.0
    return out.astype(np.float32, copy=False), affine @ scale


def antialias_factors(source_affine: np.ndarray, grid: Grid) -> tuple[int, int, int]:
    """Block size that averages the source before sampling a much coarser grid.

    ``floor(target_mm / (2 * source_mm))`` per axis: 1 (nothing) for 1 mm -> 2 mm
    (as the paper's trilinear resampling), 2 for 1 mm -> 4 mm.
    """
    source_mm = np.linalg.norm(source_affine[:3, :3], axis=0)
    target_mm = min(grid.voxel_mm)
    return tuple(max(1, int(math.floor(target_mm / (2 * s) + 1e-6))) for s in source_mm)  # type: ignore[return-value]


class LinearResampler:
    """Resample many images of one native grid into a target grid with one transform.

    The 8 neighbours and trilinear weights of every grid voxel are computed once; every
    image is then a weighted sum of 8 gathers (zero outside the image, as scipy's
    ``mode="constant"``). Because interpolation is
    linear, ``resample(a) + resample(b) == resample(a + b)``.

    Parameters
    ----------
    source_affine : ndarray
        4x4 native voxel -> native world (subject) mm.
    source_shape : tuple of int
        Native grid shape.
    to_template : ndarray
        4x4 subject world -> template world mm.
    grid : Grid
        Target grid in template world.
    antialias : bool
        Block-average the native image first when the grid is much coarser
        (see :func:`antialias_factors`).
    """

    def __init__(self, source_affine: np.ndarray, source_shape: tuple[int, ...], to_template: np.ndarray, grid: Grid, antialias: bool = True) -> None:
        self.grid = grid
        self.factors = antialias_factors(source_affine, grid) if antialias else (1, 1, 1)
        affine = np.asarray(source_affine, dtype=float)
        if self.factors != (1, 1, 1):
            shape = tuple(s // f for s, f in zip(source_shape, self.factors))
            scale = np.diag([*self.factors, 1.0])
            scale[:3, 3] = (np.array(self.factors) - 1) / 2.0
            affine = affine @ scale
        else:
            shape = tuple(source_shape[:3])
        self.source_shape = shape
        # grid voxel -> template world -> subject world -> native voxel
        vox = np.linalg.inv(affine) @ np.linalg.inv(np.asarray(to_template, dtype=float)) @ grid.affine
        i, j, k = (np.arange(n, dtype=np.float64) for n in grid.shape)
        coords = [
            (vox[r, 0] * i[:, None, None] + vox[r, 1] * j[None, :, None] + vox[r, 2] * k[None, None, :] + vox[r, 3]).ravel()
            for r in range(3)
        ]
        # like scipy's mode="constant": zero outside [0, n - 1], no blending beyond the edge
        # (coordinates within 1e-4 voxel of the edge count as on it)
        tol = 1e-4
        inside = np.ones(coords[0].size, dtype=bool)
        for c, n in zip(coords, shape):
            inside &= (c >= -tol) & (c <= n - 1 + tol)
        self.inside = np.flatnonzero(inside)
        strides = (shape[1] * shape[2], shape[2], 1)
        # per axis: the two neighbours' flat-index terms and their linear weights
        terms, weights = [], []
        for c, n, stride in zip(coords, shape, strides):
            c = np.clip(c[self.inside], 0, n - 1)
            base = np.floor(c).astype(np.int64)
            frac = (c - base).astype(np.float32)
            terms.append((base * stride, np.minimum(base + 1, n - 1) * stride))  # past the edge: weight is 0
            weights.append((1 - frac, frac))
        #: the 8 corners of each sampling point: flat native index and trilinear weight
        self.corners: list[tuple[np.ndarray, np.ndarray]] = [
            (terms[0][a] + terms[1][b] + terms[2][c], weights[0][a] * weights[1][b] * weights[2][c])
            for a, b, c in np.ndindex(2, 2, 2)
        ]

    def __call__(self, data: np.ndarray) -> np.ndarray:
        """One native image -> the grid (float32)."""
        data = np.asarray(data, dtype=np.float32)
        if self.factors != (1, 1, 1):
            data, _ = block_average(data, np.eye(4), self.factors)
        if data.shape != self.source_shape:
            raise ValueError(f"image shape {data.shape} is not the resampler's {self.source_shape}")
        flat = data.ravel()
        values = np.zeros(self.inside.size, dtype=np.float32)
        for idx, weight in self.corners:
            values += flat[idx] * weight
        out = np.zeros(int(np.prod(self.grid.shape)), dtype=np.float32)
        out[self.inside] = values
        return out.reshape(self.grid.shape)
