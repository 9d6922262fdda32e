"""What this cohort can show: the smallest MAE difference each reported test can detect.

For every comparison the report tests (pairs of conditions, each condition against the null
baseline, the face-signal families) this module asks two questions of the paired per-scan
differences the test already uses:

* **detectable difference**: the smallest shift of the mean paired difference (an MAE
  difference, years) that the report's own test, a Wilcoxon signed-rank test at
  ``alpha / m`` (the first step of Holm over the ``m`` tests of its family), rejects with
  80 % power on this many scans;
* **scans needed**: how many test scans a chosen difference (default 0.5 years) would need
  for the same power.

The model of the differences is the observed one: the per-scan differences minus their mean
(their spread and shape, not their size), smoothed by a Gaussian kernel (Silverman's
bandwidth, rescaled so the variance stays the observed one) so that draws have no ties, then
shifted by the difference asked about. Power is computed

* by simulation for ``n <= 50`` scans, where scipy's Wilcoxon test is exact: ``draws``
  samples of ``n`` differences, the very test (``scipy.stats.wilcoxon``), the share with
  ``p < alpha / m``; the same draws for every shift (common random numbers), so power rises
  monotonically with the shift and bisection finds the 80 % point;
* by the normal approximation of the signed-rank statistic under the alternative (Lehmann,
  *Nonparametrics*, 1975: mean ``n p1 + n(n-1)/2 p2``, variance from ``p1``, ``p2``, ``p4``)
  for ``n > 50``, where scipy's test is itself the normal approximation; validated against
  simulation in ``tests/test_power.py``.

With very few scans no difference is detectable: the smallest p a signed-rank test on ``n``
scans can give is ``2 / 2**n`` (two-sided; ``1 / 2**n`` one-sided), and when that is not below
``alpha / m`` the detectable difference is infinite. Using ``alpha / m`` for every test of a
family is conservative (Holm lets later tests use a larger threshold once the first are
rejected): it is the difference that can be detected when it is the only real one.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from defacebench.conditions import condition_kind, condition_method

__all__ = ["POWER", "POWER_COLUMNS", "TARGET_DIFF_YEARS", "DifferenceModel", "detectable_difference", "min_p_value",
           "power_at", "power_table", "scans_needed"]

#: Power the detectable difference and the scans needed are computed for.
POWER = 0.8
#: The MAE difference (years) whose scans needed the report shows.
TARGET_DIFF_YEARS = 0.5
#: Up to this many scans scipy's Wilcoxon signed-rank test is exact (and power is simulated).
EXACT_MAX_N = 50
#: Simulated samples per power value (standard error about 0.009 at 80 %).
DRAWS = 2000
#: The most test scans :func:`scans_needed` looks for.
MAX_SCANS = 1_000_000

POWER_COLUMNS: tuple[str, ...] = ("family", "a", "b", "n", "family_size", "alpha_per_test", "alternative", "observed_diff", "sd_diff",
                                  "detectable_diff", "target_diff", "scans_needed")


def min_p_value(n: int, alternative: str) -> float:
    """The smallest p-value an exact signed-rank test on ``n`` non-zero differences can give."""
    return (2.0 if alternative == "two-sided" else 1.0) * 2.0 ** -n


@dataclass(frozen=True)
class DifferenceModel:
    """The observed paired differences' shape, oriented so the tested direction is positive.

    ``values`` are the differences minus their mean (times -1 for a one-sided ``"less"``
    test, so a detectable shift is always positive); a draw is ``scale * (values[i] +
    bandwidth * N(0, 1))``, whose variance is the observed variance.
    """

    values: np.ndarray
    bandwidth: float
    scale: float
    alternative: str  # "two-sided" or "greater" (after orientation)

    @classmethod
    def from_differences(cls, differences: np.ndarray, alternative: str = "two-sided") -> DifferenceModel:
        """Model of ``x - y`` per scan for a test with scipy's ``alternative``."""
        d = np.asarray(differences, float)
        d = d[np.isfinite(d)]
        sign = -1.0 if alternative == "less" else (1.0 if alternative == "greater" or d.mean() >= 0 else -1.0)
        values = sign * (d - d.mean())
        sd = float(values.std())
        iqr = float(np.subtract(*np.percentile(values, [75, 25]))) / 1.34 if len(values) > 1 else 0.0
        spread = min(sd, iqr) if iqr > 0 else sd
        bandwidth = 0.9 * spread * len(values) ** -0.2 if len(values) else 0.0
        scale = 1.0 / math.sqrt(1.0 + bandwidth**2 / sd**2) if sd > 0 else 1.0
        return cls(values, bandwidth, scale, "two-sided" if alternative == "two-sided" else "greater")

    @property
    def sd(self) -> float:
        return float(self.values.std())

    def draw(self, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
        """Centred differences of the model, ``shape`` of them."""
        picks = self.values[rng.integers(0, len(self.values), size=shape)]
        return self.scale * (picks + self.bandwidth * rng.standard_normal(shape))


@functools.lru_cache(maxsize=256)
def _critical_values(n: int, alpha: float, alternative: str) -> tuple[float, float]:
    """``(low, high)``: the exact signed-rank test on ``n`` scans rejects iff ``W+ <= low`` or
    ``W+ >= high`` (``W+``: sum of the ranks of the positive differences; scipy's exact p < alpha)."""
    counts = np.zeros(n * (n + 1) // 2 + 1)
    counts[0] = 1.0
    for rank in range(1, n + 1):  # subsets of {1..n} by their sum: the null distribution of W+
        counts[rank:] = counts[rank:] + counts[:-rank].copy()
    pmf = counts / counts.sum()
    sf = np.cumsum(pmf[::-1])[::-1]  # P(W+ >= w)
    cdf = np.cumsum(pmf)  # P(W+ <= w)
    factor = 2.0 if alternative == "two-sided" else 1.0
    high = np.flatnonzero(factor * sf < alpha)
    low = np.flatnonzero(factor * cdf < alpha) if alternative == "two-sided" else np.array([], int)
    return (float(low[-1]) if len(low) else -1.0), (float(high[0]) if len(high) else math.inf)


def _simulated_power(samples: np.ndarray, shift: float, alpha: float, alternative: str) -> float:
    """Share of rows of ``samples + shift`` the exact signed-rank test rejects at ``p < alpha``."""
    d = samples + shift
    ranks = np.empty(d.shape)
    np.put_along_axis(ranks, np.argsort(np.abs(d), axis=1), np.arange(1, d.shape[1] + 1, dtype=float)[None, :], axis=1)
    w_plus = np.sum(ranks * (d > 0), axis=1)
    low, high = _critical_values(d.shape[1], alpha, alternative)
    return float(np.mean((w_plus >= high) | (w_plus <= low)))


def _probabilities(model: DifferenceModel, shift: float, rng: np.random.Generator, draws: int = 1000) -> tuple[float, float, float]:
    """``p1 = P(X > 0)``, ``p2 = P(X + X' > 0)``, ``p4 = P(X + X' > 0, X + X'' > 0)`` of the shifted model."""
    from scipy.special import ndtr

    v, h = model.scale * model.values + shift, model.scale * model.bandwidth
    if h <= 0:
        pairwise = (v[:, None] + v[None, :]) > 0
        return float(np.mean(v > 0)), float(pairwise.mean()), float(np.mean(pairwise.mean(axis=1) ** 2))
    p1 = float(ndtr(v / h).mean())
    p2 = float(ndtr((v[:, None] + v[None, :]) / (h * math.sqrt(2))).mean())
    x = v[rng.integers(0, len(v), draws)] + h * rng.standard_normal(draws)  # X; q(X) = P(X + X' > 0 | X)
    q = ndtr((x[:, None] + v[None, :]) / h).mean(axis=1)
    return p1, p2, float(np.mean(q**2))


def _asymptotic_power(n: np.ndarray, probabilities: tuple[float, float, float], alpha: float, alternative: str) -> np.ndarray:
    """Power of the normal-approximation signed-rank test on ``n`` scans (Lehmann's moments)."""
    from scipy.stats import norm

    p1, p2, p4 = probabilities
    n = np.asarray(n, float)
    mean = n * p1 + n * (n - 1) / 2 * p2
    var = n * (n - 1) * (n - 2) * max(p4 - p2**2, 0.0) + n * (n - 1) / 2 * (2 * (p1 - p2) ** 2 + 3 * p2 * (1 - p2)) + n * p1 * (1 - p1)
    sd = np.sqrt(np.maximum(var, 1e-12))
    null_mean, null_sd = n * (n + 1) / 4, np.sqrt(n * (n + 1) * (2 * n + 1) / 24)
    z = norm.isf(alpha / 2 if alternative == "two-sided" else alpha)
    power = norm.sf((null_mean + z * null_sd - mean) / sd)
    if alternative == "two-sided":
        power = power + norm.cdf((null_mean - z * null_sd - mean) / sd)
    return power


def power_at(model: DifferenceModel, shift: float, n: int, alpha: float, draws: int = DRAWS, seed: int = 0) -> float:
    """Power of the Wilcoxon test at ``p < alpha`` on ``n`` scans when the mean difference is ``shift``."""
    if n < 1 or min_p_value(n, model.alternative) >= alpha:
        return 0.0
    rng = np.random.default_rng([seed, n])
    if n <= EXACT_MAX_N:
        return _simulated_power(model.draw((draws, n), rng), shift, alpha, model.alternative)
    return float(_asymptotic_power(np.array([n]), _probabilities(model, shift, rng), alpha, model.alternative)[0])


def detectable_difference(model: DifferenceModel, n: int, alpha: float, power: float = POWER, draws: int = DRAWS, seed: int = 0,
                          tolerance: float = 0.005) -> float:
    """Smallest mean difference (years, >= 0) the test detects with ``power`` on ``n`` scans.

    ``inf`` when no difference can be detected (too few scans for ``p < alpha``); ``nan`` when
    the differences have no spread to model.
    """
    if min_p_value(n, model.alternative) >= alpha:
        return math.inf
    if not model.sd > 0:
        return math.nan
    rng = np.random.default_rng([seed, n])
    if n <= EXACT_MAX_N:
        samples = model.draw((draws, n), rng)  # the same draws for every shift: power is monotone in it

        def at(shift: float) -> float:
            return _simulated_power(samples, shift, alpha, model.alternative)
    else:
        def at(shift: float) -> float:
            return float(_asymptotic_power(np.array([n]), _probabilities(model, shift, np.random.default_rng([seed, n])), alpha, model.alternative)[0])
    low, high = 0.0, model.sd
    while at(high) < power:
        low, high = high, 2 * high
        if high > 1000 * model.sd:  # all differences positive and still not enough
            return math.inf
    while high - low > tolerance * max(model.sd, 1e-9):
        mid = (low + high) / 2
        low, high = (mid, high) if at(mid) < power else (low, mid)
    return high


def scans_needed(model: DifferenceModel, difference: float, alpha: float, power: float = POWER, draws: int = DRAWS, seed: int = 0,
                 max_scans: int = MAX_SCANS) -> float:
    """Test scans needed to detect a mean difference of ``difference`` years with ``power``.

    ``nan`` when the differences have no spread to model; ``inf`` beyond ``max_scans``.
    """
    if not model.sd > 0:
        return math.nan
    first = 1
    while min_p_value(first, model.alternative) >= alpha:
        first += 1
    if first <= EXACT_MAX_N and power_at(model, difference, EXACT_MAX_N, alpha, draws, seed) >= power:
        low, high = first - 1, EXACT_MAX_N  # power(low) < power <= power(high)
        while high - low > 1:
            mid = (low + high) // 2
            low, high = (low, mid) if power_at(model, difference, mid, alpha, draws, seed) >= power else (mid, high)
        return float(high)
    probabilities = _probabilities(model, difference, np.random.default_rng([seed, 0]))

    def enough(n: int) -> bool:
        return bool(_asymptotic_power(np.array([n]), probabilities, alpha, model.alternative)[0] >= power)

    low = max(first, EXACT_MAX_N + 1) - 1  # not enough at low (simulated above), search (low, high]
    high = low + 1
    while not enough(high):
        low, high = high, 2 * high
        if high > max_scans:
            return math.inf
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (low, mid) if enough(mid) else (mid, high)
    return float(high)


def _row(family: str, a: str, b: str, d: np.ndarray, m: int, alpha: float, alternative: str, target: float, seed: int) -> dict[str, object]:
    model = DifferenceModel.from_differences(d, alternative)
    per_test = alpha / max(m, 1)
    n = int(np.isfinite(d).sum())
    return {"family": family, "a": a, "b": b, "n": n, "family_size": m, "alpha_per_test": per_test, "alternative": alternative,
            "observed_diff": float(np.nanmean(d)), "sd_diff": float(np.nanstd(d, ddof=1)) if n > 1 else math.nan,
            "detectable_diff": detectable_difference(model, n, per_test, seed=seed), "target_diff": target,
            "scans_needed": scans_needed(model, target, per_test, seed=seed)}


def power_table(errors: pd.DataFrame, null_abs_errors: pd.Series, face_errors: pd.DataFrame | None = None, alpha: float = 0.05,
                target_diff: float = TARGET_DIFF_YEARS, seed: int = 0) -> pd.DataFrame:
    """Detectable difference and scans needed for every comparison the report tests.

    Parameters
    ----------
    errors : DataFrame
        Per-scan absolute errors averaged over runs (rows scans, columns conditions): the
        pairwise tests (two-sided, Holm over all pairs, on complete cases) and the null
        baseline tests (one-sided, Holm over conditions).
    null_abs_errors : Series
        Per-scan absolute error of the null baseline, same index.
    face_errors : DataFrame, optional
        Errors of the mean prediction over runs, as the face-signal tests use them (face-only
        against the null and its geometry control, the control against the null; one-sided,
        Holm over methods).
    alpha, target_diff, seed
        Significance level of the report, the difference whose scans needed are given, seed.

    Returns
    -------
    DataFrame
        :data:`POWER_COLUMNS`; ``detectable_diff`` and ``scans_needed`` are ``inf`` where no
        such difference or number exists.
    """
    rows: list[dict[str, object]] = []
    paired = errors.dropna(axis=0, how="any")
    columns = list(paired.columns)
    if len(columns) >= 2 and len(paired) >= 2:
        pairs = [(a, b) for i, a in enumerate(columns) for b in columns[i + 1:]]
        for a, b in pairs:
            rows.append(_row("pairwise", a, b, (paired[a] - paired[b]).to_numpy(float), len(pairs), alpha, "two-sided", target_diff, seed))
    for condition in errors.columns:
        err = errors[condition].dropna()
        if len(err) >= 2:
            d = err.to_numpy(float) - null_abs_errors.reindex(err.index).to_numpy(float)
            rows.append(_row("null_baseline", condition, "null", d, errors.shape[1], alpha, "less", target_diff, seed))
    rows += _face_rows(face_errors, null_abs_errors, alpha, target_diff, seed) if face_errors is not None else []
    return pd.DataFrame(rows, columns=list(POWER_COLUMNS))


def _face_rows(errors: pd.DataFrame, null_abs_errors: pd.Series, alpha: float, target: float, seed: int) -> list[dict[str, object]]:
    """The face-signal families, on the scans :func:`defacebench.analysis.face_signal.face_signal_table` uses."""
    faces = [c for c in errors.columns if condition_kind(c) == "face"]
    found: list[tuple[str, str, str, np.ndarray]] = []
    for face in faces:
        mask = f"facemask-{condition_method(face)}"
        paired = errors[[face, mask] if mask in errors.columns else [face]].dropna()
        if len(paired) < 2:
            continue
        null = null_abs_errors.reindex(paired.index).to_numpy(float)
        found.append(("face_vs_null", face, "null", paired[face].to_numpy(float) - null))
        if mask in paired.columns:
            found.append(("face_vs_mask", face, mask, (paired[face] - paired[mask]).to_numpy(float)))
            found.append(("mask_vs_null", mask, "null", paired[mask].to_numpy(float) - null))
    sizes = pd.Series([f for f, *_ in found]).value_counts().to_dict()
    return [_row(family, a, b, d, sizes[family], alpha, "less", target, seed) for family, a, b, d in found]
