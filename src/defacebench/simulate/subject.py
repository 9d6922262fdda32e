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
from defacebench.simulate.fields import block_mean, exp_velocity, integrate_points, smooth_random_field, smoothstep
from defacebench.simulate.heads import WM_INTENSITY, BaseHead
from defacebench.simulate.labels import BRAIN_TISSUE, INTRACRANIAL, LABELS

#: Deformation fields live on a grid of this spacing (mm) or the voxel size if coarser.
FIELD_MM = 3.0
AGE_RANGE = (56.0, 96.0)
AGE_MEAN, AGE_SD = 74.0, 7.0
MALE_FRACTION = 0.46
ICV_LOG_SD = 0.07
MALE_ICV_LOG_OFFSET = 0.11


def sample_age(rng: np.random.Generator) -> float:
    """ADNI-like age: normal(74, 7) truncated to 56-96 years."""
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
) -> dict:
    """Draw every random parameter of one subject (JSON-ready)."""
    age = sample_age(rng) if age_years is None else float(age_years)
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
            "fat_offset": float(rng.normal(0, 0.03)),
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
    min_jacobian: float  #: smallest Jacobian determinant of the anatomy deformation


def _coarse_factor(head: BaseHead) -> int:
    return max(1, int(round(FIELD_MM / head.voxel_mm)))


BRAIN_REGIONS = ("gm", "wm", "hippocampus", "ventricles", "csf")


def _region_gains(head: BaseHead) -> np.ndarray:
    """G[r, s]: mean over region r's voxels of region s's share of their field block.

    On the coarse field grid a region's divergence is diluted by its block neighbours;
    ``G @ a`` predicts each region's achieved log-volume change for prescribed changes ``a``.
    """
    f = _coarse_factor(head)
    shares = [block_mean(head.labels == LABELS[s], f) for s in BRAIN_REGIONS]
    idx = np.indices(head.labels.shape) // f
    G = np.zeros((len(BRAIN_REGIONS),) * 2)
    for i, r in enumerate(BRAIN_REGIONS):
        sel = tuple(ix[head.labels == LABELS[r]] for ix in idx)
        for j in range(len(BRAIN_REGIONS)):
            G[i, j] = shares[j][sel].mean()
    return G


def calibrate_brain_changes(head: BaseHead, target: dict[str, float], vols: dict[str, float]) -> dict[str, float]:
    """Prescribed changes whose block-diluted effect meets ``target`` in GM, WM, hippocampus and
    ventricles, with sulcal CSF balancing so no flux crosses the skull."""
    key = f"_gains_{head.name}_{head.voxel_mm}"
    G = _CACHE.get(key)
    if G is None:
        G = _CACHE[key] = _region_gains(head)
    A = np.vstack([G[:4], [vols[s] for s in BRAIN_REGIONS]])
    b = np.array([target[r] for r in BRAIN_REGIONS[:4]] + [0.0])
    a = np.linalg.solve(A, b)
    return {r: float(v) for r, v in zip(BRAIN_REGIONS, a)}


_CACHE: dict[str, np.ndarray] = {}


def field_box(head: BaseHead) -> tuple[slice, slice, slice]:
    """Coarse-grid box around the head (4 coarse voxels of margin)."""
    f = _coarse_factor(head)
    occupied = np.argwhere(block_mean(head.labels > 0, f) > 0)
    lo, hi = occupied.min(0) - 4, occupied.max(0) + 5
    full = [int(np.ceil(n / f)) for n in head.labels.shape]
    return tuple(slice(max(0, int(a)), min(n, int(b))) for a, b, n in zip(lo, hi, full))  # type: ignore[return-value]


def field_origin(head: BaseHead) -> np.ndarray:
    """World position (mm) of the first voxel of the cropped coarse field grid."""
    f = _coarse_factor(head)
    start = np.array([s.start for s in field_box(head)], float)
    return head.affine[:3, 3] + head.voxel_mm * ((f - 1) / 2 + f * start)


