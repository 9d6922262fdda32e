"""The report's summary: plain-language findings generated from the result tables.

Every sentence is computed from the numbers of the study at hand. A caveat measured on the
simulated cohort is quoted only when the study's cohort is that simulation
(``simulated=True``); for any other cohort it is stated without the simulation's numbers.
"""

from __future__ import annotations

import html

import numpy as np
import pandas as pd

from defacebench.conditions import condition_kind, condition_method, condition_title, is_refacer, method_name
from defacebench.report.cohort_power import caution
from defacebench.report.formatting import fmt_p

#: Why a small face-only gain need not be age in the face, for any cohort.
REGISTRATION_CAVEAT = ("the brain registration that places every image in MNI space follows atrophy, so it moves the face with brain age "
                       "and changes what lies next to the defacers' brain margins, and a face-only image can carry brain age without any ageing of the face itself.")
#: What the geometry control cannot rule out; said with every face-age claim.
MARGIN_CAVEAT = (" The control is an average face placed by an affine head registration: it stands for where the face sits and where "
                 "the method cuts; a face's own shape and tissue, including how they age, count as the face (docs/analysis.md).")
#: A geometry control whose MAE is within this share of the null's learned nothing (issue 22).
BLANK_CONTROL = 0.01
#: The same caveat with what the simulation measured; only for the simulated cohort.
SIMULATED_REGISTRATION_CAVEAT = ("with no face ageing planted, simulated face-only images still come out below the null (by up to 2-15 % in the demo, three seeds), because the brain "
                                 "registration that places every image in MNI space follows atrophy: it moves the face and changes what lies next to the "
                                 "defacers' brain margins with brain age; the geometry controls reproduce much of it.")


def conclusions(table1: pd.DataFrame, pairwise: pd.DataFrame | None, null: pd.DataFrame, saliency: pd.DataFrame | None = None,
                alpha: float = 0.05, simulated: bool = False, face_signal: pd.DataFrame | None = None,
                power: pd.DataFrame | None = None, ablation: pd.DataFrame | None = None,
                occlusion: pd.DataFrame | None = None, frontier: str | None = None) -> list[str]:
    """Plain-language findings generated from the result tables (HTML-safe sentences).

    Parameters
    ----------
    table1, pairwise, null, saliency, face_signal : DataFrame
        The analysis stage's ``table1``, ``pairwise``, ``null_baseline``, ``saliency`` and
        ``face_signal`` result tables (all but the first and third may be missing).
    power : DataFrame, optional
        The ``power`` result table: the caution says which differences the cohort can detect
        and how many scans a smaller one would need (:func:`defacebench.report.cohort_power.caution`).
    alpha : float
        Significance level of the sentences.
    simulated : bool
        Whether the cohort is the simulated one (:func:`defacebench.report.page.simulated_cohort`).
        Only then may a caveat quote what was measured on the simulation; for any other
        cohort it is stated in general terms.
    ablation, occlusion : DataFrame, optional
        ``defacebench evaluate``'s ``face_ablation`` and ``occlusion`` tables (issue 20).
    frontier : str, optional
        The two-axis "which method" sentence (:func:`defacebench.report.privacy.frontier_sentence`,
        issue 19). With it, the accuracy-only sentence says it is about accuracy alone and
        the verdict follows on both axes.
    """
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
        group = "defacers and refacers" if any(is_refacer(condition_method(c)) for c in defaced) else "defacers"
        image = "refaced" if is_refacer(condition_method(best)) else "defaced"
        sentence = (("On accuracy alone, of" if frontier else "Of") +
                    f" the {group}, <b>{html.escape(name)}</b> costs the least accuracy: {image} MAE {t.loc[best, 'mae_mean']:.2f} years")
        pair = paired_difference(pairwise, best, "raw")
        if pair is not None:
            diff, low, high, p = pair
            sentence += f", {diff:+.2f} years against the raw head (95 % CI {low:+.2f} to {high:+.2f}, paired Holm p {fmt_p(p)})"
            sentence += "; the difference is statistically clear" if p < alpha else "; in this cohort it cannot be told apart from the raw head"
        if worst != best:
            sentence += f". The costliest is {html.escape(method_name(condition_method(worst)))} ({t.loc[worst, 'mae_mean']:.2f} years)"
        out.append(sentence + ".")
    if frontier:
        out.append(frontier)

    face = _face_finding(t, n, null_mae, alpha, simulated, face_signal)
    if face:
        out.append(face)
    sentence = face_use_sentence(ablation, occlusion, saliency)  # issue 20: ablation in years, shares that cannot cancel
    if sentence:
        out.append(sentence)
    what_it_can_show = caution(power, n_test)
    if what_it_can_show:
        out.append(what_it_can_show)
    return out


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


