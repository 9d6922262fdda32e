"""Per-subject preprocessing, condition stores, resume and faults, on synthetic scans.

Each synthetic scan is a small oblique, anisotropic head (4-5 mm voxels, distinct axis
sizes) built directly in MNI space through a known subject -> MNI transform, with
its deface derivatives (brain mask, transform, face-only images of two methods)
written in the layout `defacebench deface` uses, so no registration or brain
extraction runs here.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from defacebench import layout
from defacebench.cohort import assign_splits, read_cohort, read_splits, write_splits
from defacebench.deface.runner import split_image
from defacebench.imaging.grids import GRIDS, apply_affine, grid_from_bounds
from defacebench.imaging.registration import save_transform
from defacebench.io.store import list_conditions, open_condition

METHODS = ("spm", "fsl")
CONDITIONS = ("raw", "skullstripped", "defaced-spm", "defaced-fsl", "face-spm", "face-fsl")
SHAPE = (41, 50, 47)


def rotation(deg: tuple[float, float, float]) -> np.ndarray:
    rx, ry, rz = np.deg2rad(deg)
    cx, sx, cy, sy, cz, sz = np.cos(rx), np.sin(rx), np.cos(ry), np.sin(ry), np.cos(rz), np.sin(rz)
    r = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]]) @ np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]]) @ np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    out = np.eye(4)
    out[:3, :3] = r
    return out


def native_affine(i: int) -> np.ndarray:
    """Oblique, anisotropic (4.4 x 5 x 4.8 mm), stored in a non-RAS voxel order (LPI-ish)."""
    base = np.diag([-4.4, 5.0, -4.8, 1.0])
    base[:3, 3] = [90.0, -125.0, 110.0]
    return rotation((3.0 * i, -2.0, 4.0)) @ base


def to_mni_matrix(i: int) -> np.ndarray:
    """A subject world -> MNI world matrix: rotation, scale, shift."""
    m = rotation((-4.0 + i, 5.0, -3.0 * i))
    m[:3, :3] *= 1.0 + 0.03 * (i % 3 - 1)
    m[:3, 3] = [2.0 * i, -3.0, 4.0 - i]
    return m


def synthetic_scan(i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """(T1w data, affine, brain mask, removal masks by method) of scan ``i``."""
    from scipy.ndimage import map_coordinates

    from defacebench.imaging.templates import mni_brain_mask

    affine = native_affine(i)
    to_mni = to_mni_matrix(i)
    ijk = np.indices(SHAPE, dtype=float).reshape(3, -1).T
    mni = apply_affine(to_mni @ affine, ijk)
    x, y, z = mni.T
    template = mni_brain_mask()
    tvox = apply_affine(np.linalg.inv(template.affine), mni).T
    brain = map_coordinates(np.asarray(template.dataobj, dtype=np.float32), tvox, order=1) >= 0.5
    head = (x / 82) ** 2 + ((y + 12) / 112) ** 2 + ((z + 15) / 118) ** 2 < 1
    rng = np.random.default_rng(i)
    data = np.where(head, 45.0 + 10 * np.cos(z / 20), 2.0) + np.where(brain, 55.0 + 15 * np.sin(y / 15), 0.0)
    data = data * np.exp(0.15 * x / 90 - 0.1 * (z / 120) ** 2) + rng.normal(0, 1.0, data.shape)
    removal = {
        "spm": ((-1.1 * y + 0.98 * z + 100) < 0).astype(np.float32),  # one oblique plane, spm_deface-like
        "fsl": (((np.abs(x) <= 60) & (y >= 40) & (z <= -30)) | (np.abs(x) >= 70)).astype(np.float32) * 0.75,  # soft, fsl-like boxes
    }
    shape = SHAPE
    return (np.clip(data, 0, None).reshape(shape).astype(np.float32), affine, brain.reshape(shape),
            {m: r.reshape(shape) for m, r in removal.items()})


def write_scan(bids: Path, study: Path, sub: str, i: int, derivatives: bool = True) -> None:
    from defacebench.cohort import Subject
    from defacebench.io.nifti import save_image

    data, affine, brain, removals = synthetic_scan(i)
    path = bids / f"sub-{sub}" / "anat" / f"sub-{sub}_T1w.nii.gz"
    save_image(data, path, affine=affine)
    if not derivatives:
        return
    subject = Subject(subject=sub, age_years=50.0, path=path)
    paths = layout.scan_files(study, subject, METHODS)
    save_image(brain.astype(np.uint8), paths["brain_mask"], affine=affine, dtype=np.uint8)
    save_transform(to_mni_matrix(i), paths["to_mni"])
    # pydeface's head registration of its template onto the subject (its world is close to MNI's)
    save_transform(np.linalg.inv(to_mni_matrix(i)), layout.scan_transforms(study, subject)["template_to_subject"])
    for method, removal in removals.items():
        defaced, face = split_image(data, removal, np.dtype(np.float32))
        save_image(defaced, paths[f"{method}_defaced"], affine=affine)
        save_image(face, paths[f"{method}_face"], affine=affine)
        save_image(removal, paths[f"{method}_mask"], affine=affine)


def make_study(root: Path, n: int = 6) -> tuple[Path, Path]:
    """A BIDS dataset of ``n`` synthetic scans and a study directory with their deface outputs."""
    bids, study = root / "bids", root / "study"
    bids.mkdir(parents=True)
    (bids / "dataset_description.json").write_text(json.dumps({"Name": "synthetic", "BIDSVersion": "1.9.0"}))
    rows = ["participant_id\tage\tsex"]
    for i in range(n):
        sub = f"{i + 1:02d}"
        rows.append(f"sub-{sub}\t{40 + 7 * i}\t{'MF'[i % 2]}")
        write_scan(bids, study, sub, i)
    (bids / "participants.tsv").write_text("\n".join(rows) + "\n")
    write_splits(assign_splits(read_cohort(bids), (0.5, 0.25, 0.25)), layout.splits_table(study))
    return bids, study


TEST_GRID = grid_from_bounds("test8mm", 8.0)


def run_study(bids: Path, study: Path, grid=TEST_GRID, jobs: int = 1, conditions=CONDITIONS, **kw):
    from defacebench.preprocess.stage import preprocess_study

    splits = read_splits(layout.splits_table(study))
    return preprocess_study(read_cohort(bids), study, grid, conditions, splits, jobs=jobs, progress=False, bias_resolution_mm=14.0, **kw)


def store_bytes(study: Path, grid: str) -> dict[str, bytes]:
    base = study / "stores" / grid
    return {p.name: p.read_bytes() for p in sorted(base.glob("*")) if p.suffix in (".npy", ".tsv")}


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, Path, object]:
    root = tmp_path_factory.mktemp("pp")
    bids, study = make_study(root)
    result = run_study(bids, study, mosaics=True)
    return bids, study, result


# --------------------------------------------------------------------------- stores
def test_stores_have_every_condition_in_splits_order(built) -> None:
    bids, study, result = built
    assert not result.reasons
    assert list_conditions(study, "test8mm") == sorted(CONDITIONS)
    splits = pd.read_csv(study / "splits.tsv", sep="\t", dtype=str, keep_default_na=False)
    for condition in CONDITIONS:
        store = open_condition(study, "test8mm", condition, verify=True)
        assert store.images.shape == (6, *TEST_GRID.shape) and store.images.dtype == np.float16
        np.testing.assert_array_equal(store.affine, TEST_GRID.affine)
        assert list(store.index["participant_id"]) == list(splits["participant_id"])
        assert list(store.index["split"]) == list(splits["split"])
        assert np.all(np.isfinite(store.images))


def test_defaced_plus_face_equals_raw_to_float16_precision(built) -> None:
    _, study, _ = built
    raw = open_condition(study, "test8mm", "raw").images.astype(np.float32)
    for method in METHODS:
        defaced = open_condition(study, "test8mm", f"defaced-{method}").images.astype(np.float32)
        face = open_condition(study, "test8mm", f"face-{method}").images.astype(np.float32)
        assert face.max() > 0.2 and (face > 0.05).sum() > 100, "the face-only image holds the face"
        # three float16 roundings: |d + f - r| <= 2^-11 (|d| + |f| + |r|)
        bound = 2.0**-11 * (np.abs(defaced) + np.abs(face) + np.abs(raw)) + 1e-6
        assert np.all(np.abs(defaced + face - raw) <= bound)
        assert not np.allclose(defaced, raw), "defacing removed something"


def test_normalisation_is_shared_and_brain_median_is_one(built) -> None:
    _, study, result = built
    from scipy.ndimage import binary_dilation, binary_erosion

    from defacebench.imaging.templates import brain_mask_on_grid as template_mask

    raw = open_condition(study, "test8mm", "raw").images.astype(np.float32)
    skull = open_condition(study, "test8mm", "skullstripped").images.astype(np.float32)
    inside = template_mask(TEST_GRID)
    for i in range(len(raw)):
        assert 0.85 < np.median(skull[i][inside & (skull[i] > 0)]) < 1.15
        # skullstripped is raw deep inside the brain (same scale, no own statistics), zero far outside it
        deep = binary_erosion(inside, iterations=1)
        same = np.isclose(skull[i][deep], raw[i][deep], rtol=2e-3)
        assert same.mean() > 0.9
        far = ~binary_dilation(inside, iterations=2)
        assert np.all(skull[i][far] == 0) and raw[i][far].max() > 0.3
    scales = [v["norm_scale"] for v in result.values.values()]
    assert len(set(np.round(scales, 3))) > 1  # one scale per scan, not a constant


def test_brain_is_aligned_to_the_template(built) -> None:
    _, study, result = built
    qc = pd.read_csv(study / "derivatives" / "defacebench" / "qc_preprocess.tsv", sep="\t", keep_default_na=False)
    assert list(qc["status"]) == ["ok"] * 6
    assert (qc["brain_dice"].astype(float) > 0.85).all()
    assert set(qc["grid"]) == {"test8mm"}


def test_qc_mosaics_exist_under_derivatives(built) -> None:
    _, study, result = built
    names = sorted(p.name for p in result.mosaics)
    assert names == sorted(f"preprocess_test8mm_{c}.png" for c in CONDITIONS)
    for path in result.mosaics:
        assert path.parent == study / "derivatives" / "defacebench" / "qc"
        assert path.stat().st_size > 5000


def test_matches_an_independent_resampling(built) -> None:
    """Raw store row == bias-free reference: N4 field is smooth, so compare after removing it roughly."""
    bids, study, _ = built
    from defacebench.layout import work_file as work_path
    from defacebench.preprocess.work import read_work_meta
    from defacebench.imaging.resample import resample_to

    store = open_condition(study, "test8mm", "face-spm")
    row = list(store.index["participant_id"]).index("sub-03")
    meta = read_work_meta(work_path(study, "test8mm", "sub-03"))
    face = nib.load(str(study / "derivatives/defacebench/sub-03/anat/sub-03_desc-spmface_T1w.nii.gz"))
    # independent: scipy affine_transform through the world matrix (no bias, no antialias needed at 8 mm from 4-5 mm)
    reference = resample_to(face, to_mni_matrix(2), TEST_GRID.affine, TEST_GRID.shape, order=1) / meta["norm_scale"]
    got = store.images[row].astype(np.float32)
    support = reference > 0.3
    ratio = got[support] / reference[support]  # = 1 / bias field there: smooth, near 1
    assert support.sum() > 50
    assert 0.7 < np.median(ratio) < 1.3 and np.std(ratio) < 0.2
    assert np.corrcoef(got.ravel(), reference.ravel())[0, 1] > 0.97


# --------------------------------------------------------------------------- resume, faults
def test_rerun_skips_finished_scans_and_keeps_stores(tmp_path: Path) -> None:
    bids, study = make_study(tmp_path, n=3)
    first = run_study(bids, study, mosaics=False)
    assert all(not v["skipped"] for v in first.values.values())
    before = store_bytes(study, "test8mm")
    again = run_study(bids, study, mosaics=False)
    assert all(v["skipped"] for v in again.values.values())
    assert sorted(again.stores.unchanged) == sorted(CONDITIONS) and not again.stores.written
    assert store_bytes(study, "test8mm") == before
    # a changed input redoes that scan (and only it), and the stores are rewritten
    face = study / "derivatives/defacebench/sub-02/anat/sub-02_desc-spmface_T1w.nii.gz"
    img = nib.load(str(face))
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj) * 0.5, img.affine), str(face))
    third = run_study(bids, study, mosaics=False)
    assert {k: v["skipped"] for k, v in third.values.items()} == {"sub-01": True, "sub-02": False, "sub-03": True}
    assert "face-spm" in third.stores.written


def test_faulty_scans_fail_alone_and_are_excluded(tmp_path: Path) -> None:
    bids, study = make_study(tmp_path, n=6)
    anat = study / "derivatives" / "defacebench"
    # 02: empty brain extraction; 03: wrong transform (registration failed); 04: unreadable face image; 05: no deface outputs
    brain = anat / "sub-02/anat/sub-02_desc-brain_mask.nii.gz"
    img = nib.load(str(brain))
    nib.save(nib.Nifti1Image(np.zeros(img.shape, np.uint8), img.affine), str(brain))
    bad = to_mni_matrix(2)
    bad[:3, 3] += [0, 60, -50]
    save_transform(bad, anat / "sub-03/anat/sub-03_from-T1w_to-MNI152NLin2009aSym_mode-image_xfm.txt")
    (anat / "sub-04/anat/sub-04_desc-fslface_T1w.nii.gz").write_bytes(b"not a nifti")
    shutil.rmtree(anat / "sub-05")
    result = run_study(bids, study, mosaics=False)
    assert set(result.reasons) == {"sub-02", "sub-03", "sub-04", "sub-05"}
    assert "brain extraction is empty" in result.reasons["sub-02"]
    assert "registration to MNI failed" in result.reasons["sub-03"]
    assert "unreadable fsl face-only image" in result.reasons["sub-04"]
    assert "missing deface output" in result.reasons["sub-05"]
    store = open_condition(study, "test8mm", "raw")
    assert sorted(store.index["participant_id"]) == ["sub-01", "sub-06"]
    excluded = pd.read_csv(study / "stores/test8mm/excluded.tsv", sep="\t")
    assert sorted(excluded["key"]) == ["sub-02", "sub-03", "sub-04", "sub-05"]
    failures = pd.read_csv(anat / "failures.tsv", sep="\t")
    assert sorted(failures["key"]) == ["sub-02", "sub-03", "sub-04", "sub-05"] and set(failures["stage"]) == {"preprocess"}
    qc = pd.read_csv(anat / "qc_preprocess.tsv", sep="\t", keep_default_na=False)
    assert dict(zip(qc["key"], qc["status"]))["sub-03"] == "failed"


def test_unreadable_t1w_fails_with_reason(tmp_path: Path) -> None:
    bids, study = make_study(tmp_path, n=2)
    cohort = read_cohort(bids)  # read while the image is fine, then break it
    path = bids / "sub-02/anat/sub-02_T1w.nii.gz"
    path.write_bytes(path.read_bytes()[:400])
    from defacebench.preprocess.stage import preprocess_study

    result = preprocess_study(cohort, study, TEST_GRID, CONDITIONS, read_splits(layout.splits_table(study)), jobs=1, progress=False, mosaics=False, bias_resolution_mm=14.0)
    assert set(result.reasons) == {"sub-02"} and "unreadable" in result.reasons["sub-02"]


def die_while_writing(task):
    """Engine task for the kill test: sub-03's worker is SIGKILLed halfway through its work-file write."""
    from defacebench.preprocess import scan as pipeline
    from defacebench.preprocess import work

    if task.key == "sub-03":
        original = np.lib.format.write_array

        def half_then_die(fh, array, **kwargs):  # inside the zip member of the first array
            fh.write(b"\x93NUMPY half an array")
            fh.flush()
            os.kill(os.getpid(), signal.SIGKILL)

        work.np.lib.format.write_array = half_then_die
        try:
            return pipeline.preprocess_subject(task)
        finally:
            work.np.lib.format.write_array = original
    return pipeline.preprocess_subject(task)


