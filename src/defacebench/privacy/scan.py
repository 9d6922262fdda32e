"""One scan of the privacy stage: render its raw head and every method's output, run both attacks' networks, measure the face left.

The raw head is rebuilt from a defacer's two halves (``defaced + face == input`` exactly, the
deface stage's contract), so the stage needs only the study directory. Everything of a scan
is written at once, atomically, into ``<prefix>_desc-privacy_features.npz``; a rerun skips a
scan whose file holds every method asked for.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from defacebench import layout
from defacebench.conditions import is_refacer
from defacebench.imaging.registration import load_transform
from defacebench.io.atomic import atomic_path
from defacebench.io.nifti import read_image
from defacebench.privacy.faces import DESCRIPTOR_SIZE, Detection, face_models
from defacebench.privacy.render import VIEWS, View, head_centre, head_volume, render_views
from defacebench.privacy.residual import FACE_REGIONS, region_masks, residual_face, skin_surface, voxel_area_mm2

__all__ = ["PrivacyScan", "PrivacyTask", "fallback_box", "load_features", "privacy_scan", "surface_feature"]

#: Renders of finer images are made from a 2 mm block average (as detailed for the detector,
#: a quarter of the work); at or above this voxel size the image is rendered as it is.
RENDER_VOXEL_MM = 1.5
#: Block size (pixels) of the surface descriptor's depth map.
SURFACE_BLOCK_PX = 4
#: The label of the skull-stripped head (raw times the deface stage's brain mask).
SKULLSTRIPPED_LABEL = "skullstripped"


@dataclass(frozen=True)
class PrivacyScan:
    """What the stage needs of a scan: BIDS labels (from ``splits.tsv``)."""

    subject: str
    session: str | None = None
    run: str | None = None

    @property
    def key(self) -> str:
        parts = [f"sub-{self.subject}"] + ([f"ses-{self.session}"] if self.session else []) + ([f"run-{self.run}"] if self.run else [])
        return "_".join(parts)


@dataclass(frozen=True)
class PrivacyTask:
    """One scan's work: the study, the scan, the methods, where ground-truth labels are (simulated cohorts), whether to write PNG renders."""

    study: Path
    scan: PrivacyScan
    methods: tuple[str, ...]
    labels: Path | None = None
    write_renders: bool = True

    def __str__(self) -> str:
        return self.scan.key


def fallback_box(view: View) -> tuple[int, int, int, int]:
    """Where the face of a head in canonical pose sits in ``view`` (left, top, width, height px):
    used when the detector finds nothing (an attacker knows the pose)."""
    size = int(round(140.0 / view.pixel_mm))
    centre_col = view.size_px / 2 - 55.0 * np.sin(np.deg2rad(view.yaw_deg)) / view.pixel_mm
    centre_row = view.size_px / 2 + 4.0 / view.pixel_mm
    return int(round(centre_col - size / 2)), int(round(centre_row - size / 2)), size, size


def _render_image(img: nib.Nifti1Image) -> nib.Nifti1Image:
    from defacebench.imaging.resample import block_average

    zooms = np.asarray(img.header.get_zooms()[:3], dtype=float)
    factors = tuple(int(max(1, np.floor(RENDER_VOXEL_MM * 1.34 / z))) if z < RENDER_VOXEL_MM else 1 for z in zooms)
    if all(f == 1 for f in factors):
        return img
    data, affine = block_average(np.asarray(img.dataobj, dtype=np.float32), img.affine, factors)
    return nib.Nifti1Image(data, affine)


