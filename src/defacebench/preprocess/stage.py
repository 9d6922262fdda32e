"""The preprocess stage over a cohort: every scan (engine), then the stores, QC and failures.

Reads the deface stage's derivatives and the split table from disk (both must exist: the
command checks and says what to run), writes ``work/``, ``stores/``, ``qc_preprocess.tsv``,
``failures.tsv`` and the QC mosaics. A rerun skips finished scans and unchanged stores.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from defacebench import layout
from defacebench.conditions import Condition
from defacebench.engine import Failure, run_tasks, write_failures
from defacebench.imaging.grids import Grid
from defacebench.preprocess.bias import BIAS_RESOLUTION_MM
from defacebench.preprocess.qc import qc_rows, write_mosaics, write_qc_table
from defacebench.preprocess.scan import MIN_BRAIN_DICE, PreprocessTask, preprocess_subject
from defacebench.preprocess.stores import StoreReport, build_stores


@dataclass
class StudyResult:
    """Outcome of :func:`preprocess_study`."""

    values: dict[str, dict]
    reasons: dict[str, str]
    stores: StoreReport
    qc_table: pd.DataFrame
    mosaics: list[Path]
    seconds: float


def preprocess_study(
    cohort,
    study_dir: str | Path,
    grid: Grid,
    conditions: Sequence[Condition | str],
    splits: pd.DataFrame,
    *,
    jobs: int | None = None,
    scheduler: str | None = None,
    progress: bool = True,
    mosaics: bool = True,
    bias_resolution_mm: float = BIAS_RESOLUTION_MM,
    min_brain_dice: float = MIN_BRAIN_DICE,
    face_placement: str = "brain",
    prior_failures: dict[str, str] | None = None,
    estimate=None,
) -> StudyResult:
    """Preprocess every scan (skipping finished ones), then build the stores and QC.

    Parameters
    ----------
    cohort : defacebench.cohort.Cohort
        The scans; their deface derivatives must exist under ``study_dir``.
    study_dir : str or Path
        Study directory.
    grid : Grid
        Target grid.
    conditions : sequence
        Conditions (names or :class:`~defacebench.conditions.Condition`).
    splits : pandas.DataFrame
        The split table (``splits.tsv``, :func:`defacebench.cohort.read_splits`): store rows
        follow its order; scans it lacks are left out of the stores and listed.
    jobs, scheduler
        Engine backend (:func:`defacebench.engine.run_tasks`).
    prior_failures : dict, optional
        Scans that failed an earlier stage (key -> reason): not run, recorded as failed.
    estimate : callable, optional
        Called with the time estimate after a warm-up scan (:func:`defacebench.engine.run_tasks`).
    """
    start = time.perf_counter()
    names = tuple(c.name if isinstance(c, Condition) else str(c) for c in conditions)
    study_dir = Path(study_dir)
    prior = dict(prior_failures or {})
    tasks = [PreprocessTask(s, str(study_dir), grid, names, bias_resolution_mm, min_brain_dice, face_placement) for s in cohort.subjects]
    todo = [t for t in tasks if t.key not in prior]
    results = run_tasks(preprocess_subject, todo, keys=[t.key for t in todo], jobs=jobs, scheduler=scheduler, stage="preprocess", progress=progress,
                        estimate=estimate)
    reasons = {**prior, **{f.key: f.reason for f in results.failures}}
    stores = build_stores(study_dir, grid, names, cohort.subjects, splits, reasons, face_placement)
    reasons.update(stores.failed)  # damaged work files found while assembling the stores
    failures = [Failure(k, "preprocess", r) for k, r in reasons.items()]
    write_failures(layout.failures_table(study_dir), failures, stage="preprocess")
    qc_table = qc_rows(tasks, results.values, reasons, grid)
    write_qc_table(layout.preprocess_qc_table(study_dir), qc_table, grid.name)
    written: list[Path] = []
    if mosaics and len(stores.index):
        written = write_mosaics(study_dir, grid, names)
    return StudyResult(results.values, reasons, stores, qc_table, written, time.perf_counter() - start)
