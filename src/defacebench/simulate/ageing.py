"""Brain and face ageing: published rates -> per-region log-volume changes -> velocity fields.

Brain (volumes relative to age 60, log-volume rate ``r(a) = r60 * exp(k (a - 60))``, so the
log-volume change is ``L(a) = r60 / k * (exp(k (a - 60)) - 1)``); ``r60`` is set so that
``L(96) - L(56)`` hits the middle of the published 56-96 change:

=============  =====================  ======
region         change 56 -> 96        k/yr
=============  =====================  ======
grey matter    -14.5 %                0.015
white matter   -12 %                  0.02
hippocampus    -27 %                  0.015
ventricles     x 2.85                 0.015
=============  =====================  ======

Grey matter, white matter and hippocampus shrink by a deformation; the ventricles grow by CSF
substitution into the nearest tissue
(:func:`defacebench.simulate.template_ageing.grow_ventricles`). Intracranial volume is
fixed: sulcal CSF takes the log-volume the other regions lose, so the source integrates to
zero inside the skull and no flux crosses it (sources live only in coarse blocks wholly
inside the intracranial labels). :func:`defacebench.simulate.calibration.calibration_gains`
scales the prescriptions so that the *achieved* label volumes of an average subject meet the
table at each voxel size. Face (linear in age, relative to 60): subcutaneous fat pads (cheek,
infraorbital, temporal) thin about 2.4 mm over 40 years, ears lengthen 0.22 mm/yr, noses
0.13 mm/yr, the mandible shrinks 0.12 %/yr (length and height); the face field is zero inside
the skull.
"""

from __future__ import annotations

import math

import numpy as np

from defacebench.simulate.fields import poisson_velocity, smoothstep

#: Ages (years) the rates are calibrated on: the base heads stand for 56, the calibration
#: ages an average subject to 96, and subjects are sampled within.
AGE_RANGE = (56.0, 96.0)
#: region -> (total fractional volume change from 56 to 96, k per year)
BRAIN_CHANGE_56_96: dict[str, tuple[float, float]] = {
    "gm": (-0.145, 0.015),
    "wm": (-0.12, 0.02),
    "hippocampus": (-0.27, 0.015),
    "ventricles": (1.85, 0.015),
}
#: lesion volume (ml) at 60 and its exponential growth per year
LESION_ML_AT_60, LESION_GROWTH_PER_YEAR = 1.0, 0.07
#: relative grey/white contrast lost per decade after 60
CONTRAST_LOSS_PER_DECADE = 0.03
#: fat-pad log-volume change per year: 12 mm pads thinning 2.4 mm over 40 years
FAT_LOG_RATE_PER_YEAR = math.log((12.0 - 2.4) / 12.0) / 40.0
EAR_MM_PER_YEAR, NOSE_MM_PER_YEAR = 0.22, 0.13
MANDIBLE_LOG_SCALE_PER_YEAR = -0.0012


def brain_log_change(region: str, age_years: float) -> float:
    """Population log-volume change of a brain region at ``age_years``, relative to age 60."""
    total, k = BRAIN_CHANGE_56_96[region]
    r60 = math.log1p(total) * k / (math.exp(k * 36) - math.exp(-k * 4))
    return r60 / k * (math.exp(k * (age_years - 60)) - 1)


def brain_log_changes(age_years: float, strength: float, rate_multiplier: float, reserve: float) -> dict[str, float]:
    """Per-region log-volume changes of one subject (before the CSF balance)."""
    out = {r: strength * rate_multiplier * brain_log_change(r, age_years) for r in BRAIN_CHANGE_56_96}
    for r in ("gm", "wm", "hippocampus"):
        out[r] += reserve
    return out


def lesion_volume_ml(age_years: float, strength: float, rate_multiplier: float) -> float:
    """Periventricular white-matter lesion volume (ml), exponential in age."""
    return strength * rate_multiplier * LESION_ML_AT_60 * math.exp(LESION_GROWTH_PER_YEAR * (age_years - 60))


