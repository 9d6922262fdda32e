"""Condition stores assembled from the finished work files, rows in ``splits.tsv`` order.

Every condition of a grid shares one row index, so row ``i`` is the same scan in every
condition (the errors are repeated measures). A store is rewritten only when the work
files, the index or the grid it was built from changed (``work/<grid>/stores.json``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from defacebench import layout
from defacebench.imaging.grids import Grid
from defacebench.io.atomic import write_table_atomic, write_text_atomic
from defacebench.io.store import index_checksum, read_index, write_condition, write_index
from defacebench.preprocess import work


class _WorkRows(Sequence):
    """Lazy rows of one condition: work file i -> its grid image (one loaded at a time)."""

    def __init__(self, paths: Sequence[Path], condition: str) -> None:
        self.paths, self.condition = list(paths), condition

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        return work.read_work_image(self.paths[i], self.condition)


def subject_ids(subject) -> tuple[str, str, str]:
    """(participant_id, session_id, run) of a scan as written in splits.tsv."""
    return (f"sub-{subject.subject}", f"ses-{subject.session}" if subject.session else "", subject.run or "")


def _split_ids(splits: pd.DataFrame) -> list[tuple[str, str, str]]:
    def text(value) -> str:
        return "" if pd.isna(value) or str(value).lower() in ("n/a", "nan") else str(value)

    sessions = splits["session_id"] if "session_id" in splits else [""] * len(splits)
    runs = splits["run"] if "run" in splits else [""] * len(splits)
    return [(str(p), text(s), text(r)) for p, s, r in zip(splits["participant_id"], sessions, runs)]


@dataclass
class StoreReport:
    """What :func:`build_stores` wrote and left out."""

    index: pd.DataFrame
    written: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    excluded: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["key", "reason"]))
    failed: dict[str, str] = field(default_factory=dict)  # scans whose work file was damaged: key -> reason


def build_stores(
    study_dir: str | Path,
    grid: Grid,
    conditions: Sequence[str],
    subjects: Sequence,
    splits: pd.DataFrame,
    reasons: dict[str, str] | None = None,
) -> StoreReport:
    """Write one store per condition from the finished work files, rows in splits order.

    Scans without a finished work file (failed, or not run) are left out and listed
    with their reason in ``stores/<grid>/excluded.tsv``; so are scans of the cohort
    missing from the split table. A condition whose inputs did not change since its
    store was written is not rewritten. A work file that turns out damaged while a store
    is assembled (:class:`~defacebench.preprocess.work.WorkFileError`) is deleted, its
    scan is left out with the reason (``failed``), and the stores are assembled again
    without it; no half-written store replaces a good one (atomic writes).
    """
    reasons = dict(reasons or {})
    broken: dict[str, str] = {}
    while True:
        try:
            return _build(study_dir, grid, conditions, subjects, splits, reasons, broken)
        except work.WorkFileError as exc:  # a damaged work file: that scan fails, the rest go on
            key = exc.path.name.removesuffix(".npz")
            exc.path.unlink(missing_ok=True)
            broken[key] = f"{exc}; deleted: rerun `defacebench preprocess` to redo the scan"


def _build(
    study_dir: str | Path,
    grid: Grid,
    conditions: Sequence[str],
    subjects: Sequence,
    splits: pd.DataFrame,
    reasons: dict[str, str],
    broken: dict[str, str],
) -> StoreReport:
    """One attempt of :func:`build_stores`, leaving out the scans of ``broken`` work files."""
    by_ids = {subject_ids(s): s for s in subjects}
    split_ids = _split_ids(splits)
    rows, paths, excluded = [], [], []
    for i, ids in enumerate(split_ids):
        subject = by_ids.pop(ids, None)
        if subject is None:
            continue  # in splits.tsv but not in this cohort (rejected scan): not a study row
        path = layout.work_file(study_dir, grid.name, subject.key)
        meta = work.read_work_meta(path) if subject.key not in broken else None
        if meta is None or not set(conditions) <= set(meta.get("conditions", [])):
            excluded.append((subject.key, broken.get(subject.key) or reasons.get(subject.key, "not preprocessed")))
            continue
        rows.append(i)
        paths.append(path)
    for ids, subject in by_ids.items():
        excluded.append((subject.key, "not in splits.tsv (delete it, or rerun defacebench cohort, to split the new scans)"))
    index = splits.iloc[rows].reset_index(drop=True)
    for column in ("session_id", "run"):
        if column not in index:
            index[column] = ""
    index = index.loc[:, ["participant_id", "session_id", "run", "age", "split"]]
    report = StoreReport(index=index, excluded=pd.DataFrame(excluded, columns=["key", "reason"]), failed=dict(broken))
    write_table_atomic(layout.store_excluded(study_dir, grid.name), report.excluded)
    if not paths:
        return report

    state_path = layout.store_state(study_dir, grid.name)
    state = json.loads(state_path.read_text()) if state_path.is_file() else {}
    sources = [work.read_work_meta(p)["fingerprint"] for p in paths]  # type: ignore[index]
    if not layout.store_index(study_dir, grid.name).is_file() or _index_changed(study_dir, grid, index):
        write_index(study_dir, grid.name, index)
    for condition in conditions:
        token = hashlib.sha256(json.dumps([index_checksum(index), grid.to_dict(), sources, condition]).encode()).hexdigest()[:16]
        if state.get(condition) == token and layout.store_array(study_dir, grid.name, condition).is_file() and layout.store_meta(study_dir, grid.name, condition).is_file():
            report.unchanged.append(condition)
            continue
        write_condition(study_dir, grid.name, condition, _WorkRows(paths, condition), index, grid.affine)
        state[condition] = token
        write_text_atomic(state_path, json.dumps(state, indent=2) + "\n")
        report.written.append(condition)
    return report


def _index_changed(study_dir: str | Path, grid: Grid, index: pd.DataFrame) -> bool:
    return index_checksum(read_index(study_dir, grid.name)) != index_checksum(index)
