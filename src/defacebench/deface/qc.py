"""Quality control of a defacing: what was removed (ml, brain, face, nose, ears) and a picture.

Face, nose and ear regions come from the simulator's ground-truth labels when present
(``derivatives/simulation/.../<prefix>_dseg.nii.gz``), otherwise from standard boxes in
MNI mm (head tissue only; see :mod:`defacebench.deface.mni_regions`).
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from defacebench import layout
from defacebench.deface.mni_regions import EAR_REGION, FACE_REGION, in_box
from defacebench.imaging.percentile import percentile
from defacebench.imaging.resample import resample_to
from defacebench.io.atomic import atomic_path
from defacebench.io.nifti import read_image

BRAIN_REMOVED_WARN = 0.001
NOSE_TIP_DEPTH_MM = 20.0
NOSE_TIP_HALF_HEIGHT_MM = 25.0
EARS_REMOVED_THRESHOLD = 0.5
#: A refaced voxel counts as head surface above this fraction of the QC's display maximum.
REFACED_SURFACE_FRACTION = 0.12
#: Less face-region tissue than this (ml) means no face: already defaced or skull-stripped.
MIN_FACE_ML = 15.0
#: Less than this fraction of the nose region holding tissue means no nose (defaced).
MIN_NOSE_TISSUE = 0.25
#: Head volume / brain volume below this means the image is skull-stripped.
MIN_HEAD_TO_BRAIN = 1.5
#: zlib level of the QC picture (PIL's default is 6).
PNG_COMPRESS_LEVEL = 1
SIMULATION_LABELS = {"face": 7, "nose": 8, "ears": 9}
QC_COLUMNS = (
    "key", "method", "backend", "removed_ml", "brain_removed_fraction", "face_removed_fraction",
    "nose_removed_fraction", "ears_removed_fraction", "ears_removed", "region_source",
    "registration_dice", "warnings",
)


def find_ground_truth(bids_root: str | Path | None, subject, shape: tuple[int, ...], affine: np.ndarray) -> dict[str, np.ndarray] | None:
    """Simulator labels (face, nose, ears) for a scan on its grid, or None."""
    if bids_root is None:
        return None
    import pandas as pd

    path = next((p for p in layout.simulation_labels(bids_root, subject) if p.is_file()), None)
    if path is None:
        return None
    labels = dict(SIMULATION_LABELS)
    table = layout.simulation_dir(bids_root) / "dseg.tsv"
    if table.is_file():
        frame = pd.read_csv(table, sep="\t")
        names = dict(zip(frame["name"].astype(str), frame["index"].astype(int)))
        labels = {k: names.get(k, v) for k, v in labels.items()}
    img = read_image(path)
    data = np.asarray(img.dataobj).astype(np.int32)
    if data.shape[:3] != tuple(shape[:3]) or not np.allclose(img.affine, affine, atol=1e-3):
        data = np.rint(resample_to(img, np.eye(4), affine, shape, order=0)).astype(np.int32)
    return {
        "face": (data == labels["face"]) | (data == labels["nose"]),  # np.isin's answer, 10x faster
        "nose": data == labels["nose"],
        "ears": data == labels["ears"],
    }


def nose_tip_region(mni_coords: np.ndarray, head: np.ndarray, depth_mm: float = NOSE_TIP_DEPTH_MM, half_height_mm: float = NOSE_TIP_HALF_HEIGHT_MM) -> np.ndarray:
    """The tip of the nose: head tissue within ``depth_mm`` of the most anterior point of the mid-face.

    The mid-face band is |x| <= 15 mm, -120 <= z <= -10 mm, y >= 30 mm (MNI, through the
    brain registration); the region is its head tissue with y >= tip y - ``depth_mm`` and
    |z - tip z| <= ``half_height_mm``. Faces sit at different heights and pitches relative
    to the brain (on the simulated ROBEX heads the nose lies at MNI z -60..-115 mm, on
    pydeface's mean head near z -30 mm), so a fixed MNI box misses the nose on some heads;
    the most anterior point of the face is the nose tip on all of them. On simulated heads
    83-89 % of this region is ground-truth nose (the distal third of the nose).
    """
    band = head & (np.abs(mni_coords[0]) <= 15) & (mni_coords[2] >= -120) & (mni_coords[2] <= -10) & (mni_coords[1] >= 30)
    if not band.any():
        return band
    ys = mni_coords[1][band]
    k = int(np.argmax(ys))
    tip_y, tip_z = float(ys[k]), float(mni_coords[2][band][k])
    return band & (mni_coords[1] >= tip_y - depth_mm) & (np.abs(mni_coords[2] - tip_z) <= half_height_mm)


def standard_regions(mni_coords: np.ndarray, head: np.ndarray) -> dict[str, np.ndarray]:
    """Standard face, nose (tip) and ear regions (head tissue; MNI boxes and the face's most anterior point)."""
    return {
        "face": in_box(mni_coords, FACE_REGION) & head,
        "nose": nose_tip_region(mni_coords, head),
        "ears": in_box(mni_coords, EAR_REGION) & head,
    }


def _flat(region: np.ndarray) -> np.ndarray:
    """A mask as the flat indices of its voxels (an index array is returned as it is)."""
    region = np.asarray(region)
    return np.flatnonzero(region) if region.dtype == bool else region


def flat_regions(masks: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Masks as flat voxel indices, for :func:`removal_metrics` on many removals of one scan.

    Reading a removal at the indices gives the very values boolean indexing gives, in the
    same order (so the same sums), without scanning the whole grid for every method.
    """
    return {name: _flat(mask) for name, mask in masks.items()}


def _fraction(removal: np.ndarray, region: np.ndarray) -> float:
    index = _flat(region)
    return float("nan") if index.size == 0 else float(removal.ravel()[index].sum() / index.size)


def removal_metrics(removal: np.ndarray, brain: np.ndarray, head: np.ndarray, regions: dict[str, np.ndarray], voxel_ml: float) -> dict[str, object]:
    """QC numbers of one removal mask (fraction removed per voxel).

    ``brain``, ``head`` and the ``regions`` are boolean masks on the removal's grid or
    their :func:`flat_regions` indices.
    """
    ears = _fraction(removal, regions["ears"])
    flat, brain_index = removal.ravel(), _flat(brain)
    return {
        "removed_ml": round(float(flat[_flat(head)].sum() * voxel_ml), 2),
        "brain_removed_fraction": float(flat[brain_index].sum() / max(1, brain_index.size)),
        "face_removed_fraction": _fraction(removal, regions["face"]),
        "nose_removed_fraction": _fraction(removal, regions["nose"]),
        "ears_removed_fraction": ears,
        "ears_removed": "n/a" if np.isnan(ears) else ("yes" if ears > EARS_REMOVED_THRESHOLD else "no"),
    }


def input_warnings(head: np.ndarray, brain: np.ndarray, regions: dict[str, np.ndarray], voxel_ml: float) -> list[str]:
    """Warnings about the input itself: skull-stripped, or no face (already defaced).

    Face tissue is what lies in the face region AND in the intensity-based head mask:
    ground-truth labels mark where the face was, not whether it is still there. The
    input counts as already defaced when the face region holds less than
    :data:`MIN_FACE_ML` of tissue, or the nose region less than :data:`MIN_NOSE_TISSUE`
    of its volume (every defacer removes the nose).
    """
    warnings = []
    head_ml, brain_ml = head.sum() * voxel_ml, brain.sum() * voxel_ml
    face_ml = float((regions["face"] & head).sum() * voxel_ml)
    nose_n = int(regions["nose"].sum())
    nose_tissue = float((regions["nose"] & head).sum() / nose_n) if nose_n else float("nan")
    if brain_ml > 0 and head_ml / brain_ml < MIN_HEAD_TO_BRAIN:
        warnings.append(f"input looks skull-stripped (head {head_ml:.0f} ml vs brain {brain_ml:.0f} ml)")
    elif face_ml < MIN_FACE_ML or nose_tissue < MIN_NOSE_TISSUE:
        warnings.append(f"input has no face ({face_ml:.1f} ml of face tissue, {100 * nose_tissue:.0f}% of the nose region): already defaced?")
    return warnings


# --------------------------------------------------------------------------- picture


def _surface_depth(head: np.ndarray, axis: int = 0, from_end: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A shaded surface rendering of the head seen along ``axis``: (shade, depth index of the surface, hit)."""
    h = np.moveaxis(head, axis, 0)
    if from_end:
        h = h[::-1]
    from scipy import ndimage

    hit = h.any(axis=0)
    depth = np.where(hit, h.argmax(axis=0), h.shape[0]).astype(np.float32)
    if hit.any():  # smooth the depth a little: voxel steps would shade as stripes
        depth = np.where(hit, ndimage.gaussian_filter(np.where(hit, depth, depth[hit].max()), 1.0), depth)
    gy, gx = np.gradient(np.where(hit, depth, depth[hit].max() if hit.any() else 0))
    normal = np.stack([-gx, -gy, np.ones_like(gx)])
    normal /= np.linalg.norm(normal, axis=0)
    light = np.array([0.4, 0.5, 0.77])
    shade = np.clip(np.tensordot(light, normal, axes=1), 0, 1) * (1.0 - 0.4 * (depth - depth[hit].min()) / max(1.0, np.ptp(depth[hit]))) if hit.any() else depth * 0
    return np.where(hit, shade, np.nan), np.minimum(depth.astype(int), h.shape[0] - 1), hit


def _first_hit(removed: np.ndarray, index: np.ndarray, hit: np.ndarray, axis: int = 0, from_end: bool = False) -> np.ndarray:
    """Where the surface found by :func:`_surface_depth` lies in ``removed`` (>= 0.5; read at the surface voxels only)."""
    r = np.moveaxis(removed, axis, 0)
    if from_end:
        r = r[::-1]
    return (np.take_along_axis(r, index[None], axis=0)[0] >= 0.5) & hit


def write_qc_png(path: str | Path, img: nib.Nifti1Image, removals: dict[str, np.ndarray], head: np.ndarray, brain: np.ndarray, title: str = "",
                 refaced: dict[str, np.ndarray] | None = None) -> Path:
    """Each method's removed region in blue: mid-sagittal slice, axial slice through the nose, and a 3D surface view.

    Images are shown in RAS orientation (nose up in the sagittal view); brain outline in yellow.
    A refacer's row (``refaced``: method -> refaced image) shows the refaced image, its
    replaced region outlined in cyan, and the refaced head's surface.
    """
    refaced = refaced or {}
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    canonical = nib.as_closest_canonical(img)
    ornt = nib.orientations.ornt_transform(nib.io_orientation(img.affine), nib.io_orientation(canonical.affine))

    def ras(a: np.ndarray) -> np.ndarray:
        return nib.orientations.apply_orientation(a, ornt)

    data = ras(np.asarray(img.dataobj, dtype=np.float32))
    head_r, brain_r = ras(head.astype(np.uint8)) > 0, ras(brain.astype(np.uint8)) > 0
    zooms = canonical.header.get_zooms()[:3]
    vmax = percentile(data[head_r], 99) if head_r.any() else float(data.max())
    # slices: mid-sagittal through the brain centre; axial at the level of the nose
    centre = np.array(np.nonzero(brain_r)).mean(axis=1).astype(int) if brain_r.any() else np.array(data.shape) // 2
    below = np.nonzero(brain_r.any(axis=(0, 1)))[0]
    z_axial = int(max(0, below.min() + 0.15 * (below.max() - below.min()))) if below.size else data.shape[2] // 2
    blue = ListedColormap([(0.1, 0.35, 1.0, 1.0)])
    n = len(removals)
    fig, axes = plt.subplots(n, 3, figsize=(9.5, 3.2 * n), squeeze=False, facecolor="black")
    for ax in axes.ravel():
        ax.set_facecolor("black")
    head_voxels = int(np.count_nonzero(head))
    head_view = None  # the unrefaced head's surface, the same for every defacer: rendered once
    for row, (method, removal) in enumerate(removals.items()):
        rem = ras(removal)  # a view: only the two slices and the surface voxels are compared with 0.5
        shown, replaced = data, method in refaced
        if replaced:  # a refacer: its own image and head, the replaced region as an outline
            rem = rem >= 0.5
            shown = ras(np.asarray(refaced[method], dtype=np.float32))
            view = _surface_depth((head_r & ~rem) | (rem & (shown > REFACED_SURFACE_FRACTION * vmax)), axis=0)
        else:
            head_view = head_view or _surface_depth(head_r, axis=0)  # seen from the left
            view = head_view
        sag_rem, axi_rem = rem[centre[0]] >= 0.5, rem[:, :, z_axial] >= 0.5
        # blue only on head tissue: removed background (noise) would hide the cut
        sag = (shown[centre[0]].T, (sag_rem & head_r[centre[0]]).T, brain_r[centre[0]].T, zooms[2] / zooms[1], sag_rem.T)
        axi = (shown[:, :, z_axial].T, (axi_rem & head_r[:, :, z_axial]).T, brain_r[:, :, z_axial].T, zooms[1] / zooms[0], axi_rem.T)
        for col, (image, mask, br, aspect, region) in enumerate((sag, axi)):
            ax = axes[row, col]
            ax.imshow(image, cmap="gray", origin="lower", vmin=0, vmax=vmax, aspect=aspect, interpolation="nearest")
            if replaced and region.any():
                ax.contour(region, levels=[0.5], colors=["cyan"], linewidths=0.6)
            elif not replaced:
                ax.imshow(np.ma.masked_where(~mask, mask), cmap=blue, origin="lower", alpha=0.65, aspect=aspect, interpolation="nearest")
            if br.any():
                ax.contour(br, levels=[0.5], colors=["yellow"], linewidths=0.6)
        shade, index, hit = view
        first = np.zeros_like(hit) if replaced else _first_hit(rem, index, hit, axis=0)
        ax = axes[row, 2]
        ax.imshow(shade.T, cmap="gray", origin="lower", vmin=0, vmax=1, aspect=zooms[2] / zooms[1], interpolation="bilinear")
        ax.imshow(np.ma.masked_where(~first.T, first.T), cmap=blue, origin="lower", alpha=0.75, aspect=zooms[2] / zooms[1], interpolation="nearest")
        ax.invert_xaxis()  # seen from the left: anterior to the left
        # the mean of (removal >= 0.5)[head], counted without the boolean copy: the same float
        removed_pct = 100 * (np.count_nonzero((removal >= 0.5) & head) / head_voxels) if head_voxels else 0.0
        axes[row, 0].set_ylabel(f"{method}\n{removed_pct:.1f}% of head", color="white", fontsize=11)
        for ax in axes[row]:
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
    for col, label in enumerate(("sagittal (anterior right)", f"axial, z = slice {z_axial}", "surface, left side")):
        axes[0, col].set_title(label, color="white", fontsize=10)
    fig.suptitle(f"{title}  removed = blue, {'replaced = cyan, ' if refaced else ''}brain = yellow", color="white", fontsize=11)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        # zlib level 1: the same pixels; PIL's default level 6 took 0.5 s of the ~1 s picture
        fig.savefig(tmp, dpi=80, facecolor="black", format="png", pil_kwargs={"compress_level": PNG_COMPRESS_LEVEL})
    plt.close(fig)
    return path
