"""The report's Privacy section (issue 19) and the privacy-utility frontier.

Reads ``results/privacy.csv`` (``defacebench privacy``) and the analysis stage's Table 1 and
paired tests. One point per method: x = its accuracy cost (defaced MAE minus raw MAE, with
the paired bootstrap CI), y = the rank-1 re-identification rate of the stronger of the two
attacks on it (with its Wilson CI). The raw head and the skull-stripped brain are the two
ends. Pareto-optimal methods (no other is at once cheaper and harder to identify) are marked.
The figure shows no face: only numbers.
"""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np
import pandas as pd

from defacebench import layout
from defacebench.conditions import is_refacer, method_name
from defacebench.io.atomic import atomic_path
from defacebench.report.embed import embed_png
from defacebench.report.findings import paired_difference
from defacebench.report.formatting import html_table, read_csv

__all__ = ["ATTACK_NAMES", "frontier_points", "pareto_optimal", "draw_frontier", "privacy_section", "frontier_sentence"]

#: The attacks of ``privacy.csv`` (column prefix -> words).
ATTACK_NAMES: dict[str, str] = {"face": "face network", "surface": "surface shape"}
#: Facial regions of ``privacy_residual.csv`` in words, in report order.
REGION_NAMES: dict[str, str] = {"eyes_brow": "eyes and brow", "nose": "nose", "mouth_lips": "mouth and lips", "chin": "chin",
                                "cheeks": "cheeks", "ears": "ears"}
#: The two ends of the frontier besides the methods.
ENDS = ("raw", "skullstripped")


def _condition(method: str) -> str:
    return method if method in ENDS else f"defaced-{method}"


def _label(method: str) -> str:
    if method == "raw":
        return "raw head"
    if method == "skullstripped":
        return "skull-stripped"
    return method_name(method)


def _cost(table1: pd.DataFrame, pairwise: pd.DataFrame | None, condition: str) -> tuple[float, float, float]:
    """MAE(condition) - MAE(raw) and its paired bootstrap CI (NaN where unknown)."""
    t = table1.set_index("condition")
    if condition == "raw":
        return 0.0, 0.0, 0.0
    if condition not in t.index or "raw" not in t.index:
        return (float("nan"),) * 3
    cost = float(t.loc[condition, "mae_mean"] - t.loc["raw", "mae_mean"])
    pair = paired_difference(pairwise, condition, "raw")
    return (cost, pair[1], pair[2]) if pair is not None else (cost, float("nan"), float("nan"))


def frontier_points(privacy: pd.DataFrame, table1: pd.DataFrame, pairwise: pd.DataFrame | None) -> pd.DataFrame:
    """One row per method with its accuracy cost (CI), rank-1 rate of the stronger attack (CI), and Pareto flag."""
    rows = []
    for r in privacy.itertuples(index=False):
        method = str(r.method)
        cost, low, high = _cost(table1, pairwise, _condition(method))
        if not np.isfinite(cost):
            continue
        rates = {a: float(getattr(r, f"{a}_rank1_rate")) for a in ATTACK_NAMES}
        attack = max(rates, key=lambda a: rates[a])
        rows.append({"method": method, "label": _label(method), "cost_years": cost, "cost_ci_low": low, "cost_ci_high": high,
                     "rank1": rates[attack], "rank1_ci_low": float(getattr(r, f"{attack}_rank1_ci_low")),
                     "rank1_ci_high": float(getattr(r, f"{attack}_rank1_ci_high")), "attack": attack,
                     "chance": float(r.rank1_chance)})
    points = pd.DataFrame(rows)
    if not points.empty:
        points["pareto"] = pareto_optimal(points["cost_years"].to_numpy(), points["rank1"].to_numpy())
    return points


def pareto_optimal(cost: np.ndarray, rank1: np.ndarray) -> np.ndarray:
    """True where no other point is at most as costly and at most as identifiable, and better in one."""
    cost, rank1 = np.asarray(cost, float), np.asarray(rank1, float)
    out = np.ones(len(cost), bool)
    for i in range(len(cost)):
        dominated = (cost <= cost[i]) & (rank1 <= rank1[i]) & ((cost < cost[i]) | (rank1 < rank1[i]))
        out[i] = not dominated.any()
    return out


