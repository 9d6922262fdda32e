"""Target grids in MNI space (resampling into them: :mod:`defacebench.imaging.resample`).

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


def apply_affine(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 4x4 matrix to (N, 3) points."""
    return points @ matrix[:3, :3].T + matrix[:3, 3]
