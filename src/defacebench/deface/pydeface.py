"""pydeface: its template registered ONTO the subject (12 DOF, MI); soft face mask.

pydeface warps ``facemask.nii.gz`` (1 = keep, 0 = face) to the subject with trilinear
interpolation and multiplies: defaced = input x mask, face-only = input x (1 - mask).
Outside the warped template's field of view FLIRT writes 0, so pydeface also removes
what lies beyond it; this is kept. Differs from pydeface: FLIRT (mutual information,
12 DOF) is replaced by ANTs Mattes MI at 4 mm.
"""

from __future__ import annotations

import functools

import numpy as np
from scipy import ndimage

from defacebench.deface.context import SubjectContext
from defacebench.imaging.templates import pydeface_template

NAME = "pydeface"
NEEDS = ("brain", "to_mni", "template_to_subject")


@functools.lru_cache(maxsize=1)
def _face_box() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The face mask (float32), and the voxel box around its < 1 values, one voxel wider."""
    _, facemask = pydeface_template()
    keep = np.asarray(facemask.dataobj, dtype=np.float32)
    face = np.argwhere(keep < 1)
    return keep, face.min(axis=0) - 1.0, face.max(axis=0) + 1.0


def removal_from_matrix(template_to_subject: np.ndarray, affine: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """1 - warped face mask on a grid, given the template world -> grid world matrix.

    Equal to trilinear resampling of the whole mask (``resample_to(..., order=1, cval=0)``)
    but interpolates only where the answer can differ from "keep": voxels that land in the
    face's box of the template, or within one voxel of (or beyond) its field of view.
    Everywhere else the template is 1 on all eight neighbours. ~5x faster at 1 mm.
    """
    keep, box_low, box_high = _face_box()
    template_affine = pydeface_template()[1].affine
    # subject voxel -> template voxel, evaluated one axis at a time by broadcasting
    vox = np.linalg.inv(template_affine) @ np.linalg.inv(template_to_subject) @ affine
    vox = np.where(np.abs(vox - np.round(vox)) < 1e-5, np.round(vox), vox)  # as resample_to
    ijk = [np.arange(n, dtype=np.float32).reshape([-1 if a == axis else 1 for a in range(3)]) for axis, n in enumerate(shape)]
    size = np.array(keep.shape, dtype=np.float32)
    near_edge = np.zeros(shape, dtype=bool)
    outside = np.zeros(shape, dtype=bool)
    in_box = np.ones(shape, dtype=bool)
    # slabs of ~1 MB of float32 along the first axis: the same element-wise arithmetic,
    # with every temporary in the cache (2-3x faster than whole-grid temporaries at 1 mm)
    slab = max(1, (1 << 18) // max(1, shape[1] * shape[2]))
    for start in range(0, shape[0], slab):
        part = slice(start, start + slab)
        for row in range(3):
            coord = vox[row, 0] * ijk[0][part] + vox[row, 1] * ijk[1] + vox[row, 2] * ijk[2] + np.float32(vox[row, 3])
            near_edge[part] |= (coord < 1.0) | (coord > size[row] - 2.0)
            outside[part] |= (coord < -1.0) | (coord > size[row])
            in_box[part] &= (coord >= box_low[row]) & (coord <= box_high[row])
    # beyond the field of view by over a voxel: cval 0, i.e. removed
    removal = outside.astype(np.float32)
    points = np.nonzero((near_edge | in_box) & ~outside)
    homogeneous = np.stack([*(p.astype(np.float64) for p in points), np.ones(points[0].size)])
    coords = (vox @ homogeneous)[:3]
    removal[points] = 1.0 - ndimage.map_coordinates(keep, coords, order=1, mode="constant", cval=0.0, prefilter=False)
    return np.clip(removal, 0.0, 1.0)


def removal_mask(ctx: SubjectContext) -> np.ndarray:
    """Fraction removed per voxel (soft, 0..1) on the subject grid."""
    return removal_from_matrix(ctx.pydeface_template_to_subject(), ctx.affine, ctx.shape)
