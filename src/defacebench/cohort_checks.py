"""The cohort's data checks (issues 16 and 23): each image read once, in parallel, and the
findings kept in a table of the study (``STUDY/cohort_checks.tsv``).

Findings, one row each (:data:`CHECK_COLUMNS`):

``rejected``
    the scan is not used (unreadable or truncated data, NaN/Inf, constant, degenerate
    affine, 4D, missing age, not in participants.tsv, duplicate...).
``warning``
    the scan is used but looks already defaced or skull-stripped (with the evidence), or the
    test split is too small for any paired test to reach significance.
``note``
    a participants.tsv or sessions.tsv row with no T1w image.
``ok``
    an image that passed (kept so that later stages reuse the result instead of reading the
    data again: rows of ``check == "image"`` carry the file's size and modification time).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from defacebench import layout
from defacebench.conditions import condition_kind, condition_method
from defacebench.engine import run_tasks
from defacebench.imaging.input_checks import ImageCheck, check_header, check_image
from defacebench.io.atomic import write_table_atomic

CHECK_COLUMNS = ("item", "check", "status", "reason", "path", "size_bytes", "mtime_ns")
#: ``check`` of a full voxel-data check (reusable by later stages) and of the header-only one.
IMAGE_CHECK, HEADER_CHECK = "image", "header"
#: Fewest images to check before a progress bar is shown (fewer take a few seconds).
PROGRESS_MIN_IMAGES = 20
#: Significance level of the analysis' paired tests (:mod:`defacebench.analysis.statistics`).
ALPHA = 0.05


@dataclass(frozen=True)
class CheckRow:
    """One finding of the cohort checks (a row of ``cohort_checks.tsv``)."""

    item: str
    check: str
    status: str
    reason: str = ""
    path: str = ""
    size_bytes: int = -1
    mtime_ns: int = -1


def file_stamp(path: str | Path) -> tuple[int, int]:
    """``(size_bytes, mtime_ns)`` of a file; ``(-1, -1)`` when it cannot be read."""
    try:
        stat = Path(path).stat()
    except OSError:
        return -1, -1
    return int(stat.st_size), int(stat.st_mtime_ns)


def content_fingerprint(path: Path) -> str:
    """Cheap content fingerprint (size + first and last 64 KiB) to catch duplicated images."""
    size = path.stat().st_size
    h = hashlib.blake2b(str(size).encode(), digest_size=16)
    with open(path, "rb") as fh:
        h.update(fh.read(65536))
        if size > 65536:
            fh.seek(max(size - 65536, 65536))
            h.update(fh.read(65536))
    return h.hexdigest()


# --------------------------------------------------------------------------- image checks
def read_check_cache(table: str | Path | None) -> dict[str, tuple[tuple[int, int], ImageCheck]]:
    """Full image checks recorded in a ``cohort_checks.tsv``, by path, with the file stamp they hold for."""
    frame = read_checks(table) if table is not None else None
    if frame is None or frame.empty:
        return {}
    cache: dict[str, tuple[tuple[int, int], ImageCheck]] = {}
    for path, rows in frame[frame["check"] == IMAGE_CHECK].groupby("path", sort=False):
        stamp = (int(rows["size_bytes"].iloc[0]), int(rows["mtime_ns"].iloc[0]))
        rejected = rows.loc[rows["status"] == "rejected", "reason"]
        warnings = tuple(rows.loc[rows["status"] == "warning", "reason"])
        cache[str(path)] = (stamp, ImageCheck(rejected.iloc[0] if len(rejected) else None, warnings))
    return cache


def check_images(
    paths: Sequence[str | Path],
    *,
    quick: bool = False,
    jobs: int | None = 1,
    scheduler: str | None = None,
    progress: bool = True,
    study: str | Path | None = None,
) -> dict[str, ImageCheck]:
    """Check every image once (in ``jobs`` processes or on a Dask ``scheduler``), by path.

    ``quick`` reads headers only. A full check recorded in ``study``'s ``cohort_checks.tsv``
    for a file of the same size and modification time is reused, not repeated. A check that
    could not run (its worker died) is a rejection with the reason; nothing here raises for
    one bad image.
    """
    keys = list(dict.fromkeys(str(p) for p in paths))
    done: dict[str, ImageCheck] = {}
    cache = read_check_cache(layout.cohort_checks_table(study)) if study is not None else {}
    if not quick and cache:
        done = {k: cache[k][1] for k in keys if k in cache and cache[k][0] == file_stamp(k)}
    todo = [k for k in keys if k not in done]
    if todo:
        results = run_tasks(check_header if quick else check_image, todo, keys=todo, jobs=jobs, scheduler=scheduler,
                            stage="cohort checks", progress=progress and len(todo) >= PROGRESS_MIN_IMAGES)
        done.update(results.values)
        done.update({f.key: ImageCheck(f"could not be checked ({f.reason})") for f in results.failures})
    return {k: done[k] for k in keys}


def image_rows(item: str, path: str | Path, result: ImageCheck, quick: bool) -> list[CheckRow]:
    """The table rows of one image's check: ok, rejected, or one row per warning."""
    size, mtime = file_stamp(path)
    check = HEADER_CHECK if quick else IMAGE_CHECK
    row = dict(item=item, check=check, path=str(path), size_bytes=size, mtime_ns=mtime)
    if result.reason:
        return [CheckRow(status="rejected", reason=result.reason, **row)]
    if not result.warnings:
        return [CheckRow(status="ok", **row)]
    return [CheckRow(status="warning", reason=w, **row) for w in result.warnings]