def draw_frontier(points: pd.DataFrame, path: str | Path) -> Path:
    """The frontier figure: accuracy cost (x, years, paired CI) against rank-1 re-identification (y, Wilson CI)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5.2))
    chance = float(points["chance"].max())
    ax.axhline(chance, color="#999", linestyle=":", linewidth=1)
    ax.axvline(0.0, color="#ccc", linewidth=0.8)
    for p in points.itertuples(index=False):
        colour = "#d62728" if p.method == "raw" else "#2ca02c" if p.method == "skullstripped" else "#9467bd" if is_refacer(p.method) else "#1f77b4"
        xerr = [[max(0.0, p.cost_years - p.cost_ci_low)], [max(0.0, p.cost_ci_high - p.cost_years)]] if np.isfinite(p.cost_ci_low) else None
        yerr = [[max(0.0, p.rank1 - p.rank1_ci_low)], [max(0.0, p.rank1_ci_high - p.rank1)]]
        ax.errorbar(p.cost_years, p.rank1, xerr=xerr, yerr=yerr, fmt="o", color=colour, ecolor=colour, alpha=0.85, capsize=3,
                    markersize=9 if p.pareto else 6, markeredgecolor="black" if p.pareto else colour, markeredgewidth=1.5 if p.pareto else 0)
    front = points[points["pareto"]].sort_values("cost_years")
    ax.plot(front["cost_years"], front["rank1"], color="black", linewidth=0.8, linestyle="--", alpha=0.6)
    ax.set_xlabel("accuracy cost: MAE minus raw-head MAE (years, paired 95 % CI)")
    ax.set_ylabel("rank-1 re-identification rate (stronger attack, 95 % CI)")
    ax.set_ylim(-0.03, 1.05)
    _place_labels(ax, points)
    ax.text(ax.get_xlim()[1], chance, f"chance {chance:.0%} ", ha="right", va="bottom", color="#777", fontsize=8)
    ax.set_title("Privacy-utility frontier (* Pareto-optimal: lower left is better)", fontsize=10)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(fig)
    return Path(path)


def _place_labels(ax, points: pd.DataFrame) -> None:
    """Label each point at the first of eight spots around it whose box overlaps no label placed
    before (greedy, in display pixels), so close points stay legible."""
    fig = ax.figure
    fig.canvas.draw()
    scale = fig.dpi / 72.0
    placed: list[tuple[float, float, float, float]] = []
    spots = ((6, 5), (6, -12), (-6, 5), (-6, -12), (6, 16), (-6, 16), (6, -23), (-6, -23))
    for p in points.sort_values("cost_years").itertuples(index=False):
        text = p.label + (" *" if p.pareto else "")
        x, y = ax.transData.transform((p.cost_years, p.rank1))
        width, height = 4.9 * len(text) * scale, 9 * scale
        for dx, dy in spots:
            left = x + dx * scale if dx > 0 else x + dx * scale - width
            box = (left, y + dy * scale, left + width, y + dy * scale + height)
            if not any(box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3] for b in placed):
                break
        placed.append(box)
        ax.annotate(text, (p.cost_years, p.rank1), textcoords="offset points", xytext=(dx, dy), ha="left" if dx > 0 else "right",
                    fontsize=8)


def _rate(rate: float, low: float, high: float) -> str:
    return "n/a" if not np.isfinite(rate) else f"{_pct(rate)} ({_pct(low)} to {_pct(high)})"


def privacy_section(study_dir: str | Path, points: pd.DataFrame | None = None) -> str:
    """The Privacy section's HTML (empty note when ``defacebench privacy`` has not run)."""
    study_dir = Path(study_dir)
    privacy = read_csv(layout.privacy_table(study_dir))
    if privacy is None or privacy.empty:
        return "<p class=\"note\">Not measured: run <code>defacebench privacy STUDY</code> (part of <code>defacebench run</code>).</p>"
    n_people, gallery = int(privacy["n_people"].max()), int(privacy["gallery_size"].max())
    same_scan = bool(privacy["same_scan_gallery"].astype(str).str.lower().eq("true").any())
    shown = pd.DataFrame({
        "method": [_label(m) for m in privacy["method"]],
        "scans": privacy["n_scans"],
        "face found": [_rate(r, a, b) for r, a, b in zip(privacy["detection_rate"], privacy["detection_ci_low"], privacy["detection_ci_high"])],
        **{f"rank-1, {words}": [_rate(r, a, b) for r, a, b in zip(privacy[f"{k}_rank1_rate"], privacy[f"{k}_rank1_ci_low"], privacy[f"{k}_rank1_ci_high"])]
           for k, words in ATTACK_NAMES.items()},
        **{f"rank-5, {words}": [_pct(r) for r in privacy[f"{k}_rank5_rate"]] for k, words in ATTACK_NAMES.items()},
        "face skin left": ["n/a" if not np.isfinite(v) else _pct(v) for v in privacy.get("face_left_share", pd.Series([np.nan] * len(privacy)))],
    })
    chance1, chance5 = float(privacy["rank1_chance"].max()), float(privacy["rank5_chance"].max())
    parts = [
        "<p>The attack, in plain words: someone holds a picture of every person in this cohort and one shared scan. They render the scan's head surface "
        "(front and two three-quarter views, in the pose of the scan's registration to MNI space) and ask two questions. "
        "<em>Detection</em>: does dlib's CNN face detector still find a face in any view? "
        "<em>Identification</em>: ranking every person's picture by how close it is to the render, is the right person first (rank-1) or among the first five (rank-5)? "
        "Closeness is measured twice: by dlib's face-recognition network (trained on photographs), and by the surface's own shape (its depth map, "
        "as an attacker with a 3D photograph or another MRI would compare). Both networks ship in the <code>face_recognition_models</code> package.</p>",
        f"<p class=\"note\">{len(privacy['method'])} heads per scan, {n_people} people; gallery of {gallery}. "
        f"Chance: rank-1 {_pct(chance1, 1)}, rank-5 {_pct(chance5, 1)}. 95&nbsp;% Wilson intervals. Face skin left: the share of the raw head's skin of the eyes and brow, "
        "nose, mouth and lips, chin, cheeks and ears that the output leaves unchanged (removed or replaced skin counts as gone; per region in "
        "<code>results/privacy_residual.csv</code>).</p>",
    ]
    if same_scan:
        parts.append("<p class=\"warn\">This cohort has one session per person, so each person's gallery picture is rendered from the <b>same scan</b>: "
                     "an upper bound on what an attacker with a different picture could do (the raw head then matches itself exactly).</p>")
    parts.append(html_table(shown, {}))
    residual = read_csv(layout.privacy_residual_table(study_dir))
    if residual is not None and not residual.empty:
        wide = residual.pivot_table(index="method", columns="region", values="left_share", sort=False)
        wide = wide.reindex(index=[m for m in privacy["method"] if m in wide.index])
        table = pd.DataFrame({"method": [_label(m) for m in wide.index],
                              **{words: ["n/a" if not np.isfinite(v) else _pct(v) for v in wide[r]]
                                 for r, words in REGION_NAMES.items() if r in wide.columns}})
        parts.append("<details><summary>Face skin left per region (share of the raw head's skin each output leaves unchanged)</summary>"
                     + html_table(table, {}) + "</details>")
    parts.append("<p class=\"note\">What this does not measure: defacing does not remove every risk. Brain-age CNNs leak whether a person was in "
                 "their training set (membership inference succeeds 60-80 %, Gupta et al., MIDL 2021), and skull-stripped T1 images can be linked "
                 "across databases by plain image similarity. These rates are for a face-recognition attacker only.</p>")
    if points is not None and not points.empty:
        figure = layout.privacy_figure(study_dir)
        if figure.is_file():
            parts.append(f'<figure><img alt="privacy-utility frontier" src="{embed_png(figure)}"><figcaption>Privacy-utility frontier: '
                         "each method's accuracy cost (its MAE minus the raw head's, paired bootstrap 95 % CI) against its rank-1 re-identification rate "
                         "under the stronger of the two attacks (Wilson 95 % CI). Lower left is better; * marks the Pareto-optimal methods, which no other method "
                         "beats on both axes at once. Numbers only: no face is shown.</figcaption></figure>")
    return "\n".join(parts)


