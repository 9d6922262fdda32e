"""Cohorts: which T1w scans, whose, at what age; and the subject-grouped split.

A :class:`Subject` is one T1-weighted scan of one person at one session (several runs
per session are allowed). A :class:`Cohort` holds the usable scans and, beside them,
every rejected row with its reason, so one bad scan never stops the rest. Each image is
read once and checked (:mod:`defacebench.cohort_checks`); findings are kept as table rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from defacebench import layout
from defacebench.cohort_checks import CheckRow, check_images, content_fingerprint, image_rows, rows_without_images
from defacebench.io.atomic import write_table_atomic
from defacebench.io.bids import parse_entities, strip_nifti_suffix
from defacebench.io.errors import InputError

AGE_RANGE_YEARS = (0.0, 120.0)
SPLITS = ("train", "val", "test")
#: The paper's split: 940 / 267 / 136 of 1,343 scans (about 70 / 20 / 10 %).
PAPER_SPLIT_FRACTIONS = (0.70, 0.20, 0.10)
_NA = {"", "n/a", "na", "nan", "none"}


@dataclass(frozen=True)
class Subject:
    """One T1w scan of one person (a subject at a session, possibly one of several runs)."""

    subject: str
    age_years: float
    path: Path
    session: str | None = None
    sex: str | None = None
    dataset: str = ""
    run: str | None = None

    @property
    def key(self) -> str:
        """BIDS-style prefix naming this scan: ``sub-01_ses-2_run-1``."""
        parts = [f"sub-{self.subject}"]
        if self.session:
            parts.append(f"ses-{self.session}")
        if self.run:
            parts.append(f"run-{self.run}")
        return "_".join(parts)


@dataclass(frozen=True)
class Rejection:
    """A scan or table row that was not loaded, and why."""

    name: str
    reason: str


@dataclass
class Cohort:
    """Usable scans, rejected ones with reasons, warnings (with evidence), notes, every finding as a row."""

    subjects: list[Subject]
    rejected: list[Rejection] = field(default_factory=list)
    source: str = ""
    warnings: list[Rejection] = field(default_factory=list)
    notes: list[Rejection] = field(default_factory=list)
    checks: list[CheckRow] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.subjects)

    def to_frame(self) -> pd.DataFrame:
        """One row per scan: participant_id, session_id, run, age, sex, dataset, path."""
        return pd.DataFrame(
            {
                "participant_id": [f"sub-{s.subject}" for s in self.subjects],
                "session_id": [f"ses-{s.session}" if s.session else "" for s in self.subjects],
                "run": [s.run or "" for s in self.subjects],
                "age": [s.age_years for s in self.subjects],
                "sex": [s.sex or "" for s in self.subjects],
                "dataset": [s.dataset for s in self.subjects],
                "path": [str(s.path) for s in self.subjects],
            }
        )

    def summary(self) -> dict[str, object]:
        """Counts a user checks first: subjects, sessions, scans, age range, sex counts."""
        ages = np.array([s.age_years for s in self.subjects], dtype=float)
        sexes: dict[str, int] = {}
        for person, sex in {(s.subject, s.sex or "n/a") for s in self.subjects}:
            sexes[sex] = sexes.get(sex, 0) + 1
        return {
            "subjects": len({s.subject for s in self.subjects}),
            "sessions": len({(s.subject, s.session) for s in self.subjects}),
            "scans": len(self.subjects),
            "age_min": float(ages.min()) if ages.size else math.nan,
            "age_max": float(ages.max()) if ages.size else math.nan,
            "age_mean": float(ages.mean()) if ages.size else math.nan,
            "age_sd": float(ages.std(ddof=1)) if ages.size > 1 else math.nan,
            "sex": dict(sorted(sexes.items())),
            "rejected": len(self.rejected),
            "warnings": len(self.warnings),
            "notes": len(self.notes),
        }

    def format_summary(self) -> str:
        """A plain-text table of :meth:`summary` and every rejected scan with its reason."""
        s = self.summary()
        sex = ", ".join(f"{k}: {v}" for k, v in s["sex"].items()) or "-"
        lines = [
            f"cohort      {self.source}",
            f"subjects    {s['subjects']}",
            f"sessions    {s['sessions']}",
            f"scans       {s['scans']}",
            f"age (y)     {s['age_min']:.1f} - {s['age_max']:.1f}  (mean {s['age_mean']:.1f}, SD {s['age_sd']:.1f})",
            f"sex         {sex}",
            f"rejected    {s['rejected']}",
        ]
        lines += [f"  REJECTED  {r.name}: {r.reason}" for r in self.rejected]
        lines += [f"warnings    {s['warnings']}"] + [f"  WARNING   {w.name}: {w.reason}" for w in self.warnings]
        lines += [f"notes       {s['notes']}"] + [f"  NOTE      {n.name}: {n.reason}" for n in self.notes]
        return "\n".join(lines)


# --------------------------------------------------------------------------- readers
def _parse_age(value: object) -> float:
    """Age in years from a table cell; raises ``ValueError`` with a readable reason."""
    text = str(value).strip()
    if text.lower() in _NA:
        raise ValueError("missing age")
    try:
        age = float(text)
    except ValueError:
        raise ValueError(f"non-numeric age {text!r}") from None
    lo, hi = AGE_RANGE_YEARS
    if not (lo <= age <= hi) or not math.isfinite(age):
        raise ValueError(f"age {age:g} outside {lo:g}-{hi:g} years")
    return age


def _clean(value: object) -> str | None:
    text = "" if value is None else str(value).strip()
    return None if text.lower() in _NA else text


def _read_table(path: Path) -> pd.DataFrame:
    sep = "\t" if path.suffix.lower() == ".tsv" else ","
    try:
        return pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False)
    except Exception as exc:
        raise InputError(f"cannot read table ({exc})", path) from None


class _Collector:
    """Accumulates scans and findings; checks the images (once, in parallel) and duplicates in :meth:`finish`."""

    def __init__(self, dataset: str) -> None:
        self.dataset = dataset
        self.subjects: list[Subject] = []
        self.rejected: list[Rejection] = []
        self.warnings: list[Rejection] = []
        self.notes: list[Rejection] = []
        self.checks: list[CheckRow] = []  # every finding, for STUDY/cohort_checks.tsv
        self._pending: list[tuple[str, Path, float, dict[str, str | None]]] = []

    def reject(self, name: str, reason: str, check: str, path: Path | str = "", status: str = "rejected") -> None:
        (self.rejected if status == "rejected" else self.notes).append(Rejection(name, reason))
        self.checks.append(CheckRow(name, check, status, reason, str(path)))

    def add(self, name: str, path: Path, age: object, **fields: str | None) -> None:
        try:
            age_years = _parse_age(age)
        except ValueError as exc:
            self.reject(name, str(exc), "age", path)
            return
        self._pending.append((name, path, age_years, fields))

    def finish(self, source: str, *, quick: bool = False, study: str | Path | None = None, **engine: object) -> Cohort:
        """Check the pending images (``engine``: jobs, scheduler, progress; :func:`read_cohort`), build the cohort."""
        results = check_images([p for _, p, _, _ in self._pending], quick=quick, study=study, **engine)  # type: ignore[arg-type]
        seen: dict[str, str] = {}
        for name, path, age_years, fields in self._pending:
            result = results[str(path)]
            if result.reason is None:
                idents = [f"path:{path.resolve()}", f"content:{content_fingerprint(path.resolve())}"]
                first = next((seen[i] for i in idents if i in seen), None)
                if first is not None:
                    self.reject(name, f"duplicate image (same as {first})", "duplicate", path)
                    continue
                seen.update(dict.fromkeys(idents, name))
                self.subjects.append(Subject(age_years=age_years, path=path, dataset=self.dataset, **fields))
                self.warnings += [Rejection(name, w) for w in result.warnings]
            else:
                self.rejected.append(Rejection(name, result.reason))
            self.checks += image_rows(name, path, result, quick)
        return Cohort(self.subjects, self.rejected, source, self.warnings, self.notes, self.checks)


def read_bids(root: str | Path, **checks: object) -> Cohort:
    """Read the T1w scans of a BIDS dataset and their ages, and check every image.

    Ages come from ``participants.tsv`` (column ``age``) or, when a subject has
    ``sub-X/sub-X_sessions.tsv`` with an ``age`` column, from that file per session.
    Table rows with no image become notes; ``checks`` are :func:`read_cohort`'s options.

    Raises
    ------
    InputError
        When ``root`` is not a BIDS dataset (no directory, no ``participants.tsv``,
        no T1w images at all).
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError("not a directory", root)
    participants_path = layout.participants_table(root)
    if not participants_path.is_file():
        raise InputError("no participants.tsv: not a BIDS dataset with ages", root)
    participants = _read_table(participants_path)
    if "participant_id" not in participants.columns:
        raise InputError("participants.tsv has no participant_id column", participants_path)
    participants = participants.drop_duplicates("participant_id").set_index("participant_id")

    images = sorted({*root.glob("sub-*/anat/*_T1w.nii*"), *root.glob("sub-*/ses-*/anat/*_T1w.nii*")})
    images = [p for p in images if p.name.endswith((".nii", ".nii.gz"))]
    if not images:
        raise InputError("no sub-*/[ses-*/]anat/*_T1w.nii[.gz] images found", root)

    dataset = _dataset_name(root)
    collector = _Collector(dataset)
    sessions_cache: dict[str, pd.DataFrame | None] = {}
    for path in images:
        ent = parse_entities(path)
        name = strip_nifti_suffix(path.name)
        pid = f"sub-{ent.get('sub', '')}"
        session = ent.get("ses")
        if pid not in participants.index:
            collector.reject(name, f"{pid} not listed in participants.tsv", "participants", path)
            continue
        row = participants.loc[pid]
        age: object = row.get("age", "")
        if pid not in sessions_cache:
            sessions_path = root / pid / f"{pid}_sessions.tsv"
            sessions_cache[pid] = _read_table(sessions_path) if sessions_path.is_file() else None
        sessions = sessions_cache[pid]
        if session and sessions is not None and {"session_id", "age"} <= set(sessions.columns):
            match = sessions.loc[sessions["session_id"] == f"ses-{session}", "age"]
            if len(match):
                age = match.iloc[0]
        collector.add(
            name,
            path,
            age,
            subject=ent["sub"],
            session=session,
            run=ent.get("run"),
            sex=_clean(row.get("sex")),
        )
    scans = {(f"sub-{e.get('sub', '')}", e.get("ses")) for e in map(parse_entities, images)}
    for item, reason in rows_without_images(root, list(participants.index), scans):
        collector.reject(item, reason, "table", status="note")
    return collector.finish(str(root), **checks)  # type: ignore[arg-type]


