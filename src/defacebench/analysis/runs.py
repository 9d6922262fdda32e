"""Which trained runs analysis may trust, and why the others are left out.

A run is used only when its ``run.json`` says it is complete, its best validation MAE is
finite, and its ``predictions.csv`` and ``model.pt`` still match the sha256 recorded in
``run.json`` at the end of training (runs written before those fingerprints existed are
not checked for them). Every other run directory is left out with its reason, written to
``results/left_out_runs.tsv`` and listed in the report.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from defacebench import layout
from defacebench.io.atomic import write_table_atomic
from defacebench.io.checksums import file_mismatch

LEFT_OUT_COLUMNS = ("condition", "run", "reason")


def run_problem(run_dir: Path) -> str | None:
    """Why a run directory cannot be trusted, or None when it can."""
    record = layout.run_record(run_dir)
    if not record.is_file():
        return "no run.json (unfinished training; rerun `defacebench train`)"
    try:
        info = json.loads(record.read_text())
    except (OSError, ValueError) as exc:
        return f"unreadable run.json ({type(exc).__name__}); rerun `defacebench train`"
    if info.get("failed"):
        return f"training failed: {info['failed']}; rerun `defacebench train` to retry"
    if info.get("complete") is not True:
        return "run is not complete; rerun `defacebench train`"
    try:
        finite = math.isfinite(float(info.get("best_val_mae")))
    except (TypeError, ValueError):
        finite = False
    if not finite:
        return f"best validation MAE is {info.get('best_val_mae')} (diverged or untrained); rerun `defacebench train`"
    if not layout.predictions_file(run_dir).is_file():
        return "no predictions.csv; rerun `defacebench train`"
    for path, key in ((layout.predictions_file(run_dir), "predictions_sha256"), (layout.model_file(run_dir), "model_sha256")):
        problem = file_mismatch(path, info.get(key))
        if problem:
            return f"{problem}; delete the run directory and rerun `defacebench train`"
    return None


def screen_runs(study_dir: str | Path, condition: str | None = None) -> tuple[list[Path], pd.DataFrame]:
    """``(trusted run directories, left-out table)`` of a study (of one condition, or all).

    The table has :data:`LEFT_OUT_COLUMNS`, one row per run directory left out.
    """
    trusted, left_out = [], []
    for run_dir in layout.run_dirs(study_dir, condition):
        problem = run_problem(run_dir)
        if problem is None:
            trusted.append(run_dir)
        else:
            left_out.append((*layout.run_of(run_dir), problem))
    return trusted, pd.DataFrame(left_out, columns=list(LEFT_OUT_COLUMNS))


def write_left_out_runs(study_dir: str | Path) -> pd.DataFrame:
    """Write ``results/left_out_runs.tsv`` (header only when every run is trusted) and return it."""
    _, left_out = screen_runs(study_dir)
    write_table_atomic(layout.result_table(study_dir, "left_out_runs"), left_out)
    return left_out
