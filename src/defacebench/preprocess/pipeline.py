"""Per-subject preprocessing into a target grid, and the condition stores built from it.

For one scan (:func:`preprocess_subject`):

1. load the T1w image and reorient it to RAS;
2. estimate the N4 bias field once, at low resolution, fitted separately to the brain and
   to the rest of the head so neither leaks into the other's correction
   (:func:`.bias.compartment_bias_field`), and divide the head and every face-only image
   of the scan by it;
3. take the brain mask and the subject -> MNI transform (12 DOF, brain to brain) that
   defacing already computed (``defacebench deface``): no second brain extraction or
   registration;
4. divide every condition's image by ONE number, the median of the bias-corrected raw
   head inside the brain mask (so the brain's median is 1 in every condition; no
   condition gets its own statistics);
5. move every condition's image into the target grid with that one transform and
   trilinear interpolation (:class:`.grids.LinearResampler`). Interpolation and the
   steps before it are linear, so ``defaced-<m> + face-<m> == raw`` survives to
   float16 precision (``defaced-<m>`` is composed in the grid as raw - face-<m>,
   which is the same image as resampling it);
6. write the grid images of every condition as one compressed ``.npz`` per scan,
   atomically, under ``STUDY/work/<grid>/`` (with the brain Dice against the template
   mask, the normalisation scale and the seconds per step).

Then :func:`build_stores` writes one float16 store per condition, rows in the order of
``STUDY/splits.tsv``, leaving out scans that failed; :func:`preprocess_study` runs the
lot with the engine (serial, processes or Dask) and writes QC.
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from defacebench.conditions import Condition, build_all, methods_of, parse_condition
from defacebench.io.atomic import atomic_path, write_table_atomic, write_text_atomic
from defacebench.io.errors import StageError
from defacebench.preprocess.bias import BIAS_RESOLUTION_MM, compartment_bias_field
from defacebench.imaging.grids import Grid
from defacebench.imaging.resample import LinearResampler

#: Bump when per-scan outputs change meaning (invalidates ``work/`` files).
WORK_VERSION = 1
#: Registration brain Dice (subject brain mask in the grid vs the template mask) below
#: which a scan fails, and below which it is flagged in qc_preprocess.tsv.
MIN_BRAIN_DICE = 0.8
FLAG_BRAIN_DICE = 0.85
QC_COLUMNS = ("key", "participant_id", "session_id", "run", "grid", "status", "brain_dice", "dice_flag", "norm_scale",
              "bias_min", "bias_max", "seconds", "reason")


@dataclass(frozen=True)
class PreprocessTask:
    """Everything one worker needs to preprocess one scan (picklable).

    Attributes
    ----------
    subject : defacebench.cohort.Subject
        The scan.
    study_dir : str
        Study directory (deface derivatives are read from it, work files written to it).
    grid : Grid
        Target grid.
    conditions : tuple of str
        Condition names to produce.
    bias_resolution_mm : float
        Voxel size at which the N4 bias field is estimated.
    min_brain_dice : float
        Below this registration brain Dice the scan fails.
    """

    subject: object
    study_dir: str
    grid: Grid
    conditions: tuple[str, ...]
    bias_resolution_mm: float = BIAS_RESOLUTION_MM
    min_brain_dice: float = MIN_BRAIN_DICE

    @property
    def key(self) -> str:
        return self.subject.key  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- paths
def work_dir(study_dir: str | Path, grid: str) -> Path:
    """``STUDY/work/<grid>``: one ``<key>.npz`` per preprocessed scan."""
    return Path(study_dir) / "work" / grid


def work_path(study_dir: str | Path, grid: str, key: str) -> Path:
    return work_dir(study_dir, grid) / f"{key}.npz"


def qc_dir(study_dir: str | Path) -> Path:
    """``STUDY/derivatives/defacebench/qc``: mosaics (they show faces: do not share)."""
    from defacebench.io.bids import derivatives_root

    return derivatives_root(study_dir) / "qc"


def input_paths(subject, study_dir: str | Path, methods: Sequence[str]) -> dict[str, Path]:
    """The files a scan's preprocessing reads: T1w, brain mask, transform, face-only images."""
    from defacebench.deface.runner import output_paths

    deface = output_paths(study_dir, subject, methods)
    paths = {"t1w": Path(subject.path), "brain_mask": deface["brain_mask"], "to_mni": deface["to_mni"]}
    for m in methods:
        paths[f"{m}_face"] = deface[f"{m}_face"]
    return paths


