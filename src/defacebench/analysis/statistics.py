"""Statistical tests on per-subject absolute errors (rows = test scans, columns = conditions).

Two families, side by side (docs/analysis.md, "Why both the paper's tests and paired tests"):

* the paper's **unpaired** tests: one-way ANOVA over conditions and Tukey HSD, which treat
  each condition's errors as independent samples;
* the **paired** (repeated-measures) tests, right for this design because the same test
  scans appear in every condition: Friedman, pairwise Wilcoxon signed-rank with Holm
  correction, and paired bootstrap CIs of MAE differences that resample scans.

Plus the null baseline test: does a condition beat predicting the training mean age?
"""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pandas as pd


def _columns(errors: pd.DataFrame) -> list[str]:
    if errors.shape[1] < 2:
        raise ValueError("need at least two conditions to compare")
    return list(errors.columns)


def complete_cases(errors: pd.DataFrame) -> pd.DataFrame:
    """Rows (scans) that have an error in every condition: the paired design."""
    return errors.dropna(axis=0, how="any")


# --------------------------------------------------------------------------- unpaired (paper)
def one_way_anova(errors: pd.DataFrame) -> dict[str, float]:
    """One-way ANOVA over conditions (the paper's test): F(df1, df2) and p.

    Each condition's non-missing errors are one group; pairing is ignored.
    """
    from scipy import stats

    groups = [errors[c].dropna().to_numpy(float) for c in _columns(errors)]
    result = stats.f_oneway(*groups)
    n_total = sum(len(g) for g in groups)
    return {"test": "one-way ANOVA", "statistic": float(result.statistic), "df1": len(groups) - 1, "df2": n_total - len(groups), "p": float(result.pvalue), "n": n_total, "k": len(groups)}


def tukey_hsd(errors: pd.DataFrame, alpha: float = 0.05) -> pd.DataFrame:
    """Tukey HSD over all pairs (statsmodels), as in the paper.

    Returns one row per pair ``(a, b)`` in condition order with ``mean_diff = mean(a) -
    mean(b)``, its ``1 - alpha`` family-wise CI (``ci_low``, ``ci_high``), ``p_adj`` and
    ``reject``.
    """
    from statsmodels.stats.multicomp import pairwise_tukeyhsd

    columns = _columns(errors)
    long = errors.melt(var_name="condition", value_name="abs_error").dropna()
    result = pairwise_tukeyhsd(long["abs_error"].to_numpy(float), long["condition"].to_numpy(str), alpha=alpha)
    found: dict[tuple[str, str], tuple[float, float, float, float, bool]] = {}
    for (i, j), diff, (low, high), p, reject in zip(itertools.combinations(range(len(result.groupsunique)), 2), result.meandiffs, result.confint, result.pvalues, result.reject):
        g1, g2 = str(result.groupsunique[i]), str(result.groupsunique[j])
        # statsmodels reports mean(g2) - mean(g1)
        found[(g1, g2)] = (float(diff), float(low), float(high), float(p), bool(reject))
        found[(g2, g1)] = (-float(diff), -float(high), -float(low), float(p), bool(reject))
    rows = []
    for a, b in itertools.combinations(columns, 2):
        diff, low, high, p, reject = found[(b, a)]  # mean(a) - mean(b)
        rows.append({"a": a, "b": b, "mean_diff": diff, "ci_low": low, "ci_high": high, "p_adj": p, "reject": reject})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- paired
def friedman(errors: pd.DataFrame) -> dict[str, float]:
    """Friedman test over conditions on complete cases, with Kendall's W as effect size."""
    from scipy import stats

    paired = complete_cases(errors)
    n, k = paired.shape
    if n < 2:
        raise ValueError("Friedman needs at least two scans with errors in every condition")
    result = stats.friedmanchisquare(*(paired[c].to_numpy(float) for c in _columns(paired)))
    return {"test": "Friedman", "statistic": float(result.statistic), "df1": k - 1, "df2": float("nan"), "p": float(result.pvalue), "n": n, "k": k, "kendall_w": float(result.statistic) / (n * (k - 1))}


