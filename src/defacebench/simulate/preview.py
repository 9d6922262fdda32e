"""Preview figure: youngest and oldest heads, ground-truth ageing against age, and a mosaic of
faces showing how different the simulated people look (they are simulated people, not real
ones)."""

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
from defacebench.simulate.identity import subject_head_scale

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
    scale = np.diag(subject_head_scale(params))
    m = np.eye(4)
    m[:3, :3] = rot @ scale
    m[:3, 3] = centre + np.asarray(params["pose"]["translation_mm"]) - m[:3, :3] @ centre
    return m


def _unposed(root: Path, pid: str, session: str | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A scan's image, the map from its anatomical frame (mm) to its voxels, and its brain centre."""
    sub = pid.removeprefix("sub-")
    img = nib.load(str(layout.simulated_t1w(root, sub, session)))
    data = np.asanyarray(img.dataobj).astype(np.float32)
    record = json.loads(layout.simulation_files(root, sub, session)["record"].read_text())
    centre = np.asarray(record["ground_truth"]["frame"]["brain_centre_mm"], float)
    return data, np.linalg.inv(img.affine) @ _template_to_output_world(record["parameters"], centre), centre


def face_surface(root: Path, pid: str, session: str | None = None) -> np.ndarray:
    """Frontal view of a scan's skin surface (un-posed): Lambert shading of the depth at which a
    ray from the front first meets tissue; rows run from the chin (bottom) up."""
    data, vox_from_world, centre = _unposed(root, pid, session)
    data = ndi.gaussian_filter(data, 1.0)  # the skin, not the Rician noise
    u = np.arange(-80.0, 80.5, PIXEL_MM)
    h = np.arange(-135.0, 45.5, PIXEL_MM)
    depth = np.arange(150.0, 0.0, -PIXEL_MM)  # from in front of the nose backwards
    x, z, y = np.meshgrid(u, h, depth, indexing="xy")
    pts = np.stack([centre[0] + x, centre[1] + y, centre[2] + z, np.ones_like(x)]).reshape(4, -1)
    vals = ndi.map_coordinates(data, (vox_from_world @ pts)[:3], order=1, mode="constant", cval=0.0).reshape(x.shape)
    hit = vals > 0.12 * float(np.percentile(data[data > 0], 99.5))
    first = np.where(hit.any(2), hit.argmax(2), hit.shape[2] - 1).astype(float)
    surface = ndi.gaussian_filter(depth[0] - first * PIXEL_MM, 0.7)
    gz, gx = np.gradient(surface, PIXEL_MM)
    normal = np.stack([-gx, -gz, np.ones_like(gx)])
    normal /= np.sqrt((normal**2).sum(0))
    light = np.array([-0.4, 0.5, 1.0]) / np.linalg.norm([-0.4, 0.5, 1.0])
    shade = np.clip(np.tensordot(light, normal, axes=1), 0, 1)
    return np.where(hit.any(2), 0.15 + 0.85 * shade, 0.0)


def _planes(root: Path, pid: str, session: str | None = None) -> tuple[np.ndarray, np.ndarray, float]:
    """Mid-sagittal and axial (through the lateral ventricles) planes of a subject, un-posed with its
    ground-truth pose so that every subject is shown in the same anatomical orientation."""
    data, vox_from_world, centre = _unposed(root, pid, session)
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


#: People shown in the face mosaic of the preview.
MOSAIC_PEOPLE = 8


def _session(row: pd.Series) -> str | None:
    ses = row.get("session_id")
    return str(ses).removeprefix("ses-") if isinstance(ses, str) and ses else None


def write_preview(root: str | Path, table: pd.DataFrame, path: str | Path) -> Path:
    """Write the preview PNG: mid-sagittal and axial slices of the youngest and oldest
    scans, ground-truth ventricle volume and cheek fat thickness against age, and the frontal
    skin surface of up to :data:`MOSAIC_PEOPLE` people (their first session)."""
    import matplotlib  # only when a preview is asked for: importing it costs about a second

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    root = Path(root)
    order = table.sort_values("age", kind="stable")
    picks = [order.iloc[0], order.iloc[-1]]
    fig = plt.figure(figsize=(12, 15))
    outer = fig.add_gridspec(3, 1, height_ratios=[1, 1, 1.9])
    axes = np.array([[fig.add_subplot(outer[r].subgridspec(1, 3, width_ratios=[1, 1, 1.25])[c]) for c in range(3)] for r in range(2)])
    for row, sub in zip(axes, picks):
        pid = sub["participant_id"]
        sag, axi, vmax = _planes(root, pid, _session(sub))
        name = f"{pid} {sub['session_id']}" if _session(sub) else pid
        for ax, img, view in zip(row[:2], (sag, axi), ("mid-sagittal", "axial through the ventricles")):
            ax.imshow(img, origin="lower", cmap="gray", vmin=0, vmax=vmax)
            ax.set_title(f"{name}, {sub['age']:.0f} y, {sub['sex']}, {sub['base_head']}: {view}", fontsize=8)
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
        ax.set_title(f"ground truth, {len(table)} scans: r = {r[0]:.2f} native, {r[1]:.2f} size-normalised", fontsize=8)
        ax.legend(fontsize=7)
    people = table.drop_duplicates("participant_id").head(MOSAIC_PEOPLE)
    faces = outer[2].subgridspec(2, (MOSAIC_PEOPLE + 1) // 2)
    scale = table["identity_scale"].iloc[0] if "identity_scale" in table else float("nan")
    for k, (_, sub) in enumerate(people.iterrows()):
        ax = fig.add_subplot(faces[k // ((MOSAIC_PEOPLE + 1) // 2), k % ((MOSAIC_PEOPLE + 1) // 2)])
        ax.imshow(face_surface(root, sub["participant_id"], _session(sub)), origin="lower", cmap="gray", vmin=0, vmax=1)
        ax.set_title(f"{sub['participant_id']}, {sub['age']:.0f} y, {sub['sex']}", fontsize=8)
        ax.axis("off")
    fig.suptitle("defacebench simulate: youngest and oldest scan (shown un-posed), ground truth against age;\n"
                 f"bottom: frontal skin surface of {len(people)} simulated people (un-posed; identity scale {scale:g})", fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png", metadata={"Software": None})
    plt.close(fig)
    return Path(path)
