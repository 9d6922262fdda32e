"""One simulated subject: the deterministic twin of :func:`defacebench.simulate.sampling.sample_subject`.

:func:`simulate_subject` turns a parameter dict into image, labels and ground truth; the same
dict always gives the same bytes. It ages the base head in its own space
(:mod:`~defacebench.simulate.template_ageing`: contrast loss, lesions, ventricle growth,
the ageing + anatomy velocity), pulls the result into the subject's posed, neck-cut grid
(:mod:`~defacebench.simulate.warping`), applies the acquisition
(:mod:`~defacebench.simulate.acquisition`) and measures the ground truth
(:mod:`~defacebench.simulate.measure`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from defacebench.simulate import acquisition, ageing
from defacebench.simulate.calibration import calibration_gains
from defacebench.simulate.fields import exp_velocity
from defacebench.simulate.headfields import head_fields
from defacebench.simulate.heads import BaseHead
from defacebench.simulate.identity import subject_head_scale
from defacebench.simulate.labels import LABELS, WM_INTENSITY
from defacebench.simulate.measure import landmark_measures, measure
from defacebench.simulate.template_ageing import anatomy_velocity, grow_ventricles, lesions, ventricle_growth
from defacebench.simulate.warping import min_jacobian, output_to_coarse, pull, template_coordinates

__all__ = ["SimulatedSubject", "simulate_subject"]


@dataclass
class SimulatedSubject:
    """Outputs of :func:`simulate_subject`."""

    image: np.ndarray  #: T1w, float32, non-negative
    labels: np.ndarray  #: uint8 labels in native space
    affine: np.ndarray
    ground_truth: dict  #: measures (volumes in ml, lengths in mm) and applied changes
    min_jacobian: float  #: smallest Jacobian determinant of the anatomy deformation (nan if not checked)


def simulate_subject(head: BaseHead, params: dict, check_jacobian: bool = False, partial_volumes: tuple[str, ...] = ()) -> SimulatedSubject:
    """Build image, labels and ground truth of the subject ``params`` describes.

    Parameters
    ----------
    head : BaseHead
        The subject's base head (``params["base_head"]`` at the wanted voxel size).
    params : dict
        A :func:`defacebench.simulate.sampling.sample_subject` dict.
    check_jacobian : bool
        Compute the smallest Jacobian determinant of the deformation (``min_jacobian``; nan
        when not checked): a test of fold-freeness, too slow for every subject.
    partial_volumes : tuple of str
        Labels (or ``"intracranial"``) whose volume is also measured by pulling their
        indicator with linear interpolation (``pv_<name>_ml``: less discretisation noise than
        label counts).
    """
    hf = head_fields(head)
    gains = calibration_gains(head)
    vox = head.voxel_mm
    b = params["brain_ageing"]
    age = params["age_years"]

    # intensity ageing in the template: grey/white contrast, lesions
    gm, wm = head.stats["gm_mean"], head.stats["wm_mean"]
    loss = ageing.contrast_loss(age, b["strength"])
    image = hf.image - np.float32(loss * (wm - gm)) * hf.wmness
    lesion_ml = ageing.lesion_volume_ml(age, b["strength"], b["rate_multiplier"])
    lesion = lesions(head, hf, lesion_ml, b["lesion_seed"])
    labels = head.labels
    if lesion.any():
        image[lesion] = np.float32(gm + 0.1 * (wm - gm))
        labels = labels.copy()
        labels[lesion] = LABELS["wm_lesion"]
    identity = params.get("identity") or {}
    vent_offset = identity["brain_log_offset"]["ventricles"] if identity.get("scale") else 0.0
    vent_log = ventricle_growth(age, b["strength"], b["rate_multiplier"], gains.get("ventricles", 1.0), vent_offset)
    image, labels, grown = grow_ventricles(hf, image, labels, head.stats["csf_mean"], vent_log)

    velocity, applied = anatomy_velocity(hf, params, gains)
    inverse = exp_velocity(-velocity)
    min_jac = min_jacobian(inverse) if check_jacobian else float("nan")

    # output grid: the template grid minus the neck cut
    cut = int(round(params["fov"]["neck_cut_mm"] / vox))
    out_shape = (head.image.shape[0], head.image.shape[1], head.image.shape[2] - cut)
    out_affine = head.affine.copy()
    out_affine[2, 3] += cut * vox

    centre = np.array(head.landmarks["brain_centre"])
    scale = subject_head_scale(params)
    to_coarse = output_to_coarse(head, hf, params["pose"]["rotation_deg"], params["pose"]["translation_mm"], scale, out_affine)
    coords = template_coordinates(hf, inverse, to_coarse, out_shape)
    out_image, out_labels = pull(hf, image, labels, coords, out_shape)
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
    truth.update(landmark_measures(head, hf, velocity, scale, centre))
    truth["wm_lesion_target_ml"] = lesion_ml
    truth["gm_wm_contrast_loss"] = loss
    truth["frame"] = {"brain_centre_mm": [float(c) for c in centre]}  # pose and head scale act about this point
    applied["brain_calibration_gains"] = dict(gains)
    applied["ventricle_log_growth_from_56"] = vent_log
    applied["ventricle_growth"] = grown
    truth["applied"] = applied
    return SimulatedSubject(out_image, out_labels, out_affine, truth, min_jac)