def contrast_loss(age_years: float, strength: float) -> float:
    """Fraction of the grey/white intensity difference lost relative to age 60."""
    return strength * CONTRAST_LOSS_PER_DECADE * (age_years - 60) / 10


def face_changes(age_years: float, strength: float, rate_multiplier: float, fat_offset: float) -> dict[str, float]:
    """Face ageing of one subject: fat-pad log-volume changes, elongations (mm), mandible log-scale."""
    years = strength * rate_multiplier * (age_years - 60)
    fat = FAT_LOG_RATE_PER_YEAR * years + fat_offset
    return {
        "cheek_fat": fat, "infraorbital_fat": fat, "temporal_fat": fat,
        "nose_elongation_mm": NOSE_MM_PER_YEAR * years,
        "ear_elongation_mm": EAR_MM_PER_YEAR * years,
        "mandible_log_scale": MANDIBLE_LOG_SCALE_PER_YEAR * years,
    }


def brain_velocity(labels_coarse_source: np.ndarray, spacing_mm: float) -> np.ndarray:
    """Velocity (mm) whose divergence is the (coarse) brain source."""
    return poisson_velocity(labels_coarse_source, spacing_mm)


def _points_grid(shape: tuple[int, int, int], origin: np.ndarray, spacing: float) -> list[np.ndarray]:
    return [origin[i] + spacing * np.arange(shape[i], dtype=np.float32).reshape([-1 if j == i else 1 for j in range(3)]) for i in range(3)]


def feature_velocity(shape: tuple[int, int, int], origin: np.ndarray, spacing: float, landmarks: dict[str, list[float]], face: dict[str, float]) -> np.ndarray:
    """Velocity (mm) that lengthens nose and ears and shrinks the mandible by ``face``'s amounts.

    Stationary and smooth: nose tip region moves along nasion->tip, ear lobes move down,
    the lower face scales towards the temporomandibular region.
    """
    x, y, z = _points_grid(shape, origin, spacing)
    v = np.zeros((3,) + shape, np.float32)
    nasion, tip = np.array(landmarks["nasion"]), np.array(landmarks["pronasale"])
    axis = tip - nasion
    length = float(np.linalg.norm(axis))
    e = axis / length
    s = ((x - nasion[0]) * e[0] + (y - nasion[1]) * e[1] + (z - nasion[2]) * e[2]) / length
    perp2 = (x - nasion[0]) ** 2 + (y - nasion[1]) ** 2 + (z - nasion[2]) ** 2 - (s * length) ** 2
    w = smoothstep(s) * np.exp(-np.maximum(perp2, 0) / (2 * 12.0**2)) * (1 - smoothstep((s - 1.6) / 0.6))
    for i in range(3):
        v[i] += face["nose_elongation_mm"] * e[i] * w
    for side in ("left", "right"):
        if f"ear_top_{side}" not in landmarks:
            continue
        top, bot = np.array(landmarks[f"ear_top_{side}"]), np.array(landmarks[f"ear_bottom_{side}"])
        centre = (top + bot) / 2
        ramp = smoothstep((top[2] - z) / max(top[2] - bot[2], 1.0)) * (1 - smoothstep((bot[2] - 15 - z) / 15))
        env = np.exp(-((x - centre[0]) ** 2) / (2 * 12.0**2) - ((y - centre[1]) ** 2) / (2 * 15.0**2))
        v[2] -= face["ear_elongation_mm"] * ramp * env
    gl, gr = np.array(landmarks["gonion_left"]), np.array(landmarks["gonion_right"])
    anchor = (gl + gr) / 2
    anchor[2] = landmarks["subnasale"][2]
    w = smoothstep((landmarks["subnasale"][2] - 5 - z) / 10) * smoothstep((y - (anchor[1] - 10)) / 15)
    for i, c in enumerate((x, y, z)):
        v[i] += face["mandible_log_scale"] * (c - anchor[i]) * w
    return v
