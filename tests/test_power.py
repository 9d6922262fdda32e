"""What a cohort can show: detectable MAE differences and scans needed, checked against
simulations of the report's own paired test (``statistics.wilcoxon_p``, i.e. scipy)."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from defacebench.analysis import power
from defacebench.analysis.power import DifferenceModel, detectable_difference, min_p_value, power_table, scans_needed
from defacebench.analysis.statistics import wilcoxon_p
from defacebench.report.cohort_power import caution


def observed_differences(n: int, seed: int = 1) -> np.ndarray:
    """Skewed per-scan differences |err_a| - |err_b|, like those of two conditions."""
    rng = np.random.default_rng(seed)
    return rng.gamma(2.0, 1.5, n) - 2.5


def simulated_power(model: DifferenceModel, shift: float, n: int, alpha: float, alternative: str, reps: int = 1500, seed: int = 99) -> float:
    """Power by brute force: fresh draws of the model, the report's Wilcoxon test one sample at a time."""
    rng = np.random.default_rng(seed)
    hits = 0
    for _ in range(reps):
        x = model.draw((n,), rng) + shift  # oriented: the tested direction is positive
        if alternative == "less":
            x = -x
        hits += wilcoxon_p(x, np.zeros(n), alternative=alternative)[1] < alpha
    return hits / reps


def test_the_vectorised_exact_test_is_scipys() -> None:
    rng = np.random.default_rng(0)
    for n, alternative in ((9, "two-sided"), (20, "greater"), (50, "two-sided")):
        samples = rng.normal(0.4, 1.0, (400, n))
        expected = float(np.mean(stats.wilcoxon(samples, axis=1, alternative=alternative).pvalue < 0.01))
        assert power._simulated_power(samples, 0.0, 0.01, alternative) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(("n", "pairs", "alternative"), [(16, 10, "two-sided"), (24, 17, "less"), (80, 91, "two-sided")])
def test_detectable_difference_has_80_percent_power_in_a_simulation(n: int, pairs: int, alternative: str) -> None:
    """At the reported difference the Holm-level paired test rejects in 75-85 % of simulated studies
    (n = 80: the normal-approximation branch)."""
    model = DifferenceModel.from_differences(observed_differences(n), alternative)
    alpha = 0.05 / pairs
    delta = detectable_difference(model, n, alpha)
    assert 0 < delta < 10
    assert abs(simulated_power(model, delta, n, alpha, alternative) - 0.8) < 0.05
    assert simulated_power(model, 0.6 * delta, n, alpha, alternative, reps=600) < 0.7  # and not much less would do


@pytest.mark.parametrize(("n", "alternative"), [(12, "less"), (30, "two-sided")])
def test_scans_needed_reach_80_percent_power_in_a_simulation(n: int, alternative: str) -> None:
    """The scans a 0.5-year difference needs: power of about 80 % there, by simulation."""
    model = DifferenceModel.from_differences(observed_differences(n, seed=2) * 0.4, alternative)
    alpha = 0.05 / 17
    needed = scans_needed(model, 0.5, alpha)
    assert math.isfinite(needed) and needed > n
    assert abs(simulated_power(model, 0.5, int(needed), alpha, alternative, reps=800) - 0.8) < 0.05


def test_too_few_scans_can_detect_nothing() -> None:
    assert min_p_value(3, "two-sided") == 0.25
    model = DifferenceModel.from_differences(np.array([0.2, -0.5, 0.9]))
    assert detectable_difference(model, 3, 0.05 / 136) == math.inf
    assert detectable_difference(model, 3, 0.3) < math.inf  # p = 0.25 is possible at alpha 0.3
    assert math.isfinite(scans_needed(model, 0.5, 0.05 / 136))


def power_inputs(n: int) -> tuple[pd.DataFrame, pd.Series, pd.DataFrame]:
    rng = np.random.default_rng(3)
    conditions = ["raw", "skullstripped", "defaced-afni", "face-afni", "facemask-afni", "face-fsl"]
    errors = pd.DataFrame(np.abs(rng.normal(0, 5, (n, len(conditions)))), columns=conditions)
    return errors, pd.Series(np.abs(rng.normal(0, 8, n))), errors


def test_power_table_has_every_reported_family_with_its_holm_size() -> None:
    errors, null, face = power_inputs(14)
    table = power_table(errors, null, face)
    sizes = table.groupby("family")["family_size"].agg(["first", "size"])
    assert sizes.loc["pairwise"].tolist() == [15, 15]  # 6 conditions: 15 pairs
    assert sizes.loc["null_baseline"].tolist() == [6, 6]
    assert sizes.loc["face_vs_null"].tolist() == [2, 2]  # AFNI and FSL face-only
    assert sizes.loc["face_vs_mask"].tolist() == [1, 1]  # only AFNI has a geometry control
    assert np.allclose(table["alpha_per_test"], 0.05 / table["family_size"])
    assert (table["alternative"] == np.where(table["family"] == "pairwise", "two-sided", "less")).all()
    assert np.isfinite(table["detectable_diff"]).all() and (table["scans_needed"] > 0).all()


def test_the_caution_says_what_the_cohort_can_and_cannot_show() -> None:
    errors, null, face = power_inputs(3)
    text = caution(power_table(errors, null, face), 3)
    assert "no difference between two conditions can reach significance" in text and "0.05 / 15" in text
    assert re.search(r"would need about [0-9,]+ test scans", text)
    errors, null, face = power_inputs(40)
    text = caution(power_table(errors, null, face), 40)
    assert re.search(r"detects with 80 % power only MAE differences between two conditions of about [0-9.]+ years", text), text
    assert "hard to resolve" not in text


def test_the_report_shows_detectable_differences_beside_the_tests(tmp_path) -> None:
    from test_report import _analysed

    from defacebench import layout
    from defacebench.cli import main as cli_main

    study = _analysed(tmp_path)
    table = pd.read_csv(layout.result_table(study, "power"))
    assert {"pairwise", "null_baseline"} <= set(table["family"])
    assert cli_main(["report", str(study)]) == 0
    text = layout.report_file(study).read_text()
    assert text.count("detectable at 80 % power</th>") >= 3  # key pairs, null baseline, all pairs
    assert "What this cohort can show." in text and "hard to resolve" not in text
