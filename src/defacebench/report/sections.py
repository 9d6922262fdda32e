"""The report's sections and tables, each an HTML fragment built from one result table or
study file (paths from :mod:`defacebench.layout`)."""

from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np
import pandas as pd

from defacebench import layout
from defacebench.conditions import condition_title, method_name, order_conditions
from defacebench.report.cohort_power import add_power_columns, face_power_columns
from defacebench.report.formatting import fmt, fmt_p, html_table, read_tsv


def runs_per_condition(low: int, high: int) -> str:
    """'1 run per condition', '3 runs per condition' or '2-3 runs per condition'."""
    if low == high:
        return f"{low} run{'s' if low != 1 else ''} per condition"
    return f"{low}–{high} runs per condition"


def cohort_section(study_dir: Path, summary: dict) -> str:
    """People, scans and ages per split, from ``splits.tsv`` or else the analysed grid's store index."""
    table_path = layout.splits_table(study_dir)
    splits = read_tsv(table_path)
    if splits is None:
        grid = summary.get("grid")
        table_path = layout.store_index(study_dir, str(grid))
        splits = read_tsv(table_path) if grid else None
    source = table_path.relative_to(study_dir).as_posix()
    if splits is None or "age" not in splits.columns:
        return f"<p>{summary.get('n_test_scans', '?')} test scans (no split table found).</p>"
    splits = splits.assign(age=pd.to_numeric(splits["age"], errors="coerce"))
    rows = []
    for split in ("train", "val", "test"):
        part = splits[splits["split"] == split]
        if len(part):
            rows.append({"split": split, "people": part["participant_id"].nunique(), "scans": len(part), "mean age": part["age"].mean(), "SD": part["age"].std(ddof=1), "min": part["age"].min(), "max": part["age"].max()})
    table = html_table(pd.DataFrame(rows), {"mean age": 1, "SD": 1, "min": 1, "max": 1})
    return f"<p>{splits['participant_id'].nunique()} people, {len(splits)} scans (from <code>{html.escape(source)}</code>); all sessions of a person are in one split.</p>{table}"


def methods_section(study_dir: Path, summary: dict) -> str:
    """Conditions, grid, model, null baseline, bootstrap, removed volumes and software versions."""
    runs = pd.DataFrame(summary.get("runs", []))
    items = [f"<li>Conditions: {', '.join(html.escape(condition_title(c)) for c in summary.get('conditions', []))}.</li>"]
    if summary.get("grid"):
        items.append(f"<li>Images in MNI space on grid <code>{html.escape(str(summary['grid']))}</code>.</li>")
    if len(runs):
        per = runs.groupby("condition")["run"].nunique()
        items.append(f"<li>Brain-age 3D CNN (three conv blocks, Grad-CAM on the last block); {runs_per_condition(int(per.min()), int(per.max()))}, {len(runs)} runs in all.</li>")
        for key, text in (("parameter_count", "trainable parameters"), ("device", "device"), ("samples_per_s", "training samples/s"), ("best_epoch", "best epoch")):
            if key in runs and runs[key].notna().any():
                values = runs[key].dropna()
                shown = ", ".join(sorted({fmt(v, 0) if key != "device" else html.escape(str(v)) for v in values}))
                items.append(f"<li>{text}: {shown}</li>")
    items.append(f"<li>Null baseline: training mean age {fmt(summary.get('training_mean_age'))} years, from {html.escape(str(summary.get('training_age_source', '?')))}.</li>")
    items.append(f"<li>Paired bootstrap: {summary.get('n_boot')} resamples of scans, seed {summary.get('seed')}; {summary.get('n_paired_scans')} scans have errors in every condition.</li>")
    removed = summary.get("removed_volume_ml")
    if removed:
        inside = summary.get("removed_inside_brain_mask_ml", {})
        items.append("<li>Removed volume (voxels removed in &gt; 50 % of scans): " + "; ".join(f"{html.escape(method_name(m))} {v:.0f} ml ({inside.get(m, 0):.1f} ml inside the MNI brain mask)" for m, v in removed.items()) + ".</li>")
    versions = summary.get("versions", {})
    desc = layout.deface_description(study_dir)
    if desc.is_file():
        try:
            generated = json.loads(desc.read_text()).get("GeneratedBy", [])
            for g in generated if isinstance(generated, list) else []:
                versions.setdefault(str(g.get("Name")), str(g.get("Version", "?")))
        except (OSError, ValueError):
            pass
    if versions:
        items.append("<li>Software: " + ", ".join(f"{html.escape(k)} {html.escape(str(v))}" for k, v in versions.items()) + ".</li>")
    return "<ul>" + "".join(items) + "</ul>"