def holm(pvalues) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (statsmodels ``multipletests``, method ``holm``)."""
    from statsmodels.stats.multitest import multipletests

    p = np.asarray(pvalues, float)
    if p.size == 0:
        return p
    out = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        out[ok] = multipletests(p[ok], method="holm")[1]
    return out


def wilcoxon_p(x: np.ndarray, y: np.ndarray, alternative: str = "two-sided") -> tuple[float, float]:
    """Wilcoxon signed-rank test of ``x - y`` (statistic, p); p = 1 when all differences are 0."""
    from scipy import stats

    d = np.asarray(x, float) - np.asarray(y, float)
    if not np.any(d != 0):
        return 0.0, 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = stats.wilcoxon(d, alternative=alternative)
    return float(result.statistic), float(result.pvalue)


def bootstrap_indices(n: int, n_boot: int, seed: int) -> np.ndarray:
    """``(n_boot, n)`` scan indices drawn with replacement (``numpy.random.default_rng(seed)``)."""
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def paired_pairwise(errors: pd.DataFrame, n_boot: int = 2000, seed: int = 0, alpha: float = 0.05) -> pd.DataFrame:
    """Paired comparisons of every pair of conditions on complete cases.

    Per pair ``(a, b)``: MAE of each, ``mae_diff = MAE(a) - MAE(b)``, its paired bootstrap
    ``1 - alpha`` percentile CI (the same resampled scans for both conditions and every pair),
    the Wilcoxon signed-rank p of ``|err_a| - |err_b|`` and its Holm adjustment over all pairs.
    """
    paired = complete_cases(errors)
    columns = _columns(paired)
    values = paired.to_numpy(float)
    n = len(values)
    if n < 2:
        raise ValueError("paired tests need at least two scans with errors in every condition")
    boot = values[bootstrap_indices(n, n_boot, seed)].mean(axis=1)  # (n_boot, k)
    mae = values.mean(axis=0)
    rows = []
    for (i, a), (j, b) in itertools.combinations(enumerate(columns), 2):
        diffs = boot[:, i] - boot[:, j]
        low, high = np.percentile(diffs, [100 * alpha / 2, 100 * (1 - alpha / 2)])
        statistic, p = wilcoxon_p(values[:, i], values[:, j])
        rows.append({"a": a, "b": b, "n": n, "mae_a": mae[i], "mae_b": mae[j], "mae_diff": mae[i] - mae[j], "boot_ci_low": float(low), "boot_ci_high": float(high), "wilcoxon_statistic": statistic, "wilcoxon_p": p})
    table = pd.DataFrame(rows)
    table["wilcoxon_p_holm"] = holm(table["wilcoxon_p"])
    table["significant"] = table["wilcoxon_p_holm"] < alpha
    return table


def pairwise_table(errors: pd.DataFrame, n_boot: int = 2000, seed: int = 0, alpha: float = 0.05) -> pd.DataFrame:
    """Paired comparisons (:func:`paired_pairwise`) joined with the paper's Tukey HSD per pair."""
    paired = paired_pairwise(errors, n_boot=n_boot, seed=seed, alpha=alpha)
    tukey = tukey_hsd(errors, alpha=alpha).rename(columns={"mean_diff": "tukey_mean_diff", "ci_low": "tukey_ci_low", "ci_high": "tukey_ci_high", "p_adj": "tukey_p_adj", "reject": "tukey_reject"})
    return paired.merge(tukey, on=["a", "b"], how="left")


# --------------------------------------------------------------------------- null baseline
def null_baseline_tests(errors: pd.DataFrame, null_abs_errors: pd.Series, n_boot: int = 2000, seed: int = 0, alpha: float = 0.05) -> pd.DataFrame:
    """Does each condition beat the null model (predicting the training mean age)?

    Per condition, on its scans: MAE, null MAE, ``mae_diff = MAE - null MAE`` with a paired
    bootstrap CI, the one-sided Wilcoxon signed-rank p of ``|err| < |null err|`` and its Holm
    adjustment over conditions. ``beats_null`` = Holm-adjusted p < ``alpha``.
    """
    rows = []
    for condition in errors.columns:
        err = errors[condition].dropna()
        null = null_abs_errors.reindex(err.index).to_numpy(float)
        values = err.to_numpy(float)
        n = len(values)
        idx = bootstrap_indices(n, n_boot, seed)
        diffs = values[idx].mean(axis=1) - null[idx].mean(axis=1)
        low, high = np.percentile(diffs, [100 * alpha / 2, 100 * (1 - alpha / 2)])
        statistic, p = wilcoxon_p(values, null, alternative="less")
        mae, null_mae = float(values.mean()), float(null.mean())
        rows.append({"condition": condition, "n": n, "mae": mae, "null_mae": null_mae, "mae_diff": mae - null_mae, "boot_ci_low": float(low), "boot_ci_high": float(high), "improvement_pct": 100 * (1 - mae / null_mae) if null_mae > 0 else float("nan"), "wilcoxon_statistic": statistic, "wilcoxon_p": p})
    table = pd.DataFrame(rows)
    table["wilcoxon_p_holm"] = holm(table["wilcoxon_p"])
    table["beats_null"] = table["wilcoxon_p_holm"] < alpha
    return table


def omnibus_table(errors: pd.DataFrame) -> pd.DataFrame:
    """The paper's one-way ANOVA and the paired Friedman test, one row each."""
    rows = [one_way_anova(errors)]
    try:
        rows.append(friedman(errors))
    except ValueError:
        pass
    return pd.DataFrame(rows)
