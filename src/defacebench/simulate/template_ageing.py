"""Ageing and individual anatomy applied to a base head in its own (template) space.

A subject is built in the base head's frame before it is posed: the brain ageing velocity
for calibrated log-volume changes, the face ageing and random anatomy velocities added to it
(:func:`anatomy_velocity`), periventricular lesions (:func:`lesions`), and ventricle growth
by CSF substitution (:func:`grow_ventricles`). Everything here is deterministic given the
subject's parameters, the head's fields and the calibration gains.
"""

from __future__ import annotations

import numpy as np

from defacebench.simulate import ageing
from defacebench.simulate.fields import smooth_random_field
from defacebench.simulate.headfields import BRAIN_REGIONS, VENTRICLE_GROWTH_MAX_MM, HeadFields
from defacebench.simulate.heads import BaseHead
from defacebench.simulate.identity import identity_velocity
from defacebench.simulate.labels import COMPARTMENTS, LABELS

__all__ = ["VENTRICLE_GROWTH_MAX_MM", "anatomy_velocity", "brain_velocity_mm", "calibrate_brain_changes",
           "grow_ventricles", "lesions", "ventricle_growth"]


def calibrate_brain_changes(hf: HeadFields, target: dict[str, float], gains: dict[str, float]) -> dict[str, float]:
    """Prescribed changes whose effect meets ``target`` in GM, WM and hippocampus,
    with sulcal CSF balancing so no flux crosses the skull.

    Two corrections: the coarse grid's block dilution (``hf.G``, from label shares), and the
    empirical ``gains`` (:func:`defacebench.simulate.calibration.calibration_gains`; 1 for a
    region without one) that make the achieved label volumes of a population-average subject
    meet the published 56 -> 96 changes.
    """
    A = np.vstack([hf.G[:3], [hf.volumes_ml[s] for s in BRAIN_REGIONS]])
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


def anatomy_velocity(hf: HeadFields, params: dict, gains: dict[str, float]) -> tuple[np.ndarray, dict]:
    """Velocity (coarse voxels) of ageing + individual anatomy + identity, and the applied changes.

    ``params`` is a :func:`defacebench.simulate.sampling.sample_subject` dict; ``gains`` the
    head's calibration gains. The identity's regional brain offsets join the ageing targets
    (constant in age, like the reserve); its shape velocity is added to the ageing velocity.
    """
    b, fa, an = params["brain_ageing"], params["face_ageing"], params["anatomy"]
    identity = params.get("identity")
    target = ageing.brain_log_changes(params["age_years"], b["strength"], b["rate_multiplier"], b["reserve"])
    if identity and identity.get("scale"):
        for r in BRAIN_REGIONS[:3]:
            target[r] += identity["brain_log_offset"][r]
    changes = calibrate_brain_changes(hf, target, gains)
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
    own = identity_velocity(identity, hf.identity_basis, hf.feature_basis, hf.fat_basis, hf.shape)
    if own is not None:
        v += own
    applied = {"brain_log_volume_change": changes, "brain_target_log_volume_change": target, "face": face}
    return v / np.float32(hf.spacing), applied


def lesions(head: BaseHead, hf: HeadFields, volume_ml: float, seed: int) -> np.ndarray:
    """Periventricular lesion mask of ``volume_ml`` grown from smooth noise (seeded)."""
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


def ventricle_growth(age_years: float, strength: float, rate_multiplier: float, gain: float = 1.0, offset: float = 0.0) -> float:
    """Log-volume growth of the ventricles relative to the base head, which stands for age 56.

    ``offset`` is the person's own log-volume offset (identity, not age); ventricles only grow
    (by substitution), so the total is clipped at 0: at the base head's age a negative offset
    leaves the base ventricles.
    """
    base = ageing.brain_log_change("ventricles", ageing.AGE_RANGE[0])
    return max(0.0, gain * strength * rate_multiplier * (ageing.brain_log_change("ventricles", age_years) - base) + offset)


def grow_ventricles(hf: HeadFields, image: np.ndarray, labels: np.ndarray, csf_intensity: float, log_growth: float) -> tuple[np.ndarray, np.ndarray, dict]:
    """Enlarge the ventricles by ``exp(log_growth)`` by CSF substitution: the nearest tissue
    (grey or white matter) within :data:`VENTRICLE_GROWTH_MAX_MM` of their outline becomes
    ventricle, with a partial-volume CSF intensity ramp one voxel wide at the new edge.

    The ventricles are slits a voxel or two wide; a smooth field that widened them enough
    would blow them up into balloons, so they are grown, not deformed.
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
