"""Removal regions defined in MNI152 millimetres, and sampling MNI-space maps at subject voxels."""

from __future__ import annotations

import numpy as np

from defacebench.imaging.resample import sample_world
from defacebench.imaging.templates import mni_brain_distance_mm

#: fsl_deface boxes (|x| limits, y range, z range) in MNI mm; BigFoV variant extends the
#: ears to z -122 and adds the lower face/neck box.
FSL_BOXES: dict[str, tuple[tuple[float, float], tuple[float, float], tuple[float, float]]] = {
    "ears": ((70.0, np.inf), (-76.0, 23.0), (-72.0, 17.0)),
    "jaw": ((0.0, 60.0), (64.0, 91.0), (-72.0, -43.0)),
    "cheeks": ((0.0, 51.0), (74.0, 91.0), (-42.0, -23.0)),
    "nose_eyes": ((0.0, 41.0), (84.0, 91.0), (-22.0, 7.0)),
}
FSL_BIGFOV_BOXES = {
    **FSL_BOXES,
    "ears": ((70.0, np.inf), (-76.0, 23.0), (-122.0, 17.0)),
    "lower_face_neck": ((0.0, 60.0), (44.0, 103.0), (-152.0, -43.0)),
}
FSL_BRAIN_MARGIN_MM = 7.0
AFNI_Z_RANGE_MM = (-142.0, -30.0)
AFNI_Y_MIN_MM = -59.0
AFNI_BRAIN_MARGIN_MM = 10.0

#: QC regions (MNI mm, head tissue only): a standard face and the ears. The nose is
#: found per head (:func:`defacebench.deface.qc.nose_tip_region`): a fixed MNI box sat
#: above the nose on heads whose face is pitched relative to the brain.
FACE_REGION = ((0.0, 70.0), (60.0, np.inf), (-80.0, 20.0))
EAR_REGION = ((68.0, np.inf), (-45.0, 15.0), (-60.0, -10.0))


def in_box(coords: np.ndarray, box) -> np.ndarray:
    """Voxels whose MNI mm (3, ...) fall in an (|x|, y, z) box (inclusive)."""
    (ax0, ax1), (y0, y1), (z0, z1) = box
    ax = np.abs(coords[0])
    return (ax >= ax0) & (ax <= ax1) & (coords[1] >= y0) & (coords[1] <= y1) & (coords[2] >= z0) & (coords[2] <= z1)


#: Voxels per slab of :func:`_slabwise`.
SLAB_VOXELS = 1 << 16


def _slabwise(region, coords: np.ndarray) -> np.ndarray:
    """``region(coords)`` (element-wise, bool) evaluated slab by slab along the first grid axis.

    Slabs of ~64k voxels keep the temporaries in the cache: the same comparisons, 2-5x
    faster than whole-grid temporaries on a 1 mm head (0.22 -> 0.05 s for fsl's boxes).
    """
    out = np.zeros(coords.shape[1:], dtype=bool)
    if out.ndim == 0:
        return np.asarray(region(coords), dtype=bool)
    step = max(1, SLAB_VOXELS // max(1, int(np.prod(out.shape[1:], dtype=np.int64))))
    for start in range(0, out.shape[0], step):
        out[start:start + step] = region(coords[:, start:start + step])
    return out


def fsl_boxes(coords: np.ndarray, bigfov: bool = True) -> np.ndarray:
    """Union of fsl_deface's MNI boxes."""
    boxes = FSL_BIGFOV_BOXES if bigfov else FSL_BOXES

    def union(part: np.ndarray) -> np.ndarray:
        out = np.zeros(part.shape[1:], dtype=bool)
        for box in boxes.values():
            out |= in_box(part, box)
        return out

    return _slabwise(union, coords)


def afni_box(coords: np.ndarray) -> np.ndarray:
    """AFNI refacer's shell box: -142 < z < -30 and y > -59 (MNI mm)."""
    z0, z1 = AFNI_Z_RANGE_MM
    return _slabwise(lambda c: (c[2] > z0) & (c[2] < z1) & (c[1] > AFNI_Y_MIN_MM), coords)


def spm_plane(coords: np.ndarray) -> np.ndarray:
    """spm_deface's cut: -1.1*y + 0.98*z + 100 < 0 (MNI mm)."""
    return _slabwise(lambda c: -1.1 * c[1] + 0.98 * c[2] + 100.0 < 0, coords)


def distance_to_mni_brain(coords: np.ndarray, where: np.ndarray) -> np.ndarray:
    """Distance (mm) to the MNI brain mask at ``coords``, evaluated where ``where`` is true (inf elsewhere)."""
    return sample_world(mni_brain_distance_mm(2), coords, where, order=1, cval=np.inf)
