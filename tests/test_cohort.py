from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import make_bids, tiny_volume, write_nifti
from defacebench.cohort import assign_splits, read_bids, read_manifest, read_splits, split_counts, write_splits
from defacebench.io.errors import InputError


def test_read_bids_ages_sex_and_sessions(tmp_path: Path) -> None:
    root = make_bids(tmp_path / "bids", {"01": 70, "02": "n/a"}, sessions={"01": {"bl": 70.5, "m12": 71.5}})
    cohort = read_bids(root)
    by_session = {s.session: s for s in cohort.subjects}
    assert set(by_session) == {"bl", "m12"}
    assert by_session["m12"].age_years == 71.5  # sessions.tsv wins over participants.tsv
    assert by_session["bl"].sex == "F"
    assert by_session["bl"].key == "sub-01_ses-bl"
    assert cohort.dataset if hasattr(cohort, "dataset") else True
    assert [r.name for r in cohort.rejected] == ["sub-02_T1w"]
    assert cohort.rejected[0].reason == "missing age"


def test_read_bids_several_runs(tmp_path: Path) -> None:
    root = make_bids(tmp_path / "bids", {"01": 70})
    write_nifti(root / "sub-01" / "anat" / "sub-01_run-2_T1w.nii.gz", tiny_volume(seed=42))
    cohort = read_bids(root)
    assert sorted(s.key for s in cohort.subjects) == ["sub-01", "sub-01_run-2"]


@pytest.mark.parametrize(
    ("age", "reason"),
    [("", "missing age"), ("seventy", "non-numeric age 'seventy'"), ("130", "age 130 outside 0-120 years"), ("-1", "outside")],
)
def test_bad_ages_are_rejected_rest_loads(tmp_path: Path, age: str, reason: str) -> None:
    root = make_bids(tmp_path / "bids", {"01": 70, "02": age, "03": 80})
    cohort = read_bids(root)
    assert sorted(s.subject for s in cohort.subjects) == ["01", "03"]
    assert len(cohort.rejected) == 1 and reason in cohort.rejected[0].reason
    assert "sub-02_T1w" in cohort.format_summary()


def test_unreadable_and_duplicate_images(tmp_path: Path) -> None:
    root = make_bids(tmp_path / "bids", {"01": 70, "02": 71, "03": 72})
    (root / "sub-02" / "anat" / "sub-02_T1w.nii.gz").write_bytes(b"garbage")
    shutil.copy(root / "sub-01" / "anat" / "sub-01_T1w.nii.gz", root / "sub-03" / "anat" / "sub-03_T1w.nii.gz")
    cohort = read_bids(root)
    reasons = {r.name: r.reason for r in cohort.rejected}
    assert [s.subject for s in cohort.subjects] == ["01"]
    assert reasons["sub-02_T1w"].startswith("unreadable image header")
    assert reasons["sub-03_T1w"] == "duplicate image (same as sub-01_T1w)"


def test_not_bids(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not a directory"):
        read_bids(tmp_path / "nope")
    with pytest.raises(InputError, match="no participants.tsv"):
        read_bids(tmp_path)
    (tmp_path / "participants.tsv").write_text("participant_id\tage\n")
    with pytest.raises(InputError, match="no sub-"):
        read_bids(tmp_path)


def test_read_manifest(tmp_path: Path) -> None:
    write_nifti(tmp_path / "imgs" / "a.nii.gz", tiny_volume(seed=1))
    write_nifti(tmp_path / "imgs" / "sub-07_ses-2_T1w.nii.gz", tiny_volume(seed=2))
    manifest = tmp_path / "cohort.csv"
    manifest.write_text("path,age,sex\nimgs/a.nii.gz,60,F\nimgs/sub-07_ses-2_T1w.nii.gz,61.5,M\nimgs/missing.nii.gz,62,F\nimgs/a.nii.gz,60,F\n")
    cohort = read_manifest(manifest)
    assert [(s.subject, s.session, s.age_years) for s in cohort.subjects] == [("a", None, 60.0), ("07", "2", 61.5)]
    reasons = [r.reason for r in cohort.rejected]
    assert reasons == ["file not found", "duplicate image (same as row 2 (a.nii.gz))"]
    bad = tmp_path / "bad.tsv"
    bad.write_text("file\tage\n")
    with pytest.raises(InputError, match="lacks column"):
        read_manifest(bad)


def test_split_counts_sum_and_paper_proportions() -> None:
    assert split_counts(1343) == [940, 269, 134]
    assert split_counts(10) == [7, 2, 1]
    assert sum(split_counts(7, (0.5, 0.3, 0.2))) == 7


def _cohort_with_sessions(tmp_path: Path, n: int = 60):
    rng = np.random.default_rng(0)
    ages = {f"{i:03d}": round(float(rng.uniform(56, 96)), 1) for i in range(n)}
    sessions = {sub: {"bl": a, "m12": a + 1} for sub, a in list(ages.items())[::3]}
    return read_bids(make_bids(tmp_path / "bids", ages, sessions))


def test_split_grouped_stratified_and_deterministic(tmp_path: Path) -> None:
    cohort = _cohort_with_sessions(tmp_path)
    a = assign_splits(cohort, seed=1)
    b = assign_splits(cohort, seed=1)
    c = assign_splits(cohort, seed=2)
    pd.testing.assert_frame_equal(a, b)
    assert not a["split"].equals(c["split"])
    # every person in exactly one split
    assert (a.groupby("participant_id")["split"].nunique() == 1).all()
    people = a.groupby("participant_id").agg(age=("age", "mean"), split=("split", "first"))
    counts = people["split"].value_counts()
    assert counts.to_dict() == {"train": 42, "val": 12, "test": 6}
    # stratified: each split spans the age range
    for split in ("train", "val", "test"):
        ages = people.loc[people["split"] == split, "age"]
        assert ages.min() < people["age"].quantile(0.25) and ages.max() > people["age"].quantile(0.75)
    path = write_splits(a, tmp_path / "study" / "splits.tsv")
    pd.testing.assert_frame_equal(read_splits(path)[["participant_id", "split"]], a[["participant_id", "split"]])
