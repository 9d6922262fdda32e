"""Statistics agree with independent computations; planted differences are found, null data are not."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from defacebench.analysis import statistics as S


def errors_table(effects: dict[str, float], n: int = 60, seed: int = 0, subject_sd: float = 3.0, noise_sd: float = 0.5) -> pd.DataFrame:
    """Absolute-error-like data: a large per-subject effect shared by all conditions plus small noise."""
    rng = np.random.default_rng(seed)
    subject = rng.gamma(2.0, subject_sd / 2, n)
    return pd.DataFrame({c: np.abs(subject + shift + rng.normal(0, noise_sd, n)) for c, shift in effects.items()})


def test_anova_matches_statsmodels_ols() -> None:
    import statsmodels.api as sm
    from statsmodels.formula.api import ols

    errors = errors_table({"raw": 0.0, "skullstripped": -1.0, "face-fsl": 1.0})
    result = S.one_way_anova(errors)
    long = errors.melt(var_name="condition", value_name="e")
    table = sm.stats.anova_lm(ols("e ~ C(condition)", data=long).fit(), typ=1)
    assert result["statistic"] == pytest.approx(table.loc["C(condition)", "F"])
    assert result["p"] == pytest.approx(table.loc["C(condition)", "PR(>F)"])
    assert (result["df1"], result["df2"]) == (2, 3 * 60 - 3)


def test_tukey_matches_scipy() -> None:
    errors = errors_table({"raw": 0.0, "skullstripped": -1.0, "face-fsl": 1.0, "face-afni": 0.2})
    ours = S.tukey_hsd(errors)
    columns = list(errors.columns)
    ref = stats.tukey_hsd(*(errors[c].to_numpy() for c in columns))
    ci = ref.confidence_interval(0.95)
    for _, row in ours.iterrows():
        i, j = columns.index(row["a"]), columns.index(row["b"])
        assert row["mean_diff"] == pytest.approx(ref.statistic[i, j])
        assert row["p_adj"] == pytest.approx(ref.pvalue[i, j], abs=2e-3)
        assert row["ci_low"] == pytest.approx(ci.low[i, j], abs=1e-3)
        assert row["ci_high"] == pytest.approx(ci.high[i, j], abs=1e-3)


def test_friedman_matches_hand_computation() -> None:
    errors = errors_table({"a": 0.0, "b": 0.3, "c": 0.6, "d": 0.0}, n=25)
    ours = S.friedman(errors)
    ranks = errors.rank(axis=1).to_numpy()
    n, k = ranks.shape
    chi2 = 12 / (n * k * (k + 1)) * np.sum(ranks.sum(axis=0) ** 2) - 3 * n * (k + 1)  # no ties in continuous data
    assert ours["statistic"] == pytest.approx(chi2)
    assert ours["p"] == pytest.approx(stats.chi2.sf(chi2, k - 1))
    assert ours["kendall_w"] == pytest.approx(chi2 / (n * (k - 1)))


def test_holm_matches_hand_implementation() -> None:
    p = np.array([0.01, 0.04, 0.03, 0.005, 0.2, np.nan])
    finite = p[:5]
    order = np.argsort(finite)
    m = len(finite)
    adjusted = np.maximum.accumulate([min(1.0, (m - r) * finite[i]) for r, i in enumerate(order)])
    expected = np.empty(m)
    expected[order] = adjusted
    got = S.holm(p)
    np.testing.assert_allclose(got[:5], expected)
    assert np.isnan(got[5])


def test_paired_bootstrap_matches_hand_loop() -> None:
    errors = errors_table({"raw": 0.0, "skullstripped": -0.5, "face-fsl": 0.5}, n=30)
    ours = S.paired_pairwise(errors, n_boot=500, seed=7)
    rng = np.random.default_rng(7)
    values = errors.to_numpy()
    draws = [rng.integers(0, len(values), size=len(values)) for _ in range(500)]
    for (i, a), (j, b) in itertools.combinations(enumerate(errors.columns), 2):
        diffs = [values[idx, i].mean() - values[idx, j].mean() for idx in draws]
        row = ours[(ours["a"] == a) & (ours["b"] == b)].iloc[0]
        assert row["boot_ci_low"] == pytest.approx(np.percentile(diffs, 2.5))
        assert row["boot_ci_high"] == pytest.approx(np.percentile(diffs, 97.5))
        assert row["mae_diff"] == pytest.approx(values[:, i].mean() - values[:, j].mean())
        assert row["wilcoxon_p"] == pytest.approx(stats.wilcoxon(values[:, i], values[:, j]).pvalue)


def test_planted_difference_found_by_paired_tests_but_not_by_anova() -> None:
    """A 0.6-year shift under a 3-year subject spread: the paired design sees it, the paper's does not."""
    errors = errors_table({"raw": 0.0, "defaced-afni": 0.6, "defaced-fsl": 0.0}, n=60, seed=3)
    paired = S.paired_pairwise(errors, n_boot=1000, seed=0).set_index(["a", "b"])
    hit = paired.loc[("raw", "defaced-afni")]
    assert hit["wilcoxon_p_holm"] < 0.01 and hit["boot_ci_high"] < 0
    assert S.friedman(errors)["p"] < 0.01
    assert S.one_way_anova(errors)["p"] > 0.05
    assert not paired.loc[("raw", "defaced-fsl")]["significant"]


def test_null_data_are_not_significant() -> None:
    hits = 0
    for seed in range(20):
        errors = errors_table({"raw": 0.0, "b": 0.0, "c": 0.0}, n=40, seed=100 + seed)
        table = S.paired_pairwise(errors, n_boot=200, seed=seed)
        hits += bool(table["significant"].any())
    assert hits <= 3  # family-wise 5 % per data set


def test_null_baseline_beaten_only_by_informative_condition() -> None:
    rng = np.random.default_rng(5)
    ages = pd.Series(rng.uniform(55, 90, 50))
    null_err = (ages - 72.0).abs()
    errors = pd.DataFrame({
        "raw": np.abs(rng.normal(0, 3, 50)),                      # knows the age
        "face-fsl": np.abs(72.0 + rng.normal(0, 0.5, 50) - ages),  # predicts the mean: no information
    })
    table = S.null_baseline_tests(errors, null_err, n_boot=500).set_index("condition")
    assert table.loc["raw", "beats_null"] and table.loc["raw", "boot_ci_high"] < 0
    assert not table.loc["face-fsl", "beats_null"]
    assert abs(table.loc["face-fsl", "improvement_pct"]) < 10
