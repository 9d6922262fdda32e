"""One simulated subject: sample its parameters, then build it deterministically from them.

:func:`sample_subject` draws every random quantity (age, sex, head, ageing rates, anatomy,
acquisition) into a JSON-ready dict; :func:`simulate_subject` is its deterministic twin:
the same dict always gives the same image, labels and ground truth.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from defacebench.simulate import acquisition, ageing
from defacebench.imaging.blocks import block_mean
from defacebench.simulate.fields import exp_velocity, integrate_points, smooth_random_field, smoothstep
from defacebench.simulate.heads import WM_INTENSITY, BaseHead
from defacebench.simulate.labels import BRAIN_TISSUE, COMPARTMENTS, INTRACRANIAL, LABELS

#: Deformation fields live on a grid of this spacing (mm) or the voxel size if coarser.
FIELD_MM = 3.0
AGE_RANGE = (56.0, 96.0)
AGE_MEAN, AGE_SD = 74.0, 7.0
MALE_FRACTION = 0.46
ICV_LOG_SD = 0.07
MALE_ICV_LOG_OFFSET = 0.11
#: SD of the individual log-thickness offset of the facial fat pads (relative to the age norm).
FAT_OFFSET_SD = 0.015


#: Age distributions of :func:`sample_age`, both within the range the ageing rates are
#: calibrated on: ``adni`` normal(74, 7) truncated to 56-96 (the paper's kind of cohort);
#: ``uniform`` 56-96, an SD of 11.5 instead of ~7 years, so a small cohort spans the range.
AGE_DISTRIBUTIONS = ("adni", "uniform")


def sample_age(rng: np.random.Generator, distribution: str = "adni") -> float:
    """One age in years: ADNI-like normal(74, 7) truncated to 56-96, or uniform 56-96."""
    if distribution == "uniform":
        return round(float(rng.uniform(*AGE_RANGE)), 1)
    if distribution != "adni":
        raise ValueError(f"unknown age distribution {distribution!r}; choose from {', '.join(AGE_DISTRIBUTIONS)}")
    while True:
        age = rng.normal(AGE_MEAN, AGE_SD)
        if AGE_RANGE[0] <= age <= AGE_RANGE[1]:
            return round(float(age), 1)


def sample_subject(
    rng: np.random.Generator,
    base_heads: list[str],
    brain_ageing: float = 1.0,
    face_ageing: float = 1.0,
    age_years: float | None = None,
    ages: str = "adni",
) -> dict:
    """Draw every random parameter of one subject (JSON-ready); ``ages``: :data:`AGE_DISTRIBUTIONS`."""
    age = sample_age(rng, ages) if age_years is None else float(age_years)
    sex = "M" if rng.random() < MALE_FRACTION else "F"
    head = str(base_heads[int(rng.integers(len(base_heads)))])
    icv_log = rng.normal(0, ICV_LOG_SD) + (MALE_ICV_LOG_OFFSET / 2 if sex == "M" else -MALE_ICV_LOG_OFFSET / 2)
    axis_jitter = rng.normal(0, 0.015, 3)
    return {
        "age_years": age,
        "sex": sex,
        "base_head": head,
        "brain_ageing": {
            "strength": float(brain_ageing),
            "rate_multiplier": float(np.exp(rng.normal(0, 0.3))),
            "reserve": float(rng.normal(0, 0.055)),
            "lesion_seed": int(rng.integers(2**31)),
        },
        "face_ageing": {
            "strength": float(face_ageing),
            "rate_multiplier": float(np.exp(rng.normal(0, 0.3))),
            "fat_offset": float(rng.normal(0, FAT_OFFSET_SD)),
        },
        "anatomy": {
            "head_scale": [float(np.exp(icv_log / 3 + j)) for j in axis_jitter],
            "deformation_mm": float(rng.uniform(0.5, 1.5)),
            "deformation_seed": int(rng.integers(2**31)),
        },
        "pose": acquisition.sample_pose(rng),
        "fov": acquisition.sample_fov(rng),
        "bias": acquisition.sample_bias(rng),
        "intensity": acquisition.sample_intensity(rng),
    }


@dataclass
class SimulatedSubject:
    """Outputs of :func:`simulate_subject`."""

    image: np.ndarray  #: T1w, float32, non-negative
    labels: np.ndarray  #: uint8 labels in native space
    affine: np.ndarray
    ground_truth: dict  #: measures (volumes in ml, lengths in mm) and applied changes
    min_jacobian: float  #: smallest Jacobian determinant of the anatomy deformation (nan if not checked)


def _coarse_factor(head: BaseHead) -> int:
    return max(1, int(round(FIELD_MM / head.voxel_mm)))


#: Regions with a divergence source in the brain ageing field (sulcal CSF balances the others).
BRAIN_REGIONS = ("gm", "wm", "hippocampus", "csf")
#: Regions whose 56 -> 96 change is prescribed and calibrated. The ventricles are not deformed
#: but grown by CSF substitution (:func:`grow_ventricles`): they are slits a voxel or two wide,
#: and a smooth field that widened them enough would blow them up into balloons.
AGED_REGIONS = ("gm", "wm", "hippocampus", "ventricles")
#: Ventricles grow into brain tissue no farther than this from their base-head outline (mm).
VENTRICLE_GROWTH_MAX_MM = 12.0
#: Bump when the fields or the calibration change: cached calibration gains are then ignored.
CALIBRATION_VERSION = 10
#: Fixed-point iterations of the empirical calibration against achieved label volumes.
CALIBRATION_ITERATIONS = 5


def inner_blocks(head: BaseHead) -> np.ndarray:
    """Coarse field blocks that lie wholly inside the intracranial labels.

    Brain sources live only there, one block in from the edge: a block that straddles the
    skull, or its linearly interpolated neighbour, would spread divergence into the bone, and
    the skull and intracranial volumes would change with age.
    """
    f = _coarse_factor(head)
    intracranial = np.isin(head.labels, [LABELS[k] for k in INTRACRANIAL])
    return ndi.binary_erosion(block_mean(intracranial, f, pad="edge") >= 1 - 1e-6)


def region_shares(head: BaseHead) -> dict[str, np.ndarray]:
    """Each brain region's share of every coarse block, zero outside :func:`inner_blocks`."""
    f = _coarse_factor(head)
    inner = inner_blocks(head)
    return {s: block_mean(head.labels == LABELS[s], f, pad="edge") * inner for s in BRAIN_REGIONS}


