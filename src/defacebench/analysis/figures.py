"""The study's figures as PNG (matplotlib, Agg backend): the paper's Figs. 1, 3 and 4,
predicted-vs-true age scatter plots and training curves.

Figures show cohort averages or the MNI template, never one person's image; brain images
are drawn in MNI space (neurological convention: the subject's left on the image's left).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from defacebench import layout
from defacebench.conditions import METHODS, method_name, condition_kind, condition_label, condition_title, order_conditions
from defacebench.io.atomic import atomic_path

#: Colour per condition kind.
KIND_COLOURS: dict[str, str] = {"raw": "#7f7f7f", "skullstripped": "#2ca02c", "defaced": "#1f77b4", "face": "#ff7f0e", "facemask": "#8c564b", "other": "#9467bd"}
#: Slices of the saliency figure in MNI mm: sagittal at x, axial at z (through brain and face).
SALIENCY_SLICES_MM: dict[str, float] = {"sagittal": 0.0, "axial": -15.0}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | Path, dpi: int = 110) -> Path:
    """Save a matplotlib figure as PNG atomically and close it."""
    plt = _pyplot()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png")
    plt.close(fig)
    return Path(path)


# --------------------------------------------------------------------------- image planes
def _ras(volume: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Flip axes of an axis-aligned grid so indices increase with world x, y, z; axis extents in mm."""
    affine = np.asarray(affine, float)
    out = np.asarray(volume)
    extents = []
    for axis in range(3):
        step = affine[axis, axis]
        first = affine[axis, 3]
        last = first + step * (volume.shape[axis] - 1)
        if step < 0:
            out = np.flip(out, axis=axis)
            first, last = last, first
        half = abs(step) / 2
        extents.append((first - half, last + half))
    return out, extents


def plane(volume: np.ndarray, affine: np.ndarray, view: str, at_mm: float | None = None, reduce: str | None = None) -> tuple[np.ndarray, list[float]]:
    """A 2-D plane for ``imshow(origin="lower", extent=...)``: sagittal (y right, z up) or axial (x right, y up).

    Either the slice nearest ``at_mm`` (world x for sagittal, z for axial) or a reduction
    (``"max"``) through the volume.
    """
    ras, ext = _ras(volume, affine)
    axis = {"sagittal": 0, "axial": 2}[view]
    if reduce == "max":
        image = ras.max(axis=axis)
    else:
        lo, hi = ext[axis]
        n = ras.shape[axis]
        pos = 0.0 if at_mm is None else at_mm
        index = int(np.clip(np.round((pos - lo) / (hi - lo) * n - 0.5), 0, n - 1))
        image = np.take(ras, index, axis=axis)
    if view == "sagittal":
        return image.T, [ext[1][0], ext[1][1], ext[2][0], ext[2][1]]
    return image.T, [ext[0][0], ext[0][1], ext[1][0], ext[1][1]]


