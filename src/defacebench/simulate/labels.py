"""Tissue, head and face labels of a base head, derived from intensity and position.

Brain tissue classes come from a three-class k-means on intensities inside the brain mask.
Ventricles are deep central CSF; the hippocampus is grey matter inside an ellipsoid placed by
its MNI position relative to the brain's bounding box. Skull, face, nose, ears and neck are
found by position relative to the brain and to the head surface. Landmarks (nose tip, nasion,
ear tops and bottoms, cheek skin points, chin) are read off the head surface.
These are approximations good enough to plant and measure ageing; they are not an atlas.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

#: White-matter intensity after normalisation: every base head is scaled so its white matter is this.
WM_INTENSITY = 1000.0

#: Label values of the ground-truth label images.
LABELS: dict[str, int] = {
    "csf": 1, "gm": 2, "wm": 3, "ventricles": 4, "hippocampus": 5, "skull": 6,
    "face": 7, "nose": 8, "ears": 9, "neck": 10, "scalp": 11, "wm_lesion": 12,
}
#: Intracranial labels (brain mask): brain tissue plus CSF.
INTRACRANIAL = ("csf", "gm", "wm", "ventricles", "hippocampus", "wm_lesion")
BRAIN_TISSUE = ("gm", "wm", "hippocampus", "wm_lesion")
#: Face-ageing compartments (subcutaneous fat pads).
COMPARTMENTS: dict[str, int] = {"cheek_fat": 1, "infraorbital_fat": 2, "temporal_fat": 3}
CHEEK_FAT_DEPTH_MM = 12.0


@dataclass
class HeadLabels:
    """What :func:`derive_labels` finds in a head (the fields of a
    :class:`defacebench.simulate.heads.BaseHead` but its name and affine)."""

    image: np.ndarray  #: T1w intensities normalised so white matter is :data:`WM_INTENSITY`
    labels: np.ndarray  #: uint8 :data:`LABELS`
    compartments: np.ndarray  #: uint8 :data:`COMPARTMENTS`
    periventricular: np.ndarray  #: float32 weight in [0, 1] where white-matter lesions may grow
    landmarks: dict[str, list[float]]  #: named points, world mm
    stats: dict[str, float]  #: tissue intensity means, intensity scale, base volumes (ml)


def kmeans_1d(values: np.ndarray, k: int = 3, iterations: int = 50) -> np.ndarray:
    """Sorted cluster means of a 1D k-means started at evenly spaced quantiles."""
    means = np.quantile(values, (np.arange(k) + 0.5) / k)
    for _ in range(iterations):
        edges = (means[1:] + means[:-1]) / 2
        assign = np.searchsorted(edges, values)
        new = np.array([values[assign == i].mean() if np.any(assign == i) else means[i] for i in range(k)])
        if np.allclose(new, means):
            break
        means = new
    return np.sort(means)


def _ball(radius_vox: float) -> np.ndarray:
    r = int(np.ceil(radius_vox))
    g = np.indices((2 * r + 1,) * 3) - r
    return (g**2).sum(0) <= radius_vox**2


def _largest_component(mask: np.ndarray) -> np.ndarray:
    lab, n = ndi.label(mask)
    if n <= 1:
        return mask
    sizes = ndi.sum(mask, lab, index=np.arange(1, n + 1))
    return lab == (1 + int(np.argmax(sizes)))


def derive_labels(image: np.ndarray, brain: np.ndarray, affine: np.ndarray) -> HeadLabels:
    """Normalise a head's intensities and derive its labels, compartments and landmarks.

    Parameters
    ----------
    image : ndarray
        T1w intensities on an axis-aligned RAS+ isotropic grid.
    brain : ndarray of bool
        Brain (intracranial) mask on the same grid.
    affine : ndarray (4, 4)
        Voxel to world.

    Returns
    -------
    HeadLabels
    """
    vox = float(affine[0, 0])
    brain = ndi.binary_fill_holes(_largest_component(brain))
    means = kmeans_1d(image[brain][:: max(1, int(brain.sum() // 400_000))].astype(np.float64))
    scale = WM_INTENSITY / means[2]
    image = (image * scale).astype(np.float32)
    means = means * scale
    csf_gm, gm_wm = (means[0] + means[1]) / 2, (means[1] + means[2]) / 2

    world = lambda ijk: (affine[:3, :3] @ np.asarray(ijk, float) + affine[:3, 3]).tolist()  # noqa: E731
    grid = np.indices(image.shape, dtype=np.float32)
    xs, ys, zs = (grid[i] * vox + affine[i, 3] for i in range(3))
    bi = np.argwhere(brain)
    lo, hi = bi.min(0) * vox + affine[:3, 3], bi.max(0) * vox + affine[:3, 3]
    ext = hi - lo
    xc = float(xs[brain].mean())

    labels = np.zeros(image.shape, np.uint8)
    labels[brain & (image < csf_gm)] = LABELS["csf"]
    labels[brain & (image >= csf_gm) & (image < gm_wm)] = LABELS["gm"]
    labels[brain & (image >= gm_wm)] = LABELS["wm"]

    # ventricles: CSF deep inside the brain near the midline (MNI x +-30, y -52..26, z -3..42),
    # the two largest connected components
    depth = ndi.distance_transform_edt(brain) * vox
    u = [(xs - lo[0]) / ext[0], (ys - lo[1]) / ext[1], (zs - lo[2]) / ext[2]]
    cand = (image < means[1] - 0.2 * (means[1] - means[0])) & brain & (depth > 10) & (np.abs(xs - xc) < 30)
    cand &= (u[1] > 0.3) & (u[1] < 0.78) & (u[2] > 0.42) & (u[2] < 0.75)
    lab, n = ndi.label(cand)
    if n:
        sizes = ndi.sum(cand, lab, index=np.arange(1, n + 1))
        keep = [k for k in 1 + np.argsort(sizes)[::-1][:2] if sizes[k - 1] > 0.15 * sizes.max()]
        vent = np.isin(lab, keep)
        vent = ndi.binary_dilation(vent, _ball(1)) & brain & (image < means[1] - 0.1 * (means[1] - means[0]))
        labels[vent] = LABELS["ventricles"]

    # hippocampus: grey-ish tissue inside an ellipsoid at its MNI position (+-27, -22, -13)
    # relative to the MNI brain box x -70..70, y -104..70, z -72..80
    for side in (-1, 1):
        ell = ((u[0] - (0.5 + side * 0.193)) / 0.05) ** 2 + ((u[1] - 0.46) / 0.11) ** 2 + ((u[2] - 0.385) / 0.05) ** 2
        sel = (ell <= 1) & np.isin(labels, [LABELS["gm"], LABELS["wm"]]) & (image < means[2] - 0.15 * (means[2] - means[1]))
        labels[sel] = LABELS["hippocampus"]

    # head: everything above the background level, holes filled
    head = image > 0.12 * WM_INTENSITY
    head = ndi.binary_opening(head, _ball(1))
    head = _largest_component(ndi.binary_closing(head, _ball(3 / vox), iterations=1))
    head = ndi.binary_fill_holes(head)
    for k in range(head.shape[2]):  # fill the airways and sinuses slice by slice
        head[:, :, k] = ndi.binary_fill_holes(head[:, :, k])
    head |= brain
    outside_brain = ndi.distance_transform_edt(~brain) * vox
    skin_depth = ndi.distance_transform_edt(head) * vox

    skull = head & ~brain & (outside_brain <= 10) & (image < 0.55 * WM_INTENSITY) & (skin_depth > 2)
    skull = ndi.binary_closing(skull, _ball(1.5)) & head & ~brain & (outside_brain <= 12)
    labels[skull] = LABELS["skull"]

    # face landmarks along the midline
    mid = np.abs(xs - xc) < 6
    front = np.where(head & mid, ys, -np.inf)
    zrange = (zs >= lo[2] - 30) & (zs <= hi[2] - 0.3 * ext[2])
    tip = np.unravel_index(np.argmax(np.where(zrange, front, -np.inf)), image.shape)
    tip_z = float(zs[tip])
    profile_z = np.arange(image.shape[2]) * vox + affine[2, 3]
    prof_y = np.where(head & mid, ys, -np.inf).max(axis=(0, 1))
    def lowest(z0, z1):  # most posterior point of the anterior midline profile within z0..z1
        k = np.where((profile_z >= z0) & (profile_z <= z1) & np.isfinite(prof_y))[0]
        k = k[np.argmin(prof_y[k])]
        return float(profile_z[k]), float(prof_y[k])
    nasion_z, nasion_y = lowest(tip_z + 20, tip_z + 55)
    sn_z, sn_y = lowest(tip_z - 30, tip_z - 8)
    kz = np.where((profile_z >= sn_z - 60) & (profile_z <= sn_z - 20) & np.isfinite(prof_y))[0]
    pog_k = kz[np.argmax(prof_y[kz])]
    pog_z, pog_y = float(profile_z[pog_k]), float(prof_y[pog_k])
    chin_cols = head & mid & (ys > pog_y - 25)
    menton_z = float(zs[chin_cols].min()) if chin_cols.any() else pog_z - 15

    line_y = nasion_y + (zs - nasion_z) * (sn_y - nasion_y) / (sn_z - nasion_z)
    nose = head & ~brain & ~skull & (np.abs(xs - xc) < 20) & (zs >= sn_z) & (zs <= nasion_z) & (ys > line_y)
    labels[nose] = LABELS["nose"]

    # ears: far lateral tissue beside the head at the level between nose base and brow
    yc = float(ys[brain].mean())
    ear_win = (zs >= sn_z - 8) & (zs <= nasion_z + 25) & (ys > yc - 50) & (ys < yc + 10)
    ears = head & ear_win & (outside_brain > 18) & (np.abs(xs - xc) > 0.45 * ext[0]) & ~nose
    ears = ndi.binary_opening(ears, _ball(1))
    for sign in (-1, 1):  # the largest piece on each side
        side = ears & ((xs - xc) * sign > 0)
        ears[side] = _largest_component(side)[side]
    labels[ears & (labels == 0)] = LABELS["ears"]

    # face: anterior non-brain tissue below the brow; neck: what lies below the brain behind it
    face = head & (labels == 0) & (ys > yc + 0.12 * ext[1]) & (zs < nasion_z + 25)
    labels[face] = LABELS["face"]
    neck = head & (labels == 0) & (zs < lo[2] + 0.05 * ext[2])
    labels[neck] = LABELS["neck"]
    labels[head & (labels == 0)] = LABELS["scalp"]

    # face-ageing compartments: subcutaneous layers of the cheek, below the eye, at the temple
    soft = np.isin(labels, [LABELS["face"], LABELS["scalp"], LABELS["neck"]])
    comp = np.zeros(image.shape, np.uint8)
    ax = np.abs(xs - xc)
    cheek = soft & (skin_depth <= CHEEK_FAT_DEPTH_MM) & (ax >= 18) & (ax <= 62) & (zs >= sn_z - 20) & (zs <= tip_z + 15) & (ys > yc + 0.15 * ext[1])
    comp[cheek] = COMPARTMENTS["cheek_fat"]
    infra = soft & (skin_depth <= 8) & (ax >= 10) & (ax <= 38) & (zs > tip_z + 15) & (zs <= nasion_z - 3) & (ys > yc + 0.25 * ext[1])
    comp[infra & (comp == 0)] = COMPARTMENTS["infraorbital_fat"]
    temple = soft & (skin_depth <= 10) & (ax >= 0.4 * ext[0]) & (zs >= nasion_z - 5) & (zs <= nasion_z + 35) & (ys > yc) & (ys < hi[1] - 10)
    comp[temple & (comp == 0)] = COMPARTMENTS["temporal_fat"]

    # periventricular white matter: where lesions grow
    vent = labels == LABELS["ventricles"]
    dist_v = ndi.distance_transform_edt(~vent) * vox if vent.any() else np.full(image.shape, 99.0)
    periv = np.where(labels == LABELS["wm"], np.exp(-dist_v / 5.0), 0).astype(np.float32)

    landmarks: dict[str, list[float]] = {
        "pronasale": world(tip), "nasion": [xc, nasion_y, nasion_z], "subnasale": [xc, sn_y, sn_z],
        "pogonion": [xc, pog_y, pog_z], "menton": [xc, pog_y - 10, menton_z],
        "brain_centre": [xc, yc, float(zs[brain].mean())],
    }
    for side, sign in (("left", -1), ("right", 1)):
        hemi = ears & ((xs - xc) * sign > 0)
        if hemi.any():
            pts = np.argwhere(hemi)
            top, bot = pts[np.argmax(pts[:, 2])], pts[np.argmin(pts[:, 2])]
            landmarks[f"ear_top_{side}"] = world(top)
            landmarks[f"ear_bottom_{side}"] = world(bot)
        # cheek: skin point at 38 mm from the midline, 8 mm above the nose base; ray to the face centre
        ci = int(round((xc + sign * 38 - affine[0, 3]) / vox))
        ck = int(round((sn_z + 8 - affine[2, 3]) / vox))
        col = np.where(head[ci, :, ck])[0]
        skin = np.array([ci, col.max(), ck], float)
        centre = np.array([(xc - affine[0, 3]) / vox, (yc - affine[1, 3]) / vox, ck], float)
        direction = (centre - skin) / np.linalg.norm(centre - skin)
        steps = np.arange(0, 40 / vox, 0.25)
        ray = skin[:, None] + direction[:, None] * steps
        inside = ndi.map_coordinates(comp == COMPARTMENTS["cheek_fat"], ray, order=0)
        first_out = np.argmax(~inside.astype(bool)) if not inside.all() else len(steps) - 1
        deep = skin + direction * steps[max(first_out, 1)]
        landmarks[f"cheek_skin_{side}"] = world(skin)
        landmarks[f"cheek_deep_{side}"] = world(deep)
        landmarks[f"gonion_{side}"] = [xc + sign * 0.34 * ext[0], yc + 0.12 * ext[1], menton_z + 25]

    stats = {
        "csf_mean": float(means[0]), "gm_mean": float(means[1]), "wm_mean": float(means[2]),
        "intensity_scale": float(scale),
    }
    for key, value in LABELS.items():
        stats[f"volume_{key}_ml"] = float((labels == value).sum() * vox**3 / 1000)
    return HeadLabels(image=image, labels=labels, compartments=comp, periventricular=periv,
                      landmarks=landmarks, stats=stats)
