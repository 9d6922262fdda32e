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

import numpy as np
import pandas as pd

from defacebench import layout
from defacebench.conditions import FACE_KINDS, parse_condition, region_member, region_methods
from defacebench.imaging.grids import Grid
from defacebench.io.atomic import write_table_atomic, write_text_atomic
from defacebench.io.nifti import save_image
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
        return self._row(i)

    def _row(self, i: int) -> np.ndarray:
        return work.read_work_image(self.paths[i], self.condition)


class _RegionRows(_WorkRows):
    """Rows of a face-only image or control kept only inside a common region (0 elsewhere)."""

    def __init__(self, paths: Sequence[Path], condition: str, region: np.ndarray) -> None:
        super().__init__(paths, condition)
        self.region = region

    def _row(self, i: int) -> np.ndarray:
        return np.where(self.region, super()._row(i), np.float16(0))


#: A grid voxel is inside a scan's removal region when its resampled mask is at least this:
#: the trilinear weights then fall (almost) wholly inside the cut, so the face-only image there
#: is the scan's own tissue at full strength, not an edge blended with what was kept.
REGION_INSIDE = 0.99


def common_region(paths: Sequence[Path], method: str) -> tuple[np.ndarray, np.ndarray]:
    """Where every scan's head-placed removal mask of ``method`` covers (bool, the grid's
    shape), and per scan the voxels the region would gain without that scan alone.

    Inside the region no scan's cut edge lies, so where the cut fell (which follows brain
    atrophy for a cut placed through the brain registration) is not in the image; the face's
    tissue and shape are. Beyond a scan's field of view nothing is known, so it does not
    bound the region (a scan that stops above the chin has zeros there); a voxel counts when
    at least one scan imaged and cut it. Uses no label: test scans count like the others. The
    gains find a single scan that shrinks the region for everyone (a failed registration).
    """
    count = missing = cut_somewhere = None
    for k, path in enumerate(paths):
        cut = work.read_work_image(path, region_member(method)).astype(np.float32)
        seen = work.read_work_image(path, work.FIELD_OF_VIEW_MEMBER).astype(np.float32)
        inside = cut + (1.0 - seen) >= REGION_INSIDE
        if count is None:
            count, missing, cut_somewhere = np.zeros(inside.shape, np.int32), np.full(inside.shape, -1, np.int32), np.zeros(inside.shape, bool)
        count += inside
        missing[~inside] = k  # where exactly one scan is missing, this is that scan
        cut_somewhere |= (cut >= REGION_INSIDE) & (seen >= REGION_INSIDE)
    lone = missing[(count == len(paths) - 1) & cut_somewhere]
    return (count == len(paths)) & cut_somewhere, np.bincount(lone, minlength=len(paths))  # type: ignore[operator]


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
    #: ``face_placement="common"``: method -> (voxels of its common region, the scan whose
    #: removal alone would add the most voxels to it, how many)
    regions: dict[str, tuple[int, str, int]] = field(default_factory=dict)


def build_stores(
    study_dir: str | Path,
    grid: Grid,
    conditions: Sequence[str],
    subjects: Sequence,
    splits: pd.DataFrame,
    reasons: dict[str, str] | None = None,
    face_placement: str = "brain",
) -> StoreReport:
    """Write one store per condition from the finished work files, rows in splits order.

    Scans without a finished work file (failed, or not run) are left out and listed
    with their reason in ``stores/<grid>/excluded.tsv``; so are scans of the cohort
    missing from the split table. A condition whose inputs did not change since its
    store was written is not rewritten. A work file that turns out damaged while a store
    is assembled (:class:`~defacebench.preprocess.work.WorkFileError`) is deleted, its
    scan is left out with the reason (``failed``), and the stores are assembled again
    without it; no half-written store replaces a good one (atomic writes). With
    ``face_placement="common"`` each method's face-only image and geometry control keep only
    the method's :func:`common_region` over the stored scans (written beside the stores,
    ``common_region-<m>_mask.nii.gz``).
    """
    reasons = dict(reasons or {})
    broken: dict[str, str] = {}
    while True:
        try:
            return _build(study_dir, grid, conditions, subjects, splits, reasons, broken, face_placement)
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
    face_placement: str = "brain",
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
    regions = {}
    for m in region_methods(conditions, face_placement):
        regions[m], gains = common_region(paths, m)
        save_image(regions[m].astype(np.uint8), layout.store_common_region(study_dir, grid.name, m), affine=grid.affine)
        worst = int(np.argmax(gains))
        report.regions[m] = (int(regions[m].sum()), paths[worst].stem, int(gains[worst]))
    for condition in conditions:
        parsed = parse_condition(condition)
        region = regions.get(parsed.method) if parsed.kind in FACE_KINDS else None
        extra = [] if region is None else [hashlib.sha256(np.packbits(region).tobytes()).hexdigest()]
        token = hashlib.sha256(json.dumps([index_checksum(index), grid.to_dict(), sources, condition, *extra]).encode()).hexdigest()[:16]
        if state.get(condition) == token and layout.store_array(study_dir, grid.name, condition).is_file() and layout.store_meta(study_dir, grid.name, condition).is_file():
            report.unchanged.append(condition)
            continue
        rows = _WorkRows(paths, condition) if region is None else _RegionRows(paths, condition, region)
        write_condition(study_dir, grid.name, condition, rows, index, grid.affine)
        state[condition] = token
        write_text_atomic(state_path, json.dumps(state, indent=2) + "\n")
        report.written.append(condition)
    return report


def _index_changed(study_dir: str | Path, grid: Grid, index: pd.DataFrame) -> bool:
    return index_checksum(read_index(study_dir, grid.name)) != index_checksum(index)
