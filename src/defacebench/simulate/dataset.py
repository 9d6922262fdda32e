"""Write a simulated cohort as a BIDS dataset, atomically, serially or with worker processes.

Layout::

    OUT/dataset_description.json
    OUT/participants.tsv                      participant_id, age, sex, base_head
    OUT/sub-<label>/anat/sub-<label>_T1w.nii.gz       int16
    (--sessions K: OUT/sub-<label>/ses-<s>/anat/sub-<label>_ses-<s>_T1w.nii.gz and
     OUT/sub-<label>/sub-<label>_sessions.tsv with each session's age; the same below)
    OUT/derivatives/simulation/dataset_description.json, dseg.tsv, ground_truth.tsv
    OUT/derivatives/simulation/sub-<label>/anat/sub-<label>_dseg.nii.gz              labels (uint8)
    OUT/derivatives/simulation/sub-<label>/anat/sub-<label>_desc-brain_mask.nii.gz   intracranial mask
    OUT/derivatives/simulation/sub-<label>/anat/sub-<label>_simulation.json          parameters + ground truth

Everything is written into a hidden temporary directory beside ``OUT`` and renamed onto ``OUT``
at the end, so a failed or killed run leaves nothing partial behind. Every path comes from
:mod:`defacebench.layout` (``simulation_*``).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from defacebench import layout
from defacebench.io.atomic import write_table_atomic, write_text_atomic
from defacebench.io.bids import write_dataset_description
from defacebench.io.errors import InputError
from defacebench.io.nifti import save_image
from defacebench.simulate.calibration import calibration_gains
from defacebench.simulate.headfields import head_fields
from defacebench.simulate.heads import BASE_HEADS, load_base_head
from defacebench.simulate.identity import identity_columns
from defacebench.simulate.labels import INTRACRANIAL, LABELS
from defacebench.simulate.preview import write_preview
from defacebench.simulate.sampling import AGE_DISTRIBUTIONS, AGE_RANGE, sample_session, sample_subject
from defacebench.simulate.subject import simulate_subject

#: The default base heads: the ROBEX head alone. It is one real, sharp T1w scan; pydeface's
#: mean head is an average of many (blurry) with ~25 ml ventricles where ROBEX has ~3 ml, so
#: in a mixed cohort the head identity, not age, dominates every brain measure. Mixing is
#: available with ``base_heads=["robex", "pydeface"]`` (and stratifying by ``base_head``).
DEFAULT_BASE_HEADS = ("robex",)


def subject_ids(n: int) -> list[str]:
    """``['001', '002', ...]`` zero-padded to at least three digits."""
    width = max(3, len(str(n)))
    return [f"{i:0{width}d}" for i in range(1, n + 1)]


def session_ids(k: int) -> list[str]:
    """``['01', '02', ...]``: BIDS session labels, zero-padded to at least two digits."""
    width = max(2, len(str(k)))
    return [f"{j:0{width}d}" for j in range(1, k + 1)]


def sample_cohort(n: int, seed: int, base_heads: list[str], brain_ageing: float = 1.0, face_ageing: float = 1.0, ages: str = "adni",
                  identity_scale: float = 1.0, sessions: int = 1, interval_years: float = 2.0) -> list[dict]:
    """Parameters of every scan; person ``i`` depends only on ``(seed, i)``, not on ``n``.

    With ``sessions`` > 1 each person is seen ``sessions`` times, ``interval_years`` apart
    (the first age is drawn so the last stays within the calibrated 56-96): session 1 is the
    person's own draw, each later session keeps the person (identity, ageing rates, anatomy)
    and draws a new pose, field of view, bias and intensity from ``(seed, i, session)``.
    One session gives one scan per person and no ``session`` (no ``ses-`` folders).
    """
    out = []
    max_age = AGE_RANGE[1] - (sessions - 1) * interval_years if sessions > 1 else None
    for i, sub in enumerate(subject_ids(n)):
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), i]))
        params = sample_subject(rng, base_heads, brain_ageing, face_ageing, ages=ages, identity_scale=identity_scale, max_age=max_age)
        if sessions == 1:
            out.append({"participant_id": f"sub-{sub}", "seed": [int(seed), i], **params})
            continue
        for k, ses in enumerate(session_ids(sessions)):
            if k:
                rng_k = np.random.default_rng(np.random.SeedSequence([int(seed), i, k]))
                params_k = sample_session(params, rng_k, params["age_years"] + k * interval_years)
            else:
                params_k = params
            out.append({"participant_id": f"sub-{sub}", "session": ses, "seed": [int(seed), i, k], **params_k})
    return out


def _json_default(obj: object) -> object:
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(type(obj).__name__)


def write_subject(root: Path, params: dict, voxel_mm: float, check_jacobian: bool = False) -> dict:
    """Simulate one subject into ``root`` and return its ground-truth row."""
    head = load_base_head(params["base_head"], voxel_mm)
    sim = simulate_subject(head, params, check_jacobian=check_jacobian)
    sub, ses = params["participant_id"].removeprefix("sub-"), params.get("session")
    files = layout.simulation_files(root, sub, ses)
    image = np.clip(np.rint(sim.image), 0, np.iinfo(np.int16).max).astype(np.int16)
    save_image(image, layout.simulated_t1w(root, sub, ses), affine=sim.affine, dtype=np.int16)
    save_image(sim.labels, files["dseg"], affine=sim.affine, dtype=np.uint8)
    brain = np.isin(sim.labels, [LABELS[k] for k in INTRACRANIAL]).astype(np.uint8)
    save_image(brain, files["brain_mask"], affine=sim.affine, dtype=np.uint8)
    truth = dict(sim.ground_truth)
    if check_jacobian:
        truth["min_jacobian_determinant"] = sim.min_jacobian
    record = {"parameters": params, "voxel_mm": voxel_mm, "ground_truth": truth}
    write_text_atomic(files["record"], json.dumps(record, indent=1, default=_json_default) + "\n")
    row = {"participant_id": params["participant_id"]}
    if ses:
        row["session_id"] = f"ses-{ses}"
    row.update({"age": params["age_years"], "sex": params["sex"], "base_head": params["base_head"]})
    row.update(identity_columns(params.get("identity")))
    row.update({k: v for k, v in truth.items() if not isinstance(v, dict)})
    return row


def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise InputError("exists and is not a directory", out)
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise InputError("exists and is not empty (use --overwrite to replace it)", out)
    parent = out.resolve().parent
    if not parent.is_dir():
        raise InputError("parent directory does not exist", parent)
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError("cannot write here (permission denied)", parent)


def _check_settings(n: int, jobs: int, voxel_mm: float, brain_ageing: float, face_ageing: float, ages: str, base_heads: list[str],
                    identity_scale: float, sessions: int, interval_years: float) -> None:
    if n < 1:
        raise InputError(f"--n must be at least 1, got {n}")
    if jobs < 1:
        raise InputError(f"--jobs must be at least 1, got {jobs}")
    if not 0.5 <= voxel_mm <= 4.0:
        raise InputError(f"--voxel-mm must be within 0.5-4 mm, got {voxel_mm}")
    if brain_ageing < 0 or face_ageing < 0:
        raise InputError("ageing multipliers must be >= 0")
    if not 0 <= identity_scale <= 3:
        raise InputError(f"--identity-scale must be within 0-3, got {identity_scale}")
    if sessions < 1:
        raise InputError(f"--sessions must be at least 1, got {sessions}")
    if sessions > 1 and not 0 < (sessions - 1) * interval_years < AGE_RANGE[1] - AGE_RANGE[0]:
        raise InputError(f"--sessions {sessions} --interval-years {interval_years:g} do not fit the calibrated ages "
                         f"{AGE_RANGE[0]:g}-{AGE_RANGE[1]:g} (the interval must be > 0 and the span under {AGE_RANGE[1] - AGE_RANGE[0]:g} years)")
    if ages not in AGE_DISTRIBUTIONS:
        raise InputError(f"unknown age distribution {ages!r}; choose from {', '.join(AGE_DISTRIBUTIONS)}")
    unknown = [h for h in base_heads if h not in BASE_HEADS]
    if unknown:
        raise InputError(f"unknown base head(s) {', '.join(unknown)}; choose from {', '.join(BASE_HEADS)}")


def _write_tables(tmp: Path, table: pd.DataFrame) -> None:
    """participants.tsv (one row per person, the first session's age), sessions.tsv per person
    when there are sessions, ground_truth.tsv (one row per scan)."""
    people = table.drop_duplicates("participant_id")
    write_table_atomic(layout.participants_table(tmp), people[["participant_id", "age", "sex", "base_head"]])
    if "session_id" in table:
        for pid, grp in table.groupby("participant_id", sort=True):
            write_table_atomic(layout.sessions_table(tmp, pid.removeprefix("sub-")), grp[["session_id", "age"]])
    write_table_atomic(layout.simulation_truth_table(tmp), table.round(4))


def simulate_cohort(
    out: str | Path,
    n: int,
    seed: int = 0,
    brain_ageing: float = 1.0,
    face_ageing: float = 1.0,
    voxel_mm: float = 1.5,
    base_heads: list[str] | None = None,
    jobs: int = 1,
    overwrite: bool = False,
    preview: bool = False,
    progress: Callable[[int, int], None] | None = None,
    ages: str = "adni",
    identity_scale: float = 1.0,
    sessions: int = 1,
    interval_years: float = 2.0,
) -> pd.DataFrame:
    """Write a simulated BIDS cohort to ``out`` and return its ground-truth table.

    Parameters
    ----------
    out : path
        Dataset directory; must be absent or empty unless ``overwrite``.
    n : int
        Number of people (>= 1).
    seed : int
        Same seed, same bytes.
    brain_ageing, face_ageing : float
        Multipliers of the published ageing rates (0 switches an effect off).
    voxel_mm : float
        Isotropic voxel size of the images (1.5 mm is the base heads' native size).
    base_heads : list of str
        Heads to draw from (default: :data:`DEFAULT_BASE_HEADS`, the ROBEX head alone).
    jobs : int
        Worker processes.
    overwrite : bool
        Replace a non-empty ``out``.
    preview : bool
        Also write the preview figure (:func:`defacebench.layout.simulation_preview`).
    progress : callable, optional
        Called with ``(done, total)`` after each scan.
    ages : {"adni", "uniform"}
        Age distribution: normal(74, 7) truncated to 56-96 (ADNI-like), or uniform 56-96.
    identity_scale : float
        Multiplier of the identity spreads (0 = every person has the base head's shape).
    sessions : int
        Scans per person (> 1: BIDS ``ses-*`` folders and ``sub-X_sessions.tsv`` with ages).
    interval_years : float
        Years between a person's sessions.
    """
    out = Path(out)
    base_heads = list(base_heads or DEFAULT_BASE_HEADS)
    _check_settings(n, jobs, voxel_mm, brain_ageing, face_ageing, ages, base_heads, identity_scale, sessions, interval_years)
    _check_out(out, overwrite)

    for name in base_heads:  # once here rather than in every worker (same values either way):
        head = load_base_head(name, voxel_mm)  # forked workers inherit the memory caches,
        head_fields(head)  # any worker reads the disk caches (labels, calibration)
        calibration_gains(head)
    cohort = sample_cohort(n, seed, base_heads, brain_ageing, face_ageing, ages=ages, identity_scale=identity_scale,
                           sessions=sessions, interval_years=interval_years)

    parent = out.resolve().parent
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=parent))
    try:
        desc = (f"Simulated ageing cohort: n={n}, seed={seed}, brain_ageing={brain_ageing}, face_ageing={face_ageing}, "
                f"voxel_mm={voxel_mm}, ages={ages}, identity_scale={identity_scale}")
        if sessions > 1:
            desc += f", sessions={sessions}, interval_years={interval_years}"
        write_dataset_description(tmp, "defacebench simulated ageing cohort", dataset_type="raw", description=desc)
        write_dataset_description(layout.simulation_dir(tmp), "defacebench simulation ground truth", source="../..", description=desc)
        dseg = pd.DataFrame({"index": list(LABELS.values()), "name": list(LABELS)})
        write_table_atomic(layout.simulation_dseg_table(tmp), dseg)
        rows = []
        if jobs == 1:
            for params in cohort:
                rows.append(write_subject(tmp, params, voxel_mm))
                if progress:
                    progress(len(rows), len(cohort))
        else:
            with ProcessPoolExecutor(max_workers=jobs) as pool:
                futures = [pool.submit(write_subject, tmp, params, voxel_mm) for params in cohort]
                for fut in futures:
                    rows.append(fut.result())
                    if progress:
                        progress(len(rows), len(cohort))
        table = pd.DataFrame(rows)
        _write_tables(tmp, table)
        if preview:
            write_preview(tmp, table, layout.simulation_preview(tmp))
        if out.exists():
            trash = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=parent))
            os.replace(out, trash / "old")
            os.replace(tmp, out)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return table
