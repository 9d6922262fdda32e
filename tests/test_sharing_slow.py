"""Sharing acceptance on simulated 4 mm heads with realistic Siemens sidecars.

No file that deface, preprocess or export writes holds an identifying field or value;
every written image has a sidecar; the export passes the BIDS structure check and holds
nothing that shows a face; --applyto carries the T1w's cut to a moved, contrast-inverted
T2w (Dice >= 0.9 after the inverse move) and records a failed registration; a crashed
export resumes.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from defacebench import layout
from defacebench.cli import main as cli
from defacebench.imaging.masks import head_mask
from defacebench.imaging.registration import mask_dice
from defacebench.imaging.resample import resample_to
from sharing_helpers import add_siemens_metadata, leaks, moved_inverted

pytestmark = pytest.mark.slow
METHODS = ("spm", "quickshear")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """Three simulated people; sub-001 also has a moved, inverted T2w, sub-002 a FLAIR that is noise."""
    root = tmp_path_factory.mktemp("site")
    bids = root / "bids"
    assert cli(["simulate", str(bids), "--n", "3", "--seed", "3", "--voxel-mm", "4"]) == 0
    for t1w in sorted(bids.glob("sub-*/anat/*_T1w.nii.gz")):
        add_siemens_metadata(t1w)
    t1w = nib.load(str(bids / "sub-001/anat/sub-001_T1w.nii.gz"))
    t2w, move = moved_inverted(t1w)
    t2w_path = bids / "sub-001/anat/sub-001_T2w.nii.gz"
    nib.save(nib.Nifti1Image(np.rint(np.asarray(t2w.dataobj)).astype(np.int16), t1w.affine), str(t2w_path))
    add_siemens_metadata(t2w_path, {"EchoTime": 0.408, "SeriesDescription": "t2_spc_sag"})
    noise = np.random.default_rng(0).gamma(2.0, 50.0, t1w.shape).astype(np.float32)
    nib.save(nib.Nifti1Image(noise, t1w.affine @ np.diag([1.0, 1.0, 1.0, 1.0])), str(bids / "sub-002/anat/sub-002_FLAIR.nii.gz"))
    study = root / "study"
    assert cli(["deface", str(bids), str(study), "--methods", ",".join(METHODS), "--applyto", "--no-progress"]) == 0
    return root, bids, study, move


def test_applyto_carries_the_t1w_cut_and_records_a_failed_registration(site):
    root, bids, study, move = site
    anat = layout.derivatives_dir(study) / "sub-001" / "anat"
    t1w = nib.load(str(bids / "sub-001/anat/sub-001_T1w.nii.gz"))
    head = head_mask(np.asarray(t1w.dataobj, dtype=np.float32))
    for method in METHODS:
        t1w_cut = np.asarray(nib.load(str(anat / f"sub-001_desc-{method}_mask.nii.gz")).dataobj) >= 0.5
        t2w_cut = nib.load(str(anat / f"sub-001_space-T2w_desc-{method}_mask.nii.gz"))
        back = resample_to(t2w_cut, np.linalg.inv(move), t1w.affine, t1w.shape, order=1) >= 0.5
        dice = mask_dice(back & head, t1w_cut & head)
        print(f"{method}: T2w cut vs T1w cut inside the head, Dice {dice:.3f}")
        assert dice >= 0.9, method
        defaced = np.asarray(nib.load(str(anat / f"sub-001_desc-{method}defaced_T2w.nii.gz")).dataobj)
        assert not defaced[np.asarray(t2w_cut.dataobj) == 1.0].any() and defaced.any()
    assert (anat / "sub-001_desc-T2wdeface_qc.png").is_file()
    failures = pd.read_csv(layout.failures_table(study), sep="\t")
    row = failures[failures["key"] == "sub-002_FLAIR"]
    assert list(row["stage"]) == ["applyto"] and "head Dice" in row["reason"].iloc[0]
    assert not list((layout.derivatives_dir(study) / "sub-002" / "anat").glob("*FLAIR*"))
    qc = pd.read_csv(layout.applyto_qc_table(study), sep="\t")
    assert set(qc["key"]) == {"sub-001_T2w"} and (qc["head_dice"] > 0.85).all()


def _images(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.name.endswith((".nii", ".nii.gz")))


def test_nothing_identifying_leaves_and_the_export_is_valid_bids(site):
    from defacebench.export import face_problems, structure_problems

    root, bids, study, _ = site
    assert cli(["cohort", str(bids), "--out", str(study)]) == 0
    assert cli(["preprocess", str(bids), str(study), "--grid", "mni4mm", "--conditions", "raw,skullstripped,defaced-spm,face-spm,defaced-quickshear",
                "--jobs", "1", "--no-progress"]) == 0
    share = root / "share"
    assert cli(["export", str(bids), str(share), "--method", "spm", "--applyto", "--no-progress"]) == 0
    side = layout.export_files(share)["side"]
    assert leaks(bids)  # the source does hold them: the check can see them
    for written in (study, share, side):
        assert leaks(written) == {}, written
    for folder in (layout.derivatives_dir(study), share, side):
        assert [p for p in _images(folder) if not p.with_name(p.name.replace(".nii.gz", ".json")).is_file()] == []
    assert structure_problems(share) == [] and face_problems(share) == []
    names = sorted(p.relative_to(share).as_posix() for p in share.rglob("*") if p.is_file())
    assert names == ["dataset_description.json", "participants.tsv",
                     "sub-001/anat/sub-001_T1w.json", "sub-001/anat/sub-001_T1w.nii.gz",
                     "sub-001/anat/sub-001_T2w.json", "sub-001/anat/sub-001_T2w.nii.gz",
                     "sub-002/anat/sub-002_T1w.json", "sub-002/anat/sub-002_T1w.nii.gz",
                     "sub-003/anat/sub-003_T1w.json", "sub-003/anat/sub-003_T1w.nii.gz"]
    table = pd.read_csv(layout.export_files(share)["table"], sep="\t", keep_default_na=False).set_index("source")
    assert table.loc["sub-002/anat/sub-002_FLAIR.nii.gz", "status"] == "not exported"
    assert "head Dice" in table.loc["sub-002/anat/sub-002_FLAIR.nii.gz", "reason"]
    sidecar = json.loads((share / "sub-001/anat/sub-001_T2w.json").read_text())
    assert sidecar["Defaced"] and sidecar["EchoTime"] == 0.408 and "rigid" in sidecar["RegistrationToT1w"]
    derived = layout.applied_files(layout.export_files(share)["study"], type("S", (), {"subject": "001", "session": None, "key": "sub-001"})(),
                                   "sub-001_T2w.nii.gz", ["spm"])["spm_defaced"]
    np.testing.assert_array_equal(np.asarray(nib.load(str(share / "sub-001/anat/sub-001_T2w.nii.gz")).dataobj),
                                  np.asarray(nib.load(str(derived)).dataobj))


def test_export_resumes_after_a_crash_and_refuses_other_settings(site, monkeypatch, capsys):
    import defacebench.export as export

    root, bids, _, _ = site
    share = root / "share-crash"
    real = export.export_image
    calls = []

    def crash_on_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("power cut")
        return real(*args, **kwargs)

    monkeypatch.setattr(export, "export_image", crash_on_second)
    assert cli(["export", str(bids), str(share), "--method", "quickshear", "--no-progress"]) == 1
    first = share / "sub-001/anat/sub-001_T1w.nii.gz"
    stamp = first.stat().st_mtime_ns
    monkeypatch.setattr(export, "export_image", real)
    assert cli(["export", str(bids), str(share), "--method", "quickshear", "--no-progress"]) == 0
    assert first.stat().st_mtime_ns == stamp and len(list(share.rglob("*_T1w.nii.gz"))) == 3
    assert not (share / "sub-001/anat/sub-001_T2w.nii.gz").exists()  # not defaced without --applyto: stays out
    capsys.readouterr()
    assert cli(["export", str(bids), str(share), "--method", "spm", "--no-progress"]) == 2
    assert "other settings" in capsys.readouterr().err
