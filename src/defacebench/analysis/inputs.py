"""What the analysis stage reads from a study: the trained runs' predictions, records and
training curves, the grid they were trained on and the training scans' mean age.

Every path comes from :mod:`defacebench.layout`. Only trusted runs are read
(:func:`defacebench.analysis.runs.screen_runs`: complete, finite best validation MAE,
files matching their recorded sha256); the others are left out and listed with their
reason in ``results/left_out_runs.tsv`` and the report. No trusted run at all is an
:class:`~defacebench.io.errors.InputError` (exit status 2).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from defacebench import layout
from defacebench.analysis.runs import screen_runs
from defacebench.conditions import PREDICTION_COLUMNS, SCAN_KEY
from defacebench.io.errors import InputError


# --------------------------------------------------------------------------- predictions
def read_predictions(path: str | Path) -> pd.DataFrame:
    """Read and validate one ``predictions.csv``: every :data:`PREDICTION_COLUMNS` column, finite ages."""
    path = Path(path)
    try:
        table = pd.read_csv(path, dtype={"participant_id": str, "session_id": str, "bids_run": str, "run": str, "condition": str, "split": str}, keep_default_na=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise InputError(f"cannot read predictions ({exc})", path) from None
    missing = set(PREDICTION_COLUMNS) - set(table.columns)
    if missing:
        raise InputError(f"predictions lack column(s) {', '.join(sorted(missing))}", path)
    for column in ("age", "predicted_age"):
        values = pd.to_numeric(table[column], errors="coerce")
        if values.isna().any() or not np.isfinite(values).all():
            raise InputError(f"non-numeric or non-finite {column} values", path)
        table[column] = values.astype(float)
    return table.loc[:, list(PREDICTION_COLUMNS)]


def find_prediction_files(study_dir: str | Path) -> dict[tuple[str, str], Path]:
    """``(condition, run)`` -> the ``predictions.csv`` of every trusted run directory.

    Raises InputError when there is no run, or no run can be trusted (with the first reason).
    """
    if not layout.run_dirs(study_dir):
        raise InputError("no trained runs (runs/<condition>/run-<k>/); run `defacebench train` first", layout.runs_root(study_dir))
    trusted, left_out = screen_runs(study_dir)
    if not trusted:
        first = left_out.iloc[0]
        raise InputError(f"no run can be used ({len(left_out)} left out; {first['condition']} run-{first['run']}: {first['reason']})", layout.runs_root(study_dir))
    return {layout.run_of(run_dir): layout.predictions_file(run_dir) for run_dir in trusted}


def load_predictions(study_dir: str | Path) -> pd.DataFrame:
    """All runs' predictions in one table; ``condition`` and ``run`` from the directory names."""
    tables = []
    for (condition, run), path in find_prediction_files(study_dir).items():
        table = read_predictions(path)
        if table.empty:
            raise InputError("predictions.csv has no rows", path)
        table["condition"], table["run"] = condition, run
        tables.append(table)
    predictions = pd.concat(tables, ignore_index=True)
    if not (predictions["split"] == "test").any():
        raise InputError("no test-split predictions in any run", layout.runs_root(study_dir))
    return predictions


# --------------------------------------------------------------------------- run records
def _run_records(study_dir: str | Path) -> list[Path]:
    return [p for p in map(layout.run_record, layout.run_dirs(study_dir)) if p.is_file()]


def check_runs(study_dir: str | Path) -> list[dict]:
    """The ``run.json`` of every trusted run (the others are left out: :func:`screen_runs`)."""
    infos = []
    for path in map(layout.run_record, screen_runs(study_dir)[0]):
        info = json.loads(path.read_text())
        condition, run = layout.run_of(path.parent)
        info.setdefault("condition", condition)
        info.setdefault("run", run)
        infos.append(info)
    return infos


def resolve_grid(study_dir: str | Path, grid: str | None = None) -> str | None:
    """The grid to analyse: ``grid``, else the runs' ``run.json`` grid, else the only store grid."""
    if grid:
        return grid
    for path in _run_records(study_dir):
        try:
            found = json.loads(path.read_text()).get("grid")
        except (OSError, ValueError):
            continue
        if found:
            return str(found)
    grids = layout.store_grids(study_dir)
    return grids[0] if len(grids) == 1 else None


def load_histories(study_dir: str | Path) -> pd.DataFrame:
    """Every run's ``history.csv`` with condition and run columns (empty when none)."""
    tables = []
    for run_dir in layout.run_dirs(study_dir):
        path = layout.history_file(run_dir)
        if not path.is_file():
            continue
        try:
            table = pd.read_csv(path)
        except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError):
            continue
        if {"epoch", "train_loss", "val_mae"} <= set(table.columns) and len(table):
            table["condition"], table["run"] = layout.run_of(run_dir)
            tables.append(table)
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=["epoch", "train_loss", "val_mae", "condition", "run"])


# --------------------------------------------------------------------------- null baseline
def training_mean_age(study_dir: str | Path, predictions: pd.DataFrame, grid: str | None = None) -> tuple[float, str]:
    """Mean age of the training scans and where it was read.

    Read from ``STUDY/splits.tsv``, else a store index (``stores/<grid>/index.tsv``, then
    any grid's); when neither exists, the validation scans' mean age from the predictions
    (said so in the source).
    """
    study_dir = Path(study_dir)
    candidates = [layout.splits_table(study_dir)]
    if grid is not None:
        candidates.append(layout.store_index(study_dir, grid))
    candidates += [layout.store_index(study_dir, g) for g in layout.store_grids(study_dir)]
    for path in candidates:
        if path.is_file():
            table = pd.read_csv(path, sep="\t", keep_default_na=False, dtype={"split": str})
            if {"age", "split"} <= set(table.columns):
                ages = pd.to_numeric(table.loc[table["split"] == "train", "age"], errors="coerce").dropna()
                if len(ages):
                    return float(ages.mean()), f"{path.relative_to(study_dir)} ({len(ages)} training scans)"
    val = predictions[predictions["split"] == "val"].drop_duplicates(list(SCAN_KEY))
    if val.empty:
        raise InputError("cannot find training ages for the null baseline (no splits.tsv, store index or validation predictions)", study_dir)
    return float(val["age"].mean()), f"validation predictions ({len(val)} scans; no splits.tsv or store index with training ages)"
