"""Preview figure: youngest and oldest heads, ground-truth ageing against age."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from defacebench import layout
from defacebench.io.atomic import atomic_path
from defacebench.simulate.acquisition import rotation_matrix

#: Half-width (mm) of the displayed planes around the brain centre.
HALF_FOV_MM = 115.0
PIXEL_MM = 1.0
#: The axial plane lies this far above the base head's brain centre: through the bodies of the
#: lateral ventricles.
AXIAL_ABOVE_CENTRE_MM = 10.0


def _template_to_output_world(params: dict, centre: np.ndarray) -> np.ndarray:
    """4x4 map from the subject's anatomical frame (base-head world, before pose and head
    scale) to the world of its written image: x -> R S (x - c) + c + t."""
    rot = rotation_matrix(params["pose"]["rotation_deg"])
    scale = np.diag(params["anatomy"]["head_scale"])
    m = np.eye(4)
    m[:3, :3] = rot @ scale
    m[:3, 3] = centre + np.asarray(params["pose"]["translation_mm"]) - m[:3, :3] @ centre
    return m


def _planes(root: Path, pid: str) -> tuple[np.ndarray, np.ndarray, float]:
    """Mid-sagittal and axial (through the lateral ventricles) planes of a subject, un-posed with its
    ground-truth pose so that every subject is shown in the same anatomical orientation."""
    sub = pid.removeprefix("sub-")
    img = nib.load(str(layout.simulated_t1w(root, sub)))
    data = np.asanyarray(img.dataobj).astype(np.float32)
    record = json.loads(layout.simulation_files(root, sub)["record"].read_text())
    params = record["parameters"]
    centre = np.asarray(record["ground_truth"]["frame"]["brain_centre_mm"], float)
    to_out = _template_to_output_world(params, centre)
    vox_from_world = np.linalg.inv(img.affine) @ to_out
    z_level = centre[2] + AXIAL_ABOVE_CENTRE_MM
    u = np.arange(-HALF_FOV_MM, HALF_FOV_MM + PIXEL_MM / 2, PIXEL_MM)
    a, b = np.meshgrid(u, u, indexing="xy")  # rows: second coordinate, columns: first
    sag = np.stack([np.full_like(a, centre[0]), centre[1] + a, centre[2] + b, np.ones_like(a)])
    axi = np.stack([centre[0] + a, centre[1] + b, np.full_like(a, z_level), np.ones_like(a)])
    out = []
    for pts in (sag, axi):
        ijk = (vox_from_world @ pts.reshape(4, -1))[:3]
        out.append(ndi.map_coordinates(data, ijk, order=1, mode="constant", cval=0.0).reshape(a.shape))
    return out[0], out[1], float(np.percentile(data[data > 0], 99.5))


def write_preview(root: str | Path, table: pd.DataFrame, path: str | Path) -> Path:
    """Write the preview PNG: mid-sagittal and axial slices of the youngest and oldest
    subjects, and ground-truth ventricle volume and cheek fat thickness against age."""
    import matplotlib  # only when a preview is asked for: importing it costs about a second

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    root = Path(root)
    order = table.sort_values("age", kind="stable")
    picks = [order.iloc[0], order.iloc[-1]]
    fig, axes = plt.subplots(2, 3, figsize=(12, 8), gridspec_kw={"width_ratios": [1, 1, 1.25]})
    for row, sub in zip(axes, picks):
        pid = sub["participant_id"]
        sag, axi, vmax = _planes(root, pid)
        for ax, img, view in zip(row[:2], (sag, axi), ("mid-sagittal", "axial through the ventricles")):
            ax.imshow(img, origin="lower", cmap="gray", vmin=0, vmax=vmax)
            ax.set_title(f"{pid}, {sub['age']:.0f} y, {sub['sex']}, {sub['base_head']}: {view}", fontsize=8)
            ax.axis("off")
    plots = (
        (axes[0, 2], "ventricles_ml", "ventricles_norm_ml", "lateral ventricle volume (ml)"),
        (axes[1, 2], "cheek_fat_mm", "cheek_fat_norm_mm", "cheek fat thickness (mm)"),
    )
    for ax, native, norm, label in plots:
        for head, grp in table.groupby("base_head"):
            ax.scatter(grp["age"], grp[native], s=14, label=f"{head}: native")
            ax.scatter(grp["age"], grp[norm], s=14, marker="x", label=f"{head}: at base-head size")
        r = [np.corrcoef(table["age"], table[c])[0, 1] if len(table) > 2 else float("nan") for c in (native, norm)]
        ax.set_xlabel("age (years)")
        ax.set_ylabel(label)
        ax.set_title(f"ground truth, n = {len(table)}: r = {r[0]:.2f} native, {r[1]:.2f} size-normalised", fontsize=8)
        ax.legend(fontsize=7)
    fig.suptitle("defacebench simulate: youngest and oldest subject (shown un-posed), ground truth against age", fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png", metadata={"Software": None})
    plt.close(fig)
    return Path(path)
