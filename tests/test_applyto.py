"""--applyto without registration: which images of a session it takes, and the export's reference T1w."""

from __future__ import annotations

from pathlib import Path

from conftest import write_nifti
from defacebench.cohort import Subject
from defacebench.commands.export import references
from defacebench.deface.applyto import APPLYTO_SUFFIXES, session_targets


def test_session_targets_are_the_other_contrasts_of_the_same_session(tmp_path: Path):
    anat = tmp_path / "sub-01" / "ses-a" / "anat"
    names = ["sub-01_ses-a_run-1_T1w.nii.gz", "sub-01_ses-a_run-2_T1w.nii.gz", "sub-01_ses-a_T2w.nii.gz",
             "sub-01_ses-a_acq-fast_FLAIR.nii", "sub-01_ses-a_PDw.nii.gz", "sub-01_ses-a_dwi.nii.gz",
             "sub-01_ses-a_T2w.json", "sub-02_ses-a_T2w.nii.gz", "sub-01_ses-b_T2w.nii.gz"]
    for name in names:
        write_nifti(anat / name) if name.endswith((".nii", ".nii.gz")) else (anat / name).write_text("{}")
    scan = Subject(subject="01", session="a", run="1", age_years=70.0, path=anat / names[0])
    assert [p.name for p in session_targets(scan)] == ["sub-01_ses-a_PDw.nii.gz", "sub-01_ses-a_T2w.nii.gz",
                                                       "sub-01_ses-a_acq-fast_FLAIR.nii"]
    with_runs = [p.name for p in session_targets(scan, APPLYTO_SUFFIXES + ("T1w",))]
    assert "sub-01_ses-a_run-2_T1w.nii.gz" in with_runs and names[0] not in with_runs


def test_export_reference_is_the_first_t1w_run_of_each_session(tmp_path: Path):
    scans = [Subject(subject="01", session="a", run=r, age_years=70.0, path=tmp_path / f"r{r}.nii.gz") for r in ("10", "2")]
    scans += [Subject(subject="01", session="b", run=None, age_years=72.0, path=tmp_path / "b.nii.gz"),
              Subject(subject="02", session=None, run="1", age_years=60.0, path=tmp_path / "c.nii.gz")]
    assert references(scans, applyto=False) == scans
    assert [(s.session, s.run) for s in references(scans, applyto=True)] == [("a", "2"), ("b", None), (None, "1")]
