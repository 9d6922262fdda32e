"""Ground truth of a simulated subject: label volumes and face lengths between landmarks.

Volumes are label counts of the subject's image; face lengths are distances between the base
head's landmarks carried by the subject's forward deformation. Each comes native and
``_norm`` (at the base head's size, without the individual head scale), the latter being what
ageing changed.
"""

from __future__ import annotations

import numpy as np

from defacebench.simulate.fields import integrate_points
from defacebench.simulate.headfields import HeadFields
from defacebench.simulate.heads import BaseHead
from defacebench.simulate.labels import BRAIN_TISSUE, INTRACRANIAL, LABELS

__all__ = ["FACE_MEASURES", "landmark_measures", "measure"]

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


def landmark_measures(head: BaseHead, hf: HeadFields, velocity: np.ndarray, scale: np.ndarray, centre: np.ndarray) -> dict:
    """Face lengths between landmarks carried by the forward deformation.

    ``velocity`` is the subject's (coarse voxels of ``hf``), ``scale`` its head scales about
    ``centre``. ``<measure>_mm`` is in the subject's native mm (head scale applied);
    ``<measure>_norm_mm`` is the same distance before the head scale, i.e. at the base head's
    size: size-invariant, it changes only with face ageing and the individual anatomy
    deformation.
    """
    names = list(head.landmarks)
    pts = np.array([head.landmarks[n] for n in names], float)
    anat = integrate_points(velocity, (pts - hf.origin) / hf.spacing) * hf.spacing + hf.origin
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
