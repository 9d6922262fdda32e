"""Per-head field data: everything a subject's deformation needs that depends only on its base head.

A subject's velocity is a linear combination of per-head bases (one per brain region, fat
pad and face feature), so the bases, masks, lesion candidates and the ventricle growth order
are built once per base head and voxel size by :func:`head_fields`. It is a pure function of
the head, cached per head object (:func:`functools.lru_cache`; heads compare by identity and
are read-only): any call order gives the same value, and a worker process needs no warm-up.
The calibration that depends on these fields is apart
(:func:`defacebench.simulate.calibration.calibration_gains`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from defacebench.imaging.blocks import block_mean
from defacebench.simulate import ageing
from defacebench.simulate.fields import smoothstep
from defacebench.simulate.heads import BaseHead
from defacebench.simulate.identity import identity_bases
from defacebench.simulate.labels import COMPARTMENTS, INTRACRANIAL, LABELS

#: Deformation fields live on a grid of this spacing (mm) or the voxel size if coarser.
FIELD_MM = 3.0
#: Regions with a divergence source in the brain ageing field (sulcal CSF balances the others).
BRAIN_REGIONS = ("gm", "wm", "hippocampus", "csf")
#: Ventricles grow into brain tissue no farther than this from their base-head outline (mm).
VENTRICLE_GROWTH_MAX_MM = 12.0
#: The brain ageing field fades to zero over this depth (mm) inside the intracranial cavity.
BRAIN_TAPER_MM = 6.0


def coarse_factor(head: BaseHead) -> int:
    """Fine voxels per coarse field voxel along each axis (at least 1)."""
    return max(1, int(round(FIELD_MM / head.voxel_mm)))


def inner_blocks(head: BaseHead) -> np.ndarray:
    """Coarse field blocks that lie wholly inside the intracranial labels.

    Brain sources live only there, one block in from the edge: a block that straddles the
    skull, or its linearly interpolated neighbour, would spread divergence into the bone, and
    the skull and intracranial volumes would change with age.
    """
    f = coarse_factor(head)
    intracranial = np.isin(head.labels, [LABELS[k] for k in INTRACRANIAL])
    return ndi.binary_erosion(block_mean(intracranial, f, pad="edge") >= 1 - 1e-6)


def region_shares(head: BaseHead) -> dict[str, np.ndarray]:
    """Each brain region's share of every coarse block, zero outside :func:`inner_blocks`."""
    f = coarse_factor(head)
    inner = inner_blocks(head)
    return {s: block_mean(head.labels == LABELS[s], f, pad="edge") * inner for s in BRAIN_REGIONS}


def region_gains(head: BaseHead, shares: dict[str, np.ndarray]) -> np.ndarray:
    """G[r, s]: mean over region r's voxels of region s's share of their field block.

    On the coarse field grid a region's divergence is diluted by its block neighbours;
    ``G @ a`` predicts each region's achieved log-volume change for prescribed changes ``a``.
    """
    f = coarse_factor(head)
    idx = np.indices(head.labels.shape) // f
    G = np.zeros((len(BRAIN_REGIONS),) * 2)
    for i, r in enumerate(BRAIN_REGIONS):
        sel = tuple(ix[head.labels == LABELS[r]] for ix in idx)
        for j, s in enumerate(BRAIN_REGIONS):
            G[i, j] = shares[s][sel].mean()
    return G


def source_volumes_ml(head: BaseHead, shares: dict[str, np.ndarray]) -> dict[str, float]:
    """Volume (ml) of each region's source after masking to inner blocks."""
    block_ml = (head.voxel_mm * coarse_factor(head)) ** 3 / 1000
    return {r: float(shares[r].sum(dtype=np.float64) * block_ml) for r in BRAIN_REGIONS}


def field_box(head: BaseHead) -> tuple[slice, slice, slice]:
    """Coarse-grid box around the head (4 coarse voxels of margin)."""
    f = coarse_factor(head)
    occupied = np.argwhere(block_mean(head.labels > 0, f, pad="edge") > 0)
    lo, hi = occupied.min(0) - 4, occupied.max(0) + 5
    full = [int(np.ceil(n / f)) for n in head.labels.shape]
    return tuple(slice(max(0, int(a)), min(n, int(b))) for a, b, n in zip(lo, hi, full))  # type: ignore[return-value]


