"""Cross-condition evaluation: every trained run scored, without retraining, on the test
images of every condition stored on its grid; and dBrainAGE, how far each head model's
prediction moves when its input is defaced.

What a consortium asks when it starts defacing (Ivan/Rubbert et al., RöFo 2025, measured
it on ADNI): a brain-age model trained on full heads is given defaced images; how much do
its predictions move? For each model (train condition, run) and each method ``m`` with a
``defaced-<m>`` store, per test scan ``d = pred(defaced-m) - pred(raw)``; dBrainAGE is the
mean of ``|d|`` in years with a bootstrap CI over scans (the same scans for every method),
beside the paired tests the rest of the analysis uses (:mod:`.statistics`): the Wilcoxon
signed-rank test of ``d`` (does defacing shift the prediction?) and of ``|err_defaced| -
|err_raw|`` (does it cost accuracy?), Holm-corrected over the methods of a model. Rows with
``run == "mean"`` use each scan's mean prediction over the runs of the train condition.

Writes (paths from :mod:`defacebench.layout`): ``results/cross_predictions.csv`` (one row per
model, test condition and test scan), ``results/cross_condition.csv`` (train condition,
test condition, run, n, MAE, mean signed error) and ``results/dbrainage.csv``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from defacebench import layout
from defacebench.analysis.runs import screen_runs
from defacebench.analysis.statistics import bootstrap_indices, holm, wilcoxon_p
from defacebench.conditions import condition_kind, condition_method, order_conditions
from defacebench.io.atomic import write_table_atomic
from defacebench.io.store import ConditionStore, list_conditions, open_condition

#: Identify a test scan in the cross tables.
SCAN_COLUMNS: tuple[str, ...] = ("participant_id", "session_id", "bids_run")
#: Kinds of training condition whose input is a head, so defacing it means something.
HEAD_KINDS: tuple[str, ...] = ("raw", "defaced")


def _scan_frame(store: ConditionStore, rows: np.ndarray) -> pd.DataFrame:
    index = store.index.iloc[rows]
    return pd.DataFrame({"participant_id": index["participant_id"].to_numpy(), "session_id": index["session_id"].to_numpy(),
                         "bids_run": index["run"].to_numpy() if "run" in index else "", "age": index["age"].to_numpy(float)})


def trusted_models(study_dir: str | Path) -> list[Path]:
    """Run directories that analysis trusts (:func:`screen_runs`) and that hold a ``model.pt``."""
    return [run for run in screen_runs(study_dir)[0] if layout.model_file(run).is_file()]


def cross_predictions(study_dir: str | Path, grid: str, predict: Callable[[Path, ConditionStore, np.ndarray], np.ndarray],
                      conditions: Iterable[str] | None = None, runs: Iterable[Path] | None = None,
                      log: Callable[[str], None] | None = None) -> pd.DataFrame:
    """Predictions of every trusted run on the test scans of every stored condition of ``grid``.

    ``predict(run_dir, store, rows)`` returns the ages of ``store.images[rows]`` (the
    stage passes one that loads each model once); ``runs`` default: :func:`trusted_models`. Columns: train_condition, run,
    test_condition, the scan columns, age, predicted_age.
    """
    stored = list(conditions) if conditions is not None else list_conditions(study_dir, grid)
    stores = {c: open_condition(study_dir, grid, c) for c in stored}
    if not stores:
        return pd.DataFrame()
    first = next(iter(stores.values()))
    rows = first.rows("test")
    scans = _scan_frame(first, rows)
    tables = []
    for run_dir in trusted_models(study_dir) if runs is None else runs:
        train_condition, run = layout.run_of(run_dir)
        for test_condition, store in stores.items():
            table = scans.copy()
            table.insert(0, "test_condition", test_condition)
            table.insert(0, "run", run)
            table.insert(0, "train_condition", train_condition)
            table["predicted_age"] = predict(run_dir, store, rows)
            tables.append(table)
        if log:
            log(f"evaluate: {train_condition} run-{run} scored on {len(stores)} conditions x {len(rows)} test scans")
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()


def cross_condition_table(predictions: pd.DataFrame) -> pd.DataFrame:
    """Train condition x test condition x run: n, MAE and mean signed error (years)."""
    error = predictions["predicted_age"] - predictions["age"]
    frame = predictions.assign(abs_error=error.abs(), signed_error=error)
    table = frame.groupby(["train_condition", "test_condition", "run"], sort=False).agg(
        n=("abs_error", "size"), mae=("abs_error", "mean"), mean_signed_error=("signed_error", "mean")).reset_index()
    table["matched"] = table["train_condition"] == table["test_condition"]
    return table


def mae_matrix(table: pd.DataFrame) -> pd.DataFrame:
    """Train (rows) x test (columns) MAE, mean over runs, conditions in the report's order."""
    matrix = table.groupby(["train_condition", "test_condition"], sort=False)["mae"].mean().unstack("test_condition")
    return matrix.reindex(index=order_conditions(table["train_condition"].unique()), columns=order_conditions(table["test_condition"].unique()))


