"""What facial tissue a method leaves: the share of each facial region's skin surface it does not change.

Regions are boxes in MNI space (RAS mm) around the features of the MNI head built from
pydeface's mean head (nose tip at about z = -20 mm, nasion z = +10, chin z = -85), applied to
the raw head's skin surface through the scan's subject -> MNI registration. On a simulated
cohort ``nose`` and ``ears`` are the simulator's own ground-truth labels instead (the other
regions have no label of their own in the simulator).

A skin voxel is left when the method's output equals the raw head there: removed tissue
(zero) and replaced tissue (a refacer's average face) both count as gone.
"""

from __future__ import annotations

from collections.abc import Mapping

import nibabel as nib
import numpy as np
from scipy import ndimage

from defacebench.imaging.masks import head_mask

__all__ = ["FACE_REGIONS", "skin_surface", "region_masks", "residual_face"]

#: Facial regions: (|x| range, y range, z range) in MNI mm; ``None`` = unbounded.
FACE_REGIONS: dict[str, tuple[tuple[float, float], tuple[float, float], tuple[float, float]]] = {
    "eyes_brow": ((10.0, 55.0), (40.0, 200.0), (-20.0, 35.0)),
    "nose": ((0.0, 18.0), (60.0, 200.0), (-45.0, 10.0)),
    "mouth_lips": ((0.0, 28.0), (55.0, 200.0), (-70.0, -45.0)),
    "chin": ((0.0, 30.0), (40.0, 200.0), (-105.0, -70.0)),
    "cheeks": ((28.0, 70.0), (20.0, 200.0), (-65.0, -20.0)),
    "ears": ((60.0, 200.0), (-50.0, 15.0), (-45.0, 20.0)),
}

#: Simulator label values (``dseg.tsv``) that refine the regions on simulated cohorts.
SIMULATED_LABELS = {"nose": 8, "ears": 9}


def skin_surface(data: np.ndarray) -> np.ndarray:
    """The outer layer of the head: voxels of :func:`head_mask` with a neighbour outside it."""
    head = head_mask(np.asarray(data, dtype=np.float32))
    return head & ~ndimage.binary_erosion(head, border_value=1)


def region_masks(skin: np.ndarray, affine: np.ndarray, to_mni: np.ndarray,
                 labels: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Skin voxels of each facial region (boolean arrays on the scan's grid).

    Parameters
    ----------
    skin : ndarray
        Boolean skin surface (:func:`skin_surface`).
    affine : ndarray
        The scan's voxel -> world matrix.
    to_mni : ndarray
        4x4 RAS subject world -> MNI world (the brain registration).
    labels : ndarray, optional
        The simulator's ground-truth labels on the same grid.
    """
    ijk = np.argwhere(skin)
    xyz = (np.asarray(to_mni) @ np.asarray(affine) @ np.c_[ijk, np.ones(len(ijk))].T)[:3].T
    out = {}
    for name, ((x0, x1), (y0, y1), (z0, z1)) in FACE_REGIONS.items():
        ax = np.abs(xyz[:, 0])
        inside = (ax >= x0) & (ax <= x1) & (xyz[:, 1] >= y0) & (xyz[:, 1] <= y1) & (xyz[:, 2] >= z0) & (xyz[:, 2] <= z1)
        if labels is not None:
            values = np.asarray(labels)[tuple(ijk.T)]
            if name in ("nose", "ears"):
                inside = values == SIMULATED_LABELS[name]
        mask = np.zeros(skin.shape, dtype=bool)
        mask[tuple(ijk[inside].T)] = True
        out[name] = mask
    return out


def residual_face(raw: np.ndarray, outputs: Mapping[str, np.ndarray], regions: Mapping[str, np.ndarray],
                  voxel_area_mm2: float) -> list[dict]:
    """Per method and region: skin area (mm^2) of the raw head and the share the output leaves unchanged.

    Returns rows with ``method``, ``region``, ``skin_mm2``, ``left_mm2``, ``left_share``.
    """
    raw = np.asarray(raw, dtype=np.float32)
    tolerance = 1e-4 * float(np.percentile(np.abs(raw[raw != 0]), 99)) if np.any(raw) else 0.0
    skin = np.zeros(raw.shape, dtype=bool)
    for mask in regions.values():
        skin |= mask
    where = np.nonzero(skin)  # compare only at the regions' skin voxels
    in_region = {name: np.asarray(mask)[where] for name, mask in regions.items()}
    raw_values = raw[where]
    rows = []
    for method, out in outputs.items():
        same = np.abs(np.asarray(out)[where].astype(np.float32) - raw_values) <= tolerance
        for region, inside in in_region.items():
            n = int(inside.sum())
            left = int((same & inside).sum())
            rows.append({"method": method, "region": region, "skin_mm2": n * voxel_area_mm2, "left_mm2": left * voxel_area_mm2,
                         "left_share": left / n if n else float("nan")})
    return rows


def voxel_area_mm2(img: nib.Nifti1Image) -> float:
    """Area of one skin voxel's face (mm^2): the geometric mean of the three face areas."""
    zooms = np.asarray(img.header.get_zooms()[:3], dtype=float)
    return float(np.prod(zooms) ** (2.0 / 3.0))