def missing_inputs(subject, study_dir: str | Path, methods: Sequence[str]) -> list[str]:
    """Names of the deface derivatives of a scan that do not exist yet."""
    return [name for name, path in input_paths(subject, study_dir, methods).items() if name != "t1w" and not path.is_file()]


def _fingerprint(task: PreprocessTask, paths: dict[str, Path]) -> str:
    """Hash of the inputs (name, size, mtime), grid and settings: a changed input redoes the scan."""
    h = hashlib.sha256()
    items = {
        "version": WORK_VERSION,
        "grid": task.grid.to_dict(),
        "bias_resolution_mm": task.bias_resolution_mm,
        "files": {name: [p.name, p.stat().st_size, p.stat().st_mtime_ns] for name, p in sorted(paths.items())},
    }
    h.update(json.dumps(items, sort_keys=True).encode())
    return h.hexdigest()[:16]


# --------------------------------------------------------------------------- per-scan work files
def read_work_meta(path: str | Path) -> dict | None:
    """The metadata of a finished work file, or None when absent or unreadable."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            return json.loads(str(npz["meta"]))
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError):
        return None


def read_work_image(path: str | Path, condition: str) -> np.ndarray:
    """One condition's grid image (float16) from a work file."""
    with np.load(path, allow_pickle=False) as npz:
        return npz[condition]


