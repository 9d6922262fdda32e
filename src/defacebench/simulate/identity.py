"""Identity: each simulated person's own head, face and brain shape, independent of age.

A person's identity is a handful of anatomically meaningful modes, each a smooth, localised
velocity field in the base head's frame with a spread taken from adult craniofacial
anthropometry (docs/simulate.md gives the sources and the SDs), plus a volume-preserving skull
shape (anisotropic scale), a large-scale random brain and head shape and regional brain volume
offsets. :func:`sample_identity` draws it (from its own generator, so identity cannot depend on
age), :func:`identity_bases` builds the per-head unit fields once (kept in
:class:`~defacebench.simulate.headfields.HeadFields`), and :func:`identity_velocity` combines
them for one person. The velocity is added to the ageing velocity and integrated by scaling and
squaring, so the deformation stays fold-free. ``scale`` multiplies every SD; 0 switches identity
off and gives the simulator's behaviour before identity, to the byte.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from defacebench.simulate.fields import smooth_random_field, smoothstep

__all__ = ["ANTHROPOMETRIC_CV", "BRAIN_OFFSET_SD", "FACE_MODE_SD", "SKULL_LOG_SD", "identity_bases", "identity_columns", "identity_velocity",
           "sample_identity", "subject_head_scale"]

#: Face and head modes: name -> SD (unit in the name). Spreads of adult craniofacial anthropometry
#: (within sex, young adults; docs/simulate.md): a mode's SD is set so the ground-truth measure it
#: moves spreads like the published measure, after the base head's size is removed.
FACE_MODE_SD: dict[str, float] = {
    "nose_length_mm": 2.6,  # nasion -> pronasale; Farkas n-prn SD 3.3-3.6 mm
    "nose_projection_mm": 1.5,  # tip forward; sn-prn SD ~2 mm
    "nose_width_log": 0.07,  # al-al SD 2.1-3.8 mm of 31-43 mm
    "mouth_width_log": 0.06,  # ch-ch SD 3.2-4.0 mm of 50-56 mm
    "lip_projection_mm": 1.5,
    "lower_face_height_log": 0.045,  # sn-me SD 3.6-4.8 mm of 65-76 mm
    "mandible_log_scale": 0.045,  # go-gn SD 4.5-6 mm of 81-95 mm
    "chin_projection_mm": 2.0,
    "cheekbone_mm": 2.2,  # per side outward; zy-zy SD 3.5-5.4 mm
    "orbit_width_log": 0.06,  # en-en SD 1.9-2.7 mm, ex-ex 3.4-4.9 mm
    "brow_projection_mm": 1.5,
    "forehead_projection_mm": 1.5,
    "ear_log_scale": 0.05,  # sa-sba SD 3.1-4.0 mm of 58-64 mm
    "ear_protrusion_mm": 3.0,
    "soft_tissue_log": 0.12,  # facial fat pads; soft-tissue depths vary 15-25 % between adults
    "scalp_thickness_mm": 1.0,
}
#: Published adult within-sex spread of the ground-truth face measures, as coefficients of
#: variation (SD / mean; lowest and highest over sexes and sources, docs/simulate.md). The
#: simulated measures are landmark distances on the base head whose means differ from the
#: anthropometric ones (the base head's "ear" segment is ~22 mm), so spreads are compared
#: relative to the mean.
ANTHROPOMETRIC_CV: dict[str, tuple[float, float]] = {
    "lower_face_height": (0.045, 0.075),  # sn-me 76.4 +- 3.6 (men), 69.5 +- 4.8 (women); sn-gn ~72 +- 4.6
    "nose_length": (0.04, 0.08),  # n-prn ~50 +- 3.6 (Farkas); n-sn 51.0 +- 1.9 / 47.6 +- 3.1
    "ear_length": (0.05, 0.08),  # sa-sba ~62 +- 3.5-4 (Farkas)
    "mandible_length": (0.04, 0.07),  # go-gn ~90 +- 4.5-6 (Farkas); go-go 106.6 +- 5.9 / 96.8 +- 2.9
}
#: SD of the volume-preserving skull shape log-scale per axis (cephalic index SD 3-5 %).
SKULL_LOG_SD = 0.025
#: SD (mm) of the large-scale random head and brain shape (4 control points per axis).
BRAIN_SHAPE_SD_MM = 1.5
#: Regional brain log-volume offsets that are not age (their SD), on top of the ageing
#: "reserve" offset (5.5 %, shared by grey matter, white matter and hippocampus).
BRAIN_OFFSET_SD: dict[str, float] = {"gm": 0.03, "wm": 0.04, "hippocampus": 0.07, "ventricles": 0.2}


def sample_identity(rng: np.random.Generator, scale: float = 1.0) -> dict:
    """Draw one person's identity (JSON-ready); every value is ``scale`` x SD x a standard normal.

    The draws are made (in a fixed order) whatever ``scale``, so a scale changes the amounts,
    not the pattern; ``scale`` 0 gives all-zero modes.
    """
    s = float(scale)
    # "+ 0.0": a zero scale gives 0.0, not -0.0, in the JSON record
    face = {name: s * sd * float(rng.standard_normal()) + 0.0 for name, sd in FACE_MODE_SD.items()}
    skull = rng.standard_normal(3) * SKULL_LOG_SD
    skull -= skull.mean()  # volume-preserving: head size stays with the ICV draw
    brain_shape = s * BRAIN_SHAPE_SD_MM * abs(float(rng.standard_normal())) + 0.0
    seed = int(rng.integers(2**31))
    offsets = {r: s * sd * float(rng.standard_normal()) + 0.0 for r, sd in BRAIN_OFFSET_SD.items()}
    return {"scale": s, "face": face, "skull_log_scale": [s * float(v) + 0.0 for v in skull],
            "brain_shape_mm": brain_shape, "brain_shape_seed": seed, "brain_log_offset": offsets}


def identity_columns(identity: dict | None) -> dict[str, float]:
    """Flat ``identity_<name>`` columns of an identity for ground_truth.tsv (empty when none)."""
    if not identity:
        return {}
    out = {"identity_scale": float(identity["scale"])}
    out.update({f"identity_{k}": float(v) for k, v in identity["face"].items()})
    out.update({f"identity_skull_log_scale_{a}": float(v) for a, v in zip("xyz", identity["skull_log_scale"])})
    out["identity_brain_shape_mm"] = float(identity["brain_shape_mm"])
    out.update({f"identity_{r}_log_offset": float(v) for r, v in identity["brain_log_offset"].items()})
    return out


def subject_head_scale(params: dict) -> np.ndarray:
    """The per-axis scale of a subject's head about its brain centre: head size (ICV draw)
    times the identity's volume-preserving skull shape."""
    scale = np.asarray(params["anatomy"]["head_scale"], float)
    identity = params.get("identity")
    if identity and any(identity["skull_log_scale"]):
        scale = scale * np.exp(np.asarray(identity["skull_log_scale"], float))
    return scale