def _region_gains(head: BaseHead, shares: dict[str, np.ndarray] | None = None) -> np.ndarray:
    """G[r, s]: mean over region r's voxels of region s's share of their field block.

    On the coarse field grid a region's divergence is diluted by its block neighbours;
    ``G @ a`` predicts each region's achieved log-volume change for prescribed changes ``a``.
    """
    f = _coarse_factor(head)
    shares = shares or region_shares(head)
    idx = np.indices(head.labels.shape) // f
    G = np.zeros((len(BRAIN_REGIONS),) * 2)
    for i, r in enumerate(BRAIN_REGIONS):
        sel = tuple(ix[head.labels == LABELS[r]] for ix in idx)
        for j, s in enumerate(BRAIN_REGIONS):
            G[i, j] = shares[s][sel].mean()
    return G


def _source_volumes_ml(head: BaseHead, shares: dict[str, np.ndarray]) -> dict[str, float]:
    """Volume (ml) of each region's source after masking to inner blocks."""
    block_ml = (head.voxel_mm * _coarse_factor(head)) ** 3 / 1000
    return {r: float(shares[r].sum(dtype=np.float64) * block_ml) for r in BRAIN_REGIONS}


@dataclass
class HeadFields:
    """Everything that depends only on the base head (and voxel size): built once per process.

    Velocity bases are in mm per unit of their parameter, on the cropped coarse field grid,
    already multiplied by their spatial weights; a subject's velocity is a linear combination.
    """

    f: int
    spacing: float
    box: tuple[slice, slice, slice]
    start: np.ndarray
    origin: np.ndarray
    shape: tuple[int, int, int]
    G: np.ndarray
    volumes_ml: dict[str, float]
    brain_basis: dict[str, np.ndarray]
    fat_basis: dict[str, np.ndarray]
    feature_basis: dict[str, np.ndarray]
    intracranial: np.ndarray
    wmness: np.ndarray
    lesion_box: tuple[slice, slice, slice]
    lesion_candidates: np.ndarray  #: flat indices (into the lesion box) where lesions may grow
    lesion_weight: np.ndarray  #: periventricular weight at those indices
    head_box: tuple[np.ndarray, np.ndarray]  #: fine-voxel bounding box of the head (padded), lo and hi
    image: np.ndarray  #: the base image with the ventricles filled with CSF intensity
    vent_box: tuple[slice, slice, slice]  #: box around the ventricles and their growth zone
    vent_flat: np.ndarray  #: flat indices (in the box) of tissue the ventricles may grow into, nearest first
    vent_dist_mm: np.ndarray  #: their distance from the ventricles, ascending
    vent_count: int  #: base-head ventricle voxels
    gains: dict[str, float] | None = None