def _write_work(path: Path, images: dict[str, np.ndarray], meta: dict) -> None:
    """Write images + metadata as one compressed .npz, atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, meta=np.array(json.dumps(meta)), **images)


# --------------------------------------------------------------------------- template mask per grid
@functools.lru_cache(maxsize=8)
def _template_mask(grid: Grid) -> np.ndarray:
    """The MNI brain mask in ``grid`` (linear interpolation, >= 0.5)."""
    from defacebench.imaging.templates import mni_brain_mask

    mask = mni_brain_mask()
    resampler = LinearResampler(mask.affine, mask.shape, np.eye(4), grid, antialias=False)
    return resampler(np.asarray(mask.dataobj, dtype=np.float32)) >= 0.5


def template_mask(grid: Grid) -> np.ndarray:
    """The MNI brain mask in ``grid`` (cached per process)."""
    return _template_mask(grid)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    from defacebench.imaging.registration import mask_dice

    return float(mask_dice(a, b))


# --------------------------------------------------------------------------- one scan
def _load_on(path: Path, like, what: str, dtype=np.float32) -> np.ndarray:
    """Load a derivative image reoriented like the T1w; it must lie on the same grid."""
    import nibabel as nib

    from defacebench.io.nifti import reorient_ras

    try:
        img = reorient_ras(nib.load(str(path)))
        data = np.asarray(img.dataobj, dtype=dtype)
    except Exception as exc:
        raise StageError(f"unreadable {what} {path.name} ({type(exc).__name__}: {exc})") from None
    if data.ndim == 4:
        data = data[..., 0]
    if data.shape != like.shape[:3] or not np.allclose(img.affine, like.affine, atol=1e-3):
        raise StageError(f"{what} {path.name} is not on the T1w's grid (stale deface outputs? rerun defacebench deface)")
    return data


def preprocess_subject(task: PreprocessTask) -> dict:
    """Preprocess one scan into the task's grid for every condition; skip it when done.

    Returns
    -------
    dict
        The work file's metadata: key, grid, brain_dice, dice_flag, norm_scale,
        bias_min/max, seconds per step, ``skipped``.

    Raises
    ------
    StageError
        Missing deface outputs, empty brain mask, failed registration (brain Dice below
        ``min_brain_dice``), no positive intensity in the brain.
    defacebench.io.errors.ImageError
        Unreadable or unusable T1w image.
    """
    from defacebench.io.nifti import load_image
    from defacebench.imaging.registration import load_transform

    conditions = [parse_condition(c) for c in task.conditions]
    methods = methods_of(conditions)
    subject = task.subject
    out = work_path(task.study_dir, task.grid.name, task.key)
    paths = input_paths(subject, task.study_dir, methods)
    missing = [n for n, p in paths.items() if not p.is_file()]
    if missing:
        raise StageError(f"missing deface output(s) {', '.join(missing)} (run defacebench deface; see failures.tsv)")
    fingerprint = _fingerprint(task, paths)
    done = read_work_meta(out)
    if done is not None and done.get("fingerprint") == fingerprint and set(task.conditions) <= set(done.get("conditions", [])):
        return {**done, "skipped": True}

    seconds: dict[str, float] = {}
    t0 = time.perf_counter()

    def lap(step: str) -> None:
        nonlocal t0
        now = time.perf_counter()
        seconds[step] = round(seconds.get(step, 0.0) + now - t0, 4)
        t0 = now

    img = load_image(subject.path, reorient=True)
    data = np.asarray(img.dataobj, dtype=np.float32)
    brain = _load_on(paths["brain_mask"], img, "brain mask") > 0.5
    if not brain.any():
        raise StageError("brain extraction is empty (no brain voxel in the brain mask)")
    try:
        to_mni = load_transform(paths["to_mni"])
    except (OSError, ValueError) as exc:
        raise StageError(f"unreadable MNI transform ({exc})") from None
    faces = {m: _load_on(paths[f"{m}_face"], img, f"{m} face-only image") for m in methods}
    lap("load")

    voxel_mm = tuple(float(v) for v in img.header.get_zooms()[:3])
    bias = compartment_bias_field(data, voxel_mm, brain, resolution_mm=task.bias_resolution_mm)
    lap("bias_n4")

    head = data / bias
    scale = float(np.median(head[brain]))
    if not np.isfinite(scale) or scale <= 0:
        raise StageError(f"median intensity inside the brain mask is {scale:g}: cannot normalise")
    inv = np.float32(1.0 / scale)
    head *= inv
    for m in methods:
        faces[m] = faces[m] / bias * inv
    lap("normalise")

    resampler = LinearResampler(img.affine, data.shape, to_mni, task.grid)
    brain_grid = resampler(brain.astype(np.float32)) >= 0.5
    dice = _dice(brain_grid, template_mask(task.grid))
    lap("resample")
    if not dice >= task.min_brain_dice:
        raise StageError(f"registration to MNI failed: brain Dice {dice:.3f} < {task.min_brain_dice} in grid {task.grid.name}")
    # Resampling is linear, so defaced-<m> = raw - face-<m> is composed in the grid:
    # the same image as resampling head - face, one resampling fewer per method.
    head_grid = resampler(head)
    faces_grid = {m: resampler(faces[m]) for m in methods}
    brain_only = next((c for c in conditions if c.kind == "skullstripped"), None)
    stripped = {brain_only.name: resampler(brain_only.build(head, brain))} if brain_only else {}
    grid_images = build_all([c for c in conditions if c.kind != "skullstripped"], head_grid, None, faces_grid)
    images = {c.name: (stripped.get(c.name, grid_images.get(c.name))).astype(np.float16) for c in conditions}
    lap("resample")

    meta = {
        "key": task.key,
        "grid": task.grid.name,
        "conditions": list(task.conditions),
        "fingerprint": fingerprint,
        "brain_dice": round(dice, 4),
        "dice_flag": bool(dice < FLAG_BRAIN_DICE),
        "norm_scale": scale,
        "bias_min": float(bias[brain].min()),
        "bias_max": float(bias[brain].max()),
        "seconds": seconds,
    }
    _write_work(out, images, meta)
    lap("write")
    meta["seconds"] = seconds
    return {**meta, "skipped": False}


# --------------------------------------------------------------------------- stores
class _WorkRows(Sequence):
    """Lazy rows of one condition: work file i -> its grid image (one loaded at a time)."""

    def __init__(self, paths: Sequence[Path], condition: str) -> None:
        self.paths, self.condition = list(paths), condition

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        return read_work_image(self.paths[i], self.condition)


def subject_ids(subject) -> tuple[str, str, str]:
    """(participant_id, session_id, run) of a scan as written in splits.tsv."""
    return (f"sub-{subject.subject}", f"ses-{subject.session}" if subject.session else "", subject.run or "")


def _split_ids(splits: pd.DataFrame) -> list[tuple[str, str, str]]:
    def text(value) -> str:
        return "" if pd.isna(value) or str(value).lower() in ("n/a", "nan") else str(value)

    sessions = splits["session_id"] if "session_id" in splits else [""] * len(splits)
    runs = splits["run"] if "run" in splits else [""] * len(splits)
    return [(str(p), text(s), text(r)) for p, s, r in zip(splits["participant_id"], sessions, runs)]


def load_or_make_splits(study_dir: str | Path, cohort, fractions: tuple[float, ...] | None = None, seed: int = 0) -> pd.DataFrame:
    """``STUDY/splits.tsv``, written with :func:`defacebench.cohort.assign_splits` when missing."""
    from defacebench.cohort import PAPER_SPLIT_FRACTIONS, assign_splits, read_splits, write_splits

    path = Path(study_dir) / "splits.tsv"
    if path.is_file():
        return read_splits(path)
    splits = assign_splits(cohort, fractions or PAPER_SPLIT_FRACTIONS, seed=seed)
    write_splits(splits, path)
    return splits


@dataclass
class StoreReport:
    """What :func:`build_stores` wrote and left out."""

    index: pd.DataFrame
    written: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    excluded: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["key", "reason"]))


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
    store was written is not rewritten.
    """
    from defacebench.io.store import index_checksum, store_dir, write_condition, write_index

    reasons = dict(reasons or {})
    by_ids = {subject_ids(s): s for s in subjects}
    split_ids = _split_ids(splits)
    rows, paths, excluded = [], [], []
    for i, ids in enumerate(split_ids):
        subject = by_ids.pop(ids, None)
        if subject is None:
            continue  # in splits.tsv but not in this cohort (rejected scan): not a study row
        path = work_path(study_dir, grid.name, subject.key)
        meta = read_work_meta(path)
        if meta is None or not set(conditions) <= set(meta.get("conditions", [])):
            excluded.append((subject.key, reasons.get(subject.key, "not preprocessed")))
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
    report = StoreReport(index=index, excluded=pd.DataFrame(excluded, columns=["key", "reason"]))
    base = store_dir(study_dir, grid.name)
    write_table_atomic(base / "excluded.tsv", report.excluded)
    if not paths:
        return report

    state_path = work_dir(study_dir, grid.name) / "stores.json"
    state = json.loads(state_path.read_text()) if state_path.is_file() else {}
    sources = [read_work_meta(p)["fingerprint"] for p in paths]  # type: ignore[index]
    if not (base / "index.tsv").is_file() or _index_changed(study_dir, grid, index):
        write_index(study_dir, grid.name, index)
    for condition in conditions:
        token = hashlib.sha256(json.dumps([index_checksum(index), grid.to_dict(), sources, condition]).encode()).hexdigest()[:16]
        if state.get(condition) == token and (base / f"{condition}.npy").is_file() and (base / f"{condition}.json").is_file():
            report.unchanged.append(condition)
            continue
        write_condition(study_dir, grid.name, condition, _WorkRows(paths, condition), index, grid.affine)
        state[condition] = token
        write_text_atomic(state_path, json.dumps(state, indent=2) + "\n")
        report.written.append(condition)
    return report