def table1_html(table1: pd.DataFrame) -> str:
    """Table 1 with readable condition names and column headers."""
    shown = table1.copy()
    shown.insert(0, "condition ", [condition_title(c) for c in shown["condition"]])
    shown = shown.drop(columns=["condition"]).rename(columns={"label": "label", "mae_mean": "MAE", "mae_sd_runs": "SD over runs", "abs_error_sd": "SD |error|", "pearson_r": "r", "r2": "R²", "mean_signed_error": "mean signed error", "bias_slope": "age-bias slope", "null_mae": "null MAE", "improvement_vs_null_pct": "% below null", "n_test": "test scans", "n_runs": "runs"})
    shown.columns = [c.replace("mae_run_", "MAE run ") for c in shown.columns]
    return html_table(shown, {"% below null": 0})


def omnibus_html(omnibus: pd.DataFrame | None) -> str:
    """The paper's one-way ANOVA and the paired Friedman test, one sentence each."""
    if omnibus is None or omnibus.empty:
        return "<p>Only one condition: no comparison.</p>"
    lines = []
    for _, r in omnibus.iterrows():
        if r["test"] == "one-way ANOVA":
            lines.append(f"<li><b>Paper's test</b>, one-way ANOVA over conditions (unpaired): F({int(r['df1'])}, {int(r['df2'])}) = {r['statistic']:.2f}, p {fmt_p(r['p']) if r['p'] < 0.001 else '= ' + fmt_p(r['p'])}.</li>")
        else:
            lines.append(f"<li><b>Paired test</b>, Friedman: &chi;&sup2;({int(r['df1'])}) = {r['statistic']:.2f}, p {fmt_p(r['p']) if r['p'] < 0.001 else '= ' + fmt_p(r['p'])}, Kendall's W = {r['kendall_w']:.2f} (n = {int(r['n'])} scans).</li>")
    return "<ul>" + "".join(lines) + "</ul>"


def pairs_html(pairwise: pd.DataFrame | None, pairs: list[tuple[str, str]] | None = None, power: pd.DataFrame | None = None) -> str:
    """Paired tests and Tukey HSD of every pair, or of ``pairs`` only (either order); with
    ``power``, each pair's detectable difference and scans needed beside them."""
    if pairwise is None or pairwise.empty:
        return "<p>No pairs to compare.</p>"
    table = pairwise
    if pairs is not None:
        keep = [i for i, r in pairwise.iterrows() if (r["a"], r["b"]) in pairs or (r["b"], r["a"]) in pairs]
        table = pairwise.loc[keep]
        if table.empty:
            return "<p>No defaced condition to compare.</p>"
    shown = pd.DataFrame({
        "A": [condition_title(c) for c in table["a"]], "B": [condition_title(c) for c in table["b"]],
        "MAE A": table["mae_a"], "MAE B": table["mae_b"], "MAE A − B": table["mae_diff"],
        "bootstrap 95 % CI": [f"{lo:+.2f} to {hi:+.2f}" for lo, hi in zip(table["boot_ci_low"], table["boot_ci_high"])],
        "Wilcoxon p (Holm)": table["wilcoxon_p_holm"],
        "Tukey diff": table.get("tukey_mean_diff"), "Tukey 95 % CI": [f"{lo:+.2f} to {hi:+.2f}" for lo, hi in zip(table["tukey_ci_low"], table["tukey_ci_high"])] if "tukey_ci_low" in table else "–",
        "Tukey p": table.get("tukey_p_adj"),
    })
    shown = add_power_columns(shown, table["a"], table["b"], power, "pairwise")
    return html_table(shown, {"Wilcoxon p (Holm)": fmt_p, "Tukey p": fmt_p})


