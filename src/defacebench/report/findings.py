"""The report's summary: plain-language findings generated from the result tables.

Every sentence is computed from the numbers of the study at hand. A caveat measured on the
simulated cohort is quoted only when the study's cohort is that simulation
(``simulated=True``); for any other cohort it is stated without the simulation's numbers.
"""

from __future__ import annotations

import html

import numpy as np
import pandas as pd

from defacebench.conditions import condition_kind, condition_method, condition_title, method_name
from defacebench.report.formatting import fmt_p

#: Below this improvement over the null a face-only "win" is not read as age in the face: on
#: the simulated cohort the ``--face-ageing 0`` control reached up to 8 % through registration
#: geometry alone (docs/design-notes.md).
SMALL_FACE_GAIN_PCT = 10.0
#: Why a small face-only gain need not be age in the face, for any cohort.
REGISTRATION_CAVEAT = ("the brain registration that places every image in MNI space follows atrophy, so it moves the face with brain age "
                       "and a face-only image can carry brain age without any ageing of the face itself.")
#: The same caveat with what the simulation measured; only for the simulated cohort.
SIMULATED_REGISTRATION_CAVEAT = ("with no face ageing planted, simulated face-only images still beat the null by up to 8 %, because the brain registration "
                                 "that places every image in MNI space follows atrophy and moves the face with brain age.")


def conclusions(table1: pd.DataFrame, pairwise: pd.DataFrame | None, null: pd.DataFrame, saliency: pd.DataFrame | None = None,
                alpha: float = 0.05, simulated: bool = False) -> list[str]:
    """Plain-language findings generated from the result tables (HTML-safe sentences).

    Parameters
    ----------
    table1, pairwise, null, saliency : DataFrame
        The analysis stage's ``table1``, ``pairwise``, ``null_baseline`` and ``saliency``
        result tables (``pairwise`` and ``saliency`` may be missing).
    alpha : float
        Significance level of the sentences.
    simulated : bool
        Whether the cohort is the simulated one (:func:`defacebench.report.page.simulated_cohort`).
        Only then may a caveat quote what was measured on the simulation; for any other
        cohort it is stated in general terms.
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
        sentence = f"Of the defacers, <b>{html.escape(name)}</b> costs the least accuracy: defaced MAE {t.loc[best, 'mae_mean']:.2f} years"
        pair = _pair(pairwise, best, "raw")
        if pair is not None:
            diff, low, high, p = pair
            sentence += f", {diff:+.2f} years against the raw head (95 % CI {low:+.2f} to {high:+.2f}, paired Holm p {fmt_p(p)})"
            sentence += "; the difference is statistically clear" if p < alpha else "; in this cohort it cannot be told apart from the raw head"
        if worst != best:
            sentence += f". The costliest is {html.escape(method_name(condition_method(worst)))} ({t.loc[worst, 'mae_mean']:.2f} years)"
        out.append(sentence + ".")

    face = _face_finding(t, n, null_mae, alpha, simulated)
    if face:
        out.append(face)
    if saliency is not None and len(saliency):
        sentence = saliency_sentence(saliency.set_index("condition"), "raw")
        if sentence:
            out.append(sentence)
    if n_test < 30:
        out.append(f"Caution: with only {n_test} test scans, differences of less than about a year are hard to resolve.")
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


def _face_finding(t: pd.DataFrame, n: pd.DataFrame, null_mae: float, alpha: float, simulated: bool) -> str | None:
    """Whether the face-only conditions beat the null baseline, read with the registration caveat."""
    faces = [c for c in t.index if condition_kind(c) == "face"]
    if not faces:
        return None
    best = min(faces, key=lambda c: t.loc[c, "mae_mean"])
    beating = [c for c in faces if c in n.index and bool(n.loc[c, "beats_null"])]
    name = method_name(condition_method(best))
    imp = float(n.loc[best, "improvement_pct"]) if best in n.index else float("nan")
    if beating and imp < SMALL_FACE_GAIN_PCT:
        return (
            f"{len(beating)} of {len(faces)} face-only conditions beat the null baseline (paired, Holm-corrected p &lt; {alpha}), but by little: the best, "
            f"{html.escape(name)} face-only, has MAE {t.loc[best, 'mae_mean']:.2f} years, {imp:.0f} % below the null baseline's {null_mae:.2f} years "
            f"(paired Holm p {fmt_p(n.loc[best, 'wilcoxon_p_holm'])}). A gain under {SMALL_FACE_GAIN_PCT:.0f} % need not come from the face: "
            + (SIMULATED_REGISTRATION_CAVEAT if simulated else REGISTRATION_CAVEAT)
        )
    if beating:
        return (
            f"The removed face carries age information: {len(beating)} of {len(faces)} face-only conditions beat the null baseline (paired, Holm-corrected p &lt; {alpha}). "
            f"The best, {html.escape(name)} face-only, has MAE {t.loc[best, 'mae_mean']:.2f} years, {imp:.0f} % below the null baseline's {null_mae:.2f} years (paired Holm p {fmt_p(n.loc[best, 'wilcoxon_p_holm'])})."
        )
    return (
        f"No face-only condition beats the null baseline: the best, {html.escape(name)} face-only, has MAE {t.loc[best, 'mae_mean']:.2f} years against {null_mae:.2f} years "
        f"({_relative(imp)}paired Holm p {fmt_p(n.loc[best, 'wilcoxon_p_holm']) if best in n.index else '–'}). This cohort gives no evidence that the removed tissue tells the model a person's age."
    )