_FIELDS: dict[tuple[str, float], HeadFields] = {}


def field_box(head: BaseHead) -> tuple[slice, slice, slice]:
    """Coarse-grid box around the head (4 coarse voxels of margin)."""
    key = (head.name, head.voxel_mm)
    if key in _FIELDS:
        return _FIELDS[key].box
    f = _coarse_factor(head)
    occupied = np.argwhere(block_mean(head.labels > 0, f, pad="edge") > 0)
    lo, hi = occupied.min(0) - 4, occupied.max(0) + 5
    full = [int(np.ceil(n / f)) for n in head.labels.shape]
    return tuple(slice(max(0, int(a)), min(n, int(b))) for a, b, n in zip(lo, hi, full))  # type: ignore[return-value]


def field_origin(head: BaseHead) -> np.ndarray:
    """World position (mm) of the first voxel of the cropped coarse field grid."""
    f = _coarse_factor(head)
    start = np.array([s.start for s in field_box(head)], float)
    return head.affine[:3, 3] + head.voxel_mm * ((f - 1) / 2 + f * start)


#: The brain ageing field fades to zero over this depth (mm) inside the intracranial cavity.
BRAIN_TAPER_MM = 6.0


def brain_weight(depth_in_cavity_mm: np.ndarray, spacing_mm: float) -> np.ndarray:
    """Weight of the brain ageing field: 0 on the outermost intracranial blocks (and outside),
    1 from :data:`BRAIN_TAPER_MM` deeper.

    The cavity's wall never moves, so brain ageing leaves the skull, scalp and face where
    they are. (It used to be 1 up to the outer skull and fade over 6 mm beyond: the skull
    and inner scalp then moved with the brain's ageing, and face-only images of AFNI and
    FSL, which hold skull and scalp, carried brain age with no face ageing planted.)
    ``depth_in_cavity_mm`` is the distance of a block centre to the nearest block outside
    the cavity (one spacing on the outermost blocks).
    """
    return smoothstep((depth_in_cavity_mm - spacing_mm) / BRAIN_TAPER_MM)


def face_weight(distance_outside_cranium_mm: np.ndarray) -> np.ndarray:
    """Weight of the face ageing fields: 0 inside the cranium and up to 2 mm outside it."""
    return smoothstep((distance_outside_cranium_mm - 2) / 8)