def surface_feature(depth_mm: np.ndarray, box: tuple[int, int, int, int], block_px: int = SURFACE_BLOCK_PX) -> np.ndarray:
    """The face's shape as the attacker's second descriptor: the depth map inside ``box``, block-averaged,
    capped behind the face, centred and scaled to unit length (so distances rank like correlations).

    Rays that miss the head count as far; depths beyond the crop's 60th percentile are capped
    there, so the neck, hair line and background do not outweigh the face.
    """
    left, top, width, height = box
    crop = np.asarray(depth_mm, dtype=np.float64)[max(0, top):top + height, max(0, left):left + width]
    finite = np.isfinite(crop)
    if not finite.any():
        return np.zeros(((height // block_px) * (width // block_px)), np.float32)
    crop = np.where(finite, crop, np.nanmax(crop))
    crop = np.minimum(crop, np.percentile(crop, 60))
    rows, cols = (crop.shape[0] // block_px) * block_px, (crop.shape[1] // block_px) * block_px
    blocks = crop[:rows, :cols].reshape(rows // block_px, block_px, cols // block_px, block_px).mean(axis=(1, 3))
    out = np.zeros(((height // block_px) * (width // block_px)), np.float64)
    flat = (blocks - blocks.mean()).ravel()
    out[: flat.size] = flat
    norm = np.linalg.norm(out)
    return (out / norm if norm > 0 else out).astype(np.float32)


def _png(views: dict[str, np.ndarray]) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.concatenate(list(views.values()), axis=1)).save(buffer, format="PNG")
    return buffer.getvalue()


def load_features(path: Path) -> dict[str, np.ndarray] | None:
    """A scan's features file as a dict of arrays (None when missing or unreadable)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, KeyError):
        return None


def _raw_image(files: dict[str, Path], methods: tuple[str, ...]) -> nib.Nifti1Image:
    for m in methods:
        if not is_refacer(m) and files[f"{m}_defaced"].is_file() and files[f"{m}_face"].is_file():
            defaced, face = read_image(files[f"{m}_defaced"]), read_image(files[f"{m}_face"])
            data = np.asarray(defaced.dataobj, dtype=np.float32) + np.asarray(face.dataobj, dtype=np.float32)
            return nib.Nifti1Image(data, defaced.affine)
    raise FileNotFoundError("no defacer's defaced and face-only images (the raw head is rebuilt from them): run defacebench deface with a defacer")


def _attack_features(task: PrivacyTask, raw: nib.Nifti1Image, arrays: dict[str, np.ndarray], to_mni: np.ndarray) -> dict[str, np.ndarray]:
    """Render every head of a scan in one pose and run the attacker's networks on each view.

    The raw head comes first: where the detector finds its face, that box stands in for the
    other heads' faces where the detector finds none (the pose is canonical, so the attacker
    knows where the face was). Returns the arrays of the features file by name.
    """
    models = face_models()
    raw_small = _render_image(raw)
    centre = head_centre(raw_small, head_volume(raw_small))
    n_heads, n_views = len(arrays), len(VIEWS)
    fallback = [fallback_box(v) for v in VIEWS]
    shape_boxes = list(fallback)  # one fixed frame for every head: the pose is canonical
    out = {"found": np.zeros((n_heads, n_views), bool), "confidence": np.full((n_heads, n_views), np.nan, np.float32),
           "boxes": np.zeros((n_heads, n_views, 4), np.int32), "descriptors": np.zeros((n_heads, n_views, DESCRIPTOR_SIZE), np.float32),
           "surfaces": np.zeros((n_heads, n_views, surface_feature(np.zeros((1, 1)), shape_boxes[0]).size), np.float32)}
    for i, (label, data) in enumerate(arrays.items()):
        small = raw_small if label == layout.RAW_LABEL else _render_image(nib.Nifti1Image(data, raw.affine))
        views = render_views(small, to_mni, VIEWS, head_centre_world=centre)
        for j, view in enumerate(VIEWS):
            shaded, depth = views[view.name]
            detection = models.detect(shaded, fallback[j])
            if label == layout.RAW_LABEL and detection.found:
                fallback[j] = (detection.left, detection.top, detection.width, detection.height)
            box = detection if detection.found else Detection(False, float("nan"), *fallback[j])
            out["found"][i, j], out["confidence"][i, j] = detection.found, detection.confidence
            out["boxes"][i, j] = (box.left, box.top, box.width, box.height)
            out["descriptors"][i, j] = models.descriptor(shaded, box)
            out["surfaces"][i, j] = surface_feature(depth, shape_boxes[j])
        if task.write_renders:
            with atomic_path(layout.privacy_render(task.study, task.scan, label)) as tmp:
                tmp.write_bytes(_png({name: pair[0] for name, pair in views.items()}))
    return out


def privacy_scan(task: PrivacyTask) -> dict:
    """Render, detect, describe and measure one scan; write its features file. Returns a small summary."""
    out = layout.privacy_features(task.study, task.scan)
    previous = load_features(out)
    if previous is not None and set(task.methods) <= set(previous["methods"].tolist()):
        return {"scan": task.scan.key, "skipped": True}
    files = layout.scan_files(task.study, task.scan, task.methods)
    for role in ("to_mni", *[f"{m}_defaced" for m in task.methods]):
        if not files[role].is_file():
            raise FileNotFoundError(f"deface output missing: {files[role].name}")
    to_mni = load_transform(files["to_mni"])
    raw = _raw_image(files, task.methods)
    images = {layout.RAW_LABEL: raw, **{m: read_image(files[f"{m}_defaced"]) for m in task.methods}}
    arrays = {label: np.asarray(img.dataobj, dtype=np.float32) for label, img in images.items()}
    if files["brain_mask"].is_file():  # the skull-stripped head: no face at all, the frontier's other end
        arrays[SKULLSTRIPPED_LABEL] = arrays[layout.RAW_LABEL] * (np.asarray(read_image(files["brain_mask"]).dataobj) > 0.5)

    heads = list(arrays)
    attack = _attack_features(task, raw, arrays, to_mni)
    label_image = None
    if task.labels is not None and Path(task.labels).is_file():
        candidate = read_image(task.labels)
        if candidate.shape[:3] == raw.shape[:3] and np.allclose(candidate.affine, raw.affine, atol=1e-3):
            label_image = np.asarray(candidate.dataobj)
    regions = region_masks(skin_surface(arrays[layout.RAW_LABEL]), raw.affine, to_mni, label_image)
    rows = residual_face(arrays[layout.RAW_LABEL], {m: arrays[m] for m in heads}, regions, voxel_area_mm2(raw))
    region_names = list(FACE_REGIONS)
    left = np.array([[r["left_mm2"] for r in rows if r["method"] == m] for m in heads], np.float32)
    skin = np.array([r["skin_mm2"] for r in rows if r["method"] == heads[0]], np.float32)
    with atomic_path(out) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, methods=np.array(heads), views=np.array([v.name for v in VIEWS]), **attack, regions=np.array(region_names),
                     skin_mm2=skin, left_mm2=left, ground_truth_labels=np.array(label_image is not None))
    return {"scan": task.scan.key, "skipped": False, "raw_found": bool(attack["found"][0].any())}
