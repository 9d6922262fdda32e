"""Warping a base head into a subject's image: the pull from output voxels to template voxels.

Each output voxel is mapped to the template in two parts: an affine part (the subject's pose
and head scale, :func:`output_to_coarse`) and the inverse of the ageing + anatomy
deformation, evaluated on a grid every ``f`` output voxels and interpolated linearly in
between (:func:`template_coordinates`: the map is smooth, and this is several times cheaper
than evaluating it at every voxel). :func:`pull` then reads image and labels there.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage as ndi

from defacebench.simulate import acquisition
from defacebench.simulate.fields import jacobian_determinant
from defacebench.simulate.headfields import HeadFields
from defacebench.simulate.heads import BaseHead

__all__ = ["min_jacobian", "output_to_coarse", "pull", "template_coordinates", "upsample_linear"]


def upsample_linear(coarse: np.ndarray, step: int, shape: tuple[int, int, int]) -> np.ndarray:
    """Linear interpolation of samples taken every ``step`` voxels (axes 1-3) onto ``shape``."""
    out = coarse
    for axis, n in enumerate(shape, start=1):
        nc = out.shape[axis]
        t = np.arange(n, dtype=np.float32) / step
        lo = np.minimum(t.astype(np.int64), nc - 2)
        w = (t - lo).astype(np.float32)
        wshape = [1] * out.ndim
        wshape[axis] = n
        w = w.reshape(wshape)
        a = np.take(out, lo, axis=axis)
        b = np.take(out, lo + 1, axis=axis)
        b -= a
        b *= w
        a += b
        out = a
    return out


def template_coordinates(hf: HeadFields, inverse: np.ndarray, out_from_template: np.ndarray, out_shape: tuple[int, int, int]) -> np.ndarray:
    """Fine template voxel coordinates (3, N) of every output voxel.

    ``out_from_template`` maps output voxels to cropped coarse field voxels (affine); the
    inverse deformation (coarse voxels) is added on a grid every ``f`` output voxels and the
    smooth map is interpolated linearly to every voxel.
    """
    step = hf.f
    coarse_shape = tuple((n - 1) // step + 2 for n in out_shape) if step > 1 else tuple(out_shape)
    idx = np.indices(coarse_shape, dtype=np.float32).reshape(3, -1) * np.float32(step)
    m = out_from_template.astype(np.float32)
    coords = m[:3, :3] @ idx + m[:3, 3:4]
    disp = np.stack([ndi.map_coordinates(inverse[i], coords, order=1, mode="nearest") for i in range(3)])
    coords += disp
    coords += hf.start[:, None]  # cropped coarse voxel -> full coarse voxel -> fine template voxel
    coords *= np.float32(hf.f)
    coords += np.float32((hf.f - 1) / 2)
    coords = coords.reshape((3,) + coarse_shape)
    if step > 1:
        coords = upsample_linear(coords, step, out_shape)
    return coords.reshape(3, -1)


def pull(hf: HeadFields, image: np.ndarray, labels: np.ndarray, coords: np.ndarray, out_shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Image (linear) and labels (nearest) at template voxel ``coords``; zero outside the head box.

    Only output voxels whose source lies in the template head's bounding box are interpolated
    (the rest is air, zero in both), which skips about half of the grid.
    """
    lo, hi = hf.head_box
    inside = np.ones(coords.shape[1], bool)
    for i in range(3):
        inside &= coords[i] >= lo[i]
        inside &= coords[i] <= hi[i]
    sel = np.flatnonzero(inside)
    c = coords[:, sel]
    out_image = np.zeros(coords.shape[1], np.float32)
    out_image[sel] = ndi.map_coordinates(image, c, order=1, mode="constant", cval=0.0)
    nearest = np.rint(c).astype(np.intp)
    for i, n in enumerate(labels.shape):
        np.clip(nearest[i], 0, n - 1, out=nearest[i])
    out_labels = np.zeros(coords.shape[1], np.uint8)
    out_labels[sel] = labels[nearest[0], nearest[1], nearest[2]]
    return out_image.reshape(out_shape), out_labels.reshape(out_shape)


def output_to_coarse(head: BaseHead, hf: HeadFields, rotation_deg: Sequence[float], translation_mm: Sequence[float],
                     scale: Sequence[float], out_affine: np.ndarray) -> np.ndarray:
    """Output voxel -> cropped coarse field voxel, the affine part of the pull:
    world ``y -> R^T (y - c - t) / s + c`` about the brain centre ``c``."""
    centre = np.array(head.landmarks["brain_centre"])
    rot = acquisition.rotation_matrix(list(rotation_deg))
    to_anat = np.eye(4)
    to_anat[:3, :3] = np.diag(1 / np.asarray(scale, float)) @ rot.T
    to_anat[:3, 3] = centre - to_anat[:3, :3] @ (centre + np.asarray(translation_mm, float))
    coarse_from_world = np.eye(4)
    coarse_from_world[:3, :3] /= hf.spacing
    coarse_from_world[:3, 3] = -hf.origin / hf.spacing
    return coarse_from_world @ to_anat @ out_affine


def min_jacobian(disp: np.ndarray) -> float:
    """Smallest Jacobian determinant of ``x -> x + disp(x)``: positive everywhere means fold-free."""
    return float(jacobian_determinant(disp).min())
