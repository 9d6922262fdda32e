"""Write ``STUDY/report.html``: one self-contained page (images base64-embedded, no network).

Reads what the analysis stage wrote (``results/*.csv``, ``results/analysis.json``,
``figures/*.png``) plus ``splits.tsv`` and ``derivatives/defacebench/{qc,failures}.tsv`` when
present. The summary's sentences are generated from the numbers.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import string
from pathlib import Path

import numpy as np
import pandas as pd

from defacebench import __version__
from defacebench.conditions import method_name, condition_kind, condition_method, condition_title, order_conditions
from defacebench.analysis.study import RESULT_FILES, results_dir
from defacebench.io.atomic import write_text_atomic
from defacebench.io.errors import InputError
from defacebench.report.template import PAGE

#: Figures in report order: file stem -> caption.
FIGURE_CAPTIONS: dict[str, str] = {
    "fig1_removed_regions": "Fig. 1. Where each defacer removes tissue: for every voxel in MNI space, the share of scans in which the method removed it (cohort frequency, maximum projections), over the MNI152 template and the cohort's head outline.",
    "fig4_errors": "Fig. 4. Per-subject absolute error (mean over runs) per condition; diamonds mark the MAE, the dashed line the null baseline. df = defaced, f = face-only, ss = skull-stripped.",
    "predicted_vs_true": "Predicted (mean over runs) against true age of the test scans; the dashed line is perfect prediction.",
    "fig3_saliency": "Fig. 3. Mean Grad-CAM of the last conv block over the test scans, signed (red raises, blue lowers the predicted age), for the raw head, the skull-stripped brain and each face-only condition.",
    "training_curves": "Training curves: validation MAE and training loss per epoch, one line per run.",
    "individual_example": "One test scan in every condition (shown because --individual-figures was given: this image can identify a person).",
}


# --------------------------------------------------------------------------- formatting
def fmt(value: object, digits: int = 2) -> str:
    """A number with ``digits`` decimals; '–' for missing values."""
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "–"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    try:
        return f"{float(value):.{digits}f}"
    except (TypeError, ValueError):
        return html.escape(str(value))


def _runs_per_condition(low: int, high: int) -> str:
    """'1 run per condition', '3 runs per condition' or '2-3 runs per condition'."""
    if low == high:
        return f"{low} run{'s' if low != 1 else ''} per condition"
    return f"{low}–{high} runs per condition"


def fmt_p(p: object) -> str:
    """p-values: three significant digits, ``< 0.001`` below that."""
    try:
        p = float(p)
    except (TypeError, ValueError):
        return "–"
    if not np.isfinite(p):
        return "–"
    return "&lt; 0.001" if p < 0.001 else f"{p:.3f}"


def html_table(table: pd.DataFrame, formats: dict[str, object] | None = None) -> str:
    """A DataFrame as an HTML table; ``formats`` maps a column to digits or a function."""
    formats = formats or {}
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in table.columns)
    rows = []
    for _, row in table.iterrows():
        cells = []
        for column in table.columns:
            spec = formats.get(column, 2)
            value = row[column]
            cells.append(f"<td>{spec(value) if callable(spec) else (fmt(value, spec) if not isinstance(value, str) else html.escape(value))}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def embed_png(path: Path) -> str:
    """``data:image/png;base64,...`` URI of a PNG file."""
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _read_csv(path: Path) -> pd.DataFrame | None:
    if not path.is_file():
        return None
    try:
        return pd.read_csv(path, keep_default_na=True, dtype={"run": str})
    except (pd.errors.EmptyDataError, pd.errors.ParserError):
        return None


def _read_tsv(path: Path) -> pd.DataFrame | None:
    if not path.is_file():
        return None
    try:
        return pd.read_csv(path, sep="\t", keep_default_na=False, dtype=str)
    except (pd.errors.EmptyDataError, pd.errors.ParserError):
        return None


# --------------------------------------------------------------------------- conclusions
def conclusions(table1: pd.DataFrame, pairwise: pd.DataFrame | None, null: pd.DataFrame, saliency: pd.DataFrame | None = None, alpha: float = 0.05) -> list[str]:
    """Plain-language findings generated from the result tables (HTML-safe sentences)."""
    t = table1.set_index("condition")
    n = null.set_index("condition")
    out: list[str] = []
    null_mae = float(t["null_mae"].iloc[0])
    n_test = int(t["n_test"].max())
    parts = []
    for c in ("skullstripped", "raw"):
        if c in t.index:
            parts.append(f"{condition_title(c)} {t.loc[c, 'mae_mean']:.2f} years")
    if parts:
        verdicts = [f"{condition_title(c)} {'beats' if n.loc[c, 'beats_null'] else 'does not beat'} it (paired p {fmt_p(n.loc[c, 'wilcoxon_p_holm'])})" for c in ("skullstripped", "raw") if c in n.index]
        verdict = "; ".join(verdicts)
        out.append(f"On {n_test} test scans the model's MAE is {' and '.join(parts)}; predicting the training mean age for everyone gives {null_mae:.2f} years. " + (verdict[:1].upper() + verdict[1:] + "." if verdicts else ""))

    defaced = [c for c in t.index if condition_kind(c) == "defaced"]
    if defaced:
        best = min(defaced, key=lambda c: t.loc[c, "mae_mean"])
        worst = max(defaced, key=lambda c: t.loc[c, "mae_mean"])
        name = method_name(condition_method(best))
        sentence = f"Of the defacers, <b>{html.escape(name)}</b> costs the least accuracy: defaced MAE {t.loc[best, 'mae_mean']:.2f} years"
        pair = _pair(pairwise, best, "raw")
        if pair is not None:
            diff, low, high, p = pair
            sentence += f", {diff:+.2f} years against the raw head (95 % CI {low:+.2f} to {high:+.2f}, paired Holm p {fmt_p(p)})"
            sentence += "; the difference is statistically clear" if p < alpha else "; in this cohort it cannot be told apart from the raw head"
        if worst != best:
            sentence += f". The costliest is {html.escape(method_name(condition_method(worst)))} ({t.loc[worst, 'mae_mean']:.2f} years)"
        out.append(sentence + ".")

    faces = [c for c in t.index if condition_kind(c) == "face"]
    if faces:
        best = min(faces, key=lambda c: t.loc[c, "mae_mean"])
        beating = [c for c in faces if c in n.index and bool(n.loc[c, "beats_null"])]
        name = method_name(condition_method(best))
        imp = float(n.loc[best, "improvement_pct"]) if best in n.index else float("nan")
        if beating and imp < SMALL_FACE_GAIN_PCT:
            out.append(
                f"{len(beating)} of {len(faces)} face-only conditions beat the null baseline (paired, Holm-corrected p &lt; {alpha}), but by little: the best, "
                f"{html.escape(name)} face-only, has MAE {t.loc[best, 'mae_mean']:.2f} years, {imp:.0f} % below the null baseline's {null_mae:.2f} years "
                f"(paired Holm p {fmt_p(n.loc[best, 'wilcoxon_p_holm'])}). A gain under {SMALL_FACE_GAIN_PCT:.0f} % need not come from the face: with no face "
                "ageing planted, simulated face-only images still beat the null by up to 8 %, because the brain registration that places every image in MNI "
                "space follows atrophy and moves the face with brain age."
            )
        elif beating:
            out.append(
                f"The removed face carries age information: {len(beating)} of {len(faces)} face-only conditions beat the null baseline (paired, Holm-corrected p &lt; {alpha}). "
                f"The best, {html.escape(name)} face-only, has MAE {t.loc[best, 'mae_mean']:.2f} years, {imp:.0f} % below the null baseline's {null_mae:.2f} years (paired Holm p {fmt_p(n.loc[best, 'wilcoxon_p_holm'])})."
            )
        else:
            out.append(
                f"No face-only condition beats the null baseline: the best, {html.escape(name)} face-only, has MAE {t.loc[best, 'mae_mean']:.2f} years against {null_mae:.2f} years "
                f"({_relative(imp)}paired Holm p {fmt_p(n.loc[best, 'wilcoxon_p_holm']) if best in n.index else '–'}). This cohort gives no evidence that the removed tissue tells the model a person's age."
            )
    if saliency is not None and len(saliency):
        sentence = saliency_sentence(saliency.set_index("condition"), "raw")
        if sentence:
            out.append(sentence)
    if n_test < 30:
        out.append(f"Caution: with only {n_test} test scans, differences of less than about a year are hard to resolve.")
    return out


#: Below this improvement over the null a face-only "win" is not read as age in the face: the
#: `--face-ageing 0` control reached up to 8 % through registration geometry (docs/design-notes.md).
SMALL_FACE_GAIN_PCT = 10.0


def _relative(improvement_pct: float) -> str:
    """``"7 % lower, "`` / ``"3 % higher, "`` for an MAE against the null; empty when unknown."""
    if not np.isfinite(improvement_pct):
        return ""
    return f"{abs(improvement_pct):.0f} % {'lower' if improvement_pct >= 0 else 'higher'}, "


def saliency_sentence(saliency: pd.DataFrame, condition: str) -> str | None:
    """Where the positive Grad-CAM of ``condition``'s mean map lies (removal region, brain, elsewhere).

    ``saliency`` is indexed by condition. A map without a positive part is said so, not
    shown as shares of nothing.
    """
    if condition not in saliency.index:
        return None
    row = saliency.loc[condition]
    who = f"the {condition_title(condition)} model"
    if not np.isfinite(row["face_share"]):
        return f"Grad-CAM: the mean map of {who} has no positive part (nothing raises its predicted age on average), so there are no shares to give."
    part = row.get("positive_fraction", float("nan"))
    part_text = f" (positive values are {part:.0%} of the map's absolute saliency)" if np.isfinite(part) else ""
    return (f"Grad-CAM: of the positive saliency of {who}{part_text}, {row['face_share']:.0%} lies in the region the defacers remove, "
            f"{row['brain_share']:.0%} inside the brain and {row['other_share']:.0%} elsewhere (skull, scalp, neck and background).")


def _pair(pairwise: pd.DataFrame | None, a: str, b: str) -> tuple[float, float, float, float] | None:
    """``(MAE(a) - MAE(b), CI low, CI high, Holm p)`` from the pairwise table, either order."""
    if pairwise is None:
        return None
    for x, y, sign in ((a, b, 1.0), (b, a, -1.0)):
        hit = pairwise[(pairwise["a"] == x) & (pairwise["b"] == y)]
        if len(hit):
            r = hit.iloc[0]
            low, high = sorted((sign * r["boot_ci_low"], sign * r["boot_ci_high"]))
            return sign * float(r["mae_diff"]), low, high, float(r["wilcoxon_p_holm"])
    return None


# --------------------------------------------------------------------------- sections
def _cohort_section(study_dir: Path, summary: dict) -> str:
    splits = _read_tsv(study_dir / "splits.tsv")
    source = "splits.tsv"
    if splits is None:
        grid = summary.get("grid")
        splits = _read_tsv(study_dir / "stores" / str(grid) / "index.tsv") if grid else None
        source = f"stores/{grid}/index.tsv"
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


def _methods_section(study_dir: Path, summary: dict) -> str:
    runs = pd.DataFrame(summary.get("runs", []))
    items = [f"<li>Conditions: {', '.join(html.escape(condition_title(c)) for c in summary.get('conditions', []))}.</li>"]
    if summary.get("grid"):
        items.append(f"<li>Images in MNI space on grid <code>{html.escape(str(summary['grid']))}</code>.</li>")
    if len(runs):
        per = runs.groupby("condition")["run"].nunique()
        items.append(f"<li>Brain-age 3D CNN (three conv blocks, Grad-CAM on the last block); {_runs_per_condition(int(per.min()), int(per.max()))}, {len(runs)} runs in all.</li>")
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
    desc = study_dir / "derivatives" / "defacebench" / "dataset_description.json"
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


def _table1_html(table1: pd.DataFrame) -> str:
    shown = table1.copy()
    shown.insert(0, "condition ", [condition_title(c) for c in shown["condition"]])
    shown = shown.drop(columns=["condition"]).rename(columns={"label": "label", "mae_mean": "MAE", "mae_sd_runs": "SD over runs", "abs_error_sd": "SD |error|", "pearson_r": "r", "r2": "R²", "mean_signed_error": "mean signed error", "bias_slope": "age-bias slope", "null_mae": "null MAE", "improvement_vs_null_pct": "% below null", "n_test": "test scans", "n_runs": "runs"})
    shown.columns = [c.replace("mae_run_", "MAE run ") for c in shown.columns]
    return html_table(shown, {"% below null": 0})


def _omnibus_html(omnibus: pd.DataFrame | None) -> str:
    if omnibus is None or omnibus.empty:
        return "<p>Only one condition: no comparison.</p>"
    lines = []
    for _, r in omnibus.iterrows():
        if r["test"] == "one-way ANOVA":
            lines.append(f"<li><b>Paper's test</b>, one-way ANOVA over conditions (unpaired): F({int(r['df1'])}, {int(r['df2'])}) = {r['statistic']:.2f}, p {fmt_p(r['p']) if r['p'] < 0.001 else '= ' + fmt_p(r['p'])}.</li>")
        else:
            lines.append(f"<li><b>Paired test</b>, Friedman: &chi;&sup2;({int(r['df1'])}) = {r['statistic']:.2f}, p {fmt_p(r['p']) if r['p'] < 0.001 else '= ' + fmt_p(r['p'])}, Kendall's W = {r['kendall_w']:.2f} (n = {int(r['n'])} scans).</li>")
    return "<ul>" + "".join(lines) + "</ul>"


def _pairs_html(pairwise: pd.DataFrame | None, pairs: list[tuple[str, str]] | None = None) -> str:
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
    return html_table(shown, {"Wilcoxon p (Holm)": fmt_p, "Tukey p": fmt_p})


def _null_html(null: pd.DataFrame, training_age: float) -> str:
    shown = pd.DataFrame({
        "condition": [condition_title(c) for c in null["condition"]], "MAE": null["mae"], "null MAE": null["null_mae"],
        "MAE − null": null["mae_diff"], "bootstrap 95 % CI": [f"{lo:+.2f} to {hi:+.2f}" for lo, hi in zip(null["boot_ci_low"], null["boot_ci_high"])],
        "% below null": null["improvement_pct"], "Wilcoxon p (Holm)": null["wilcoxon_p_holm"], "beats null": null["beats_null"].astype(bool),
    })
    return html_table(shown, {"% below null": 0, "Wilcoxon p (Holm)": fmt_p})


def _bias_html(bias: pd.DataFrame | None) -> str:
    if bias is None or bias.empty:
        return ""
    shown = bias.groupby("condition", sort=False).agg(runs=("run", "nunique"), corrected=("corrected", "sum"), val_slope=("val_slope", "mean"), mae=("mae", "mean"), r=("pearson_r", "mean"), bias_slope=("bias_slope", "mean")).reset_index()
    shown = shown.set_index("condition").loc[order_conditions(shown["condition"])].reset_index()
    shown["condition"] = [condition_title(c) for c in shown["condition"]]
    shown = shown.rename(columns={"corrected": "runs corrected", "val_slope": "validation slope", "mae": "corrected MAE", "bias_slope": "age-bias slope"})
    return ("<details><summary>Age-bias corrected metrics (secondary)</summary><p class=\"note\">Linear correction fitted on the validation split of each run "
            "(predicted = a + b &middot; age, corrected = (predicted &minus; a) / b), applied to the test scans; runs with a validation slope below 0.1 are left uncorrected. "
            "Table 1 above is uncorrected.</p>" + html_table(shown) + "</details>")


def _saliency_html(saliency: pd.DataFrame | None) -> str:
    if saliency is None or saliency.empty:
        return ""
    shown = pd.DataFrame({"condition": [condition_title(c) for c in saliency["condition"]], "runs": saliency["n_runs"], "test scans": saliency["n_scans"],
                          "share in removal region": saliency["face_share"], "share in brain": saliency["brain_share"], "share elsewhere": saliency["other_share"]})
    if "positive_fraction" in saliency:  # maps computed before this column existed lack it
        shown.insert(3, "positive part of |map|", saliency["positive_fraction"].to_numpy())
    region = html.escape(str(saliency["face_region"].iloc[0]))
    return f"<p class=\"note\">Shares of the mean map's positive saliency; the positive part's share of the map's absolute saliency beside them. Removal region: {region}. Brain: the MNI152 brain mask.</p>" + html_table(shown)


def _figures_html(study_dir: Path, saliency_table: str) -> str:
    parts = []
    for stem, caption in FIGURE_CAPTIONS.items():
        path = study_dir / "figures" / f"{stem}.png"
        if not path.is_file():
            continue
        parts.append(f'<figure><img alt="{html.escape(stem)}" src="{embed_png(path)}"><figcaption>{html.escape(caption)}</figcaption></figure>')
        if stem == "fig3_saliency" and saliency_table:
            parts.append(saliency_table)
    return "\n".join(parts) or "<p>No figures (run <code>defacebench analyse</code>).</p>"


def _qc_html(study_dir: Path) -> str:
    base = study_dir / "derivatives" / "defacebench"
    parts = []
    failures = _read_tsv(base / "failures.tsv")
    if failures is None:
        parts.append("<p>No <code>failures.tsv</code>: no per-subject failures were recorded.</p>")
    elif failures.empty:
        parts.append("<p>No per-subject failures.</p>")
    else:
        counts = failures.groupby("stage").size() if "stage" in failures else pd.Series(dtype=int)
        parts.append(f"<div class=\"warn\">{len(failures)} failure(s) were excluded" + (": " + ", ".join(f"{html.escape(str(k))} {v}" for k, v in counts.items()) if len(counts) else "") + ".</div>")
        parts.append(html_table(failures.head(200)))
    qc = _read_tsv(base / "qc.tsv")
    if qc is not None and len(qc):
        flagged = qc
        for column in ("pass", "passed", "ok"):
            if column in qc.columns:
                flagged = qc[~qc[column].str.lower().isin(["true", "1", "yes", "pass"])]
                break
        parts.append(f"<p><code>qc.tsv</code>: {len(qc)} rows" + (f", {len(flagged)} flagged" if flagged is not qc else "") + ".</p>")
        parts.append(f"<details><summary>QC table (first 200 rows)</summary>{html_table((flagged if flagged is not qc else qc).head(200))}</details>")
    return "\n".join(parts)


def _individual_figure(study_dir: Path, grid: str | None) -> None:
    """Draw one test scan in every stored condition (only on request)."""
    from defacebench.analysis.figures import figure_paths, plot_individual
    from defacebench.io.store import list_conditions, open_condition

    if not grid or not (study_dir / "stores" / grid / "index.tsv").is_file():
        return
    conditions = list_conditions(study_dir, grid)
    if not conditions:
        return
    stores = {c: open_condition(study_dir, grid, c) for c in conditions}
    first = next(iter(stores.values()))
    rows = first.rows("test")
    if not len(rows):
        return
    row = int(rows[0])
    images = {c: np.asarray(s.images[row], np.float32) for c, s in stores.items()}
    who = first.index.iloc[row]
    plot_individual(images, first.affine, figure_paths(study_dir)["individual_example"], f"{who['participant_id']} {who['session_id']}".strip())


# --------------------------------------------------------------------------- entry point
def write_report(study_dir: str | Path, individual_figures: bool = False, out: str | Path | None = None, title: str | None = None) -> Path:
    """Render ``STUDY/report.html`` (or ``out``) from the analysis results; returns its path.

    Raises InputError when the analysis has not been run (no ``results/table1.csv``).
    """
    study_dir = Path(study_dir)
    res = results_dir(study_dir)
    table1 = _read_csv(res / RESULT_FILES["table1"])
    null = _read_csv(res / RESULT_FILES["null_baseline"])
    if table1 is None or null is None or table1.empty:
        raise InputError("no analysis results (results/table1.csv); run `defacebench analyse` first", study_dir)
    summary_path = res / RESULT_FILES["summary"]
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    pairwise = _read_csv(res / RESULT_FILES["pairwise"])
    omnibus = _read_csv(res / RESULT_FILES["omnibus"])
    saliency = _read_csv(res / RESULT_FILES["saliency"])
    bias = _read_csv(res / RESULT_FILES["bias_corrected"])

    individual = study_dir / "figures" / "individual_example.png"
    if individual_figures:
        _individual_figure(study_dir, summary.get("grid"))
    else:
        individual.unlink(missing_ok=True)

    conditions = list(table1["condition"])
    key_pairs = [(d, ref) for d in conditions if condition_kind(d) == "defaced" for ref in ("raw", "skullstripped") if ref in conditions]
    template = string.Template(PAGE)
    page = template.substitute(
        title=html.escape(title or f"defacebench report: {study_dir.resolve().name}"),
        subtitle=html.escape(f"How much do MRI defacing algorithms change brain-age predictions of a 3D CNN? Study directory {study_dir.resolve()}"),
        conclusions="\n".join(f"<li>{s}</li>" for s in conclusions(table1, pairwise, null, saliency)),
        cohort=_cohort_section(study_dir, summary),
        methods=_methods_section(study_dir, summary),
        table1=_table1_html(table1),
        omnibus=_omnibus_html(omnibus),
        key_pairs=_pairs_html(pairwise, key_pairs) if key_pairs else "<p>No defaced condition to compare.</p>",
        null_table=_null_html(null, summary.get("training_mean_age", float("nan"))),
        training_age=f"{summary.get('training_mean_age', float('nan')):.1f} years",
        n_pairs=0 if pairwise is None else len(pairwise),
        pairwise=_pairs_html(pairwise),
        bias_section=_bias_html(bias),
        figures=_figures_html(study_dir, _saliency_html(saliency)),
        qc=_qc_html(study_dir),
        version=__version__,
        date=_dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
    )
    return write_text_atomic(Path(out) if out else study_dir / "report.html", page)
