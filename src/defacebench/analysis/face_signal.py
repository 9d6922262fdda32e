"""Does the removed face carry age, or only where the face sits? Face-only against its geometry control.

A face-only image is normalised to MNI space with the brain's registration, and that
registration follows atrophy: the face moves with brain age, and a CNN can read its position
(docs/analysis.md). The geometry control ``facemask-<m>`` is the removed face's outline alone,
moved by the same transform. Per method, on the same test scans (paired):

- face-only against the null baseline (predicting the training mean age),
- face-only against its geometry control,
- the geometry control against the null (how much age the position alone carries).

Each family of tests is Holm-corrected over methods. The face carries age beyond geometry
(``tissue_signal``) only when face-only beats both the null and its own control. Errors are
those of the ensemble of runs (the mean prediction over training repetitions), so a claim
rests on what survives run-to-run variance.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from defacebench.analysis.statistics import bootstrap_indices, holm, wilcoxon_p
from defacebench.conditions import SCAN_KEY, METHODS, condition_kind, condition_method

__all__ = ["FACE_SIGNAL_COLUMNS", "ensemble_errors", "face_signal_table", "geometry_share"]

FACE_SIGNAL_COLUMNS: tuple[str, ...] = (
    "method", "n", "face_mae", "facemask_mae", "null_mae",
    "face_vs_null_diff", "face_vs_null_ci_low", "face_vs_null_ci_high", "face_vs_null_p", "face_vs_null_p_holm",
    "face_vs_mask_diff", "face_vs_mask_ci_low", "face_vs_mask_ci_high", "face_vs_mask_p", "face_vs_mask_p_holm",
    "mask_vs_null_diff", "mask_vs_null_ci_low", "mask_vs_null_ci_high", "mask_vs_null_p", "mask_vs_null_p_holm",
    "geometry_explained_pct", "beats_null", "beats_geometry", "tissue_signal",
)


def ensemble_errors(predictions: pd.DataFrame, split: str = "test") -> pd.DataFrame:
    """Per-scan absolute error of the mean prediction over runs; rows scans, columns conditions."""
    test = predictions[predictions["split"] == split]
    mean = test.groupby(["condition", *SCAN_KEY], sort=False).agg(age=("age", "first"), predicted=("predicted_age", "mean")).reset_index()
    mean["abs_error"] = (mean["predicted"] - mean["age"]).abs()
    wide = mean.pivot_table(index=list(SCAN_KEY), columns="condition", values="abs_error", aggfunc="first")
    wide.columns.name = None
    return wide


def geometry_share(face_mae: float, facemask_mae: float, null_mae: float) -> float:
    """Percentage of face-only's gain over the null that its geometry control also reaches.

    ``100 * (null - mask) / (null - face)``; NaN when face-only does not beat the null.
    Can exceed 100 (the control does better than face-only) or be negative (it does worse
    than the null).
    """
    gain = null_mae - face_mae
    if not np.isfinite(facemask_mae) or not gain > 0:
        return float("nan")
    return float(100.0 * (null_mae - facemask_mae) / gain)


def _paired(a: np.ndarray, b: np.ndarray, idx: np.ndarray, alpha: float) -> tuple[float, float, float, float]:
    """MAE(a) - MAE(b), its paired bootstrap CI, and the one-sided Wilcoxon p of ``|a| < |b|``."""
    diffs = a[idx].mean(axis=1) - b[idx].mean(axis=1)
    low, high = np.percentile(diffs, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    _, p = wilcoxon_p(a, b, alternative="less")
    return float(a.mean() - b.mean()), float(low), float(high), p


def face_signal_table(errors: pd.DataFrame, null_abs_errors: pd.Series, n_boot: int = 2000, seed: int = 0, alpha: float = 0.05) -> pd.DataFrame:
    """Face-only vs geometry control vs null, per method with a face-only condition.

    Parameters
    ----------
    errors : DataFrame
        Per-scan absolute errors (rows scans, columns conditions), e.g. :func:`ensemble_errors`.
    null_abs_errors : Series
        Per-scan absolute error of the null baseline, same index.
    n_boot, seed, alpha
        Paired bootstrap resamples (the same scans for every comparison of a method), seed
        and significance level.

    Returns
    -------
    DataFrame
        :data:`FACE_SIGNAL_COLUMNS`, one row per method (methods without a geometry control
        get NaN there and ``beats_geometry`` / ``tissue_signal`` False).
    """
    rows = []
    faces = [c for c in errors.columns if condition_kind(c) == "face"]
    order = {m: i for i, m in enumerate(METHODS)}
    for face in sorted(faces, key=lambda c: (order.get(condition_method(c), len(order)), c)):
        method = condition_method(face)
        mask = f"facemask-{method}"
        has_mask = mask in errors.columns
        columns = [face, mask] if has_mask else [face]
        paired = errors[columns].dropna()
        null = null_abs_errors.reindex(paired.index).to_numpy(float)
        f = paired[face].to_numpy(float)
        n = len(f)
        if n < 2:
            continue
        idx = bootstrap_indices(n, n_boot, seed)
        row: dict[str, object] = {"method": method, "n": n, "face_mae": float(f.mean()), "null_mae": float(null.mean())}
        keys = ("diff", "ci_low", "ci_high", "p")
        row.update(zip((f"face_vs_null_{k}" for k in keys), _paired(f, null, idx, alpha)))
        if has_mask:
            m = paired[mask].to_numpy(float)
            row["facemask_mae"] = float(m.mean())
            row.update(zip((f"face_vs_mask_{k}" for k in keys), _paired(f, m, idx, alpha)))
            row.update(zip((f"mask_vs_null_{k}" for k in keys), _paired(m, null, idx, alpha)))
        rows.append(row)
    table = pd.DataFrame(rows).reindex(columns=list(FACE_SIGNAL_COLUMNS))
    if table.empty:
        return table
    for family in ("face_vs_null", "face_vs_mask", "mask_vs_null"):
        table[f"{family}_p_holm"] = holm(table[f"{family}_p"].astype(float))
    table["geometry_explained_pct"] = [geometry_share(*v) for v in table[["face_mae", "facemask_mae", "null_mae"]].astype(float).to_numpy()]
    table["beats_null"] = table["face_vs_null_p_holm"].astype(float) < alpha
    table["beats_geometry"] = table["face_vs_mask_p_holm"].astype(float) < alpha
    table["tissue_signal"] = table["beats_null"] & table["beats_geometry"]
    return table