def test_killed_worker_then_rerun_gives_identical_stores(tmp_path: Path) -> None:
    from defacebench.engine import run_tasks
    from defacebench.layout import work_dir
    from defacebench.preprocess.scan import PreprocessTask

    bids, study = make_study(tmp_path / "a", n=3)
    clean = tmp_path / "b" / "study"
    shutil.copytree(study, clean)
    for path in clean.rglob("*"):  # same inputs, same mtimes (part of the input fingerprint)
        os.utime(path, ns=((study / path.relative_to(clean)).stat().st_atime_ns, (study / path.relative_to(clean)).stat().st_mtime_ns))
    cohort = read_cohort(bids)
    tasks = [PreprocessTask(s, str(study), TEST_GRID, CONDITIONS, 14.0) for s in cohort.subjects]
    killed = run_tasks(die_while_writing, tasks, keys=[t.key for t in tasks], jobs=2, progress=False)
    assert "sub-03" in killed.failed_keys and "died" in {f.key: f.reason for f in killed.failures}["sub-03"]
    assert not (work_dir(study, "test8mm") / "sub-03.npz").exists()
    resumed = run_study(bids, study, jobs=2, mosaics=False)
    assert not resumed.reasons
    run_study(bids, clean, jobs=2, mosaics=False)
    assert store_bytes(study, "test8mm") == store_bytes(clean, "test8mm")


