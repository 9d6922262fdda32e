"""Calibration of the brain ageing against achieved label volumes, cached per head on disk.

Thin structures (cortex a voxel or two thick) keep only part of a 3 mm field's divergence in
their label counts, and white matter also loses what the ventricles grow into, so the
prescribed log-volume changes are scaled by empirical gains until a population-average
subject, aged 56 -> 96 and resampled like every subject is, meets the published changes
(:func:`calibration_gains`). The gains depend only on the base head and its voxel size:
they are computed once, kept in memory per head (:func:`functools.lru_cache`) and in the user
cache beside the head (a JSON with the iteration history).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np

from defacebench.io.atomic import write_text_atomic
from defacebench.simulate import ageing
from defacebench.simulate.fields import exp_velocity
from defacebench.simulate.headfields import HeadFields, head_fields
from defacebench.simulate.heads import BaseHead, cache_file
from defacebench.simulate.labels import LABELS
from defacebench.simulate.template_ageing import brain_velocity_mm, calibrate_brain_changes, grow_ventricles, ventricle_growth
from defacebench.simulate.warping import output_to_coarse, pull, template_coordinates

__all__ = ["AGED_REGIONS", "CALIBRATION_ITERATIONS", "CALIBRATION_POSES", "CALIBRATION_VERSION", "calibration_gains"]

#: Regions whose 56 -> 96 change is prescribed and calibrated. The ventricles are not deformed
#: but grown by CSF substitution (:func:`defacebench.simulate.template_ageing.grow_ventricles`).
AGED_REGIONS = ("gm", "wm", "hippocampus", "ventricles")
#: Bump when the fields or the calibration change: cached calibration gains are then ignored.
CALIBRATION_VERSION = 10
#: Fixed-point iterations of the empirical calibration against achieved label volumes.
CALIBRATION_ITERATIONS = 5
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
    return pull(hf, head.image, labels, coords, labels.shape)[1]


def _population_volumes(head: BaseHead, hf: HeadFields, age: float, gains: dict[str, float]) -> dict[str, float]:
    """Label counts of :data:`AGED_REGIONS` of an average subject at ``age``, summed over the poses."""
    target = ageing.brain_log_changes(age, 1.0, 1.0, 0.0)
    changes = calibrate_brain_changes(hf, target, gains)
    inverse = exp_velocity(-brain_velocity_mm(hf, changes) / np.float32(hf.spacing))
    _, labels, _ = grow_ventricles(hf, hf.image, head.labels, head.stats["csf_mean"], ventricle_growth(age, 1.0, 1.0, gains["ventricles"]))
    counts = sum(np.bincount(_pull_labels(head, hf, labels, inverse, pose).ravel(), minlength=256) for pose in CALIBRATION_POSES)
    return {r: float(counts[LABELS[r]]) for r in AGED_REGIONS}


def _gains_file(head: BaseHead) -> Path | None:
    """The head's cached gains, or None where the user cache cannot be created."""
    try:
        return cache_file(f"{head.name}_{head.voxel_mm:g}mm_gains_c{CALIBRATION_VERSION}.json")
    except OSError:
        return None


def calibration_gains(head: BaseHead) -> dict[str, float]:
    """Empirical gains on the prescribed changes of GM, WM, hippocampus and ventricles.

    A population-average subject (rate multiplier 1, no reserve, no individual anatomy) is
    aged from 56 to 96 and resampled in the :data:`CALIBRATION_POSES`; each gain is multiplied
    by the ratio of the published log-volume change to the achieved one (label counts after
    ventricle growth and deformation), :data:`CALIBRATION_ITERATIONS` times. The ventricle
    gain scales the log growth of the ventricles. Returns a new dict on every call.
    """
    return dict(_calibration_gains(head))


@functools.lru_cache(maxsize=8)
def _calibration_gains(head: BaseHead) -> dict[str, float]:
    path = _gains_file(head)
    if path is not None:
        try:
            return {k: float(v) for k, v in json.loads(path.read_text())["gains"].items()}
        except (OSError, ValueError, KeyError):
            pass
    hf = head_fields(head)
    target = {r: np.log1p(ageing.BRAIN_CHANGE_56_96[r][0]) for r in AGED_REGIONS}
    gains = {r: 1.0 for r in AGED_REGIONS}
    history = []
    for _ in range(CALIBRATION_ITERATIONS):
        young = _population_volumes(head, hf, ageing.AGE_RANGE[0], gains)
        old = _population_volumes(head, hf, ageing.AGE_RANGE[1], gains)
        achieved = {r: float(np.log(old[r] / young[r])) for r in AGED_REGIONS}
        history.append({"gains": dict(gains), "achieved_log_change": achieved})
        for r in AGED_REGIONS:
            ratio = target[r] / achieved[r] if achieved[r] * target[r] > 0 else 2.0
            gains[r] = float(np.clip(gains[r] * ratio, 0.25, 6.0))
    if path is not None:
        try:
            record = {"gains": gains, "target_log_change": target, "history": history}
            write_text_atomic(path, json.dumps(record, indent=1) + "\n")
        except OSError:  # read-only cache: keep the in-memory result
            pass
    return gains