def _grid(shape: tuple[int, int, int], origin: np.ndarray, spacing: float) -> list[np.ndarray]:
    return [(origin[i] + spacing * np.arange(shape[i], dtype=np.float32)).reshape([-1 if j == i else 1 for j in range(3)]) for i in range(3)]


def _bump(xyz: list[np.ndarray], centre: np.ndarray, radii: tuple[float, float, float]) -> np.ndarray:
    """Gaussian envelope (1 at ``centre``) with per-axis radii (mm)."""
    return np.exp(-sum(((c - m) / r) ** 2 / 2 for c, m, r in zip(xyz, centre, radii))).astype(np.float32)


def identity_bases(shape: tuple[int, int, int], origin: np.ndarray, spacing: float, landmarks: dict[str, list[float]],
                   w_face: np.ndarray, out_cranium_mm: np.ndarray, out_cavity_mm: np.ndarray) -> dict[str, np.ndarray]:
    """Unit velocity fields (mm per unit of each mode, shape (3,) + ``shape``) of the face modes
    that are not ageing fields (nose length, mandible size and fat pads reuse those).

    Soft-tissue and facial-skeleton modes carry the face weight ``w_face`` (zero inside the
    cranium); brow and forehead move the outer table of the skull too (weight zero inside the
    intracranial cavity, ``out_cavity_mm``), as brow ridges and frontal bossing are bone.
    """
    xyz = _grid(shape, origin, spacing)
    x, y, z = xyz
    L = {k: np.asarray(v, float) for k, v in landmarks.items()}
    xc = float(L["nasion"][0])
    nas, tip, sn, pog = L["nasion"], L["pronasale"], L["subnasale"], L["pogonion"]
    w_bone = smoothstep((out_cavity_mm - 1.0) / 6.0).astype(np.float32)
    zero = np.zeros((3,) + shape, np.float32)
    b: dict[str, np.ndarray] = {}

    def field(**components: np.ndarray) -> np.ndarray:
        v = zero.copy()
        for axis, comp in components.items():
            v["xyz".index(axis)] = comp
        return v

    nose_env = _bump(xyz, (tip + nas) / 2 + np.array([0, 5, 0]), (14, 18, 22))
    b["nose_projection_mm"] = field(y=_bump(xyz, tip, (10, 10, 12)) * w_face)
    b["nose_width_log"] = field(x=(x - xc) * nose_env * w_face)
    mouth = np.array([xc, sn[1] - 2, (sn[2] + pog[2]) / 2])
    mouth_env = _bump(xyz, mouth, (26, 16, 12))
    b["mouth_width_log"] = field(x=(x - xc) * mouth_env * w_face)
    b["lip_projection_mm"] = field(y=_bump(xyz, mouth + np.array([0, 4, 0]), (18, 10, 10)) * w_face)
    below = smoothstep((sn[2] - 5 - z) / 10) * smoothstep((y - (L["gonion_left"][1] - 10)) / 15)
    b["lower_face_height_log"] = field(z=(z - sn[2]) * below * w_face)
    b["chin_projection_mm"] = field(y=_bump(xyz, pog + np.array([0, -5, -5]), (22, 14, 14)) * w_face)
    side = np.sign(x - xc).astype(np.float32)
    zyg = np.abs(L["cheek_skin_left"] - L["cheek_skin_right"])[0] / 2 + 22  # zygion ~60 mm from the midline
    cheek = sum(_bump(xyz, np.array([xc + sgn * zyg, L["cheek_deep_left"][1] - 25, nas[2] - 32]), (14, 20, 16)) for sgn in (-1, 1))
    b["cheekbone_mm"] = field(x=side * cheek * w_face)
    orbits = _bump(xyz, np.array([xc, nas[1] - 20, nas[2] - 2]), (34, 22, 14))
    b["orbit_width_log"] = field(x=(x - xc) * orbits * w_face)
    b["brow_projection_mm"] = field(y=_bump(xyz, nas + np.array([0, -2, 14]), (30, 14, 9)) * w_bone)
    b["forehead_projection_mm"] = field(y=_bump(xyz, nas + np.array([0, -12, 48]), (40, 25, 22)) * w_bone)
    ears = [s for s in ("left", "right") if f"ear_top_{s}" in L]
    ear_scale, ear_out = zero.copy(), zero.copy()
    for s in ears:
        top, bot = L[f"ear_top_{s}"], L[f"ear_bottom_{s}"]
        centre = (top + bot) / 2
        env = _bump(xyz, centre, (14, 18, 20))
        for i, c in enumerate(xyz):
            ear_scale[i] += (c - centre[i]) * env
        sgn = np.sign(centre[0] - xc)
        lateral = smoothstep((sgn * (x - xc) - (abs(centre[0] - xc) - 12)) / 10)
        ear_out[0] += sgn * lateral * _bump(xyz, centre, (40, 16, 20))
    b["ear_log_scale"] = ear_scale * w_face
    b["ear_protrusion_mm"] = ear_out * w_face
    # scalp and soft tissue over the cranium: push the skin out along the outward normal
    smooth = ndi.gaussian_filter(out_cranium_mm.astype(np.float32), 1.0)
    normal = np.stack(np.gradient(smooth))
    normal /= np.maximum(np.sqrt((normal**2).sum(0)), 1e-3)
    shell = smoothstep((out_cranium_mm - 2) / 6) * (1 - smoothstep((out_cranium_mm - 12) / 8))
    b["scalp_thickness_mm"] = (normal * shell).astype(np.float32)
    return {k: v.astype(np.float32) for k, v in b.items()}


def identity_velocity(identity: dict | None, bases: dict[str, np.ndarray], feature_basis: dict[str, np.ndarray],
                      fat_basis: dict[str, np.ndarray], shape: tuple[int, int, int]) -> np.ndarray | None:
    """A person's identity velocity (mm, coarse grid), or None when identity is off or zero.

    ``bases`` from :func:`identity_bases`; nose length and mandible size reuse the ageing
    feature fields, soft-tissue thickness the fat-pad fields.
    """
    if not identity or not identity.get("scale"):
        return None
    face = identity["face"]
    v = np.zeros((3,) + shape, np.float32)
    for name, basis in bases.items():
        if face.get(name):
            v += np.float32(face[name]) * basis
    reuse = {"nose_length_mm": "nose_elongation_mm", "mandible_log_scale": "mandible_log_scale"}
    for name, feature in reuse.items():
        if face.get(name):
            v += np.float32(face[name]) * feature_basis[feature]
    if face.get("soft_tissue_log"):
        for basis in fat_basis.values():
            v += np.float32(face["soft_tissue_log"]) * basis
    if identity.get("brain_shape_mm"):
        v += np.float32(identity["brain_shape_mm"]) * smooth_random_field(shape, 4, identity["brain_shape_seed"])
    return v