def _pct(value: float, digits: int = 0) -> str:
    return f"{value:.{digits}%}".replace("%", " %")


def frontier_sentence(points: pd.DataFrame | None) -> str | None:
    """The summary's "which method" sentence on both axes (None without privacy results)."""
    if points is None or points.empty:
        return None
    methods = points[~points["method"].isin(ENDS)]
    if methods.empty:
        return None
    best = methods[methods["pareto"]].sort_values("cost_years")
    chance = _pct(float(points["chance"].max()), 1)
    raw = points[points["method"] == "raw"]
    raw_text = f"; the raw head is re-identified in {_pct(float(raw['rank1'].iloc[0]))}" if len(raw) else ""
    if best.empty:
        return (f"On both axes, accuracy cost and re-identification, every method is dominated by the raw or the skull-stripped head "
                f"(chance {chance}{raw_text}).")
    listed = "; ".join(f"<b>{html.escape(p.label)}</b> (cost {p.cost_years:+.2f} years, 95 % CI {p.cost_ci_low:+.2f} to {p.cost_ci_high:+.2f}; "
                       f"re-identified at rank 1 in {_pct(p.rank1)} of scans by the {html.escape(ATTACK_NAMES[p.attack])})"
                       for p in best.itertuples(index=False))
    plural = "s are" if len(best) > 1 else " is"
    text = f"Which method buys the most privacy for the least accuracy? On both axes the Pareto-optimal method{plural} {listed}{raw_text}, chance {chance}."
    dominated = [html.escape(p.label) for p in methods[~methods["pareto"]].itertuples(index=False)]
    if dominated:
        text += f" Dominated (another is both cheaper and harder to identify): {', '.join(dominated)}."
    spans = [p for p in best.itertuples(index=False) if np.isfinite(p.cost_ci_low) and p.cost_ci_low <= 0 <= p.cost_ci_high]
    if spans:
        text += (" The accuracy cost's CI spans zero for " + ", ".join(html.escape(p.label) for p in spans) +
                 f": on accuracy this cohort cannot tell {'them' if len(spans) > 1 else 'it'} from the raw head, so the ranking rests on the privacy axis.")
    return text