def field_origin(head: BaseHead, box: tuple[slice, slice, slice]) -> np.ndarray:
    """World position (mm) of the first voxel of the coarse field grid cropped to ``box``."""
    f = coarse_factor(head)
    start = np.array([s.start for s in box], float)
    return head.affine[:3, 3] + head.voxel_mm * ((f - 1) / 2 + f * start)


def brain_weight(depth_in_cavity_mm: np.ndarray, spacing_mm: float) -> np.ndarray:
    """Weight of the brain ageing field: 0 on the outermost intracranial blocks (and outside),
    1 from :data:`BRAIN_TAPER_MM` deeper.

    The cavity's wall never moves, so brain ageing leaves the skull, scalp and face where
    they are (docs/simulate.md: a field that ran 6 mm beyond the skull carried brain age into
    face-only images). ``depth_in_cavity_mm`` is the distance of a block centre to the
    nearest block outside the cavity (one spacing on the outermost blocks).
    """
    return smoothstep((depth_in_cavity_mm - spacing_mm) / BRAIN_TAPER_MM)


def face_weight(distance_outside_cranium_mm: np.ndarray) -> np.ndarray:
    """Weight of the face ageing fields: 0 inside the cranium and up to 2 mm outside it."""
    return smoothstep((distance_outside_cranium_mm - 2) / 8)


@dataclass
class HeadFields:
    """Everything that depends only on the base head (and voxel size).

    Velocity bases are in mm per unit of their parameter, on the cropped coarse field grid,
    already multiplied by their spatial weights; a subject's velocity is a linear combination.
    """

    f: int  #: fine voxels per coarse field voxel
    spacing: float  #: coarse field spacing (mm)
    box: tuple[slice, slice, slice]  #: the cropped coarse field grid within the full one
    start: np.ndarray  #: first coarse voxel of the box (float32)
    origin: np.ndarray  #: world mm of the box's first coarse voxel
    shape: tuple[int, int, int]  #: coarse field grid shape
    G: np.ndarray  #: block dilution of the brain regions (:func:`region_gains`)
    volumes_ml: dict[str, float]  #: source volume of each brain region (:func:`source_volumes_ml`)
    brain_basis: dict[str, np.ndarray]
    fat_basis: dict[str, np.ndarray]
    feature_basis: dict[str, np.ndarray]
    identity_basis: dict[str, np.ndarray]  #: unit fields of the identity modes (:func:`~defacebench.simulate.identity.identity_bases`)
    intracranial: np.ndarray
    wmness: np.ndarray  #: where and how much grey/white contrast loss acts (0 outside the brain)
    lesion_box: tuple[slice, slice, slice]
    lesion_candidates: np.ndarray  #: flat indices (into the lesion box) where lesions may grow
    lesion_weight: np.ndarray  #: periventricular weight at those indices
    head_box: tuple[np.ndarray, np.ndarray]  #: fine-voxel bounding box of the head (padded), lo and hi
    image: np.ndarray  #: the base image with the ventricles filled with CSF intensity
    vent_box: tuple[slice, slice, slice]  #: box around the ventricles and their growth zone
    vent_flat: np.ndarray  #: flat indices (in the box) of tissue the ventricles may grow into, nearest first
    vent_dist_mm: np.ndarray  #: their distance from the ventricles, ascending
    vent_count: int  #: base-head ventricle voxels