def head_fields(head: BaseHead) -> HeadFields:
    """The per-head cache (velocity bases, masks, calibration), built on first use."""
    key = (head.name, head.voxel_mm)
    hf = _FIELDS.get(key)
    if hf is not None:
        return hf
    f = _coarse_factor(head)
    spacing = head.voxel_mm * f
    box = field_box(head)
    start = np.array([s.start for s in box], np.float32)
    origin = field_origin(head)
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
    hf = HeadFields(
        f=f, spacing=spacing, box=box, start=start, origin=origin, shape=shape, G=_region_gains(head, shares),
        volumes_ml=_source_volumes_ml(head, shares),
        brain_basis=brain_basis, fat_basis=fat_basis, feature_basis=feature_basis,
        intracranial=intracranial, wmness=wmness, lesion_box=lbox, lesion_candidates=flat,
        lesion_weight=head.periventricular[lbox].ravel()[flat].astype(np.float32), head_box=head_box, image=image,
        vent_box=vbox, vent_flat=vflat[order], vent_dist_mm=vdist.ravel()[vflat][order].astype(np.float32), vent_count=int(vent.sum()),
    )
    _FIELDS[key] = hf
    hf.gains = calibration_gains(head, hf)
    return hf


def calibrate_brain_changes(head: BaseHead, target: dict[str, float], vols: dict[str, float] | None = None,
                            gains: dict[str, float] | None = None) -> dict[str, float]:
    """Prescribed changes whose effect meets ``target`` in GM, WM and hippocampus,
    with sulcal CSF balancing so no flux crosses the skull.

    Two corrections: the coarse grid's block dilution (``G``, from label shares), and the
    empirical ``gains`` (:func:`calibration_gains`) that make the achieved label volumes of a
    population-average subject meet the published 56 -> 96 changes.
    """
    hf = _FIELDS.get((head.name, head.voxel_mm))
    if hf is not None:
        G, vols = hf.G, vols or hf.volumes_ml
    else:
        shares = region_shares(head)
        G, vols = _region_gains(head, shares), vols or _source_volumes_ml(head, shares)
    if gains is None:
        gains = (hf.gains if hf is not None else None) or {}
    A = np.vstack([G[:3], [vols[s] for s in BRAIN_REGIONS]])
    b = np.array([gains.get(r, 1.0) * target[r] for r in BRAIN_REGIONS[:3]] + [0.0])
    a = np.linalg.solve(A, b)
    return {r: float(v) for r, v in zip(BRAIN_REGIONS, a)}


def brain_velocity_mm(hf: HeadFields, changes: dict[str, float]) -> np.ndarray:
    """Brain ageing velocity (mm, coarse box grid) for prescribed log-volume ``changes``."""
    v = np.zeros((3,) + hf.shape, np.float32)
    for r in BRAIN_REGIONS:
        if changes.get(r, 0.0):
            v += np.float32(changes[r]) * hf.brain_basis[r]
    return v


def anatomy_velocity(head: BaseHead, params: dict) -> tuple[np.ndarray, dict]:
    """Velocity (coarse voxels) of ageing + individual anatomy, and the applied changes."""
    hf = head_fields(head)
    b, fa, an = params["brain_ageing"], params["face_ageing"], params["anatomy"]
    target = ageing.brain_log_changes(params["age_years"], b["strength"], b["rate_multiplier"], b["reserve"])
    changes = calibrate_brain_changes(head, target)
    face = ageing.face_changes(params["age_years"], fa["strength"], fa["rate_multiplier"], fa["fat_offset"])
    v = brain_velocity_mm(hf, changes)
    for c in COMPARTMENTS:
        if face[c]:
            v += np.float32(face[c]) * hf.fat_basis[c]
    for name, basis in hf.feature_basis.items():
        if face[name]:
            v += np.float32(face[name]) * basis
    if an["deformation_mm"]:
        v += np.float32(an["deformation_mm"]) * smooth_random_field(hf.shape, 6, an["deformation_seed"])
    applied = {"brain_log_volume_change": changes, "brain_target_log_volume_change": target, "face": face}
    return v / np.float32(hf.spacing), applied


