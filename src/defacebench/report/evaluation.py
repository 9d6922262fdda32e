"""The report's "Does the model use the face?" section (issue 20): the cross-condition MAE
heat map, the dBrainAGE table, face ablation and occlusion of the raw-head model and
the signed Grad-CAM maps per age tercile; :func:`abs_saliency_html` (the shares of mean
|Grad-CAM|) goes under Fig. 3. Reads what
``defacebench evaluate`` and ``defacebench analyse`` wrote (paths from
:mod:`defacebench.layout`); every part is left out when its file is missing.
"""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np
import pandas as pd

from defacebench import layout
from defacebench.conditions import condition_kind, condition_title, method_name
from defacebench.report.embed import embed_png
from defacebench.report.formatting import fmt_p, html_table, read_csv

CAPTIONS: dict[str, str] = {
    "cross_condition": "Cross-condition MAE (years, mean over runs): each trained model (rows) scored without retraining on the test images of every condition (columns). "
                       "The boxed diagonal is Table 1; off the diagonal, how a model does on images prepared another way.",
    "saliency_terciles": "Signed mean Grad-CAM within each age tercile of the test scans (youngest to oldest): averaging people of similar age keeps age-dependent signs "
                         "from cancelling.",
}


def share_text(share: float) -> str:
    """A share as a percentage that never reads as a misleading 0 %: below 0.5 % it is '&lt;1 %'."""
    return "&lt;1 %" if share < 0.005 else f"{share:.0%}".replace("%", " %")


def _ci(low: pd.Series, high: pd.Series, signed: bool = False) -> list[str]:
    form = "{:+.2f} to {:+.2f}" if signed else "{:.2f} to {:.2f}"
    return [form.format(a, b) for a, b in zip(low, high)]


def _figure(study_dir: Path, stem: str) -> str:
    path = layout.figure_file(study_dir, stem)
    if not path.is_file():
        return ""
    return f'<figure><img alt="{html.escape(stem)}" src="{embed_png(path)}"><figcaption>{html.escape(CAPTIONS[stem])}</figcaption></figure>'


def model_rows(table: pd.DataFrame) -> pd.DataFrame:
    """One row per model: the mean over runs where a condition has several, else its run."""
    table = table.assign(run=table["run"].astype(str))
    several = table.groupby("train_condition" if "train_condition" in table else "condition")["run"].transform("nunique") > 1
    return table[~several | (table["run"] == "mean")]


def dbrainage_html(dbrainage: pd.DataFrame | None) -> str:
    """The dBrainAGE table: per head model and method, mean |pred(defaced) - pred(raw)| and the accuracy it costs."""
    if dbrainage is None or dbrainage.empty:
        return ""
    rows = model_rows(dbrainage)
    rows = rows.iloc[np.argsort([condition_kind(c) != "raw" for c in rows["train_condition"]], kind="stable")]  # the raw-head model first
    shown = pd.DataFrame({
        "model trained on": [condition_title(c) for c in rows["train_condition"]], "defaced with": [method_name(m) for m in rows["method"]], "n": rows["n"],
        "dBrainAGE (years)": rows["mean_abs_change"], "95 % CI": _ci(rows["mean_abs_change_ci_low"], rows["mean_abs_change_ci_high"]),
        "mean shift": rows["mean_change"], "shift p (Holm)": rows["change_p_holm"], "MAE change": rows["mae_change"],
        "MAE change 95 % CI": _ci(rows["mae_change_ci_low"], rows["mae_change_ci_high"], signed=True), "MAE p (Holm)": rows["mae_p_holm"],
    })
    formats = {"shift p (Holm)": fmt_p, "MAE p (Holm)": fmt_p}
    raw = (rows["train_condition"] == "raw").to_numpy()
    if raw.any() and not raw.all():
        return html_table(shown[raw], formats) + f"<details><summary>Models trained on defaced heads ({int((~raw).sum())} rows)</summary>{html_table(shown[~raw], formats)}</details>"
    return html_table(shown, formats)