def _index_changed(study_dir: str | Path, grid: Grid, index: pd.DataFrame) -> bool:
    from defacebench.io.store import index_checksum, read_index

    return index_checksum(read_index(study_dir, grid.name)) != index_checksum(index)


# --------------------------------------------------------------------------- QC table
def qc_rows(tasks: Sequence[PreprocessTask], values: dict[str, dict], reasons: dict[str, str], grid: Grid) -> pd.DataFrame:
    """One QC row per scan: status, brain Dice (flag below 0.85), scale, bias range, seconds."""
    rows = []
    for task in tasks:
        pid, ses, run = subject_ids(task.subject)
        meta = values.get(task.key)
        if meta is None:
            meta = read_work_meta(work_path(task.study_dir, grid.name, task.key)) if task.key not in reasons else None
        if meta is not None and task.key not in reasons:
            rows.append({"key": task.key, "participant_id": pid, "session_id": ses, "run": run, "grid": grid.name, "status": "ok",
                         "brain_dice": meta["brain_dice"], "dice_flag": "low" if meta["dice_flag"] else "",
                         "norm_scale": round(meta["norm_scale"], 4), "bias_min": round(meta["bias_min"], 4), "bias_max": round(meta["bias_max"], 4),
                         "seconds": round(sum(meta["seconds"].values()), 2), "reason": ""})
        else:
            rows.append({"key": task.key, "participant_id": pid, "session_id": ses, "run": run, "grid": grid.name, "status": "failed",
                         "brain_dice": np.nan, "dice_flag": "", "norm_scale": np.nan, "bias_min": np.nan, "bias_max": np.nan,
                         "seconds": np.nan, "reason": reasons.get(task.key, "not preprocessed")})
    return pd.DataFrame(rows, columns=list(QC_COLUMNS))


