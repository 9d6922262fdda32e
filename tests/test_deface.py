"""Defacing: MNI definitions, quickshear vs the package, defaced + face == input, the runner, the CLI."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from defacebench.cohort import Subject
from defacebench import layout
from defacebench.deface import deface_subject, qc, split_image
from defacebench.deface.mni_regions import afni_box, fsl_boxes, spm_plane
from defacebench.deface.quickshear import shear_removal
from defacebench.io.nifti import save_image
from deface_helpers import reoriented, robex_head


def test_mni_region_definitions_at_known_points():
    pts = np.array([[0, 90, -10], [75, 0, 0], [75, 0, -100], [0, 0, 50], [0, 70, -100], [0, -70, -100]], dtype=float).T
    assert fsl_boxes(pts, bigfov=True).tolist() == [True, True, True, False, True, False]
    assert fsl_boxes(pts, bigfov=False).tolist() == [True, True, False, False, False, False]
    assert afni_box(pts).tolist() == [False, False, True, False, True, False]
    assert spm_plane(pts).tolist() == [True, False, False, False, True, False]


def test_quickshear_equals_package_on_cubic_grid():
    import quickshear

    head, brain = robex_head()
    n = 120
    cube = np.zeros((n, n, n), dtype=np.float32)
    cube_brain = np.zeros((n, n, n), dtype=bool)
    src = np.asarray(head.dataobj)[::1, :, :]
    sl = tuple(slice(0, min(n, s)) for s in src.shape)
    cube[sl] = src[sl][..., :n] if src.shape[2] >= n else src[sl]
    cube_brain[sl] = brain[sl]
    affine = np.diag([-1.5, 1.5, 1.5, 1.0])
    anat = nib.Nifti1Image(cube, affine)
    package = np.asarray(quickshear.quickshear(anat, nib.Nifti1Image(cube_brain.astype(np.uint8), affine), 10).dataobj)
    ours = shear_removal(cube_brain, affine, 10)
    np.testing.assert_array_equal(package == 0, (cube == 0) | ours)
    assert ours.any() and not (ours & cube_brain).any()


def test_quickshear_non_cubic_grid_and_orientations():
    head, brain = robex_head()
    removal = shear_removal(brain, head.affine)
    assert 0.02 < removal.mean() < 0.35 and not (removal & brain).any()
    for codes in ("RAS", "PIR", "LPS"):
        img, back = reoriented(nib.Nifti1Image(brain.astype(np.uint8), head.affine), codes)
        other = nib.orientations.apply_orientation(shear_removal(np.asarray(img.dataobj) > 0, img.affine), back)
        assert (other != removal).mean() < 0.01


@pytest.mark.parametrize("dtype", [np.int16, np.float32])
def test_split_image_sums_to_input(dtype):
    rng = np.random.default_rng(0)
    data = (rng.random((7, 8, 9)) * 1000).astype(dtype).astype(np.float32)
    removal = rng.random((7, 8, 9)).astype(np.float32)
    defaced, face = split_image(data, removal, np.dtype(dtype))
    # summed in the images' own type, as a reader would
    total = defaced.astype(np.int64) + face if np.issubdtype(dtype, np.integer) else defaced + face
    np.testing.assert_array_equal(total, data.astype(total.dtype))
    assert defaced.dtype == dtype


def test_split_image_binary_fast_path_equals_the_general_formula():
    """A 0/1 removal takes a shortcut for integer images: the same integers as rint(x * (1 - removal))."""
    rng = np.random.default_rng(1)
    data = np.rint(rng.normal(300, 400, (7, 8, 9))).astype(np.float32)  # negative values too
    removal = (rng.random((7, 8, 9)) < 0.4).astype(np.float32)
    defaced, face = split_image(data, removal, np.dtype(np.int16))
    original = np.rint(data).astype(np.int64)
    expected = np.rint(original * (1.0 - removal)).astype(np.int64)
    np.testing.assert_array_equal(defaced, expected.astype(np.int16))
    np.testing.assert_array_equal(face, (original - expected).astype(np.int16))
    assert defaced.dtype == face.dtype == np.int16


@pytest.fixture(scope="module")
def robex_defaced(tmp_path_factory):
    """ROBEX head defaced by fsl, spm, quickshear, pydeface with its atlas brain mask (no deepbet)."""
    out = tmp_path_factory.mktemp("study")
    head, brain = robex_head()
    path = save_image(head, out / "bids" / "sub-01" / "anat" / "sub-01_T1w.nii.gz", dtype=np.int16)
    subject = Subject(subject="01", age_years=60.0, path=path)
    methods = ["fsl", "spm", "quickshear", "pydeface"]
    paths = layout.scan_files(out, subject, methods)
    saved = nib.load(str(path))
    save_image(brain.astype(np.uint8), paths["brain_mask"], affine=saved.affine, dtype=np.uint8)
    result = deface_subject(subject, out, methods)
    return out, subject, methods, result, saved


def test_runner_outputs_sum_to_input(robex_defaced):
    out, subject, methods, result, saved = robex_defaced
    original = np.asarray(saved.dataobj)
    for m in methods:
        paths = result["paths"]
        defaced, face, mask = (nib.load(str(paths[f"{m}_{k}"])) for k in ("defaced", "face", "mask"))
        assert defaced.shape == original.shape and np.allclose(defaced.affine, saved.affine)
        np.testing.assert_array_equal(np.asarray(defaced.dataobj).astype(np.int32) + np.asarray(face.dataobj), original)
        assert 0 <= float(np.min(mask.dataobj)) and float(np.max(mask.dataobj)) <= 1
    assert paths["qc_png"].stat().st_size > 10_000


def test_runner_qc_brain_spared_and_ears(robex_defaced):
    out, subject, methods, result, _ = robex_defaced
    table = pd.read_csv(result["paths"]["qc_tsv"], sep="\t").set_index("method")
    assert (table["brain_removed_fraction"] < 0.001).all(), table["brain_removed_fraction"]
    assert table.loc["fsl", "ears_removed"] == "yes"
    assert table.loc["spm", "ears_removed"] == "no" and table.loc["pydeface", "ears_removed"] == "no"
    print(table[["nose_removed_fraction", "face_removed_fraction", "ears_removed_fraction", "brain_removed_fraction"]])
    # the nose tip (most anterior mid-face tissue): every method removes it
    assert (table["nose_removed_fraction"] > 0.8).all(), table["nose_removed_fraction"]
    assert table.loc["pydeface", "face_removed_fraction"] > 0.2
    assert table["registration_dice"].min() > 0.8


def test_runner_skips_complete(robex_defaced):
    out, subject, methods, result, _ = robex_defaced
    again = deface_subject(subject, out, methods)
    assert again["skipped"] and len(again["qc"]) == len(methods)


def test_cli_bad_input_exit_2(tmp_path, capsys):
    from defacebench.commands.deface import main

    assert main([str(tmp_path / "missing"), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "error" in err
    assert main([str(tmp_path), str(tmp_path / "out"), "--methods", "nope"]) == 2


def test_native_backend_refuses_missing_tools(tmp_path, tiny_bids):
    from defacebench.commands.deface import main
    from defacebench.deface.native import available

    if available("fsl"):
        pytest.skip("fsl_deface installed")
    assert main([str(tiny_bids), str(tmp_path / "out"), "--methods", "fsl", "--backend", "native"]) == 2


@pytest.mark.parametrize("method", ["pydeface", "fsl", "afni", "spm"])
def test_native_tool_runs_when_installed(method, tmp_path):
    from defacebench.deface.native import available, removal_mask

    if not available(method):
        pytest.skip(f"real {method} not installed")
    head, _ = robex_head()
    removal = removal_mask(method, head)
    assert removal.shape == head.shape and 0 < removal.mean() < 0.5


def test_input_warnings_skull_stripped_and_defaced():
    from defacebench.deface.qc import input_warnings

    shape = (20, 20, 20)
    brain = np.zeros(shape, dtype=bool)
    brain[5:15, 5:15, 8:18] = True
    head = np.zeros(shape, dtype=bool)
    head[2:18, 2:20, 2:19] = True
    face = np.zeros(shape, dtype=bool)
    face[2:18, 15:20, 2:8] = True
    nose = np.zeros(shape, dtype=bool)
    nose[9:11, 18:20, 4:7] = True
    regions = {"face": face, "nose": nose, "ears": np.zeros(shape, dtype=bool)}
    assert input_warnings(head, brain, regions, voxel_ml=1.0) == []
    assert "skull-stripped" in input_warnings(brain, brain, regions, voxel_ml=1.0)[0]
    # labels mark where the face was; the head mask says whether it is still there
    defaced = head & ~face
    assert "no face" in input_warnings(defaced, brain, regions, voxel_ml=1.0)[0]
    no_nose = head & ~nose
    assert "no face" in input_warnings(no_nose, brain, regions, voxel_ml=1.0)[0]


def test_failed_registration_reported_not_crash(tmp_path):
    """A registration whose brain Dice to the MNI mask is < 0.8 fails that scan in failures.tsv;
    methods that need no registration are still written, and other scans go on."""
    from defacebench.cohort import Cohort
    from defacebench.deface import deface_cohort
    from defacebench.engine import read_failures
    from defacebench.io.errors import StageError
    from defacebench.imaging.registration import save_transform

    head, brain = robex_head()
    path = save_image(head, tmp_path / "bids" / "sub-01" / "anat" / "sub-01_T1w.nii.gz", dtype=np.int16)
    subject = Subject(subject="01", age_years=60.0, path=path)
    paths = layout.scan_files(tmp_path / "out", subject, ["spm", "quickshear"])
    saved = nib.load(str(path))
    save_image(brain.astype(np.uint8), paths["brain_mask"], affine=saved.affine, dtype=np.uint8)
    wrong = np.eye(4)
    wrong[:3, 3] = [0, 45, -40]  # a cached "registration" 60 mm off
    save_transform(wrong, layout.scan_transforms(tmp_path / "out", subject)["to_mni"])
    with pytest.raises(StageError, match="registration to MNI failed"):
        deface_subject(subject, tmp_path / "out", ["spm", "quickshear"])
    assert paths["quickshear_mask"].is_file() and not paths["spm_mask"].is_file()
    results = deface_cohort(Cohort([subject]), tmp_path / "out", ["spm", "quickshear"], jobs=1, progress=False)
    failures = read_failures(tmp_path / "out" / "derivatives" / "defacebench" / "failures.tsv")
    assert list(failures["key"]) == ["sub-01"] and "brain Dice" in failures["reason"].iloc[0]
    assert not results.values


def test_pydeface_template_onto_subject_direction():
    """pydeface's template registered ONTO a moved copy of itself: the warped face mask
    (1 = keep) lands on the moved face, and the template's nose is removed."""
    from scipy.spatial.transform import Rotation

    from defacebench.deface import pydeface
    from defacebench.deface.context import SubjectContext
    from defacebench.imaging.registration import mask_dice
    from defacebench.imaging.resample import resample_to
    from defacebench.imaging.templates import pydeface_template, pydeface_to_mni

    template, facemask = pydeface_template()
    known = np.eye(4)
    known[:3, :3] = Rotation.from_euler("xyz", [10, -4, 3], degrees=True).as_matrix()
    known[:3, 3] = [4, -6, 8]
    step = np.diag([2.0, 2.0, 2.0, 1.0])  # the subject on a 2 mm grid: quicker
    data = resample_to(template, np.eye(4), template.affine @ step, tuple(n // 2 for n in template.shape), order=1)
    subject = nib.Nifti1Image(data, known @ template.affine @ step)  # subject world = known @ template world
    start = np.eye(4)
    start[:3, 3] = [6, 5, -6]  # the brain registration's guess is 10 mm off: the template registration fixes it
    ctx = SubjectContext(subject, brain_mask=np.ones(subject.shape, dtype=bool), to_mni=pydeface_to_mni() @ np.linalg.inv(known) @ start)
    removal = pydeface.removal_mask(ctx)
    np.testing.assert_allclose(ctx.template_to_subject, known, atol=1.5)
    truth = 1 - resample_to(facemask, known, subject.affine, subject.shape, order=1)
    head = data > 0.1 * data.max()
    assert mask_dice((removal >= 0.5) & head, (truth >= 0.5) & head) > 0.95
    # the template's nose (voxels x 80-96, y 215-235, z 60-95 of the 1 mm template) is removed
    nose = np.zeros(subject.shape, dtype=bool)
    nose[40:48, 108:118, 30:48] = True
    assert (nose & head).sum() > 500 and removal[nose & head].mean() > 0.9


@pytest.mark.parametrize("grid", ["oblique_2mm", "lps_3mm", "wider_than_template"])
def test_pydeface_sparse_removal_equals_full_resampling(grid):
    """The face mask is interpolated only near the face and the template's edges; the
    result must equal trilinear resampling of the whole mask (cval 0) everywhere."""
    from scipy.spatial.transform import Rotation

    from defacebench.deface.pydeface import removal_from_matrix
    from defacebench.imaging.resample import resample_to
    from defacebench.imaging.templates import pydeface_template

    _, facemask = pydeface_template()
    matrix = np.eye(4)
    matrix[:3, :3] = Rotation.from_euler("xyz", [7, -5, 12], degrees=True).as_matrix() * 1.05
    matrix[:3, 3] = [3, -8, 5]
    grids = {
        "oblique_2mm": (np.array([[2.0, 0.1, 0, -90], [0, 1.9, 0.2, -130], [0.1, 0, 2.1, -100], [0, 0, 0, 1]]), (71, 83, 79)),
        "lps_3mm": (np.array([[-3.0, 0, 0, 95], [0, -3.0, 0, 120], [0, 0, 3.0, -110], [0, 0, 0, 1]]), (57, 61, 67)),
        "wider_than_template": (np.array([[4.0, 0, 0, -200], [0, 4.0, 0, -230], [0, 0, 4.0, -220], [0, 0, 0, 1]]), (97, 103, 101)),
    }
    affine, shape = grids[grid]
    sparse = removal_from_matrix(matrix, affine, shape)
    full = np.clip(1.0 - resample_to(facemask, matrix, affine, shape, order=1, cval=0.0), 0.0, 1.0)
    assert 0.01 < (full > 0).mean() < 0.99  # both face and kept voxels are on the grid
    np.testing.assert_allclose(sparse, full, atol=1e-5)


def test_summarize_qc_per_method():
    from defacebench.deface.runner import summarize_qc

    table = pd.DataFrame({
        "method": ["afni", "afni", "spm", "spm"],
        "nose_removed_fraction": [1.0, 0.7, 0.9, 1.0],
        "face_removed_fraction": [0.9, 0.8, 0.5, 0.5],
        "brain_removed_fraction": [0.0, 0.002, 0.0, 0.0],
        "ears_removed": ["yes", "yes", "no", "n/a"],
    })
    summary = summarize_qc(table).set_index("method")
    assert summary.loc["afni", "nose_removed_min"] == 0.7 and summary.loc["afni", "brain_spared_fraction"] == 0.5
    assert summary.loc["afni", "ears_removed_fraction"] == 1.0 and summary.loc["spm", "ears_removed_fraction"] == 0.0
    assert summary.loc["spm", "scans"] == 2 and summary.loc["spm", "nose_removed_median"] == 0.95



def test_removal_metrics_from_flat_indices_equal_the_masks():
    """The runner passes each scan's regions once as flat indices: the same numbers as boolean masks."""
    rng = np.random.default_rng(4)
    shape = (7, 8, 9)
    brain = rng.random(shape) < 0.3
    head = brain | (rng.random(shape) < 0.4)
    regions = {"face": rng.random(shape) < 0.2, "nose": rng.random(shape) < 0.05, "ears": np.zeros(shape, dtype=bool)}
    flat = qc.flat_regions({"brain": brain, "head": head, **regions})
    for removal in (rng.random(shape).astype(np.float32), (rng.random(shape) < 0.5).astype(np.float32)):
        by_mask = qc.removal_metrics(removal, brain, head, regions, 0.8)
        by_index = qc.removal_metrics(removal, flat["brain"], flat["head"], flat, 0.8)
        assert np.isnan(by_index.pop("ears_removed_fraction")) and np.isnan(by_mask.pop("ears_removed_fraction"))
        assert by_index == by_mask
        assert by_mask["face_removed_fraction"] == float(removal[regions["face"]].sum() / int(regions["face"].sum()))  # the formula before


@pytest.mark.parametrize("slab_voxels", [1 << 16, 72, 100])  # one slab; one x-row per slab; uneven slabs
def test_mni_regions_slab_by_slab_equal_whole_grid(slab_voxels, monkeypatch):
    """The MNI regions are evaluated slab by slab for speed: the same voxels as on the whole grid at once."""
    from defacebench.deface import mni_regions
    from defacebench.imaging.resample import world_coordinates

    monkeypatch.setattr(mni_regions, "SLAB_VOXELS", slab_voxels)
    affine = np.array([[25.0, 1.0, 0, -90], [0, 28.0, 2.0, -110], [1.0, 0, 30.0, -160], [0, 0, 0, 1]])
    coords = world_coordinates(affine, (7, 8, 9))
    ax, y, z = np.abs(coords[0]), coords[1], coords[2]
    fsl = np.zeros((7, 8, 9), dtype=bool)
    for (a0, a1), (y0, y1), (z0, z1) in mni_regions.FSL_BIGFOV_BOXES.values():
        fsl |= (ax >= a0) & (ax <= a1) & (y >= y0) & (y <= y1) & (z >= z0) & (z <= z1)
    assert fsl.any() and not fsl.all()
    np.testing.assert_array_equal(fsl_boxes(coords), fsl)
    np.testing.assert_array_equal(spm_plane(coords), -1.1 * y + 0.98 * z + 100.0 < 0)
    np.testing.assert_array_equal(afni_box(coords), (z > -142.0) & (z < -30.0) & (y > -59.0))