def ablation_html(ablation: pd.DataFrame | None, occlusion: pd.DataFrame | None) -> str:
    """Face ablation (each method's removed voxels and their union) and occlusion by region of the raw-head model."""
    parts = []
    if ablation is not None and len(ablation):
        rows = model_rows(ablation.rename(columns={"condition": "train_condition"}))
        shown = pd.DataFrame({
            "region": ["every removed voxel (union)" if r == "union" else method_name(r) for r in rows["region"]], "replaced by": rows["fill"], "n": rows["n"],
            "mean |change in prediction|": rows["mean_abs_change"], "95 % CI": _ci(rows["mean_abs_change_ci_low"], rows["mean_abs_change_ci_high"]),
            "MAE change": rows["mae_change"], "MAE change 95 % CI": _ci(rows["mae_change_ci_low"], rows["mae_change_ci_high"], signed=True), "MAE p": rows["mae_p"],
        })
        parts.append("<p class=\"note\">Raw-head model, test scans: in each scan the voxels a method removed from it (or every voxel any method removed) replaced by zero "
                     "(what a defacer leaves) or by the training scans' mean image (the cohort's average face). Years; paired bootstrap CIs and Wilcoxon p.</p>" + html_table(shown, {"MAE p": fmt_p}))
    if occlusion is not None and len(occlusion):
        rows = model_rows(occlusion.rename(columns={"condition": "train_condition"}))
        shown = pd.DataFrame({"region": rows["region"], "voxels": rows["n_voxels"], "mean |change in prediction|": rows["mean_abs_change"],
                              "95 % CI": _ci(rows["mean_abs_change_ci_low"], rows["mean_abs_change_ci_high"]),
                              "share": [share_text(s) if np.isfinite(s) else "–" for s in rows["share"]], "MAE change": rows["mae_change"]})
        parts.append("<p class=\"note\">Occlusion sensitivity (the second attribution): one region at a time set to zero in every test scan; the share is the region's "
                     "mean |change in prediction| over the three regions' sum.</p>" + html_table(shown))
    return "\n".join(parts)


def abs_saliency_html(saliency: pd.DataFrame | None) -> str:
    """Shares of the mean |Grad-CAM| per condition; a map that is zero everywhere is said to carry no signal."""
    if saliency is None or saliency.empty or "abs_face_share" not in saliency:
        return ""

    def cell(value: float) -> str:
        return share_text(value) if np.isfinite(value) else "no signal"

    shown = pd.DataFrame({"condition": [condition_title(c) for c in saliency["condition"]], "runs": saliency["n_runs"], "test scans": saliency["n_scans"],
                          "removal region": [cell(v) for v in saliency["abs_face_share"]], "brain": [cell(v) for v in saliency["abs_brain_share"]],
                          "elsewhere": [cell(v) for v in saliency["abs_other_share"]]})
    return ("<p class=\"note\">Shares of the mean absolute Grad-CAM over the test scans (absolute per scan, then averaged, so opposite signs in different "
            "people cannot cancel); the figure shows the signed mean map.</p>" + html_table(shown))


def evaluation_section(study_dir: str | Path) -> str:
    """The whole section's HTML (a note when ``defacebench evaluate`` has not run)."""
    study_dir = Path(study_dir)
    dbrainage = read_csv(layout.evaluation_table(study_dir, "dbrainage"))
    ablation = read_csv(layout.evaluation_table(study_dir, "face_ablation"))
    occlusion = read_csv(layout.evaluation_table(study_dir, "occlusion"))
    parts = [_figure(study_dir, "cross_condition")]
    table = dbrainage_html(dbrainage)
    if table:
        parts.append("<h3>dBrainAGE: how far does each head model's prediction move when its input is defaced?</h3><p class=\"note\">Per test scan, "
                     "|pred(defaced) &minus; pred(raw)| of the same model, averaged (Ivan/Rubbert et al. 2025 measured 0.33-1.04 years on ADNI with a "
                     "scan-rescan reference of 1.15); shift p: Wilcoxon signed-rank test that the prediction does not move; MAE p: that the accuracy does not change; "
                     "both Holm-corrected over methods.</p>" + table)
    table = ablation_html(ablation, occlusion)
    if table:
        parts.append("<h3>Face ablation and occlusion</h3>" + table)
    parts.append(_figure(study_dir, "saliency_terciles"))
    body = "\n".join(p for p in parts if p)
    return body or "<p>Not evaluated (run <code>defacebench evaluate</code>).</p>"