def paired_difference(pairwise: pd.DataFrame | None, a: str, b: str) -> tuple[float, float, float, float] | None:
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


def _face_finding(t: pd.DataFrame, n: pd.DataFrame, null_mae: float, alpha: float, simulated: bool, signal: pd.DataFrame | None) -> str | None:
    """What the face-only conditions say about age in the face, never more than the controls allow.

    "The removed face carries age" is said of a method only when its face-only condition beats
    both the null baseline and its own geometry control (``face_signal.csv``: paired, Holm over
    methods, ensemble of runs). Otherwise the sentence says how much of the face-only gain the
    geometry control explains, or that no control was trained.
    """
    faces = [c for c in t.index if condition_kind(c) == "face"]
    if not faces:
        return None
    caveat = SIMULATED_REGISTRATION_CAVEAT if simulated else REGISTRATION_CAVEAT
    rows = signal.set_index("method") if signal is not None and len(signal) else None
    beating = [c for c in faces if c in n.index and bool(n.loc[c, "beats_null"])]
    if rows is not None:
        beating = [f"face-{m}" for m in rows.index if bool(rows.loc[m, "beats_null"])]
    if not beating:
        best = min(faces, key=lambda c: t.loc[c, "mae_mean"])
        imp = float(n.loc[best, "improvement_pct"]) if best in n.index else float("nan")
        return (
            f"No face-only condition beats the null baseline: the best, {html.escape(method_name(condition_method(best)))} face-only, has MAE {t.loc[best, 'mae_mean']:.2f} years "
            f"against {null_mae:.2f} years ({_relative(imp)}paired Holm p {fmt_p(n.loc[best, 'wilcoxon_p_holm']) if best in n.index else '–'}). "
            "This cohort gives no evidence that the removed tissue tells the model a person's age."
        )
    if rows is None or rows["facemask_mae"].isna().all():
        return (
            f"{len(beating)} of {len(faces)} face-only conditions beat the null baseline (paired, Holm-corrected p &lt; {alpha}), but no geometry control "
            "(<code>facemask-&lt;method&gt;</code>) was trained, so this study cannot tell age in the face's tissue from where the registration puts the face: " + caveat
        )
    tissue = [m for m in rows.index if bool(rows.loc[m, "tissue_signal"])]

    def numbers(m: str) -> str:
        r = rows.loc[m]
        return (f"{html.escape(method_name(m))}: face-only {r['face_mae']:.2f}, face mask {r['facemask_mae']:.2f}, null {r['null_mae']:.2f} years; "
                f"face-only against its mask paired Holm p {fmt_p(r['face_vs_mask_p_holm'])}")

    explained = [m for m in rows.index if bool(rows.loc[m, "beats_null"]) and m not in tissue and np.isfinite(rows.loc[m, "facemask_mae"])]
    shares = "; ".join(f"{html.escape(method_name(m))} {rows.loc[m, 'geometry_explained_pct']:.0f} % (face-only {rows.loc[m, 'face_mae']:.2f}, "
                       f"face mask {rows.loc[m, 'facemask_mae']:.2f}, null {rows.loc[m, 'null_mae']:.2f} years; face-only against its mask "
                       f"paired Holm p {fmt_p(rows.loc[m, 'face_vs_mask_p_holm'])})" for m in explained)
    if tissue:
        best = min(tissue, key=lambda m: rows.loc[m, "face_mae"])
        blank = [m for m in tissue if abs(rows.loc[m, "facemask_mae"] - rows.loc[m, "null_mae"]) <= BLANK_CONTROL * rows.loc[m, "null_mae"]]
        still = (f" The geometry control of {', '.join(html.escape(method_name(m)) for m in blank)} learned nothing (MAE within "
                 f"{BLANK_CONTROL:.0%} of the null): it is nearly the same image for every scan, as when the face-only image goes to MNI space by the "
                 "registration that placed the cut, or is kept inside the region every scan's cut covers (the demo's "
                 "<code>face_placement = \"common\"</code>), so that claim rests on face-only beating the null and on the head registration "
                 "not moving the face with brain age (docs/face-placement.md).").replace("%", " %") if blank else ""
        rest = (f" For {', '.join(html.escape(method_name(m)) for m in explained)}, face-only beats the null but not its geometry control, "
                f"which reaches this share of the face-only gain: {shares}; that gain may be where the face sits, not what it looks like.") if explained else ""
        return (
            f"The removed face carries age information beyond where it sits: for {', '.join(html.escape(method_name(m)) for m in tissue)}, face-only beats both the null baseline "
            f"and its geometry control (paired, Holm-corrected p &lt; {alpha}; mean prediction over runs). Best, {numbers(best)}." + rest + MARGIN_CAVEAT + still
        )
    names = ", ".join(html.escape(method_name(m)) for m in rows.index if bool(rows.loc[m, "beats_null"]))
    return (
        f"{len(beating)} of {len(faces)} face-only conditions beat the null baseline ({names}), but none beats its own geometry control, an average face placed "
        "by the subject's head registration and moved by the same brain registration, so this study gives no evidence of age in the face's tissue beyond where it sits. "
        + (f"The control reaches this share of the face-only gain: {shares}. " if shares else "")
        + "Why a face-only image can beat the null without any ageing of the face: " + caveat
    )