def _with_mean_run(predictions: pd.DataFrame) -> pd.DataFrame:
    """The predictions plus, per train condition with several runs, rows ``run == "mean"``: each scan's mean over runs."""
    keys = ["train_condition", "test_condition", *SCAN_COLUMNS, "age"]
    several = predictions.groupby("train_condition")["run"].transform("nunique") > 1
    mean = predictions[several].groupby(keys, sort=False)["predicted_age"].mean().reset_index()
    mean["run"] = "mean"
    return pd.concat([predictions, mean.loc[:, predictions.columns]], ignore_index=True)


def paired_change(reference: np.ndarray, changed: np.ndarray, ages: np.ndarray, n_boot: int = 2000, seed: int = 0, alpha: float = 0.05) -> dict[str, float]:
    """How ``changed`` predictions differ from ``reference`` ones of the same scans.

    Mean ``|changed - reference|`` (years) with its bootstrap ``1 - alpha`` CI over scans,
    the mean signed change and the Wilcoxon p that it is zero, both MAEs, their difference
    with a paired bootstrap CI and the Wilcoxon p of ``|err_changed| - |err_reference|``.
    """
    reference, changed, ages = (np.asarray(a, float) for a in (reference, changed, ages))
    d = changed - reference
    err_ref, err_new = np.abs(reference - ages), np.abs(changed - ages)
    idx = bootstrap_indices(len(d), n_boot, seed)
    q = [100 * alpha / 2, 100 * (1 - alpha / 2)]
    abs_low, abs_high = np.percentile(np.abs(d)[idx].mean(axis=1), q)
    mae_low, mae_high = np.percentile((err_new - err_ref)[idx].mean(axis=1), q)
    return {"n": int(len(d)), "mean_abs_change": float(np.abs(d).mean()), "mean_abs_change_ci_low": float(abs_low), "mean_abs_change_ci_high": float(abs_high),
            "mean_change": float(d.mean()), "change_p": wilcoxon_p(changed, reference)[1],
            "mae_reference": float(err_ref.mean()), "mae_changed": float(err_new.mean()), "mae_change": float(err_new.mean() - err_ref.mean()),
            "mae_change_ci_low": float(mae_low), "mae_change_ci_high": float(mae_high), "mae_p": wilcoxon_p(err_new, err_ref)[1]}


def dbrainage_table(predictions: pd.DataFrame, n_boot: int = 2000, seed: int = 0, alpha: float = 0.05, head_kinds: Iterable[str] | None = HEAD_KINDS) -> pd.DataFrame:
    """Per head model (train condition of a :data:`HEAD_KINDS` kind, or every model with
    ``head_kinds=None``; each run and their mean) and defacing method: :func:`paired_change`
    of ``pred(defaced-<m>)`` against ``pred(raw)``; ``change_p_holm`` and ``mae_p_holm``
    Holm-adjusted over the methods of that model."""
    if predictions.empty or "raw" not in set(predictions["test_condition"]):
        return pd.DataFrame()
    if head_kinds is not None:
        kinds = set(head_kinds)
        predictions = predictions[[condition_kind(c) in kinds for c in predictions["train_condition"]]]
    frame = _with_mean_run(predictions)
    methods = [condition_method(c) for c in dict.fromkeys(frame["test_condition"]) if condition_kind(c) == "defaced"]
    rows = []
    for (train_condition, run), model in frame.groupby(["train_condition", "run"], sort=False):
        wide = model.pivot_table(index=list(SCAN_COLUMNS), columns="test_condition", values="predicted_age", aggfunc="first")
        ages = model.drop_duplicates(list(SCAN_COLUMNS)).set_index(list(SCAN_COLUMNS))["age"].reindex(wide.index).to_numpy(float)
        block = []
        for method in methods:
            pair = wide[["raw", f"defaced-{method}"]].dropna()
            if len(pair) < 2:
                continue
            keep = wide.index.get_indexer(pair.index)
            block.append({"train_condition": train_condition, "run": run, "method": method,
                          **paired_change(pair["raw"].to_numpy(), pair[f"defaced-{method}"].to_numpy(), ages[keep], n_boot, seed, alpha)})
        for key in ("change_p", "mae_p"):
            adjusted = holm([r[key] for r in block])
            for r, p in zip(block, adjusted):
                r[f"{key}_holm"] = float(p)
        rows += block
    return pd.DataFrame(rows)


def write_tables(study_dir: str | Path, predictions: pd.DataFrame, n_boot: int = 2000, seed: int = 0) -> dict[str, pd.DataFrame]:
    """Write ``cross_predictions``, ``cross_condition`` and ``dbrainage`` from the predictions."""
    tables = {"cross_predictions": predictions, "cross_condition": cross_condition_table(predictions), "dbrainage": dbrainage_table(predictions, n_boot, seed)}
    for role, table in tables.items():
        write_table_atomic(layout.evaluation_table(study_dir, role), table, sep=",")
    return tables