def null_html(null: pd.DataFrame, power: pd.DataFrame | None = None) -> str:
    """Each condition against the null baseline (with ``power``: detectable gain and scans needed)."""
    shown = pd.DataFrame({
        "condition": [condition_title(c) for c in null["condition"]], "MAE": null["mae"], "null MAE": null["null_mae"],
        "MAE − null": null["mae_diff"], "bootstrap 95 % CI": [f"{lo:+.2f} to {hi:+.2f}" for lo, hi in zip(null["boot_ci_low"], null["boot_ci_high"])],
        "% below null": null["improvement_pct"], "Wilcoxon p (Holm)": null["wilcoxon_p_holm"], "beats null": null["beats_null"].astype(bool),
    })
    shown = add_power_columns(shown, null["condition"], pd.Series(["null"] * len(null)), power, "null_baseline")
    return html_table(shown, {"% below null": 0, "Wilcoxon p (Holm)": fmt_p})


def face_signal_html(signal: pd.DataFrame | None, power: pd.DataFrame | None = None) -> str:
    """Per method: face-only vs its geometry control vs the null baseline (with ``power``:
    the three tests' detectable differences and scans needed)."""
    if signal is None or signal.empty:
        return "<p>No face-only condition was trained.</p>"

    def ci(prefix: str) -> list[str]:
        return [f"{lo:+.2f} to {hi:+.2f}" if np.isfinite(lo) else "–" for lo, hi in zip(signal[f"{prefix}_ci_low"].astype(float), signal[f"{prefix}_ci_high"].astype(float))]

    shown = pd.DataFrame({
        "method": [method_name(m) for m in signal["method"]], "scans": signal["n"], "face-only MAE": signal["face_mae"],
        "face mask MAE": signal["facemask_mae"], "null MAE": signal["null_mae"],
        "face − null (95 % CI)": ci("face_vs_null"), "p (Holm)": signal["face_vs_null_p_holm"],
        "face − mask (95 % CI)": ci("face_vs_mask"), "p (Holm) ": signal["face_vs_mask_p_holm"],
        "mask − null (95 % CI)": ci("mask_vs_null"), "p (Holm)  ": signal["mask_vs_null_p_holm"],
        "gain the mask explains": [f"{v:.0f} %" if np.isfinite(v) else "–" for v in signal["geometry_explained_pct"].astype(float)],
        "age in the tissue": ["yes" if bool(v) else "no" for v in signal["tissue_signal"]],
    })
    shown = face_power_columns(shown, signal["method"], power)
    return html_table(shown, {"p (Holm)": fmt_p, "p (Holm) ": fmt_p, "p (Holm)  ": fmt_p})


def bias_html(bias: pd.DataFrame | None) -> str:
    """The age-bias corrected metrics (secondary), folded away; empty without them."""
    if bias is None or bias.empty:
        return ""
    shown = bias.groupby("condition", sort=False).agg(runs=("run", "nunique"), corrected=("corrected", "sum"), val_slope=("val_slope", "mean"), mae=("mae", "mean"), r=("pearson_r", "mean"), bias_slope=("bias_slope", "mean")).reset_index()
    shown = shown.set_index("condition").loc[order_conditions(shown["condition"])].reset_index()
    shown["condition"] = [condition_title(c) for c in shown["condition"]]
    shown = shown.rename(columns={"corrected": "runs corrected", "val_slope": "validation slope", "mae": "corrected MAE", "bias_slope": "age-bias slope"})
    return ("<details><summary>Age-bias corrected metrics (secondary)</summary><p class=\"note\">Linear correction fitted on the validation split of each run "
            "(predicted = a + b &middot; age, corrected = (predicted &minus; a) / b), applied to the test scans; runs with a validation slope below 0.1 are left uncorrected. "
            "Table 1 above is uncorrected.</p>" + html_table(shown) + "</details>")


