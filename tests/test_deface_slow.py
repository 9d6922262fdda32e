"""Slow defacing tests: MNI definitions reproduced on the MNI head, full pipeline with deepbet, orientations."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from defacebench.deface.context import SubjectContext
from defacebench.deface.registry import get_method
from defacebench.imaging.registration import mask_dice
from defacebench.imaging.resample import world_coordinates

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def mni_context():
    from defacebench.imaging.templates import mni_head, mni_head_brain_mask

    head = mni_head(2)
    ctx = SubjectContext(head, brain_mask=np.asarray(mni_head_brain_mask(2).dataobj) > 0)
    return ctx


@pytest.mark.parametrize("method", ["afni", "fsl", "spm", "pydeface"])
def test_definition_reproduced_on_mni_head(mni_context, method):
    """Run through registration on the MNI head itself: the removal equals the MNI definition (Dice >= 0.95)."""
    from defacebench.deface.pydeface import removal_from_matrix
    from defacebench.imaging.registration import load_transform
    from defacebench.imaging.templates import cache_dir, HEAD_TEMPLATE_VERSION

    ctx = mni_context
    module = get_method(method)
    removal = module.removal_mask(ctx) >= 0.5
    head = ctx.head()
    if method == "pydeface":
        truth = removal_from_matrix(load_transform(cache_dir() / f"pydeface_to_mni_v{HEAD_TEMPLATE_VERSION}.txt"), ctx.affine, ctx.shape) >= 0.5
    else:
        truth = module.mni_removal(world_coordinates(ctx.affine, ctx.shape))
    dice = mask_dice(removal & head, truth & head)
    print(f"{method} Dice {dice:.3f}")
    assert dice >= 0.95
    assert (removal & ctx.brain()).sum() / ctx.brain().sum() < 0.001


def test_pipeline_on_pydeface_head_orientations(tmp_path):
    """deepbet + registrations on a real head in RAS, LPS, PIR and oblique storage: masks agree within 1 %."""
    from defacebench.cohort import Subject
    from defacebench.deface import deface_subject
    from defacebench.io.nifti import save_image
    from defacebench.imaging.templates import pydeface_template
    from deface_helpers import reoriented

    head, _ = pydeface_template()
    methods = ["afni", "fsl", "pydeface", "spm", "quickshear"]
    results = {}
    for codes in ("RAS", "LPS", "PIR", "oblique"):
        if codes == "oblique":
            from scipy.spatial.transform import Rotation

            rot = np.eye(4)
            rot[:3, :3] = Rotation.from_euler("x", 12, degrees=True).as_matrix()
            img, back = nib.Nifti1Image(np.asarray(head.dataobj), rot @ head.affine), None
        else:
            img, back = reoriented(head, codes)
        path = save_image(img, tmp_path / codes / "sub-01_T1w.nii.gz", dtype=np.float32)
        out = deface_subject(Subject(subject="01", age_years=1.0, path=path), tmp_path / f"out-{codes}", methods)
        masks = {m: np.asarray(nib.load(str(out["paths"][f"{m}_mask"])).dataobj) >= 0.5 for m in methods}
        results[codes] = {m: (nib.orientations.apply_orientation(v, back) if back is not None else v) for m, v in masks.items()}
        rows = {r["method"]: r for r in out["qc"]}
        assert rows["fsl"]["ears_removed"] == "yes" and rows["afni"]["ears_removed"] == "yes"
        assert rows["spm"]["ears_removed"] == "no" and rows["pydeface"]["ears_removed"] == "no"
        assert all(r["brain_removed_fraction"] < 0.001 for r in rows.values())
    for codes in ("LPS", "PIR", "oblique"):
        for m in methods:
            if codes == "oblique" and m == "quickshear":
                continue  # voxel-axis method: an oblique affine changes what "sagittal" means
            a, b = results[codes][m], results["RAS"][m]
            print(f"{codes} {m}: {100 * (a != b).mean():.3f}% of voxels differ, {100 * (a != b).sum() / max(1, (a | b).sum()):.2f}% of the removed region")
            assert (a != b).mean() < 0.01, (codes, m)


@pytest.fixture(scope="module")
def simulated_study(tmp_path_factory):
    """A coarse (3 mm) simulated cohort with ground-truth labels; two scans broken on purpose."""
    import gzip

    from defacebench.cli import main as cli

    root = tmp_path_factory.mktemp("simstudy")
    sim = root / "sim"
    assert cli(["simulate", str(sim), "--n", "5", "--seed", "2", "--voxel-mm", "3", "--base-heads", "robex"]) == 0
    (sim / "sub-001" / "anat" / "sub-001_T1w.nii.gz").write_bytes(b"garbage, not a NIfTI")
    broken = sim / "sub-002" / "anat" / "sub-002_T1w.nii.gz"
    raw = gzip.decompress(broken.read_bytes())
    broken.write_bytes(gzip.compress(raw[: 352 + 1000]))  # readable header, truncated voxels
    return root, sim


def test_cohort_acceptance_failures_and_rerun(simulated_study, capsys):
    """defacebench deface on simulated heads: the issue's acceptance figures from qc.tsv,
    broken scans in failures.tsv while the rest finish, and a rerun that skips finished scans."""
    import pandas as pd

    from defacebench.commands.deface import main

    root, sim = simulated_study
    out = root / "out"
    assert main([str(sim), str(out), "--jobs", "2", "--no-progress"]) == 0
    deriv = out / "derivatives" / "defacebench"
    qc = pd.read_csv(deriv / "qc.tsv", sep="\t", keep_default_na=False)
    failures = pd.read_csv(deriv / "failures.tsv", sep="\t")
    print(qc[["key", "method", "nose_removed_fraction", "brain_removed_fraction", "ears_removed_fraction", "ears_removed"]].to_string())
    # both are rejected when the cohort is read (its data checks read the voxels too), by file name
    assert set(failures["key"]) == {"sub-001_T1w", "sub-002_T1w"}, failures
    assert "unreadable" in " ".join(failures["reason"]) and "cannot read the voxel data" in " ".join(failures["reason"])
    assert sorted(qc["key"].unique()) == ["sub-003", "sub-004", "sub-005"]
    assert len(qc) == 3 * 5 and (qc["region_source"] == "ground_truth").all()
    by = qc.groupby("method")
    assert (by["nose_removed_fraction"].min()[["afni", "fsl", "pydeface"]] >= 0.8).all()
    assert (qc["brain_removed_fraction"] < 0.001).mean() >= 0.95
    for method, expected in (("afni", "yes"), ("fsl", "yes"), ("pydeface", "no"), ("spm", "no")):
        assert (qc.loc[qc["method"] == method, "ears_removed"] == expected).all(), method
    summary = pd.read_csv(deriv / "qc_summary.tsv", sep="\t").set_index("method")
    print(summary.to_string())
    assert (summary["brain_spared_fraction"] >= 0.95).all()
    assert (summary.loc[["afni", "fsl", "pydeface"], "nose_removed_min"] >= 0.8).all()
    assert list(summary.loc[["afni", "fsl", "pydeface", "spm"], "ears_removed_fraction"]) == [1.0, 1.0, 0.0, 0.0]
    stamps = {p: p.stat().st_mtime_ns for p in deriv.rglob("*_desc-deface_qc.tsv")}
    assert len(stamps) == 3
    capsys.readouterr()
    assert main([str(sim), str(out), "--jobs", "2", "--no-progress"]) == 0
    assert {p: p.stat().st_mtime_ns for p in deriv.rglob("*_desc-deface_qc.tsv")} == stamps
    assert len(pd.read_csv(deriv / "failures.tsv", sep="\t")) == 2


def test_already_defaced_and_skull_stripped_inputs_warn_and_write(simulated_study, tmp_path):
    """An fsl-defaced scan and a skull-stripped scan fed back in: warned in qc.tsv, outputs written."""
    import warnings

    from defacebench.cohort import Subject
    from defacebench.deface import deface_subject
    from defacebench import layout
    from defacebench.io.nifti import save_image

    root, sim = simulated_study
    out = root / "out"
    prefix = out / "derivatives" / "defacebench" / "sub-003" / "anat" / "sub-003"
    defaced = nib.load(f"{prefix}_desc-fsldefaced_T1w.nii.gz")
    original = nib.load(str(sim / "sub-003" / "anat" / "sub-003_T1w.nii.gz"))
    truth_brain = nib.load(str(sim / "derivatives" / "simulation" / "sub-003" / "anat" / "sub-003_desc-brain_mask.nii.gz"))
    stripped = np.asarray(original.dataobj) * (np.asarray(truth_brain.dataobj) > 0)
    cases = {"defaced": (defaced, "no face"), "stripped": (nib.Nifti1Image(stripped.astype(np.float32), original.affine), "skull-stripped")}
    methods = ["spm", "quickshear"]
    for name, (img, expected) in cases.items():
        path = save_image(img, tmp_path / name / "sub-003" / "anat" / "sub-003_T1w.nii.gz", dtype=np.float32)
        subject = Subject(subject="003", age_years=70.0, path=path)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = deface_subject(subject, tmp_path / f"out-{name}", methods, bids_root=sim)
        assert any(expected in str(w.message) for w in caught), [str(w.message) for w in caught]
        assert all(expected in row["warnings"] for row in result["qc"])
        paths = layout.scan_files(tmp_path / f"out-{name}", subject, methods)
        assert all(paths[f"{m}_{k}"].is_file() for m in methods for k in ("defaced", "face", "mask"))
