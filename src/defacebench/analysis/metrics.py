"""Prediction metrics per run and per condition (the paper's Table 1) and the null baseline.

Every function here is plain maths on a predictions table (the columns of
:data:`defacebench.conditions.PREDICTION_COLUMNS`, as
:func:`defacebench.analysis.inputs.load_predictions` returns it); reading the study lives
in :mod:`.inputs`, writing the results in :mod:`.stage`.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from defacebench.conditions import SCAN_KEY, condition_label, order_conditions


# --------------------------------------------------------------------------- metrics
def regression_metrics(age: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """MAE, Pearson r, R^2, mean signed error and age-bias slope of one set of predictions.

    R^2 is the coefficient of determination ``1 - SS_res / SS_tot`` (negative when worse
    than predicting the mean age); the age-bias slope is the least-squares slope of the
    signed error (predicted - true) on the true age (0 = no regression to the mean).
    """
    age, predicted = np.asarray(age, float), np.asarray(predicted, float)
    error = predicted - age
    n = len(age)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = float(np.corrcoef(age, predicted)[0, 1]) if n > 1 and np.std(age) > 0 and np.std(predicted) > 0 else float("nan")
    ss_tot = float(np.sum((age - age.mean()) ** 2))
    slope = float(np.polyfit(age, error, 1)[0]) if n > 1 and np.std(age) > 0 else float("nan")
    return {
        "n": n,
        "mae": float(np.mean(np.abs(error))),
        "pearson_r": r,
        "r2": 1.0 - float(np.sum(error**2)) / ss_tot if ss_tot > 0 else float("nan"),
        "mean_signed_error": float(np.mean(error)),
        "bias_slope": slope,
    }


def run_metrics(predictions: pd.DataFrame, split: str = "test") -> pd.DataFrame:
    """One row per (condition, run): :func:`regression_metrics` on one split."""
    rows = []
    for (condition, run), group in predictions[predictions["split"] == split].groupby(["condition", "run"], sort=False):
        rows.append({"condition": condition, "run": run, "split": split, **regression_metrics(group["age"].to_numpy(), group["predicted_age"].to_numpy())})
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    order = {c: i for i, c in enumerate(order_conditions(table["condition"]))}
    return table.sort_values(["condition", "run"], key=lambda s: s.map(order) if s.name == "condition" else s).reset_index(drop=True)


def subject_errors(predictions: pd.DataFrame, split: str = "test") -> pd.DataFrame:
    """Per-scan absolute error averaged over runs (the paper's per-subject absolute error).

    Rows are scans (:data:`~defacebench.conditions.SCAN_KEY`), columns conditions in paper
    order; the unit of every repeated-measures test.
    """
    test = predictions[predictions["split"] == split].copy()
    test["value"] = (test["predicted_age"] - test["age"]).abs()
    wide = test.pivot_table(index=list(SCAN_KEY), columns="condition", values="value", aggfunc="mean")
    wide.columns.name = None
    return wide.loc[:, order_conditions(wide.columns)]


def subject_predictions(predictions: pd.DataFrame, split: str = "test") -> pd.DataFrame:
    """Per-scan true age and mean predicted age over runs, long format (condition, scan)."""
    test = predictions[predictions["split"] == split]
    return test.groupby(["condition", *SCAN_KEY], as_index=False, sort=False).agg(age=("age", "first"), predicted_age=("predicted_age", "mean"), n_runs=("run", "nunique"))


def scan_ages(predictions: pd.DataFrame, split: str = "test") -> pd.Series:
    """True age per scan (index :data:`SCAN_KEY`)."""
    test = predictions[predictions["split"] == split]
    return test.groupby(list(SCAN_KEY))["age"].first()


def null_errors(ages: pd.Series, training_mean_age: float) -> pd.Series:
    """Absolute error of the null model that predicts the training mean age for everyone."""
    return (ages - float(training_mean_age)).abs()


def table1(predictions: pd.DataFrame, training_mean_age: float) -> pd.DataFrame:
    """The paper's Table 1 per condition, plus correlation, bias and the null baseline.

    Columns: condition, label, n_runs, n_test, mae_run_<k> per run, mae_mean (mean of the
    runs' MAE), mae_sd_runs (SD over runs), abs_error_sd (SD over test scans of the
    run-averaged absolute error), pearson_r, r2, mean_signed_error, bias_slope (means over
    runs), null_mae (predicting the training mean age for the same scans) and
    improvement_vs_null_pct (``100 * (1 - mae_mean / null_mae)``).
    """
    per_run = run_metrics(predictions, "test")
    errors = subject_errors(predictions, "test")
    ages = scan_ages(predictions, "test")
    rows = []
    for condition in order_conditions(per_run["condition"]):
        runs = per_run[per_run["condition"] == condition]
        abs_err = errors[condition].dropna()
        null_mae = float(null_errors(ages.loc[abs_err.index], training_mean_age).mean())
        row: dict[str, object] = {"condition": condition, "label": condition_label(condition), "n_runs": len(runs), "n_test": len(abs_err)}
        for run, mae in zip(runs["run"], runs["mae"]):
            row[f"mae_run_{run}"] = mae
        row["mae_mean"] = float(runs["mae"].mean())
        row["mae_sd_runs"] = float(runs["mae"].std(ddof=1)) if len(runs) > 1 else float("nan")
        row["abs_error_sd"] = float(abs_err.std(ddof=1)) if len(abs_err) > 1 else float("nan")
        for key in ("pearson_r", "r2", "mean_signed_error", "bias_slope"):
            row[key] = float(runs[key].mean())
        row["null_mae"] = null_mae
        row["improvement_vs_null_pct"] = 100.0 * (1.0 - row["mae_mean"] / null_mae) if null_mae > 0 else float("nan")
        rows.append(row)
    table = pd.DataFrame(rows)
    run_cols = sorted((c for c in table.columns if c.startswith("mae_run_")), key=lambda c: (len(c), c))
    front = ["condition", "label", "n_runs", "n_test"]
    return table.loc[:, front + run_cols + [c for c in table.columns if c not in front and c not in run_cols]]


# --------------------------------------------------------------------------- bias correction
def fit_age_bias(age: np.ndarray, predicted: np.ndarray) -> tuple[float, float]:
    """Least-squares ``predicted = intercept + slope * age`` (fit on the validation split only)."""
    slope, intercept = np.polyfit(np.asarray(age, float), np.asarray(predicted, float), 1)
    return float(intercept), float(slope)


def bias_corrected_metrics(predictions: pd.DataFrame, min_slope: float = 0.1) -> pd.DataFrame:
    """Test metrics after the linear age-bias correction of Cole et al., fitted on val per run.

    The correction inverts the validation fit, ``corrected = (predicted - intercept) / slope``;
    it never uses test ages. Runs whose validation slope is below ``min_slope`` (a model that
    hardly tracks age, e.g. predicting the mean) are left uncorrected and flagged, since
    dividing by a near-zero slope would only amplify noise.
    """
    rows = []
    for (condition, run), group in predictions.groupby(["condition", "run"], sort=False):
        val, test = group[group["split"] == "val"], group[group["split"] == "test"]
        if len(val) < 3 or test.empty:
            continue
        intercept, slope = fit_age_bias(val["age"].to_numpy(), val["predicted_age"].to_numpy())
        corrected = slope >= min_slope
        predicted = (test["predicted_age"].to_numpy() - intercept) / slope if corrected else test["predicted_age"].to_numpy()
        rows.append({"condition": condition, "run": run, "val_intercept": intercept, "val_slope": slope, "corrected": corrected, **regression_metrics(test["age"].to_numpy(), predicted)})
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    order = {c: i for i, c in enumerate(order_conditions(table["condition"]))}
    return table.sort_values(["condition", "run"], key=lambda s: s.map(order) if s.name == "condition" else s).reset_index(drop=True)
