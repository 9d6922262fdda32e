"""Preview figure: youngest and oldest heads, ground-truth ageing against age."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from defacebench.io.atomic import atomic_path


def _slices(path: Path) -> tuple[np.ndarray, np.ndarray, float]:
    import nibabel as nib

    img = nib.as_closest_canonical(nib.load(str(path)))
    data = np.asanyarray(img.dataobj).astype(np.float32)
    i = data.shape[0] // 2
    profile = data.mean(axis=(0, 1))
    k = int(np.argmax(np.cumsum(profile) > 0.6 * profile.sum()))
    return data[i].T, data[:, :, k].T, float(np.percentile(data[data > 0], 99.5))


def write_preview(root: str | Path, table: pd.DataFrame, path: str | Path) -> Path:
    """Write the preview PNG: mid-sagittal and axial slices of the youngest and oldest
    subjects, and ground-truth ventricle volume and cheek fat thickness against age."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    root = Path(root)
    order = table.sort_values("age")
    picks = [order.iloc[0], order.iloc[-1]]
    fig, axes = plt.subplots(2, 3, figsize=(12, 8), gridspec_kw={"width_ratios": [1, 1, 1.15]})
    for row, sub in zip(axes, picks):
        pid = sub["participant_id"]
        sag, axi, vmax = _slices(root / pid / "anat" / f"{pid}_T1w.nii.gz")
        for ax, img, view in zip(row[:2], (sag, axi), ("mid-sagittal", "axial")):
            ax.imshow(img, origin="lower", cmap="gray", vmin=0, vmax=vmax)
            ax.set_title(f"{pid}, {sub['age']:.0f} y, {sub['sex']}, {view}", fontsize=9)
            ax.axis("off")
    for ax, col, label in ((axes[0, 2], "ventricles_ml", "ventricle volume (ml)"), (axes[1, 2], "cheek_fat_mm", "cheek fat thickness (mm)")):
        for head, grp in table.groupby("base_head"):
            ax.scatter(grp["age"], grp[col], s=14, label=head)
        r = np.corrcoef(table["age"], table[col])[0, 1] if len(table) > 2 else float("nan")
        ax.set_xlabel("age (years)")
        ax.set_ylabel(label)
        ax.set_title(f"ground truth, r = {r:.2f}", fontsize=9)
        ax.legend(fontsize=7, title="base head", title_fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png", metadata={"Software": None})
    plt.close(fig)
    return Path(path)