def _lesions(head: BaseHead, volume_ml: float, seed: int) -> np.ndarray:
    """Periventricular lesion mask of ``volume_ml`` grown from smooth noise."""
    hf = head_fields(head)
    out = np.zeros(head.labels.shape, bool)
    n = int(round(volume_ml * 1000 / head.voxel_mm**3))
    if n <= 0 or hf.lesion_candidates.size == 0:
        return out
    lbox_shape = tuple(s.stop - s.start for s in hf.lesion_box)
    noise = smooth_random_field(lbox_shape, 14, seed, components=1)[0].ravel()[hf.lesion_candidates]
    score = hf.lesion_weight * (1.0 + 0.5 * noise)
    n = min(n, int((score > 0).sum()))
    if n <= 0:
        return out
    thresh = np.partition(score, score.size - n)[score.size - n]
    chosen = hf.lesion_candidates[(score >= thresh) & (score > 0)]
    sub = np.zeros(lbox_shape, bool)
    sub.ravel()[chosen] = True
    out[hf.lesion_box] = sub
    return out


def ventricle_growth(age_years: float, strength: float, rate_multiplier: float, gain: float = 1.0) -> float:
    """Log-volume growth of the ventricles relative to the base head, which stands for age 56."""
    base = ageing.brain_log_change("ventricles", AGE_RANGE[0])
    return max(0.0, gain * strength * rate_multiplier * (ageing.brain_log_change("ventricles", age_years) - base))


def grow_ventricles(hf: HeadFields, image: np.ndarray, labels: np.ndarray, csf_intensity: float, log_growth: float) -> tuple[np.ndarray, np.ndarray, dict]:
    """Enlarge the ventricles by ``exp(log_growth)`` by CSF substitution: the nearest tissue
    (grey or white matter) within :data:`VENTRICLE_GROWTH_MAX_MM` of their outline becomes
    ventricle, with a partial-volume CSF intensity ramp one voxel wide at the new edge.

    Returns new image and labels (copies only when changed) and what was done.
    """
    n_extra = min(int(round(hf.vent_count * np.expm1(log_growth))), hf.vent_flat.size)
    if n_extra <= 0:
        return image, labels, {"grown_voxels": 0, "growth_mm": 0.0}
    d = float(hf.vent_dist_mm[n_extra - 1])
    vox = hf.spacing / hf.f
    image, labels = image.copy(), labels.copy()
    box_shape = tuple(sl.stop - sl.start for sl in hf.vent_box)
    ramp_n = int(np.searchsorted(hf.vent_dist_mm, d + 0.5 * vox, side="right"))
    sel = hf.vent_flat[:ramp_n]
    frac = np.clip((d + 0.5 * vox - hf.vent_dist_mm[:ramp_n]) / vox, 0.0, 1.0).astype(np.float32)
    sub_img = image[hf.vent_box].copy().reshape(-1)
    sub_img[sel] = sub_img[sel] * (1 - frac) + np.minimum(sub_img[sel], np.float32(csf_intensity)) * frac
    image[hf.vent_box] = sub_img.reshape(box_shape)
    sub_lab = labels[hf.vent_box].copy().reshape(-1)
    sub_lab[hf.vent_flat[:n_extra]] = LABELS["ventricles"]
    labels[hf.vent_box] = sub_lab.reshape(box_shape)
    return image, labels, {"grown_voxels": n_extra, "growth_mm": d}


def _upsample_linear(coarse: np.ndarray, step: int, shape: tuple[int, int, int]) -> np.ndarray:
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
        coords = _upsample_linear(coords, step, out_shape)
    return coords.reshape(3, -1)