# --------------------------------------------------------------------------- issue 20: does the model use the face?
def _share(value: float) -> str:
    """A share that never reads as a misleading 0 % (below 0.5 %: '&lt;1 %')."""
    return "&lt;1 %" if value < 0.005 else f"{value:.0%}".replace("%", " %")


def _one_model(table: pd.DataFrame | None, condition: str = "raw") -> pd.DataFrame | None:
    """Rows of one model: the mean over runs when there are several, else its single run."""
    if table is None or table.empty or "condition" not in table:
        return None
    rows = table[table["condition"] == condition].assign(run=lambda t: t["run"].astype(str))
    if rows["run"].nunique() > 1:
        rows = rows[rows["run"] == "mean"] if (rows["run"] == "mean").any() else rows[rows["run"] == rows["run"].iloc[0]]
    return rows if len(rows) else None


def face_use_sentence(ablation: pd.DataFrame | None, occlusion: pd.DataFrame | None, saliency: pd.DataFrame | None) -> str | None:
    """Does the raw-head model use the face? Face ablation in years first, then occlusion and
    |Grad-CAM| shares; a share that is nan (no signal) is said so, never printed."""
    parts = []
    rows = _one_model(ablation)
    if rows is not None:
        union = rows[rows["region"] == "union"].set_index("fill")
        if "zero" in union.index:
            z = union.loc["zero"]
            text = (f"Does the raw-head model use the face? Setting every voxel a defacer removes to zero moves its predictions by {z['mean_abs_change']:.2f} years "
                    f"on average (95 % CI {z['mean_abs_change_ci_low']:.2f} to {z['mean_abs_change_ci_high']:.2f}) and changes its MAE by {z['mae_change']:+.2f} years "
                    f"(95 % CI {z['mae_change_ci_low']:+.2f} to {z['mae_change_ci_high']:+.2f}, paired p {fmt_p(z['mae_p'])})")
            if "average face" in union.index:
                a = union.loc["average face"]
                text += f"; replacing it with the cohort's average face moves them by {a['mean_abs_change']:.2f} years and the MAE by {a['mae_change']:+.2f} years"
            parts.append(text + ".")
    occ = _one_model(occlusion)
    if occ is not None:
        shares = occ.set_index("region")["share"]
        if shares.notna().all():
            parts.append("Occlusion (one region at a time set to zero), share of the change in prediction: " + ", ".join(f"{html.escape(k)} {_share(v)}" for k, v in shares.items()) + ".")
        else:
            parts.append("Occlusion: blanking the face region, the brain or the skull and scalp changes no prediction, so it gives no shares.")
    if saliency is not None and len(saliency) and "abs_face_share" in saliency and "raw" in set(saliency["condition"]):
        row = saliency.set_index("condition").loc["raw"]
        if np.isfinite(row["abs_face_share"]):
            parts.append(f"Grad-CAM: of the raw-head model's mean absolute saliency, {_share(row['abs_face_share'])} lies in the region the defacers remove, "
                         f"{_share(row['abs_brain_share'])} in the brain and {_share(row['abs_other_share'])} elsewhere.")
        else:
            parts.append("Grad-CAM: the raw-head model's saliency is zero everywhere, so the map carries no signal to share out.")
    return " ".join(parts) or None
