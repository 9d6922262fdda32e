"""Preprocessing QC pictures: per-condition mosaics in template space, and the grids figure.

Mosaics show single subjects' raw and face-only images, which can identify a person:
they are written under ``STUDY/derivatives/defacebench/qc/`` beside the other
derivatives, never into reports or docs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from defacebench.io.atomic import atomic_path
from defacebench.imaging.grids import Grid, apply_affine

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
    from defacebench.preprocess.pipeline import qc_dir, template_mask
    from defacebench.io.store import open_condition

    outline = template_mask(grid)
    paths = []
    for condition in conditions:
        store = open_condition(study_dir, grid.name, condition)
        rows = pick_rows(store.ages, n)
        labels = [f"row {i}, {store.index['age'].iloc[i]:.0f} y" for i in rows]
        fig = mosaic_figure([store.images[i] for i in rows], labels, store.affine, outline,
                            f"{condition} on {grid.name} ({len(store.index)} scans; red: MNI brain mask)")
        paths.append(save_figure(fig, qc_dir(study_dir) / f"preprocess_{grid.name}_{condition}.png"))
    return paths


def grids_figure(path: str | Path, grids: Sequence[Grid] | None = None) -> Path:
    """Docs picture: the MNI head (mid-sagittal and axial) with each grid's box drawn on it."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from defacebench.imaging.grids import GRIDS
    from defacebench.imaging.templates import mni_head

    grids = list(grids or (GRIDS["mni2mm"], GRIDS["mni2mm-head"]))
    head = mni_head(1)
    volume = np.asarray(head.dataobj, dtype=np.float32)
    volume = volume / np.percentile(volume[volume > 0], 99)
    panels = _panels(volume, head.affine, {"sagittal": 0.0, "axial": -35.0})
    colours = ["#ff4040", "#40c0ff", "#80ff80", "#ffd040"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 5.2), facecolor="white")
    for ax, (view, plane, extent), dims in zip(axes, (panels[0], panels[2]), ((1, 2), (0, 1))):
        ax.imshow(plane, cmap="gray", vmin=0, vmax=1, origin="lower", extent=extent)
        for grid, colour in zip(grids, colours):
            (x0, x1), (y0, y1) = grid.bounds_mm[dims[0]], grid.bounds_mm[dims[1]]
            half = np.array(grid.voxel_mm) / 2
            ax.add_patch(Rectangle((x0 - half[dims[0]], y0 - half[dims[1]]), x1 - x0 + 2 * half[dims[0]], y1 - y0 + 2 * half[dims[1]],
                                   fill=False, edgecolor=colour, linewidth=2, label=f"{grid.name} {'x'.join(map(str, grid.shape))}"))
        names = "xyz"
        ax.set_xlabel(f"{names[dims[0]]} (mm)")
        ax.set_ylabel(f"{names[dims[1]]} (mm)")
        position = {"sagittal": "x = 0 mm", "axial": "z = -35 mm"}[view]
        ax.set_title(f"MNI head, {view} slice at {position}")
        ax.set_xlim(extent[0] - 5, extent[1] + 5)
        ax.set_ylim(extent[2] - 5, extent[3] + 5)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(grids), fontsize=9, frameon=False)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return save_figure(fig, path, dpi=100)