def _background(ax, template: np.ndarray, head: np.ndarray | None, affine, view, at_mm=None, reduce=None) -> list[float]:
    """Draw the template (grey) over a light cohort head silhouette; return the extent."""
    base = np.asarray(template, np.float32)
    base = base / base.max() if base.max() > 0 else base
    if head is not None:
        base = np.where((base < 0.05) & head, 0.12, base)
    image, extent = plane(base, affine, view, at_mm, "max" if reduce == "max" else None)
    ax.imshow(image, origin="lower", extent=extent, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    return extent


# --------------------------------------------------------------------------- Fig. 1
#: Fig. 1 leaves out voxels removed in fewer than this share of the scans.
MIN_SHARE_SHOWN = 0.1


def plot_removal_regions(frequencies: Mapping[str, np.ndarray], template: np.ndarray, affine: np.ndarray, path: str | Path, head: np.ndarray | None = None, n_scans: int | None = None) -> Path:
    """Fig. 1: where each defacer removes tissue, as the cohort frequency per voxel in MNI space.

    One row per method: the maximum frequency over left-right (side view) and over
    inferior-superior (top view), over the MNI template. Voxels removed in fewer than
    :data:`MIN_SHARE_SHOWN` of the scans are not drawn (isolated registration outliers
    would otherwise tint the whole projection).
    """
    plt = _pyplot()
    methods = [m for m in METHODS if m in frequencies] + sorted(set(frequencies) - set(METHODS))
    fig, axes = plt.subplots(len(methods), 2, figsize=(7.5, 0.6 + 2.5 * len(methods)), squeeze=False, layout="constrained")
    image = None
    for r, (row, method) in enumerate(zip(axes, methods)):
        freq = np.asarray(frequencies[method], np.float32)
        for ax, view in zip(row, ("sagittal", "axial")):
            extent = _background(ax, template, head, affine, view, reduce="max")
            f, _ = plane(freq, affine, view, reduce="max")
            image = ax.imshow(np.ma.masked_less(f, MIN_SHARE_SHOWN), origin="lower", extent=extent, cmap="autumn_r", vmin=0, vmax=1, alpha=0.85, interpolation="nearest")
        row[0].set_ylabel(method_name(method), fontsize=13)
        if r == 0:
            row[0].set_title("side view (max over left-right)", fontsize=9)
            row[1].set_title("top view (max over height)", fontsize=9)
    scans = f"{n_scans} scans" if n_scans else "scans"
    fig.suptitle(f"Fig. 1  Tissue removed by each defacer (share of {scans}; < {MIN_SHARE_SHOWN:.0%} not shown)", fontsize=12)
    if image is not None:
        fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.6, label="share of scans with the voxel removed")
    return save_figure(fig, path)


# --------------------------------------------------------------------------- Fig. 3
def _percent(share: float) -> str:
    """A share as a percentage; below 0.5 % says "<1 %" rather than a misleading "0 %"."""
    return "<1 %" if share < 0.005 else f"{share:.0%}"


def saliency_label(condition: str, shares: pd.DataFrame | None) -> str:
    """Fig. 3 row label: the condition and where its positive saliency lies (or that it has none)."""
    label = condition_title(condition)
    if shares is not None and condition in set(shares["condition"]):
        share = shares.set_index("condition").loc[condition]
        if "abs_face_share" in share.index:  # shares of mean |Grad-CAM| (issue 20): they cannot cancel
            if np.isfinite(share["abs_face_share"]) and np.isfinite(share["abs_brain_share"]):
                return label + f"\n|map|: face {_percent(share['abs_face_share'])} / brain {_percent(share['abs_brain_share'])}"
            return label + "\nno saliency"
        if np.isfinite(share["face_share"]) and np.isfinite(share["brain_share"]):
            return label + f"\nface {share['face_share']:.0%} / brain {share['brain_share']:.0%}"
        return label + "\nno positive saliency"
    return label


def plot_saliency(maps: Mapping[str, np.ndarray], template: np.ndarray, affine: np.ndarray, path: str | Path, head: np.ndarray | None = None, shares: pd.DataFrame | None = None) -> Path:
    """Fig. 3: mean signed Grad-CAM per condition (sagittal and axial slices) over the template.

    Red: features that raise the predicted age; blue: lower it. Each row has its own
    symmetric colour scale; values below 10 % of the row's maximum are transparent.
    """
    plt = _pyplot()
    conditions = order_conditions(maps)
    # constrained layout: rows as tall as their slices, the title right above the first row
    fig, axes = plt.subplots(len(conditions), 2, figsize=(7.8, 0.6 + 2.5 * len(conditions)), squeeze=False, layout="constrained")
    for r, (row, condition) in enumerate(zip(axes, conditions)):
        sal = np.asarray(maps[condition], np.float32)
        vmax = float(np.abs(sal).max()) or 1.0
        image = None
        for ax, view in zip(row, ("sagittal", "axial")):
            at = SALIENCY_SLICES_MM[view]
            extent = _background(ax, template, head, affine, view, at_mm=at)
            s, _ = plane(sal, affine, view, at_mm=at)
            image = ax.imshow(np.ma.masked_where(np.abs(s) < 0.1 * vmax, s), origin="lower", extent=extent, cmap="RdBu_r", vmin=-vmax, vmax=vmax, alpha=0.8, interpolation="bilinear")
            if r == 0:
                ax.set_title(f"{view}, {'x' if view == 'sagittal' else 'z'} = {at:g} mm", fontsize=9)
        row[0].set_ylabel(saliency_label(condition, shares), fontsize=10)
        fig.colorbar(image, ax=list(row), shrink=0.8, label="Grad-CAM (a.u.)")
    fig.suptitle("Fig. 3  Where the model looks: mean Grad-CAM over test scans\n(red raises, blue lowers the predicted age; shares of mean |Grad-CAM|)", fontsize=11)
    return save_figure(fig, path)