@functools.lru_cache(maxsize=8)
def head_fields(head: BaseHead) -> HeadFields:
    """The per-head field data of ``head``, built on first use and kept per head object.

    Treat the returned arrays as read-only: they are shared by every subject of the head.
    """
    f = coarse_factor(head)
    spacing = head.voxel_mm * f
    box = field_box(head)
    start = np.array([s.start for s in box], np.float32)
    origin = field_origin(head, box)
    labels = head.labels
    intracranial = np.isin(labels, [LABELS[k] for k in INTRACRANIAL])
    cranium = (block_mean(intracranial | (labels == LABELS["skull"]), f, pad="edge") > 0.01)[box]
    shape = cranium.shape
    out_cran = ndi.distance_transform_edt(~cranium) * spacing
    cavity = (block_mean(intracranial, f, pad="edge") >= 0.5)[box]
    w_brain = brain_weight(ndi.distance_transform_edt(cavity) * spacing, spacing).astype(np.float32)
    w_face = face_weight(out_cran).astype(np.float32)
    shares = region_shares(head)
    brain_basis = {r: ageing.brain_velocity(shares[r][box], spacing) * w_brain for r in BRAIN_REGIONS}
    fat_basis = {c: ageing.brain_velocity(block_mean(head.compartments == v, f, pad="edge")[box], spacing) * w_face for c, v in COMPARTMENTS.items()}
    unit = {"nose_elongation_mm": 0.0, "ear_elongation_mm": 0.0, "mandible_log_scale": 0.0}
    feature_basis = {}
    for name in unit:
        feature_basis[name] = ageing.feature_velocity(shape, origin, spacing, head.landmarks, {**unit, name: 1.0}) * w_face
    out_cavity = ndi.distance_transform_edt(~cavity) * spacing
    identity_basis = identity_bases(shape, origin, spacing, head.landmarks, w_face, out_cran, out_cavity)
    gm, wm = head.stats["gm_mean"], head.stats["wm_mean"]
    wmness = (np.clip((head.image - gm) / (wm - gm), 0, 1.5) * intracranial).astype(np.float32)
    cand = head.periventricular > 1e-3
    lbox = tuple(slice(int(a), int(b) + 1) for a, b in zip(np.argwhere(cand).min(0), np.argwhere(cand).max(0))) if cand.any() else (slice(0, 1),) * 3
    flat = np.flatnonzero(cand[lbox])
    occupied = np.argwhere(labels > 0)
    # ventricles hold CSF: the labelled slits are partial-volume grey in a 1.5 mm image, and
    # widening them by the ageing deformation would stretch grey, not dark, voxels
    image = head.image.copy()
    vent = labels == LABELS["ventricles"]
    image[vent] = np.minimum(image[vent], np.float32(head.stats["csf_mean"]))
    margin = int(np.ceil(VENTRICLE_GROWTH_MAX_MM / head.voxel_mm)) + 2
    vi = np.argwhere(vent) if vent.any() else np.zeros((1, 3), int)
    vbox = tuple(slice(max(0, int(a) - margin), min(n, int(b) + margin + 1)) for a, b, n in zip(vi.min(0), vi.max(0), labels.shape))
    vdist = ndi.distance_transform_edt(~vent[vbox]) * head.voxel_mm
    growable = np.isin(labels[vbox], [LABELS[k] for k in ("gm", "wm", "wm_lesion")]) & (vdist <= VENTRICLE_GROWTH_MAX_MM)
    vflat = np.flatnonzero(growable)
    order = np.argsort(vdist.ravel()[vflat], kind="stable")
    head_box = (occupied.min(0) - 2.0, np.minimum(occupied.max(0) + 2.0, np.array(labels.shape) - 1.0))
    return HeadFields(
        f=f, spacing=spacing, box=box, start=start, origin=origin, shape=shape, G=region_gains(head, shares),
        volumes_ml=source_volumes_ml(head, shares),
        brain_basis=brain_basis, fat_basis=fat_basis, feature_basis=feature_basis, identity_basis=identity_basis,
        intracranial=intracranial, wmness=wmness, lesion_box=lbox, lesion_candidates=flat,
        lesion_weight=head.periventricular[lbox].ravel()[flat].astype(np.float32), head_box=head_box, image=image,
        vent_box=vbox, vent_flat=vflat[order], vent_dist_mm=vdist.ravel()[vflat][order].astype(np.float32), vent_count=int(vent.sum()),
    )