def anatomy_velocity(head: BaseHead, params: dict) -> tuple[np.ndarray, dict]:
    """Velocity (coarse voxels) of ageing + individual anatomy, and the applied changes."""
    f = _coarse_factor(head)
    spacing = head.voxel_mm * f
    b, fa, an = params["brain_ageing"], params["face_ageing"], params["anatomy"]
    vols = {k: head.stats[f"volume_{k}_ml"] for k in ("gm", "wm", "hippocampus", "ventricles", "csf")}
    changes = ageing.brain_log_changes(params["age_years"], b["strength"], b["rate_multiplier"], b["reserve"])
    changes = calibrate_brain_changes(head, changes, vols)
    face = ageing.face_changes(params["age_years"], fa["strength"], fa["rate_multiplier"], fa["fat_offset"])

    labels_c = head.labels
    intracranial = np.isin(labels_c, [LABELS[k] for k in INTRACRANIAL])
    cranium = block_mean(intracranial | (labels_c == LABELS["skull"]), f) > 0.01
    src_b = block_mean(ageing.brain_source(labels_c, changes), f)
    src_f = block_mean(ageing.compartment_source(head.compartments, face), f)
    # work inside the head's bounding box (plus 4 coarse voxels); the field is ~0 beyond it
    box = field_box(head)
    cranium, src_b, src_f = cranium[box], src_b[box], src_f[box]
    shape = src_b.shape
    out_cran = ndi.distance_transform_edt(~cranium) * spacing
    w_brain = 1 - smoothstep((out_cran - 4) / 16)
    w_face = smoothstep((out_cran - 2) / 8)
    v = ageing.brain_velocity(src_b, spacing) * w_brain
    v += ageing.brain_velocity(src_f, spacing) * w_face
    origin = field_origin(head)
    v += ageing.feature_velocity(shape, origin, spacing, head.landmarks, face) * w_face
    v += an["deformation_mm"] * smooth_random_field(shape, 6, an["deformation_seed"])
    applied = {"brain_log_volume_change": changes, "face": face}
    return v / spacing, applied


def _lesions(head: BaseHead, volume_ml: float, seed: int) -> np.ndarray:
    """Periventricular lesion mask of ``volume_ml`` grown from smooth noise."""
    n = int(round(volume_ml * 1000 / head.voxel_mm**3))
    if n <= 0:
        return np.zeros(head.labels.shape, bool)
    noise = smooth_random_field(head.labels.shape, 14, seed, components=1)[0]
    score = head.periventricular * (1.0 + 0.5 * noise)
    flat = score.ravel()
    n = min(n, int((flat > 0).sum()))
    thresh = np.partition(flat, flat.size - n)[flat.size - n]
    return (score >= thresh) & (score > 0)


