"""Preprocessing QC: the per-scan table (``qc_preprocess.tsv``) and per-condition mosaics in template space.

Mosaics show single subjects' raw and face-only images, which can identify a person:
they are written under ``STUDY/derivatives/defacebench/qc/`` beside the other
derivatives, never into reports or docs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from defacebench import layout
from defacebench.imaging.grids import Grid, apply_affine
from defacebench.imaging.templates import brain_mask_on_grid
from defacebench.io.atomic import atomic_path, write_table_atomic
from defacebench.io.store import open_condition
from defacebench.preprocess.scan import PreprocessTask
from defacebench.preprocess.stores import subject_ids
from defacebench.preprocess.work import read_work_meta

QC_COLUMNS = ("key", "participant_id", "session_id", "run", "grid", "status", "brain_dice", "dice_flag", "norm_scale",
              "bias_min", "bias_max", "seconds", "reason")

#: Subjects per mosaic.
MOSAIC_SUBJECTS = 8
#: World-mm positions of the three slices: sagittal x, coronal y, axial z.
SLICES_MM = {"sagittal": 2.0, "coronal": -20.0, "axial": -30.0}
#: Display range of normalised intensities (the brain median is 1 in every condition).
DISPLAY_MAX = 2.0


def _ras_view(volume: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flip axes stored in decreasing world order (axis-aligned grids), returning data and affine."""
    data, affine = volume, affine.copy()
    for axis in range(3):
        if affine[axis, axis] < 0:
            data = np.flip(data, axis)
            flip = np.eye(4)
            flip[axis, axis] = -1
            flip[axis, 3] = volume.shape[axis] - 1
            affine = affine @ flip
    return data, affine


def slice_index(affine: np.ndarray, shape: Sequence[int], axis: int, position_mm: float) -> int:
    """Voxel index along ``axis`` nearest to a world position (clamped into the grid)."""
    point = np.zeros(3)
    point[axis] = position_mm
    ijk = apply_affine(np.linalg.inv(affine), point[None])[0]
    return int(np.clip(round(ijk[axis]), 0, shape[axis] - 1))


def _panels(volume: np.ndarray, affine: np.ndarray, slices_mm: dict[str, float] | None = None) -> list[tuple[str, np.ndarray, tuple[float, float, float, float]]]:
    """(view, 2D image for imshow(origin='lower'), extent) of the three standard slices."""
    slices_mm = {**SLICES_MM, **(slices_mm or {})}
    data, ras = _ras_view(volume, affine)
    lo = ras[:3, 3]
    hi = lo + np.diag(ras)[:3] * (np.array(data.shape) - 1)
    out = []
    for axis, view in enumerate(("sagittal", "coronal", "axial")):
        idx = slice_index(ras, data.shape, axis, slices_mm[view])
        plane = np.take(data, idx, axis=axis)
        across, up = [a for a in range(3) if a != axis]
        out.append((view, plane.T, (lo[across], hi[across], lo[up], hi[up])))
    return out


def pick_rows(ages: np.ndarray, n: int = MOSAIC_SUBJECTS) -> list[int]:
    """``n`` store rows spread evenly over the age range (all rows when fewer)."""
    order = np.argsort(np.asarray(ages), kind="stable")
    if len(order) <= n:
        return [int(i) for i in order]
    picks = np.round(np.linspace(0, len(order) - 1, n)).astype(int)
    return [int(order[i]) for i in picks]


