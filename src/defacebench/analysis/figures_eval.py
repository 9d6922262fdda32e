"""Figures of the evaluate stage and of the saliency summary: the train x test MAE heat map
and the signed Grad-CAM maps per age tercile."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from defacebench.analysis.figures import SALIENCY_SLICES_MM, _background, _pyplot, plane, save_figure
from defacebench.conditions import condition_label


def plot_cross_condition(matrix: pd.DataFrame, path: str | Path) -> Path:
    """Heat map of MAE (years; mean over runs): rows the condition a model was trained on,
    columns the condition of the test images it was given. The diagonal is Table 1."""
    plt = _pyplot()
    values = matrix.to_numpy(float)
    n_rows, n_cols = values.shape
    fig, ax = plt.subplots(figsize=(1.2 + 0.55 * n_cols, 1.0 + 0.42 * n_rows), layout="constrained")
    image = ax.imshow(values, cmap="viridis_r", aspect="auto")
    ax.set_xticks(range(n_cols), [condition_label(c) for c in matrix.columns], rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(n_rows), [condition_label(c) for c in matrix.index], fontsize=8)
    ax.set_xlabel("test images")
    ax.set_ylabel("model trained on")
    if n_cols * n_rows <= 400:
        finite = values[np.isfinite(values)]
        middle = float(np.median(finite)) if finite.size else 0.0
        for i in range(n_rows):
            for j in range(n_cols):
                if np.isfinite(values[i, j]):
                    ax.text(j, i, f"{values[i, j]:.1f}", ha="center", va="center", fontsize=6.5, color="white" if values[i, j] > middle else "black")
    for i, row in enumerate(matrix.index):
        if row in matrix.columns:
            j = list(matrix.columns).index(row)
            ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=1.2))
    fig.colorbar(image, ax=ax, shrink=0.8, label="MAE (years)")
    ax.set_title("Cross-condition MAE: every model on every condition's test images\n(red boxes: the model's own condition)", fontsize=10)
    return save_figure(fig, path)


def plot_saliency_terciles(maps: Mapping[str, Mapping[int, np.ndarray]], template: np.ndarray, affine: np.ndarray, path: str | Path,
                           head: np.ndarray | None = None, age_ranges: Mapping[int, str] | None = None) -> Path:
    """Signed mean Grad-CAM per age tercile (columns: youngest to oldest; sagittal slice x = 0):
    maps averaged within people of similar age, so age-dependent signs do not cancel."""
    plt = _pyplot()
    conditions = list(maps)
    fig, axes = plt.subplots(len(conditions), 3, figsize=(8.4, 0.6 + 2.4 * len(conditions)), squeeze=False, layout="constrained")
    at = SALIENCY_SLICES_MM["sagittal"]
    for row, condition in zip(axes, conditions):
        terciles = maps[condition]
        vmax = max((float(np.abs(m).max()) for m in terciles.values()), default=0.0) or 1.0
        image = None
        for ax, k in zip(row, (1, 2, 3)):
            extent = _background(ax, template, head, affine, "sagittal", at_mm=at)
            if k in terciles:
                s, _ = plane(np.asarray(terciles[k], np.float32), affine, "sagittal", at_mm=at)
                image = ax.imshow(np.ma.masked_where(np.abs(s) < 0.1 * vmax, s), origin="lower", extent=extent, cmap="RdBu_r", vmin=-vmax, vmax=vmax, alpha=0.8)
            ax.set_title(f"tercile {k}" + (f" ({age_ranges[k]})" if age_ranges and k in age_ranges else ""), fontsize=8)
        row[0].set_ylabel(condition_label(condition), fontsize=9)
        if image is not None:
            fig.colorbar(image, ax=list(row), shrink=0.8, label="Grad-CAM (a.u.)")
    fig.suptitle("Signed mean Grad-CAM per age tercile of the test scans (sagittal, x = 0 mm)", fontsize=10)
    return save_figure(fig, path)