# --------------------------------------------------------------------------- Fig. 4
def plot_error_distributions(errors: pd.DataFrame, path: str | Path, null_mae: float | None = None) -> Path:
    """Fig. 4: per-subject absolute error (averaged over runs) per condition, box plot and points."""
    plt = _pyplot()
    conditions = order_conditions(errors.columns)
    data = [errors[c].dropna().to_numpy(float) for c in conditions]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.85 * len(conditions) + 2), 4.6))
    box = ax.boxplot(data, patch_artist=True, widths=0.6, showfliers=False, medianprops={"color": "black"})
    rng = np.random.default_rng(0)
    for i, (values, condition) in enumerate(zip(data, conditions), start=1):
        colour = KIND_COLOURS[condition_kind(condition)]
        box["boxes"][i - 1].set(facecolor=colour, alpha=0.35)
        ax.scatter(i + rng.uniform(-0.18, 0.18, len(values)), values, s=7, color=colour, alpha=0.7, linewidths=0)
        ax.scatter([i], [values.mean()], marker="D", s=28, color="black", zorder=3)
    if null_mae is not None:
        ax.axhline(null_mae, color="crimson", ls="--", lw=1.2, label=f"null baseline (training mean age): MAE {null_mae:.2f} y")
    ax.scatter([], [], marker="D", s=28, color="black", label="MAE (mean)")
    ax.set_xticks(range(1, len(conditions) + 1), [condition_label(c) for c in conditions], rotation=35, ha="right")
    ax.set_ylabel("absolute error (years)")
    ax.set_title("Fig. 4  Per-subject absolute error by condition (df = defaced, f = face-only, fm = face mask, ss = skull-stripped)", fontsize=10)
    ax.legend(loc="upper left", fontsize=8, frameon=False)
    ax.grid(axis="y", alpha=0.3)
    return save_figure(fig, path)