def simulate_subject(head: BaseHead, params: dict) -> SimulatedSubject:
    """Deterministic twin of :func:`sample_subject`: build image, labels and ground truth."""
    f = _coarse_factor(head)
    spacing = head.voxel_mm * f
    vox = head.voxel_mm
    b = params["brain_ageing"]
    age = params["age_years"]

    # intensity ageing in the template: grey/white contrast, lesions
    image = head.image.copy()
    labels = head.labels.copy()
    gm, wm = head.stats["gm_mean"], head.stats["wm_mean"]
    loss = ageing.contrast_loss(age, b["strength"])
    brain = np.isin(labels, [LABELS[k] for k in INTRACRANIAL])
    wmness = np.clip((image - gm) / (wm - gm), 0, 1.5) * brain
    image -= np.float32(loss * (wm - gm)) * wmness
    lesion_ml = ageing.lesion_volume_ml(age, b["strength"], b["rate_multiplier"])
    lesion = _lesions(head, lesion_ml, b["lesion_seed"])
    image[lesion] = np.float32(gm + 0.1 * (wm - gm)) + 0.0 * image[lesion]
    labels[lesion] = LABELS["wm_lesion"]

    velocity, applied = anatomy_velocity(head, params)
    inverse = exp_velocity(-velocity)
    min_jac = float(_min_jacobian(inverse))

    # output grid: the template grid minus the neck cut
    cut = int(round(params["fov"]["neck_cut_mm"] / vox))
    out_shape = (head.image.shape[0], head.image.shape[1], head.image.shape[2] - cut)
    out_affine = head.affine.copy()
    out_affine[2, 3] += cut * vox

    centre = np.array(head.landmarks["brain_centre"])
    rot = acquisition.rotation_matrix(params["pose"]["rotation_deg"])
    shift = np.array(params["pose"]["translation_mm"])
    scale = np.array(params["anatomy"]["head_scale"])
    # output voxel -> template coarse voxel (affine part): y -> R^T (y - c - t) / s + c
    to_anat = np.eye(4)
    to_anat[:3, :3] = np.diag(1 / scale) @ rot.T
    to_anat[:3, 3] = centre - to_anat[:3, :3] @ (centre + shift)
    coarse_from_world = np.eye(4)
    coarse_from_world[:3, :3] /= spacing
    coarse_from_world[:3, 3] = -field_origin(head) / spacing
    m = (coarse_from_world @ to_anat @ out_affine).astype(np.float32)
    idx = np.indices(out_shape, dtype=np.float32).reshape(3, -1)
    coords = m[:3, :3] @ idx + m[:3, 3:4]
    del idx
    for i in range(3):  # pull through the inverse deformation (coarse voxels)
        coords[i] += ndi.map_coordinates(inverse[i], coords, order=1, mode="nearest")
    start = np.array([sl.start for sl in field_box(head)], np.float32)
    coords += start[:, None]  # cropped coarse voxel -> full coarse voxel -> fine template voxel
    coords *= np.float32(f)
    coords += np.float32((f - 1) / 2)
    out_image = ndi.map_coordinates(image, coords, order=1, mode="constant", cval=0.0).reshape(out_shape)
    out_labels = ndi.map_coordinates(labels, coords, order=0, mode="constant", cval=0).reshape(out_shape).astype(np.uint8)
    del coords

    bias = acquisition.bias_field(out_shape, params["bias"]["span"], params["bias"]["coefficients"])
    p = params["intensity"]
    out_image = acquisition.apply_intensity(out_image, bias, p["scale"], p["gamma"], p["noise_fraction_wm"], p["noise_seed"], WM_INTENSITY)

    truth = measure(out_labels, vox)
    truth.update(landmark_measures(head, velocity, spacing, f, scale, centre))
    truth["wm_lesion_target_ml"] = lesion_ml
    truth["gm_wm_contrast_loss"] = loss
    truth["applied"] = applied
    return SimulatedSubject(out_image, out_labels, out_affine, truth, min_jac)


def _min_jacobian(disp: np.ndarray) -> float:
    from defacebench.simulate.fields import jacobian_determinant

    return float(jacobian_determinant(disp).min())


def measure(labels: np.ndarray, voxel_mm: float) -> dict:
    """Regional volumes (ml) from a label image."""
    counts = np.bincount(labels.ravel(), minlength=256)
    ml = voxel_mm**3 / 1000
    out = {f"{name}_ml": float(counts[v] * ml) for name, v in LABELS.items()}
    out["brain_ml"] = float(sum(counts[LABELS[k]] for k in BRAIN_TISSUE) * ml)
    out["intracranial_ml"] = float(sum(counts[LABELS[k]] for k in INTRACRANIAL) * ml)
    return out


def landmark_measures(head: BaseHead, velocity: np.ndarray, spacing: float, f: int, scale: np.ndarray, centre: np.ndarray) -> dict:
    """Face lengths (mm) between landmarks carried by the forward deformation and head size."""
    names = list(head.landmarks)
    pts = np.array([head.landmarks[n] for n in names], float)
    origin = field_origin(head)
    moved = integrate_points(velocity, (pts - origin) / spacing) * spacing + origin
    moved = (moved - centre) * scale + centre
    p = dict(zip(names, moved))
    dist = lambda a, b: float(np.linalg.norm(p[a] - p[b]))  # noqa: E731
    sides = [s for s in ("left", "right") if f"ear_top_{s}" in p]
    return {
        "cheek_fat_mm": float(np.mean([dist(f"cheek_skin_{s}", f"cheek_deep_{s}") for s in ("left", "right")])),
        "nose_length_mm": dist("nasion", "pronasale"),
        "ear_length_mm": float(np.mean([dist(f"ear_top_{s}", f"ear_bottom_{s}") for s in sides])) if sides else float("nan"),
        "mandible_length_mm": float(np.mean([dist(f"gonion_{s}", "pogonion") for s in ("left", "right")])),
        "lower_face_height_mm": dist("subnasale", "menton"),
    }