def test_corrupt_work_file_is_redone(tmp_path: Path) -> None:
    from defacebench.layout import work_file as work_path

    bids, study = make_study(tmp_path, n=2)
    run_study(bids, study, mosaics=False)
    before = store_bytes(study, "test8mm")
    work_path(study, "test8mm", "sub-01").write_bytes(b"PK\x03\x04 truncated")
    result = run_study(bids, study, mosaics=False)
    assert result.values["sub-01"]["skipped"] is False
    assert store_bytes(study, "test8mm") == before


def test_conditions_subset_and_adding_one_later(tmp_path: Path) -> None:
    bids, study = make_study(tmp_path, n=2)
    run_study(bids, study, conditions=("raw", "face-spm"), mosaics=False)
    assert list_conditions(study, "test8mm") == ["face-spm", "raw"]
    later = run_study(bids, study, conditions=("raw", "face-spm", "defaced-fsl"), mosaics=False)
    assert all(not v["skipped"] for v in later.values.values())  # the work files lacked defaced-fsl
    assert list_conditions(study, "test8mm") == ["defaced-fsl", "face-spm", "raw"]


# --------------------------------------------------------------------------- command line
def test_cli_preprocess_builds_stores(tmp_path: Path, capsys) -> None:
    from defacebench.commands.preprocess import main

    bids, study = make_study(tmp_path, n=2)
    code = main([str(bids), str(study), "--grid", "mni4mm", "--methods", "spm,fsl", "--conditions", "raw", "face-spm,defaced-spm",
                 "--jobs", "1", "--no-progress", "--no-mosaics"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "preprocessed 2 of 2 scans into mni4mm 50x63x62" in out
    assert list_conditions(study, "mni4mm") == ["defaced-spm", "face-spm", "raw"]
    assert open_condition(study, "mni4mm", "raw").images.shape == (2, *GRIDS["mni4mm"].shape)


def test_cli_rejects_bad_options(tmp_path: Path, capsys) -> None:
    from defacebench.commands.preprocess import main

    bids, study = make_study(tmp_path, n=1)
    assert main([str(bids), str(study), "--grid", "mni3mm"]) == 2
    assert "unknown grid" in capsys.readouterr().err
    assert main([str(bids), str(study), "--conditions", "face-magic"]) == 2
    assert "unknown defacing method" in capsys.readouterr().err
    assert main([str(bids), str(study), "--conditions", "blurred"]) == 2


def test_cli_stops_without_splits_or_deface_outputs(tmp_path: Path, capsys) -> None:
    """preprocess never writes splits.tsv nor runs defacing behind the user's back: it says what to run."""
    from defacebench.commands.preprocess import main

    bids, study = make_study(tmp_path, n=3)
    layout.splits_table(study).unlink()
    argv = [str(bids), str(study), "--grid", "mni4mm", "--methods", "spm", "--jobs", "1", "--no-progress", "--no-mosaics"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "defacebench cohort" in err and len(err.strip().splitlines()) == 1
    assert not layout.splits_table(study).exists()

    write_splits(assign_splits(read_cohort(bids), (0.34, 0.33, 0.33)), layout.splits_table(study))
    face = layout.scan_files(study, read_cohort(bids).subjects[1], ["spm"])["spm_face"]
    face.unlink()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "defacebench deface" in err and "sub-02" in err and "--methods spm" in err
    assert not layout.store_dir(study, "mni4mm").exists()

    # a scan the deface stage failed on is left out (with its reason), not a reason to stop
    from defacebench.engine import Failure, write_failures

    write_failures(layout.failures_table(study), [Failure("sub-02", "deface", "registration to MNI failed")], stage="deface")
    assert main(argv) == 0
    excluded = pd.read_csv(layout.store_excluded(study, "mni4mm"), sep="\t")
    assert list(excluded["key"]) == ["sub-02"] and "defacing failed" in excluded["reason"][0]


def test_geometry_control_is_the_average_face_placed_by_the_head_registration(tmp_path: Path) -> None:
    """facemask-<m>: the average face within the removal region, placed by the head registration,
    moved by the face-only image's transform; no intensity of the subject enters it."""
    bids, study = make_study(tmp_path, n=2)
    run_study(bids, study, conditions=("raw", "face-spm", "facemask-spm", "facemask-fsl"), mosaics=False)
    assert list_conditions(study, "test8mm") == ["face-spm", "facemask-fsl", "facemask-spm", "raw"]
    for method in ("spm", "fsl"):  # fsl's removal mask is soft (0.75): binarised at 0.5
        mask = open_condition(study, "test8mm", f"facemask-{method}").images.astype(np.float32)
        assert mask.min() >= 0 and mask.max() <= 1 and mask.max() > 0.99
    face = open_condition(study, "test8mm", "face-spm").images.astype(np.float32)
    mask = open_condition(study, "test8mm", "facemask-spm").images.astype(np.float32)
    assert np.all(mask[face == 0] < 1e-3)  # nothing outside the region the method removed
    # the subject's intensities never enter: a brighter face leaves the control as it was
    t1w = bids / "sub-01/anat/sub-01_T1w.nii.gz"
    img = nib.load(str(t1w))
    data = np.asarray(img.dataobj, dtype=np.float32)
    data[data > 30] *= 1.3
    nib.save(nib.Nifti1Image(data, img.affine), str(t1w))
    run_study(bids, study, conditions=("raw", "face-spm", "facemask-spm"), mosaics=False)
    brighter = open_condition(study, "test8mm", "facemask-spm").images.astype(np.float32)
    np.testing.assert_array_equal(brighter, mask)
    assert not np.array_equal(open_condition(study, "test8mm", "face-spm").images[0], face[0])
    # where the head registration puts the face does enter it
    subject = read_cohort(bids).subjects[0]
    shift = np.eye(4)
    shift[1, 3] = 12.0
    save_transform(shift @ np.linalg.inv(to_mni_matrix(0)), layout.scan_transforms(study, subject)["template_to_subject"])
    run_study(bids, study, conditions=("raw", "face-spm", "facemask-spm"), mosaics=False)
    moved = open_condition(study, "test8mm", "facemask-spm").images.astype(np.float32)
    assert np.abs(moved[0] - mask[0]).sum() > 0.05 * mask[0].sum() and np.array_equal(moved[1], mask[1])


def _head_registration_as(study: Path, bids: Path, shift_mm: float = 0.0) -> None:
    """Write each scan's pydeface head registration so that head placement equals its brain
    transform (``shift_mm`` = 0) or sits ``shift_mm`` further forward."""
    from defacebench.imaging.registration import load_transform
    from defacebench.imaging.templates import pydeface_to_mni

    for subject in read_cohort(bids).subjects:
        to_mni = load_transform(layout.scan_files(study, subject, METHODS)["to_mni"])
        shift = np.eye(4)
        shift[1, 3] = shift_mm
        save_transform(np.linalg.inv(shift @ to_mni) @ pydeface_to_mni(), layout.scan_transforms(study, subject)["template_to_subject"])


def test_head_placement_moves_face_images_only(tmp_path: Path) -> None:
    """face_placement="head": face-only images and geometry controls go through pydeface's head
    registration; every other condition is byte-identical to the brain placement's."""
    conditions = ("raw", "defaced-spm", "face-spm", "facemask-spm")
    stores = {}
    for name, placement, shift in (("brain", "brain", 0.0), ("same", "head", 0.0), ("brain12", "brain", 12.0), ("moved", "head", 12.0)):
        bids, study = make_study(tmp_path / name, n=2)
        _head_registration_as(study, bids, shift)
        run_study(bids, study, conditions=conditions, mosaics=False, face_placement=placement)
        stores[name] = {c: open_condition(study, "test8mm", c).images.astype(np.float32) for c in conditions}
    for c in conditions:  # head placement equal to the brain transform: the same images
        np.testing.assert_allclose(stores["same"][c], stores["brain"][c], atol=2e-3)
    for c in ("raw", "defaced-spm"):
        np.testing.assert_array_equal(stores["moved"][c], stores["brain12"][c])
    for c in ("face-spm", "facemask-spm"):
        assert np.abs(stores["moved"][c] - stores["brain12"][c]).sum() > 0.2 * np.abs(stores["brain12"][c]).sum(), c
    # the face-only image placed 12 mm further forward in MNI y: its centre of mass moves by about that
    ys = np.arange(stores["brain"]["face-spm"].shape[2]) * 8.0
    com = lambda a: float((a.sum(axis=(0, 1, 3)) * ys).sum() / a.sum())  # noqa: E731
    assert 8.0 < com(stores["moved"]["face-spm"]) - com(stores["brain12"]["face-spm"]) < 16.0


def test_head_placement_needs_and_asks_for_pydeface(tmp_path: Path) -> None:
    from defacebench.conditions import deface_methods, parse_condition
    from defacebench.preprocess.scan import PreprocessTask, missing_inputs, needs_head_registration

    faces = [parse_condition(c) for c in ("raw", "face-spm")]
    assert deface_methods(faces, ("spm",)) == ("spm",)
    assert deface_methods(faces, ("spm",), face_placement="head") == ("spm", "pydeface")
    assert deface_methods([parse_condition("defaced-spm")], ("spm",), face_placement="head") == ("spm",)
    assert needs_head_registration(["raw", "face-spm"], "head") and not needs_head_registration(["raw", "defaced-spm"], "head")
    bids, study = make_study(tmp_path, n=1)
    subject = read_cohort(bids).subjects[0]
    layout.scan_transforms(study, subject)["template_to_subject"].unlink()
    assert missing_inputs(subject, study, ("spm",)) == []
    assert missing_inputs(subject, study, ("spm",), head_registration=True) == ["template_to_subject"]
    with pytest.raises(ValueError, match="face_placement"):
        PreprocessTask(subject, str(study), TEST_GRID, ("raw",), face_placement="skull")


def test_cut_placement_moves_only_the_methods_cut_by_the_head_registration(tmp_path: Path, monkeypatch) -> None:
    """face_placement="cut" (issue 22): a method whose cut the head registration placed has its
    face-only image and control placed by the head, every other method's stay as the brain
    placement's (byte-identical). The fixture has no pydeface: fsl stands in for it."""
    from defacebench import conditions as conditions_module
    from defacebench.conditions import head_placed

    assert head_placed("face-pydeface", "cut") and head_placed("facemask-pydeface", "cut")
    assert not head_placed("face-spm", "cut") and not head_placed("defaced-pydeface", "cut") and head_placed("face-spm", "head")
    monkeypatch.setattr(conditions_module, "HEAD_REGISTERED_CUTS", ("fsl",))
    conditions = ("raw", "face-spm", "facemask-spm", "face-fsl", "facemask-fsl")
    stores = {}
    for name, placement in (("brain", "brain"), ("cut", "cut")):
        bids, study = make_study(tmp_path / name, n=2)
        _head_registration_as(study, bids, 12.0)
        run_study(bids, study, conditions=conditions, mosaics=False, face_placement=placement)
        stores[name] = {c: open_condition(study, "test8mm", c).images.astype(np.float32) for c in conditions}
    for c in ("raw", "face-spm", "facemask-spm"):
        np.testing.assert_array_equal(stores["cut"][c], stores["brain"][c])
    for c in ("face-fsl", "facemask-fsl"):
        assert np.abs(stores["cut"][c] - stores["brain"][c]).sum() > 0.2 * np.abs(stores["brain"][c]).sum(), c


def _move_spm_cut(study: Path, bids: Path, mm_per_scan: float) -> None:
    """Rewrite each scan's spm cut so that its plane lies ``mm_per_scan`` x i further down and
    back for scan i (ages rise with i): the cut's position carries age, the tissue does not."""
    from defacebench.cohort import Subject
    from defacebench.io.nifti import save_image

    for i, sub in enumerate(read_cohort(bids).subjects):
        data, affine, _, _ = synthetic_scan(i)
        ijk = np.indices(SHAPE, dtype=float).reshape(3, -1).T
        _, y, z = apply_affine(to_mni_matrix(i) @ affine, ijk).T
        removal = ((-1.1 * y + 0.98 * z + 100 + mm_per_scan * i) < 0).astype(np.float32).reshape(SHAPE)
        paths = layout.scan_files(study, Subject(subject=sub.subject, age_years=sub.age_years, path=sub.path), METHODS)
        defaced, face = split_image(data, removal, np.dtype(np.float32))
        for name, image in (("defaced", defaced), ("face", face), ("mask", removal)):
            save_image(image, paths[f"spm_{name}"], affine=affine)


def test_common_region_removes_a_cut_that_moves_with_age(tmp_path: Path) -> None:
    """face_placement="common" (issue 22): a cut whose position follows age (geometry only) leaves
    no age in the face-only store: every row keeps the same region, where each scan's own tissue
    is kept unchanged; under "head" the rows' extent follows the cut."""
    from scipy import stats

    conditions = ("raw", "face-spm", "facemask-spm")
    stores = {}
    for placement in ("head", "common"):
        bids, study = make_study(tmp_path / placement, n=4)
        _head_registration_as(study, bids, 0.0)
        _move_spm_cut(study, bids, 10.0)
        result = run_study(bids, study, conditions=conditions, mosaics=False, face_placement=placement)
        stores[placement] = {c: open_condition(study, "test8mm", c).images.astype(np.float32) for c in conditions}
    assert set(result.stores.regions) == {"spm"} and result.stores.regions["spm"][1] == "sub-04"  # the smallest cut bounds the region
    assert result.stores.regions["spm"][2] > 0
    ages = open_condition(study, "test8mm", "raw").index["age"].to_numpy(float)
    region = np.asarray(nib.load(str(layout.store_common_region(study, "test8mm", "spm"))).dataobj) > 0
    head, common = stores["head"]["face-spm"], stores["common"]["face-spm"]
    extent = lambda rows: [(row > 1e-3).sum() for row in rows]  # noqa: E731
    assert stats.spearmanr(ages, extent(head))[0] < -0.99  # the moving cut: less removed with age
    from defacebench.preprocess import work

    works = [layout.work_file(study, "test8mm", f"sub-{k:02d}") for k in range(1, 5)]
    seen = np.logical_and.reduce([work.read_work_image(p, work.FIELD_OF_VIEW_MEMBER) >= 0.99 for p in works]) & region
    assert len(set(extent(common[:, seen]))) == 1 and seen.sum() == extent(common[:, seen])[0] > 20  # where all imaged: one region
    assert np.all(common[:, ~region] == 0)
    np.testing.assert_array_equal(common[:, region], head[:, region])  # the tissue itself untouched
    np.testing.assert_array_equal(stores["common"]["raw"], stores["head"]["raw"])
    control = stores["common"]["facemask-spm"]  # the average face, inside the same region for every scan
    assert np.all(control[:, ~region] == 0) and np.all(control[:, region].sum(axis=1) > 0)


def test_common_region_names_the_one_scan_that_shrinks_it(tmp_path: Path) -> None:
    from defacebench.conditions import region_member
    from defacebench.preprocess import work
    from defacebench.preprocess.stores import common_region

    shape = (7, 8, 9)
    wide = np.zeros(shape, np.float16)
    wide[:, 4:, :] = 1
    narrow = wide.copy()
    narrow[:, 4:6, :] = 0.5  # its cut stops short there (an edge voxel: below REGION_INSIDE)
    paths = []
    seen = np.ones(shape, np.float16)
    seen[:, :, 7:] = 0  # no scan imaged the top two planes, which do not count
    for k, mask in enumerate((wide, narrow, wide, wide)):
        paths.append(tmp_path / f"sub-{k}.npz")
        work.write_work(paths[-1], {region_member("fsl"): mask * seen, work.FIELD_OF_VIEW_MEMBER: seen}, {"key": f"sub-{k}"})
    region, gains = common_region(paths, "fsl")
    assert region.sum() == 7 * 2 * 7 and not region[:, 4:6].any() and not region[:, :, 7:].any()
    assert list(gains) == [0, 7 * 2 * 7, 0, 0]


def test_common_region_is_not_bounded_by_a_short_field_of_view(tmp_path: Path) -> None:
    """A scan whose image stops short (its chin outside the field of view) does not shrink the
    common region for everyone: beyond an image nothing is known, which is not a cut edge."""
    from defacebench.cohort import Subject

    regions = {}
    for name, crop in (("full", 0), ("short", 4)):
        bids, study = make_study(tmp_path / name, n=3)
        _head_registration_as(study, bids, 0.0)
        if crop:  # the last voxel planes of scan 1 are its lowest (the affine's third axis points down)
            sub = read_cohort(bids).subjects[1]
            paths = layout.scan_files(study, Subject(subject=sub.subject, age_years=sub.age_years, path=sub.path), METHODS)
            for path in [Path(sub.path), paths["brain_mask"], *(paths[f"{m}_{k}"] for m in METHODS for k in ("defaced", "face", "mask"))]:
                img = nib.load(str(path))
                nib.save(nib.Nifti1Image(np.asarray(img.dataobj)[:, :, :-crop], img.affine, img.header), str(path))
        run_study(bids, study, conditions=("raw", "face-spm"), mosaics=False, face_placement="common")
        regions[name] = np.asarray(nib.load(str(layout.store_common_region(study, "test8mm", "spm"))).dataobj) > 0
        if crop:
            face = open_condition(study, "test8mm", "face-spm").images.astype(np.float32)
            assert (face[1] != 0).sum() < (face[0] != 0).sum()  # its region lacks the part it did not image
    assert regions["full"].sum() > 20 and (regions["short"] ^ regions["full"]).sum() < 0.02 * regions["full"].sum()