def read_manifest(path: str | Path, **checks: object) -> Cohort:
    """Read a CSV/TSV manifest with columns ``path,age[,subject,session,sex]``.

    Relative image paths are relative to the manifest's folder. A missing
    ``subject`` is taken from the BIDS ``sub-`` entity of the file name, else from
    the file name itself.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("manifest not found", path)
    table = _read_table(path)
    missing = {"path", "age"} - set(table.columns)
    if missing:
        raise InputError(f"manifest lacks column(s) {', '.join(sorted(missing))}", path)
    collector = _Collector(path.stem)
    for i, row in table.iterrows():
        image = Path(str(row["path"]).strip())
        if not image.is_absolute():
            image = path.parent / image
        ent = parse_entities(image)
        subject = _clean(row.get("subject")) or ent.get("sub") or strip_nifti_suffix(image.name)
        subject = subject.removeprefix("sub-")
        session = _clean(row.get("session")) or ent.get("ses")
        session = session.removeprefix("ses-") if session else None
        name = f"row {i + 2} ({image.name})"
        collector.add(name, image, row["age"], subject=subject, session=session, run=ent.get("run"), sex=_clean(row.get("sex")))
    return collector.finish(str(path), **checks)  # type: ignore[arg-type]


def read_cohort(source: str | Path, *, quick: bool = False, jobs: int | None = 1, scheduler: str | None = None,
                progress: bool = False, study: str | Path | None = None) -> Cohort:
    """A BIDS directory or a ``.csv``/``.tsv`` manifest, every image checked.

    ``quick``: headers only (no voxel data, no defaced/skull-stripped warnings); ``jobs`` or
    ``scheduler``: where the image checks run; ``study``: reuse the full checks its
    ``cohort_checks.tsv`` records for files of the same size and modification time.
    """
    source = Path(source)
    checks = dict(quick=quick, jobs=jobs, scheduler=scheduler, progress=progress, study=study)
    if source.is_file() and source.suffix.lower() in {".csv", ".tsv"}:
        return read_manifest(source, **checks)
    return read_bids(source, **checks)


def _dataset_name(root: Path) -> str:
    import json

    try:
        return str(json.loads((root / "dataset_description.json").read_text()).get("Name") or root.name)
    except (ValueError, OSError, AttributeError):
        return root.name


# --------------------------------------------------------------------------- splits
def split_counts(n: int, fractions: tuple[float, ...] = PAPER_SPLIT_FRACTIONS) -> list[int]:
    """Integer counts per split that sum to ``n`` (largest-remainder rounding)."""
    if any(f < 0 for f in fractions) or sum(fractions) <= 0:
        raise InputError(f"split fractions must be non-negative and not all zero, got {fractions}")
    total = sum(fractions)
    exact = [n * f / total for f in fractions]
    counts = [math.floor(e) for e in exact]
    order = sorted(range(len(exact)), key=lambda i: exact[i] - counts[i], reverse=True)
    for i in order[: n - sum(counts)]:
        counts[i] += 1
    return counts


def assign_splits(
    cohort: Cohort,
    fractions: tuple[float, ...] = PAPER_SPLIT_FRACTIONS,
    seed: int = 0,
    window: int = 10,
) -> pd.DataFrame:
    """Deterministic, seeded, age-stratified train/val/test split grouped by subject.

    All scans of one person land in the same split. People are ordered by their mean
    age; split labels are laid out along that order so each split's cumulative count
    tracks its target share (so every age range is represented in every split), then
    labels are shuffled within consecutive windows of ``window`` people, by ``seed``.

    Returns
    -------
    pandas.DataFrame
        One row per scan: participant_id, session_id, run, age, split.
    """
    frame = cohort.to_frame()
    if frame.empty:
        raise InputError("cannot split an empty cohort")
    people = frame.groupby("participant_id")["age"].mean()
    rng = np.random.default_rng(seed)
    tiebreak = rng.permutation(len(people))
    order = np.lexsort((tiebreak, people.to_numpy()))
    ids = people.index.to_numpy()[order]
    counts = split_counts(len(ids), fractions)
    names = SPLITS[: len(counts)]

    labels: list[int] = []
    assigned = [0] * len(counts)
    for i in range(len(ids)):
        deficit = [counts[k] * (i + 1) / len(ids) - assigned[k] for k in range(len(counts))]
        k = int(np.argmax(deficit))
        labels.append(k)
        assigned[k] += 1
    label_arr = np.array(labels)
    for start in range(0, len(label_arr), window):
        block = label_arr[start : start + window]
        label_arr[start : start + window] = rng.permutation(block)
    person_split = dict(zip(ids, (names[k] for k in label_arr)))
    frame["split"] = frame["participant_id"].map(person_split)
    return frame[["participant_id", "session_id", "run", "age", "split"]]


def write_splits(splits: pd.DataFrame, path: str | Path) -> Path:
    """Write the split table as TSV, atomically."""
    return write_table_atomic(path, splits)


def read_splits(path: str | Path) -> pd.DataFrame:
    """Read a split table written by :func:`write_splits`."""
    path = Path(path)
    if not path.is_file():
        raise InputError("split table not found", path)
    table = pd.read_csv(path, sep="\t", dtype={"participant_id": str, "session_id": str, "run": str}, keep_default_na=False)
    missing = {"participant_id", "age", "split"} - set(table.columns)
    if missing:
        raise InputError(f"split table lacks column(s) {', '.join(sorted(missing))}", path)
    return table