def mosaic_figure(images: Sequence[np.ndarray], labels: Sequence[str], affine: np.ndarray, outline: np.ndarray | None, title: str):
    """A figure: one column per subject, rows sagittal / coronal / axial, template outline in red."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    n = max(1, len(images))
    fig, axes = plt.subplots(3, n, figsize=(1.9 * n, 6.2), squeeze=False, facecolor="black")
    outline_panels = _panels(outline.astype(np.float32), affine) if outline is not None else None
    for col, (image, label) in enumerate(zip(images, labels)):
        for row, (view, plane, extent) in enumerate(_panels(np.asarray(image, dtype=np.float32), affine)):
            ax = axes[row, col]
            ax.imshow(plane, cmap="gray", vmin=0, vmax=DISPLAY_MAX, origin="lower", extent=extent, interpolation="nearest")
            if outline_panels is not None:
                _, mask_plane, mask_extent = outline_panels[row]
                if mask_plane.any() and not mask_plane.all():
                    ax.contour(mask_plane, levels=[0.5], colors="red", linewidths=0.6, origin="lower", extent=mask_extent)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_facecolor("black")
            if row == 0:
                ax.set_title(label, color="white", fontsize=8)
            if col == 0:
                ax.set_ylabel(view, color="white", fontsize=8)
    fig.suptitle(title, color="white", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    return fig


def save_figure(fig, path: str | Path, dpi: int = 110) -> Path:
    """Save a matplotlib figure as PNG atomically and close it."""
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, facecolor=fig.get_facecolor(), format="png")
    plt.close(fig)
    return Path(path)


def write_mosaics(study_dir: str | Path, grid: Grid, conditions: Sequence[str], n: int = MOSAIC_SUBJECTS) -> list[Path]:
    """One mosaic PNG per condition store of ``grid``: ``qc/preprocess_<grid>_<condition>.png``."""
    outline = brain_mask_on_grid(grid)
    paths = []
    for condition in conditions:
        store = open_condition(study_dir, grid.name, condition)
        rows = pick_rows(store.ages, n)
        labels = [f"row {i}, {store.index['age'].iloc[i]:.0f} y" for i in rows]
        fig = mosaic_figure([store.images[i] for i in rows], labels, store.affine, outline,
                            f"{condition} on {grid.name} ({len(store.index)} scans; red: MNI brain mask)")
        paths.append(save_figure(fig, layout.mosaic_file(study_dir, grid.name, condition)))
    return paths


# --------------------------------------------------------------------------- QC table
def qc_rows(tasks: Sequence[PreprocessTask], values: dict[str, dict], reasons: dict[str, str], grid: Grid) -> pd.DataFrame:
    """One QC row per scan: status, brain Dice (flag below 0.85), scale, bias range, seconds."""
    rows = []
    for task in tasks:
        pid, ses, run = subject_ids(task.subject)
        meta = values.get(task.key)
        if meta is None:
            meta = read_work_meta(layout.work_file(task.study_dir, grid.name, task.key)) if task.key not in reasons else None
        if meta is not None and task.key not in reasons:
            rows.append({"key": task.key, "participant_id": pid, "session_id": ses, "run": run, "grid": grid.name, "status": "ok",
                         "brain_dice": meta["brain_dice"], "dice_flag": "low" if meta["dice_flag"] else "",
                         "norm_scale": round(meta["norm_scale"], 4), "bias_min": round(meta["bias_min"], 4), "bias_max": round(meta["bias_max"], 4),
                         "seconds": round(sum(meta["seconds"].values()), 2), "reason": ""})
        else:
            rows.append({"key": task.key, "participant_id": pid, "session_id": ses, "run": run, "grid": grid.name, "status": "failed",
                         "brain_dice": np.nan, "dice_flag": "", "norm_scale": np.nan, "bias_min": np.nan, "bias_max": np.nan,
                         "seconds": np.nan, "reason": reasons.get(task.key, "not preprocessed")})
    return pd.DataFrame(rows, columns=list(QC_COLUMNS))


def write_qc_table(path: str | Path, table: pd.DataFrame, grid: str) -> Path:
    """Write ``qc_preprocess.tsv``, replacing the rows of ``grid`` and keeping other grids'."""
    path = Path(path)
    if path.is_file():
        old = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
        old = old[old["grid"] != grid] if "grid" in old else old.iloc[0:0]
        table = pd.concat([old, table.astype(str).replace("nan", "n/a")], ignore_index=True)
    return write_table_atomic(path, table)
