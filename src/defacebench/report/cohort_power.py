"""What this cohort can show, in the report: detectable differences and scans needed.

Reads ``results/power.csv`` (:mod:`defacebench.analysis.power`): columns beside the tests'
tables, a note on how to read them, and the summary's caution.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from defacebench.report.formatting import fmt_p

#: Column titles beside a test (the target difference is filled in).
DETECTABLE = "detectable at 80 % power"
NEEDED = "scans for {target:g} y"


def detectable_text(value: object) -> str:
    """A detectable difference in years; ``none`` when no difference can reach significance."""
    v = float(value) if value is not None else math.nan
    if math.isinf(v):
        return "none"
    return "–" if not np.isfinite(v) else f"{v:.2f}"


def scans_text(value: object) -> str:
    """Scans needed as a whole number; ``> 1,000,000`` when beyond the search."""
    v = float(value) if value is not None else math.nan
    if math.isinf(v):
        return "&gt; 1,000,000"
    return "–" if not np.isfinite(v) else f"{int(v):,}"


def family(power: pd.DataFrame | None, name: str) -> pd.DataFrame:
    """The rows of one family of tests (empty when there is no power table)."""
    if power is None or power.empty:
        return pd.DataFrame()
    return power[power["family"] == name]


def add_power_columns(shown: pd.DataFrame, a: pd.Series, b: pd.Series, power: pd.DataFrame | None, name: str) -> pd.DataFrame:
    """``shown`` (a test table as displayed) with the detectable difference and scans needed of
    its comparisons ``(a, b)`` of family ``name`` appended; unchanged without a power table."""
    rows = family(power, name)
    if rows.empty:
        return shown
    by_pair = {(r.a, r.b): r for r in rows.itertuples(index=False)}
    hits = [by_pair.get((x, y)) or by_pair.get((y, x)) for x, y in zip(a, b)]
    target = float(rows["target_diff"].iloc[0])
    out = shown.copy()
    out[DETECTABLE] = [detectable_text(h.detectable_diff) if h is not None else "–" for h in hits]
    out[NEEDED.format(target=target)] = [scans_text(h.scans_needed) if h is not None else "–" for h in hits]
    return out


def face_power_columns(shown: pd.DataFrame, methods: pd.Series, power: pd.DataFrame | None) -> pd.DataFrame:
    """The face-signal table with ``face − null / face − mask / mask − null`` detectable
    differences and scans needed appended (one text column each)."""
    if power is None or power.empty or not power["family"].isin(["face_vs_null", "face_vs_mask", "mask_vs_null"]).any():
        return shown
    families = (("face_vs_null", "face-", "null"), ("face_vs_mask", "face-", "facemask-"), ("mask_vs_null", "facemask-", "null"))

    def cells(method: str, column: str, text) -> str:
        parts = []
        for name, a, b in families:
            hit = power[(power["family"] == name) & (power["a"] == f"{a}{method}") & (power["b"] == (b if b == "null" else f"{b}{method}"))]
            parts.append(text(hit[column].iloc[0]) if len(hit) else "–")
        return " / ".join(parts)

    target = float(power["target_diff"].iloc[0])
    out = shown.copy()
    out[f"{DETECTABLE} (f−n / f−m / m−n)"] = [cells(m, "detectable_diff", detectable_text) for m in methods]
    out[NEEDED.format(target=target) + " (f−n / f−m / m−n)"] = [cells(m, "scans_needed", scans_text) for m in methods]
    return out


def power_note(power: pd.DataFrame | None) -> str:
    """How to read the two columns (HTML); empty without a power table."""
    if power is None or power.empty:
        return ""
    target = float(power["target_diff"].iloc[0])
    return (f"<p class=\"note\"><b>What this cohort can show.</b> Beside each test: <em>{DETECTABLE}</em>, the smallest MAE difference (years) "
            f"that this test, on this many scans, would find significant in 8 of 10 studies like this one, at the report's threshold "
            f"(0.05 divided by the number of tests in its family: Holm's first step); and <em>{NEEDED.format(target=target)}</em>, how many test scans "
            f"a difference of {target:g} years would need for the same power. Both come from the spread of the observed per-scan differences "
            "(simulated Wilcoxon tests up to 50 scans, the normal approximation above; docs/analysis.md). A non-significant difference "
            "smaller than the detectable one is not evidence that the conditions are alike: the cohort could not have shown it. "
            "<em>none</em>: with so few scans no Wilcoxon p can fall below the threshold, whatever the difference. In the face-signal table "
            "the three numbers are face-only against the null, face-only against its geometry control, and the control against the null.</p>")


def caution(power: pd.DataFrame | None, n_test: int) -> str:
    """The summary's sentence on what differences this cohort can resolve (HTML-safe)."""
    pairs = family(power, "pairwise")
    if pairs.empty:
        return (f"Caution: only {n_test} test scans; rerun <code>defacebench analyse</code> to see which differences this cohort can detect."
                if n_test < 30 else "")
    n, m = int(pairs["n"].max()), int(pairs["family_size"].iloc[0])
    target = float(pairs["target_diff"].iloc[0])
    detectable = pairs["detectable_diff"].astype(float)
    needed = pairs["scans_needed"].astype(float).dropna()
    needs = f"telling apart {target:g} years would need about {scans_text(np.median(needed))} test scans (median over pairs)" if len(needed) else ""
    if np.isinf(detectable).all():
        min_p = 2.0 * 2.0 ** -n
        return (f"Caution: with only {n} test scans no difference between two conditions can reach significance: the smallest p a paired "
                f"Wilcoxon test on {n} scans can give ({fmt_p(min_p)}) is not below 0.05 / {m} (Holm over {m} pairs). These results "
                f"cannot show that any condition differs from another{'; ' + needs if needs else ''}.")
    finite = detectable[np.isfinite(detectable)]
    median = float(np.median(detectable))
    sentence = (f"With {n} test scans, a paired Wilcoxon test (Holm over {m} pairs) detects with 80 % power only MAE differences between two "
                f"conditions of about {detectable_text(median)} years or more (median over pairs; {finite.min():.2f}–{finite.max():.2f})")
    null = family(power, "null_baseline")
    if len(null):
        gain = float(np.median(null["detectable_diff"].astype(float)))
        sentence += f", and an MAE at least {detectable_text(gain)} years below the null baseline (median over conditions)"
    sentence += f"; {needs}." if needs else "."
    return ("Caution: " if not median <= target else "What this cohort can show: ") + sentence
