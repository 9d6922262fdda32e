"""Does the raw-head model use the face? Face ablation and occlusion sensitivity, in years.

**Face ablation.** For each test scan and each method ``m`` with a face-only store, the
voxels ``m`` removed from *that scan* (where its face-only image holds at least half of the
raw intensity: the removal rule of :func:`defacebench.analysis.saliency.removal_frequency`)
are replaced in the raw image, for each method and for their union (every voxel any
method removed), either by zero (``fill = "zero"``, what a defacer leaves) or by the mean
raw image of the training scans (``fill = "average face"``: the cohort's average face, a
refacing-style replacement that keeps the image's statistics). A raw-head model is run on
the ablated image; :func:`defacebench.analysis.crosseval.paired_change` gives the mean
``|change in prediction|`` and the change in MAE (years) with paired bootstrap CIs and
Wilcoxon tests. Zero-filling one method's region is its defaced image up to the soft edge
of pydeface's mask, so the zero rows of single methods agree with ``dbrainage.csv``; the
union and the average-face rows are what only ablation gives.

**Occlusion sensitivity** (the second attribution, beside Grad-CAM): one region at a time,
the same for every scan, set to zero: the **face region** (voxels any method removes in
more than half of the scans, outside the brain: :func:`~defacebench.analysis.saliency.face_region`),
the **brain** (MNI152 brain mask) and **skull and scalp** (the rest of the cohort's head).
Per region: mean ``|change in prediction|`` and its share of the three regions' sum.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from defacebench import layout
from defacebench.analysis.crosseval import paired_change
from defacebench.io.atomic import write_table_atomic

#: Predicts ages ``(B,)`` of float32 images ``(B, X, Y, Z)``.
Predictor = Callable[[np.ndarray], np.ndarray]
#: Fill names of the ablation table.
FILLS: tuple[str, ...] = ("zero", "average face")
#: Name of the union region (every voxel any method removed from the scan).
UNION = "union"
#: Occlusion regions, in table order.
OCCLUSION_REGIONS: tuple[str, ...] = ("face region", "brain", "skull and scalp")


def removed_voxels(raw: np.ndarray, face: np.ndarray) -> np.ndarray:
    """Voxels a method removed from each scan of a batch: its face-only image holds at least half of the raw intensity there."""
    face = np.abs(face)
    return (face > 0) & (face >= 0.5 * np.abs(raw))


def mean_image(images: np.ndarray, rows: np.ndarray, max_scans: int = 200, chunk: int = 16) -> np.ndarray:
    """Voxelwise mean (float32) of at most ``max_scans`` evenly spaced ``images[rows]``."""
    rows = np.asarray(rows)
    if len(rows) > max_scans:
        rows = rows[np.linspace(0, len(rows) - 1, max_scans).round().astype(int)]
    total = np.zeros(images.shape[1:], np.float64)
    for start in range(0, len(rows), chunk):
        total += np.asarray(images[np.sort(rows[start : start + chunk])], np.float32).sum(axis=0)
    return (total / max(1, len(rows))).astype(np.float32)


def ablation_predictions(predict: Predictor, raw: np.ndarray, faces: Mapping[str, np.ndarray], rows: np.ndarray,
                         average_face: np.ndarray | None = None, chunk: int = 8) -> dict[tuple[str, str], np.ndarray]:
    """Predictions on ablated raw images: ``(region, fill) -> ages of rows``; ``("none", "none")`` is the intact image.

    ``faces`` maps each method to its face-only images (rows aligned with ``raw``);
    regions are the methods and :data:`UNION`; fills :data:`FILLS` (``"average face"``
    only with ``average_face``).
    """
    fills = {"zero": np.float32(0.0), **({"average face": np.asarray(average_face, np.float32)} if average_face is not None else {})}
    out: dict[tuple[str, str], list[np.ndarray]] = {("none", "none"): []}
    for start in range(0, len(rows), chunk):
        block = np.asarray(rows[start : start + chunk])
        order = np.argsort(block)
        image = np.empty((len(block), *raw.shape[1:]), np.float32)
        image[order] = np.asarray(raw[block[order]], np.float32)
        masks = {}
        for method, face in faces.items():
            f = np.empty_like(image)
            f[order] = np.asarray(face[block[order]], np.float32)
            masks[method] = removed_voxels(image, f)
        if masks:
            masks[UNION] = np.logical_or.reduce(list(masks.values()))
        out[("none", "none")].append(predict(image))
        for region, mask in masks.items():
            for fill, value in fills.items():
                out.setdefault((region, fill), []).append(predict(np.where(mask, value, image)))
    return {key: np.concatenate(parts) for key, parts in out.items()}


def ablation_table(predictions: Mapping[tuple[str, str], np.ndarray], ages: np.ndarray, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """One row per (region, fill): :func:`paired_change` of the ablated against the intact predictions."""
    reference = predictions[("none", "none")]
    rows = [{"region": region, "fill": fill, **paired_change(reference, values, ages, n_boot, seed)}
            for (region, fill), values in predictions.items() if region != "none"]
    return pd.DataFrame(rows, columns=None if rows else ["region", "fill"])


def occlusion_table(predict: Predictor, raw: np.ndarray, rows: np.ndarray, regions: Mapping[str, np.ndarray], ages: np.ndarray,
                    n_boot: int = 2000, seed: int = 0, chunk: int = 8) -> pd.DataFrame:
    """Occlusion sensitivity: each of ``regions`` (bool masks on the grid) set to zero in every scan.

    ``ages`` holds the age of every row of ``raw`` (a store's ``ages``). Columns: region, n_voxels, the :func:`paired_change` fields, and ``share``: the
    region's mean ``|change in prediction|`` over the sum of all regions' (nan when no
    region moves any prediction: then there is no share to give).
    """
    rows = np.sort(np.asarray(rows))
    intact, occluded = [], {name: [] for name in regions}
    for start in range(0, len(rows), chunk):
        image = np.asarray(raw[rows[start : start + chunk]], np.float32)
        intact.append(predict(image))
        for name, mask in regions.items():
            occluded[name].append(predict(np.where(mask, np.float32(0.0), image)))
    reference = np.concatenate(intact)
    row_ages = np.asarray(ages, float)[rows]
    table = pd.DataFrame([{"region": name, "n_voxels": int(np.asarray(regions[name]).sum()),
                           **paired_change(reference, np.concatenate(parts), row_ages, n_boot, seed)} for name, parts in occluded.items()])
    total = table["mean_abs_change"].sum()
    table["share"] = table["mean_abs_change"] / total if total > 0 else np.nan
    return table


def occlusion_regions(face_region: np.ndarray, brain: np.ndarray, head: np.ndarray) -> dict[str, np.ndarray]:
    """The three disjoint occlusion regions: face region, brain, skull and scalp (head minus both)."""
    face = np.asarray(face_region, bool) & ~np.asarray(brain, bool)
    return {"face region": face, "brain": np.asarray(brain, bool), "skull and scalp": np.asarray(head, bool) & ~face & ~np.asarray(brain, bool)}


def write_tables(study_dir: str | Path, ablation: pd.DataFrame, occlusion: pd.DataFrame) -> None:
    """Write ``results/face_ablation.csv`` and ``results/occlusion.csv``."""
    write_table_atomic(layout.evaluation_table(study_dir, "face_ablation"), ablation, sep=",")
    write_table_atomic(layout.evaluation_table(study_dir, "occlusion"), occlusion, sep=",")