def plot_predicted_vs_true(subject_predictions: pd.DataFrame, path: str | Path, ncols: int = 4) -> Path:
    """Predicted (mean over runs) vs true age per condition, with the identity line."""
    plt = _pyplot()
    conditions = order_conditions(subject_predictions["condition"])
    nrows = int(np.ceil(len(conditions) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.1 * ncols, 3.0 * nrows), squeeze=False, sharex=True, sharey=True)
    lo = float(min(subject_predictions["age"].min(), subject_predictions["predicted_age"].min()))
    hi = float(max(subject_predictions["age"].max(), subject_predictions["predicted_age"].max()))
    pad = 0.05 * (hi - lo or 1.0)
    for ax, condition in zip(axes.ravel(), conditions):
        group = subject_predictions[subject_predictions["condition"] == condition]
        age, pred = group["age"].to_numpy(float), group["predicted_age"].to_numpy(float)
        ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="black", lw=0.8, ls="--")
        ax.scatter(age, pred, s=10, alpha=0.7, color=KIND_COLOURS[condition_kind(condition)], linewidths=0)
        r = np.corrcoef(age, pred)[0, 1] if len(age) > 1 and np.std(pred) > 0 and np.std(age) > 0 else float("nan")
        ax.set_title(f"{condition_title(condition)}\nMAE of mean prediction {np.mean(np.abs(pred - age)):.2f} y, r = {r:.2f}", fontsize=8)
        ax.set_xlim(lo - pad, hi + pad)
        ax.set_ylim(lo - pad, hi + pad)
    for ax in axes.ravel()[len(conditions):]:
        ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel("predicted age (y)")
    for ax in axes[-1, :]:
        ax.set_xlabel("true age (y)")
    fig.suptitle("Predicted vs true age on the test scans (mean over runs)", fontsize=11)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_training_curves(histories: pd.DataFrame, path: str | Path) -> Path:
    """Validation MAE and training loss per epoch; one colour per condition, one line per run."""
    plt = _pyplot()
    conditions = order_conditions(histories["condition"])
    cmap = plt.get_cmap("tab20" if len(conditions) > 10 else "tab10")
    fig, (ax_val, ax_loss) = plt.subplots(1, 2, figsize=(12, 4.4))
    for i, condition in enumerate(conditions):
        colour = cmap(i % cmap.N)
        for j, (_, run) in enumerate(histories[histories["condition"] == condition].groupby("run")):
            label = condition_label(condition) if j == 0 else None
            ax_val.plot(run["epoch"], run["val_mae"], color=colour, lw=1.2, label=label)
            ax_loss.plot(run["epoch"], run["train_loss"], color=colour, lw=1.2)
    ax_val.set(xlabel="epoch", ylabel="validation MAE (years)", title="Validation MAE")
    ax_loss.set(xlabel="epoch", ylabel="training loss (MSE, years²)", title="Training loss", yscale="log")
    for ax in (ax_val, ax_loss):
        ax.grid(alpha=0.3)
    ax_val.legend(fontsize=7, ncol=2, frameon=False)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_individual(images: Mapping[str, np.ndarray], affine: np.ndarray, path: str | Path, title: str) -> Path:
    """One scan in several conditions (mid-sagittal slice). Only with ``individual_figures``."""
    plt = _pyplot()
    conditions = order_conditions(images)
    fig, axes = plt.subplots(1, len(conditions), figsize=(2.3 * len(conditions), 2.6), squeeze=False)
    for ax, condition in zip(axes[0], conditions):
        image, extent = plane(np.asarray(images[condition], np.float32), affine, "sagittal", at_mm=0.0)
        ax.imshow(image, origin="lower", extent=extent, cmap="gray", interpolation="nearest")
        ax.set_title(condition_label(condition), fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


# --------------------------------------------------------------------------- face signal
def plot_face_signal(table: pd.DataFrame, path: str | Path) -> Path:
    """Per method: face-only and its geometry control against the null baseline (MAE - null MAE,
    paired 95 % bootstrap CIs; below 0 = better than predicting the mean age)."""
    plt = _pyplot()
    methods = list(table["method"])
    x = np.arange(len(methods))
    fig, ax = plt.subplots(figsize=(max(5.0, 1.3 * len(methods) + 2), 4.2))
    for offset, prefix, label, colour in ((-0.18, "face_vs_null", "face-only", KIND_COLOURS["face"]),
                                          (0.18, "mask_vs_null", "geometry control (face mask)", KIND_COLOURS["facemask"])):
        diff = table[f"{prefix}_diff"].astype(float).to_numpy()
        low = table[f"{prefix}_ci_low"].astype(float).to_numpy()
        high = table[f"{prefix}_ci_high"].astype(float).to_numpy()
        ok = np.isfinite(diff)
        ax.bar(x[ok] + offset, diff[ok], width=0.34, color=colour, alpha=0.8, label=label,
               yerr=np.vstack([diff[ok] - low[ok], high[ok] - diff[ok]]), capsize=3)
    for i, row in enumerate(table.itertuples(index=False)):
        if bool(row.tissue_signal):
            ax.annotate("tissue", (i - 0.18, float(row.face_vs_null_ci_low)), textcoords="offset points", xytext=(0, -12), ha="center", fontsize=8)
    ax.axhline(0, color="crimson", ls="--", lw=1.2, label="null baseline (training mean age)")
    ax.set_xticks(x, [method_name(m) for m in methods])
    ax.set_ylabel("MAE - null MAE (years)")
    ax.set_title("Face signal: face-only vs its geometry control vs the null (paired, ensemble of runs)", fontsize=10)
    ax.legend(fontsize=8, frameon=False, loc="best")
    ax.grid(axis="y", alpha=0.3)
    return save_figure(fig, path)


def figure_paths(study_dir: str | Path) -> dict[str, Path]:
    """Where each figure of :data:`defacebench.layout.FIGURES` goes, by name."""
    return {name: layout.figure_file(study_dir, name) for name in layout.FIGURES}