def _pull(hf: HeadFields, image: np.ndarray, labels: np.ndarray, coords: np.ndarray, out_shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
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


def output_to_coarse(head: BaseHead, hf: HeadFields, rotation_deg, translation_mm, scale, out_affine: np.ndarray) -> np.ndarray:
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


#: The calibration measures its volumes in posed images (as every subject is posed), summed
#: over these poses: label counts of small structures under resampling differ from the base
#: grid's (at 3 mm by much) and from pose to pose (hippocampus SD 2-3 %).
CALIBRATION_POSES = (
    {"rotation_deg": (7.0, -4.0, 5.0), "translation_voxels": (0.31, -0.43, 0.22)},
    {"rotation_deg": (-9.0, 6.0, -3.0), "translation_voxels": (-0.27, 0.18, 0.45)},
    {"rotation_deg": (3.0, 10.0, -8.0), "translation_voxels": (0.47, 0.36, -0.12)},
)


def _pull_labels(head: BaseHead, hf: HeadFields, labels: np.ndarray, inverse: np.ndarray, pose: dict) -> np.ndarray:
    """Labels pulled through ``inverse`` onto the template grid in a calibration pose."""
    shift = np.asarray(pose["translation_voxels"]) * head.voxel_mm
    to_coarse = output_to_coarse(head, hf, pose["rotation_deg"], shift, (1.0, 1.0, 1.0), head.affine)
    coords = template_coordinates(hf, inverse, to_coarse, labels.shape)
    return _pull(hf, head.image, labels, coords, labels.shape)[1]


def _population_volumes(head: BaseHead, hf: HeadFields, age: float, gains: dict[str, float]) -> dict[str, float]:
    target = ageing.brain_log_changes(age, 1.0, 1.0, 0.0)
    changes = calibrate_brain_changes(head, target, gains=gains)
    inverse = exp_velocity(-brain_velocity_mm(hf, changes) / np.float32(hf.spacing))
    _, labels, _ = grow_ventricles(hf, hf.image, head.labels, head.stats["csf_mean"], ventricle_growth(age, 1.0, 1.0, gains["ventricles"]))
    counts = sum(np.bincount(_pull_labels(head, hf, labels, inverse, pose).ravel(), minlength=256) for pose in CALIBRATION_POSES)
    return {r: float(counts[LABELS[r]]) for r in AGED_REGIONS}


def _gains_file(head: BaseHead):
    from defacebench.simulate.heads import CACHE_VERSION, cache_dir

    return cache_dir() / f"v{CACHE_VERSION}" / f"{head.name}_{head.voxel_mm:g}mm_gains_c{CALIBRATION_VERSION}.json"


def calibration_gains(head: BaseHead, hf: HeadFields | None = None) -> dict[str, float]:
    """Empirical gains on the prescribed changes of GM, WM, hippocampus and ventricles.

    A population-average subject (rate multiplier 1, no reserve, no individual anatomy) is aged
    from 56 to 96 and resampled in the :data:`CALIBRATION_POSES`; each gain is multiplied by the ratio of the
    published log-volume change to the achieved one (label counts after ventricle growth and
    deformation), :data:`CALIBRATION_ITERATIONS` times. Thin structures (cortex a voxel or two
    thick) keep only part of a 3 mm field's divergence in their label counts, white matter also
    loses what the ventricles grow into; the gains put it back. The ventricle gain scales the
    log growth of :func:`grow_ventricles`. Cached in memory and beside the base head in the
    user cache (a JSON with the iteration history).
    """
    import json

    from defacebench.io.atomic import write_text_atomic

    hf = hf or head_fields(head)
    if hf.gains is not None:
        return hf.gains
    path = _gains_file(head)
    try:
        return {k: float(v) for k, v in json.loads(path.read_text())["gains"].items()}
    except (OSError, ValueError, KeyError):
        pass
    target = {r: np.log1p(ageing.BRAIN_CHANGE_56_96[r][0]) for r in AGED_REGIONS}
    gains = {r: 1.0 for r in AGED_REGIONS}
    history = []
    for _ in range(CALIBRATION_ITERATIONS):
        young = _population_volumes(head, hf, AGE_RANGE[0], gains)
        old = _population_volumes(head, hf, AGE_RANGE[1], gains)
        achieved = {r: float(np.log(old[r] / young[r])) for r in AGED_REGIONS}
        history.append({"gains": dict(gains), "achieved_log_change": achieved})
        for r in AGED_REGIONS:
            ratio = target[r] / achieved[r] if achieved[r] * target[r] > 0 else 2.0
            gains[r] = float(np.clip(gains[r] * ratio, 0.25, 6.0))
    try:
        record = {"gains": gains, "target_log_change": target, "history": history}
        write_text_atomic(path, json.dumps(record, indent=1) + "\n")
    except OSError:  # read-only cache: keep the in-memory result
        pass
    return gains


def simulate_subject(head: BaseHead, params: dict, check_jacobian: bool = False, partial_volumes: tuple[str, ...] = ()) -> SimulatedSubject:
    """Deterministic twin of :func:`sample_subject`: build image, labels and ground truth.

    ``check_jacobian`` computes the smallest Jacobian determinant of the deformation
    (``min_jacobian``; nan when not checked). ``partial_volumes`` names labels (or
    ``"intracranial"``) whose volume is also measured by pulling their indicator with linear
    interpolation (``pv_<name>_ml``: less discretisation noise than label counts).
    """
    hf = head_fields(head)
    vox = head.voxel_mm
    b = params["brain_ageing"]
    age = params["age_years"]

    # intensity ageing in the template: grey/white contrast, lesions
    gm, wm = head.stats["gm_mean"], head.stats["wm_mean"]
    loss = ageing.contrast_loss(age, b["strength"])
    image = hf.image - np.float32(loss * (wm - gm)) * hf.wmness
    lesion_ml = ageing.lesion_volume_ml(age, b["strength"], b["rate_multiplier"])
    lesion = _lesions(head, lesion_ml, b["lesion_seed"])
    labels = head.labels
    if lesion.any():
        image[lesion] = np.float32(gm + 0.1 * (wm - gm))
        labels = labels.copy()
        labels[lesion] = LABELS["wm_lesion"]
    vent_log = ventricle_growth(age, b["strength"], b["rate_multiplier"], (hf.gains or {}).get("ventricles", 1.0))
    image, labels, grown = grow_ventricles(hf, image, labels, head.stats["csf_mean"], vent_log)

    velocity, applied = anatomy_velocity(head, params)
    inverse = exp_velocity(-velocity)
    min_jac = _min_jacobian(inverse) if check_jacobian else float("nan")

    # output grid: the template grid minus the neck cut
    cut = int(round(params["fov"]["neck_cut_mm"] / vox))
    out_shape = (head.image.shape[0], head.image.shape[1], head.image.shape[2] - cut)
    out_affine = head.affine.copy()
    out_affine[2, 3] += cut * vox

    centre = np.array(head.landmarks["brain_centre"])
    scale = np.array(params["anatomy"]["head_scale"])
    to_coarse = output_to_coarse(head, hf, params["pose"]["rotation_deg"], params["pose"]["translation_mm"], scale, out_affine)
    coords = template_coordinates(hf, inverse, to_coarse, out_shape)
    out_image, out_labels = _pull(hf, image, labels, coords, out_shape)
    pv = {}
    for name in partial_volumes:
        ind = hf.intracranial if name == "intracranial" else labels == LABELS[name]
        pulled = ndi.map_coordinates(ind.astype(np.float32), coords, order=1, mode="constant", cval=0.0)
        pv[f"pv_{name}_ml"] = float(pulled.sum(dtype=np.float64) * vox**3 / 1000)
    del coords

    bias = acquisition.bias_field(out_shape, params["bias"]["span"], params["bias"]["coefficients"])
    p = params["intensity"]
    out_image = acquisition.apply_intensity(out_image, bias, p["scale"], p["gamma"], p["noise_fraction_wm"], p["noise_seed"], WM_INTENSITY)

    truth = measure(out_labels, vox, float(np.prod(scale)))
    truth.update(pv)
    truth.update(landmark_measures(head, velocity, hf.spacing, hf.f, scale, centre))
    truth["wm_lesion_target_ml"] = lesion_ml
    truth["gm_wm_contrast_loss"] = loss
    truth["frame"] = {"brain_centre_mm": [float(c) for c in centre]}  # pose and head scale act about this point
    applied["brain_calibration_gains"] = dict(hf.gains or {})
    applied["ventricle_log_growth_from_56"] = vent_log
    applied["ventricle_growth"] = grown
    truth["applied"] = applied
    return SimulatedSubject(out_image, out_labels, out_affine, truth, min_jac)


def _min_jacobian(disp: np.ndarray) -> float:
    from defacebench.simulate.fields import jacobian_determinant

    return float(jacobian_determinant(disp).min())


#: Face ground-truth measures (landmark distances).
FACE_MEASURES = ("cheek_fat", "nose_length", "ear_length", "mandible_length", "lower_face_height")


def measure(labels: np.ndarray, voxel_mm: float, head_volume_scale: float = 1.0) -> dict:
    """Regional volumes (ml) from a label image, native and divided by the head-size factor.

    ``<name>_ml`` counts the subject's native labels; ``<name>_norm_ml`` divides by
    ``head_volume_scale`` (the product of the subject's head scales), i.e. the volume at the
    base head's size: what ageing changed, without the individual's head size.
    """
    counts = np.bincount(labels.ravel(), minlength=256)
    ml = voxel_mm**3 / 1000
    out = {f"{name}_ml": float(counts[v] * ml) for name, v in LABELS.items()}
    out["brain_ml"] = float(sum(counts[LABELS[k]] for k in BRAIN_TISSUE) * ml)
    out["intracranial_ml"] = float(sum(counts[LABELS[k]] for k in INTRACRANIAL) * ml)
    for key in list(out):
        out[key.removesuffix("_ml") + "_norm_ml"] = out[key] / head_volume_scale
    return out


def landmark_measures(head: BaseHead, velocity: np.ndarray, spacing: float, f: int, scale: np.ndarray, centre: np.ndarray) -> dict:
    """Face lengths between landmarks carried by the forward deformation.

    ``<measure>_mm`` is in the subject's native mm (head scale applied); ``<measure>_norm_mm``
    is the same distance before the head scale, i.e. at the base head's size: size-invariant,
    it changes only with face ageing and the individual anatomy deformation.
    """
    names = list(head.landmarks)
    pts = np.array([head.landmarks[n] for n in names], float)
    origin = field_origin(head)
    anat = integrate_points(velocity, (pts - origin) / spacing) * spacing + origin
    native = (anat - centre) * scale + centre
    out = {}
    for suffix, moved in (("_mm", native), ("_norm_mm", anat)):
        p = dict(zip(names, moved))
        dist = lambda a, b: float(np.linalg.norm(p[a] - p[b]))  # noqa: E731
        sides = [s for s in ("left", "right") if f"ear_top_{s}" in p]
        values = {
            "cheek_fat": float(np.mean([dist(f"cheek_skin_{s}", f"cheek_deep_{s}") for s in ("left", "right")])),
            "nose_length": dist("nasion", "pronasale"),
            "ear_length": float(np.mean([dist(f"ear_top_{s}", f"ear_bottom_{s}") for s in sides])) if sides else float("nan"),
            "mandible_length": float(np.mean([dist(f"gonion_{s}", "pogonion") for s in ("left", "right")])),
            "lower_face_height": dist("subnasale", "menton"),
        }
        out.update({k + suffix: v for k, v in values.items()})
    return out