def write_checks(path: str | Path, rows: Sequence[CheckRow]) -> Path:
    """Write ``cohort_checks.tsv`` atomically (tabs and newlines in reasons become spaces)."""
    frame = pd.DataFrame([vars(r) for r in rows], columns=list(CHECK_COLUMNS))
    frame["reason"] = frame["reason"].astype(str).str.replace(r"[\t\n\r]", " ", regex=True)
    return write_table_atomic(path, frame)


def read_checks(path: str | Path) -> pd.DataFrame | None:
    """Read a ``cohort_checks.tsv`` (None when absent or unreadable)."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    except (OSError, ValueError, pd.errors.ParserError):
        return None
    if not set(CHECK_COLUMNS) <= set(frame.columns):
        return None
    for column in ("size_bytes", "mtime_ns"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce").fillna(-1).astype("int64")
    return frame


# --------------------------------------------------------------------------- table rows without images
def rows_without_images(root: Path, participant_ids: Sequence[str], scans: set[tuple[str, str | None]]) -> list[tuple[str, str]]:
    """participants.tsv and sessions.tsv rows that no T1w image answers: ``(item, reason)``.

    ``scans`` holds ``(participant_id, session label or None)`` of every T1w image found.
    """
    with_image = {pid for pid, _ in scans}
    found = [(pid, "listed in participants.tsv but has no T1w image") for pid in participant_ids if pid not in with_image]
    for table in sorted(root.glob("sub-*/sub-*_sessions.tsv")):
        pid = table.parent.name
        try:
            sessions = pd.read_csv(table, sep="\t", dtype=str, keep_default_na=False)
        except (OSError, ValueError, pd.errors.ParserError) as exc:
            found.append((table.name, f"cannot read ({type(exc).__name__})"))
            continue
        for session_id in sessions.get("session_id", pd.Series(dtype=str)):
            if (pid, session_id.removeprefix("ses-")) not in scans:
                found.append((f"{pid}_{session_id}", f"listed in {table.name} but has no T1w image"))
    return found


# --------------------------------------------------------------------------- can the test split show anything
def smallest_wilcoxon_p(n: int, two_sided: bool = True) -> float:
    """The smallest p the Wilcoxon signed-rank test can give with ``n`` paired scans.

    Every difference of one sign, no ties or zeros: exactly ``2 / 2**n`` two-sided
    (``1 / 2**n`` one-sided) up to 50 scans; computed with scipy's test, as the analysis does.
    """
    if n < 1:
        return 1.0
    from scipy import stats

    result = stats.wilcoxon(np.arange(1, n + 1, dtype=float), alternative="two-sided" if two_sided else "greater")
    return float(result.pvalue)


def paired_test_families(conditions: Sequence[str]) -> list[tuple[str, int, bool]]:
    """The analysis' families of paired tests for ``conditions``: ``(name, tests, two_sided)``.

    Pairwise Wilcoxon over all condition pairs (two-sided), each condition against the
    null baseline (one-sided), and each face-only condition against the null (one-sided).
    """
    k = len(conditions)
    face = [condition_method(c) for c in conditions if condition_kind(c) == "face"]
    families = [("pairwise comparisons of conditions", k * (k - 1) // 2, True), ("conditions against the null baseline", k, False)]
    if face:
        families.append(("face-only conditions against the null baseline", len(face), False))
    return [f for f in families if f[1] > 0]


def scans_needed(tests: int, two_sided: bool, alpha: float = ALPHA) -> int:
    """Fewest paired scans for which the smallest Holm-adjusted p of ``tests`` tests is below ``alpha``."""
    # Holm multiplies the smallest p by the family size; the exact minimum is (2 or 1) / 2**n
    return max(1, math.floor(math.log2((2 if two_sided else 1) * tests / alpha)) + 1)


def split_size_warnings(n_test: int, conditions: Sequence[str], alpha: float = ALPHA) -> list[str]:
    """One line per family of paired tests that cannot reach Holm-adjusted p < ``alpha`` with ``n_test`` scans."""
    lines = []
    families = paired_test_families(conditions)
    for name, tests, two_sided in families:
        best = min(1.0, tests * smallest_wilcoxon_p(n_test, two_sided))
        if best >= alpha:
            lines.append(f"{name} ({tests} paired Wilcoxon test(s), Holm): smallest possible adjusted p is {best:.3g} "
                         f"(not < {alpha:g}); needs >= {scans_needed(tests, two_sided, alpha)} test scans, more for useful power")
    if lines and len(lines) == len(families):
        lines.insert(0, f"test split of {n_test} scan(s) is too small for any paired test to reach significance")
    elif lines:
        lines.insert(0, f"test split of {n_test} scan(s) is too small for some paired tests to reach significance")
    return lines