def write_qc_table(path: str | Path, table: pd.DataFrame, grid: str) -> Path:
    """Write ``qc_preprocess.tsv``, replacing the rows of ``grid`` and keeping other grids'."""
    path = Path(path)
    if path.is_file():
        old = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
        old = old[old["grid"] != grid] if "grid" in old else old.iloc[0:0]
        table = pd.concat([old, table.astype(str).replace("nan", "n/a")], ignore_index=True)
    return write_table_atomic(path, table)


# --------------------------------------------------------------------------- the whole study
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
    *,
    jobs: int | None = None,
    scheduler: str | None = None,
    progress: bool = True,
    split_fractions: tuple[float, ...] | None = None,
    seed: int = 0,
    mosaics: bool = True,
    bias_resolution_mm: float = BIAS_RESOLUTION_MM,
    min_brain_dice: float = MIN_BRAIN_DICE,
    prior_failures: dict[str, str] | None = None,
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
    jobs, scheduler
        Engine backend (:func:`defacebench.engine.run_tasks`).
    prior_failures : dict, optional
        Scans that failed an earlier stage (key -> reason): not run, recorded as failed.
    """
    from defacebench.engine import Failure, run_tasks, write_failures
    from defacebench.io.bids import derivatives_root

    start = time.perf_counter()
    names = tuple(c.name if isinstance(c, Condition) else str(c) for c in conditions)
    study_dir = Path(study_dir)
    splits = load_or_make_splits(study_dir, cohort, split_fractions, seed)
    prior = dict(prior_failures or {})
    tasks = [PreprocessTask(s, str(study_dir), grid, names, bias_resolution_mm, min_brain_dice) for s in cohort.subjects]
    todo = [t for t in tasks if t.key not in prior]
    results = run_tasks(preprocess_subject, todo, keys=[t.key for t in todo], jobs=jobs, scheduler=scheduler, stage="preprocess", progress=progress)
    reasons = {**prior, **{f.key: f.reason for f in results.failures}}
    root = derivatives_root(study_dir)
    failures = [Failure(k, "preprocess", r) for k, r in reasons.items()]
    write_failures(root / "failures.tsv", failures, stage="preprocess")
    qc_table = qc_rows(tasks, results.values, reasons, grid)
    write_qc_table(root / "qc_preprocess.tsv", qc_table, grid.name)
    stores = build_stores(study_dir, grid, names, cohort.subjects, splits, reasons)
    written: list[Path] = []
    if mosaics and len(stores.index):
        from defacebench.preprocess.qc import write_mosaics

        written = write_mosaics(study_dir, grid, names)
    return StudyResult(results.values, reasons, stores, qc_table, written, time.perf_counter() - start)