def saliency_html(saliency: pd.DataFrame | None) -> str:
    """Where each mean Grad-CAM map's positive saliency lies; empty without saliency."""
    if saliency is None or saliency.empty:
        return ""
    shown = pd.DataFrame({"condition": [condition_title(c) for c in saliency["condition"]], "runs": saliency["n_runs"], "test scans": saliency["n_scans"],
                          "share in removal region": saliency["face_share"], "share in brain": saliency["brain_share"], "share elsewhere": saliency["other_share"]})
    if "positive_fraction" in saliency:  # maps computed before this column existed lack it
        shown.insert(3, "positive part of |map|", saliency["positive_fraction"].to_numpy())
    region = html.escape(str(saliency["face_region"].iloc[0]))
    return f"<p class=\"note\">Shares of the mean map's positive saliency; the positive part's share of the map's absolute saliency beside them. Removal region: {region}. Brain: the MNI152 brain mask.</p>" + html_table(shown)


def qc_html(study_dir: Path) -> str:
    """Per-scan failures of every stage and the deface QC table (flagged rows when it has a pass column)."""
    parts = []
    failures = read_tsv(layout.failures_table(study_dir))
    if failures is None:
        parts.append("<p>No <code>failures.tsv</code>: no per-subject failures were recorded.</p>")
    elif failures.empty:
        parts.append("<p>No per-subject failures.</p>")
    else:
        counts = failures.groupby("stage").size() if "stage" in failures else pd.Series(dtype=int)
        parts.append(f"<div class=\"warn\">{len(failures)} failure(s) were excluded" + (": " + ", ".join(f"{html.escape(str(k))} {v}" for k, v in counts.items()) if len(counts) else "") + ".</div>")
        parts.append(html_table(failures.head(200)))
    parts.append(left_out_runs_html(study_dir))
    qc = read_tsv(layout.deface_qc_table(study_dir))
    if qc is not None and len(qc):
        flagged = qc
        for column in ("pass", "passed", "ok"):
            if column in qc.columns:
                flagged = qc[~qc[column].str.lower().isin(["true", "1", "yes", "pass"])]
                break
        parts.append(f"<p><code>qc.tsv</code>: {len(qc)} rows" + (f", {len(flagged)} flagged" if flagged is not qc else "") + ".</p>")
        parts.append(f"<details><summary>QC table (first 200 rows)</summary>{html_table((flagged if flagged is not qc else qc).head(200))}</details>")
    return "\n".join(parts)


def left_out_runs_html(study_dir: Path) -> str:
    """The trained runs analysis left out (failed, incomplete, not matching their fingerprints) and why."""
    left_out = read_tsv(layout.result_table(study_dir, "left_out_runs"))
    if left_out is None:
        return ""
    if left_out.empty:
        return "<p>Every trained run was used (complete, finite validation MAE, files matching their recorded sha256).</p>"
    return f"<div class=\"warn\">{len(left_out)} trained run(s) were left out of the analysis.</div>" + html_table(left_out)


def input_checks_html(study_dir: Path) -> str:
    """Issues 16/23: scans ``defacebench cohort`` found already defaced or skull-stripped, the
    test-split warning, and counts of rejected scans and notes (from ``cohort_checks.tsv``)."""
    checks = read_tsv(layout.cohort_checks_table(study_dir))
    if checks is None or not {"item", "check", "status", "reason"} <= set(checks.columns):
        return ""
    warned = checks[checks["status"] == "warning"]
    scans, split = warned[warned["check"] != "split"], warned[warned["check"] == "split"]
    counts = {s: int((checks["status"] == s).sum()) for s in ("rejected", "note")}
    parts = [f"<p>Input checks (<code>cohort_checks.tsv</code>): {counts['rejected']} scan(s) or rows rejected, "
             f"{counts['note']} note(s), {scans['item'].nunique()} scan(s) with a warning.</p>"]
    if len(scans):
        parts.append(f"<div class=\"warn\">{scans['item'].nunique()} input scan(s) look already defaced or skull-stripped, or have "
                     "the face outside the image: defacing them removes little, and their face-only images hold little or no face.</div>")
        parts.append(html_table(scans[["item", "reason"]].rename(columns={"item": "scan", "reason": "evidence"})))
    if len(split):
        parts.append("<div class=\"warn\">" + "<br>".join(html.escape(r) for r in split["reason"]) + "</div>")
    return "\n".join(parts)
