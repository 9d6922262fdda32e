"""Refacing (issue 18): the shell recipe, AFNI's fill, refaced == input outside the region, the brain untouched,
the conditions and the preprocessing of refaced heads, and the own-face measurement."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from defacebench import layout
from defacebench.cohort import Subject
from defacebench.conditions import (DEFACERS, METHODS, REFACERS, condition_label, condition_names, condition_title,
                                    parse_condition, parse_methods, refacer_methods)
from defacebench.config import get_preset
from defacebench.deface import deface_subject
from defacebench.deface.refacing import (AFNI_SHELL_SCALE, afni_fill, own_face_excess, refaced_image,
                                         region_correlations)
from defacebench.imaging.shell import SHELL_WM_INTENSITY, blur_in_mask, build_shell
from defacebench.io.nifti import save_image
from deface_helpers import robex_scan

AFFINE = np.array([[2.0, 0.1, 0, -8], [0, -2.2, 0.1, 9], [0.05, 0, 1.8, -7], [0, 0, 0, 1]])


def test_methods_and_conditions_of_refacers() -> None:
    assert METHODS == (*DEFACERS, *REFACERS) and parse_methods("mrireface,afnireface") == ("mrireface", "afnireface")
    assert all(m.isalnum() for m in REFACERS)  # BIDS desc- labels stay valid
    assert "defaced-afnireface" in condition_names(["afnireface"])
    assert condition_title("defaced-afnireface") == "refaced (AFNI reface)" and condition_label("defaced-mrireface") == "mri_reface rf"
    assert condition_title("defaced-afni") == "defaced (AFNI)"
    conditions = [parse_condition(c) for c in ("face-afnireface", "defaced-mrireface", "defaced-afni")]
    assert refacer_methods(conditions) == ("mrireface",)
    paper, demo = get_preset("paper"), get_preset("demo")
    assert paper.conditions[:14] == condition_names(("afni", "fsl", "pydeface", "spm"))
    assert set(paper.conditions[14:]) == {f"defaced-{m}" for m in REFACERS} and set(REFACERS) <= set(paper.methods)
    # the demo adds AFNI's refacer for its refaced head alone (its face-only image is AFNI's)
    assert set(REFACERS) & set(demo.methods) == {"afnireface"}
    assert [c for c in demo.conditions if "afnireface" in c] == ["defaced-afnireface"]


def test_refaced_condition_adds_the_replacement() -> None:
    rng = np.random.default_rng(0)
    head, face, fill = (rng.random((7, 8, 9)).astype(np.float32) for _ in range(3))
    refaced = parse_condition("defaced-afnireface").build(head, face=face, fill=fill)
    np.testing.assert_array_equal(refaced, head - face + fill)
    np.testing.assert_array_equal(parse_condition("defaced-afni").build(head, face=face), head - face)


def test_blur_in_mask_uses_and_changes_only_the_mask() -> None:
    rng = np.random.default_rng(1)
    data = rng.random((7, 8, 9)).astype(np.float32)
    mask = np.zeros(data.shape, dtype=bool)
    mask[2:6, 1:7, 3:8] = True
    data[mask] = 5.0
    out = blur_in_mask(data, mask, fwhm_mm=3.0, voxel_mm=(1.0, 1.2, 0.9))
    np.testing.assert_array_equal(out[~mask], data[~mask])
    np.testing.assert_allclose(out[mask], 5.0, rtol=1e-5)  # a constant inside stays constant: no leak from outside


def _ball_heads(shape=(45, 46, 47), n: int = 4):
    """n heads (balls) with a brain ball inside; one head much larger than the rest."""
    grid = np.indices(shape).astype(np.float32)
    centre = np.array(shape, dtype=np.float32)[:, None, None, None] / 2
    radius = np.sqrt(((grid - centre) ** 2).sum(axis=0))
    brain = radius < 4
    heads = []
    for i in range(n):
        head_radius = 21.0 if i == 0 else 18.0
        heads.append(np.where(radius < head_radius, 300.0 * (i + 1), 0.0) + np.where(brain, 700.0 * (i + 1), 0.0))
    return heads, np.diag([1.0, 1.0, 1.0, 1.0]), radius - 4.0, brain, radius


def test_shell_is_the_median_outside_the_brain_margin_minus_one_outside_the_head() -> None:
    heads, affine, distance_mm, brain, radius = _ball_heads()
    shell = build_shell(heads, affine, np.maximum(distance_mm, 0), brain)
    # every head unifized to white matter 1000: scalp 300/1000 of it, whatever its own scale
    scalp = SHELL_WM_INTENSITY * 300.0 / 1000.0
    ring = (distance_mm > 11.0) & (radius < 15.5)  # the head mask is coarse within ~2 voxels of the skin
    np.testing.assert_allclose(shell[ring], scalp, rtol=1e-4)
    assert np.all(shell[distance_mm <= 10.0] == 0)  # the 10 mm margin around the brain is kept
    assert np.all(shell[radius > 19.0] == -1)  # air around the median head
    # the larger head alone (1 of 4 < 1 + 4 // 4) does not enter the median
    assert np.all(shell[(radius > 18.5) & (radius < 20.5)] <= 0)


def test_afni_fill_scales_the_shell_and_keeps_the_brain() -> None:
    shape = (7, 8, 9)
    data = np.full(shape, 40.0, dtype=np.float32)
    region = np.zeros(shape, dtype=bool)
    region[:, 4:, :] = True
    shell = np.where(region, 500.0, 0.0).astype(np.float32)
    shell[:, 7, :] = -1.0  # the shell's air: written as 0
    brain = np.zeros(shape, dtype=bool)
    brain[3, 5, 4] = True
    result = afni_fill(data, region, shell, (1.0, 1.0, 1.0), brain)
    tissue = region & (shell > 0) & ~brain
    np.testing.assert_allclose(result.fill[tissue], AFNI_SHELL_SCALE * 40.0, rtol=1e-5)
    assert np.all(result.fill[~region] == 0) and np.all(result.fill[:, 7, :] == 0)
    assert result.removal[3, 5, 4] == 0 and result.fill[3, 5, 4] == 0  # the brain mask is never replaced
    assert result.removal[:, 7, :].all() and not result.removal[:, :4, :].any()


def test_refaced_image_rounds_and_clips_integers() -> None:
    defaced = np.array([[[0, 10, 32000]]], dtype=np.int16)
    fill = np.array([[[2.6, 0.0, 5000.0]]], dtype=np.float32)
    out = refaced_image(defaced, fill, np.dtype(np.int16))
    assert out.dtype == np.int16 and out.tolist() == [[[3, 10, 32767]]]


def test_own_face_measurement_tells_a_copied_face_from_a_template() -> None:
    rng = np.random.default_rng(2)
    own = [rng.normal(size=(7, 8, 9)).astype(np.float32) for _ in range(5)]
    region = [np.ones((7, 8, 9), dtype=bool)] * 5
    template = rng.normal(size=(7, 8, 9)).astype(np.float32)
    leaky = own_face_excess(region_correlations([o + 0.5 * template for o in own], own, region))
    assert leaky["excess"] > 0.5 and leaky["rank1"] == 1.0
    refaced = [template + 0.3 * rng.normal(size=(7, 8, 9)).astype(np.float32) for _ in own]
    clean = own_face_excess(region_correlations(refaced, own, region))
    assert abs(clean["excess"]) < 0.1


@pytest.fixture(scope="module")
def robex_refaced(tmp_path_factory):
    """ROBEX head refaced by afnireface and afnirefaceplus with its atlas brain mask (no deepbet)."""
    out = tmp_path_factory.mktemp("study")
    methods = ["afni", "afnireface", "afnirefaceplus"]
    subject, saved, brain = robex_scan(out, methods)
    return deface_subject(subject, out, methods), saved, brain


def test_refaced_equals_input_outside_the_region_and_the_brain_is_untouched(robex_refaced) -> None:
    result, saved, brain = robex_refaced
    original = np.asarray(saved.dataobj)
    for m in ("afnireface", "afnirefaceplus"):
        refaced, face, mask = (np.asarray(nib.load(str(result["paths"][f"{m}_{k}"])).dataobj) for k in ("defaced", "face", "mask"))
        assert refaced.dtype == original.dtype
        outside = mask == 0
        np.testing.assert_array_equal(refaced[outside], original[outside])
        np.testing.assert_array_equal(refaced[brain], original[brain])
        np.testing.assert_array_equal(face, np.where(mask > 0, original, 0))  # the person's own replaced tissue
        inside = mask > 0
        assert np.mean(refaced[inside] != original[inside]) > 0.5, "the region was replaced"
    table = pd.read_csv(result["paths"]["qc_tsv"], sep="\t").set_index("method")
    assert (table.loc[["afnireface", "afnirefaceplus"], "brain_removed_fraction"] == 0).all()
    assert table.loc["afnirefaceplus", "removed_ml"] > table.loc["afnireface", "removed_ml"]
    assert result["paths"]["qc_png"].stat().st_size > 10_000


def test_afnireface_replaces_within_afni_region(robex_refaced) -> None:
    result, _, _ = robex_refaced
    afni, reface = (np.asarray(nib.load(str(result["paths"][f"{m}_mask"])).dataobj) > 0 for m in ("afni", "afnireface"))
    assert reface.sum() > 0.5 * afni.sum() and not (reface & ~afni).any()


def test_preprocessing_composes_the_refaced_head_from_its_replacement(tmp_path) -> None:
    """defaced-<refacer> in the grid is raw - face + the moved replacement: equal to raw - face
    where nothing was replaced, brighter where the replacement went."""
    from defacebench.deface.runner import split_image
    from defacebench.imaging.registration import save_transform
    from defacebench.preprocess.scan import PreprocessTask, missing_inputs, preprocess_subject
    from test_preprocess import TEST_GRID, synthetic_scan, to_mni_matrix

    data, affine, brain, removals = synthetic_scan(0)
    removal = (removals["spm"] > 0).astype(np.float32)
    path = save_image(data, tmp_path / "bids" / "sub-01" / "anat" / "sub-01_T1w.nii.gz", affine=affine)
    subject = Subject(subject="01", age_years=50.0, path=path)
    study = tmp_path / "study"
    paths = layout.scan_files(study, subject, ["afnireface"])
    save_image(brain.astype(np.uint8), paths["brain_mask"], affine=affine, dtype=np.uint8)
    save_transform(to_mni_matrix(0), paths["to_mni"])
    defaced, face = split_image(data, removal, np.dtype(np.float32))
    save_image(face, paths["afnireface_face"], affine=affine)
    save_image(removal, paths["afnireface_mask"], affine=affine)
    assert missing_inputs(subject, study, ["afnireface"]) == ["afnireface_defaced"]  # the refaced head is read
    save_image(refaced_image(defaced, removal * 200.0, np.dtype(np.float32)), paths["afnireface_defaced"], affine=affine)
    conditions = ("raw", "defaced-afnireface", "face-afnireface")
    preprocess_subject(PreprocessTask(subject, str(study), TEST_GRID, conditions, bias_resolution_mm=14.0))
    images = np.load(layout.work_file(study, TEST_GRID.name, subject.key))
    raw, refaced, own = (images[c].astype(np.float32) for c in conditions)
    added = refaced - (raw - own)
    bound = 2.0**-10 * (np.abs(refaced) + np.abs(raw) + np.abs(own)) + 1e-6
    assert np.all(np.abs(added[own == 0]) <= bound[own == 0])
    assert np.all(added >= -bound) and added.max() > 1.0


def test_report_names_a_refaced_head_as_refaced() -> None:
    from defacebench.report.findings import conclusions

    rows = [("raw", 6.0), ("defaced-afni", 7.0), ("defaced-afnireface", 6.5)]
    table1 = pd.DataFrame({"condition": [c for c, _ in rows], "mae_mean": [m for _, m in rows], "null_mae": 9.0, "n_test": 20})
    null = pd.DataFrame({"condition": [c for c, _ in rows], "beats_null": True, "wilcoxon_p_holm": 0.01})
    text = " ".join(conclusions(table1, None, null))
    assert "Of the defacers and refacers, <b>AFNI reface</b> costs the least accuracy: refaced MAE 6.50" in text


def test_own_face_measurement_keeps_to_voxels_every_scan_sees() -> None:
    """Beyond another person's field of view their head is 0: compared there, the own face
    wins without any face in the replacement; cut to the common view it does not."""
    from defacebench.deface.reface_check import seen_by_everyone

    rng = np.random.default_rng(4)
    face = np.abs(rng.normal(size=(7, 8, 9))).astype(np.float32) + 1.0  # the same face everyone has
    views = []
    for i in range(4):
        view = np.zeros((7, 8, 9), dtype=bool)
        view[:, :, i: 6 + i] = True  # each scan sees another slab
        views.append(view)
    own = [np.where(v, face + 0.2 * rng.normal(size=face.shape), 0).astype(np.float32) for v in views]
    refaced = [np.where(v, face, 0).astype(np.float32) for v in views]  # the shared face: nothing of anyone
    uncut = own_face_excess(region_correlations(refaced, own, views))
    cut = own_face_excess(region_correlations(refaced, own, seen_by_everyone(views, views)))
    assert uncut["excess"] > 0.1
    assert abs(cut["excess"]) < 0.05


def test_mrireface_warp_fades_to_the_brain_affine_inside_the_face() -> None:
    from defacebench.deface.mrireface import FACE_BOX, fade_into_labels

    y = np.arange(0.0, 62.0, 2.0, dtype=np.float32)  # MNI y across the face box's back edge (20 mm)
    affine_coords = np.stack(np.broadcast_arrays(np.zeros((3, 31, 4)), y[None, :, None], np.full((3, 31, 4), -20.0))).astype(np.float32)
    warp = affine_coords + np.array([1.0, 3.0, -2.0], dtype=np.float32)[:, None, None, None]
    faded = fade_into_labels(warp, affine_coords, (2.0, 2.0, 2.0), fade_mm=10.0)
    outside, deep = y < FACE_BOX[1][0], y >= FACE_BOX[1][0] + 10.0
    np.testing.assert_array_equal(faded[:, :, outside], warp[:, :, outside])  # the head around the face: warped
    np.testing.assert_array_equal(faded[:, :, deep], affine_coords[:, :, deep])  # inside: the brain's placement
    shift = faded[1, 1, :, 1] - affine_coords[1, 1, :, 1]
    assert np.all(np.diff(shift) <= 0) and 0 < shift[~outside & ~deep].max() < 3.0
    np.testing.assert_array_equal(fade_into_labels(warp, affine_coords, (2.0, 2.0, 2.0), fade_mm=np.inf), warp)


def test_afni_refacers_place_the_shell_through_the_full_brain_registration() -> None:
    """The replacement is the same MNI image for everyone: the shell goes through the 12-DOF
    brain registration, not its 9-parameter part (which follows the person's head shear)."""
    from defacebench.deface import afnireface, afnirefaceplus
    from defacebench.deface.context import SubjectContext
    from defacebench.deface.refacing import shell_on_subject
    from defacebench.imaging.resample import world_coordinates

    affine = np.diag([6.0, 6.5, 7.0, 1.0])
    affine[:3, 3] = (-100.0, -130.0, -150.0)
    shape = (34, 40, 36)
    to_mni = np.array([[1.0, 0.12, 0.0, 2.0], [0.0, 1.05, 0.1, -3.0], [0.08, 0.0, 0.95, 4.0], [0, 0, 0, 1]])
    ctx = SubjectContext(nib.Nifti1Image(np.full(shape, 300.0, dtype=np.float32), affine),
                         brain_mask=np.zeros(shape, dtype=bool), to_mni=to_mni)
    full = shell_on_subject(world_coordinates(affine, shape, to_mni)) > 0
    nine = shell_on_subject(world_coordinates(affine, shape, ctx.subject_head_to_mni())) > 0
    assert (full != nine).sum() > 100  # the shear moves the shell by many voxels
    for module in (afnireface, afnirefaceplus):
        result = module.reface(ctx)
        replaced = result.removal > 0
        assert replaced.any()
        np.testing.assert_array_equal(result.fill > 0, replaced & full)


def test_excess_above_the_floor_is_tested_person_by_person() -> None:
    from defacebench.deface.refacing import excess_above_floor

    rng = np.random.default_rng(6)
    floor = 0.8 + 0.01 * rng.normal(size=(10, 10))
    assert excess_above_floor(floor, floor) == {"above_floor": 0.0, "p_above_floor": 1.0}
    leaky = floor + 0.02 * np.eye(10)  # every person's own face 0.02 closer than the floor's
    result = excess_above_floor(leaky, floor)
    assert result["above_floor"] == pytest.approx(0.02)
    assert result["p_above_floor"] == pytest.approx(1 / 2**10)  # only the observed signs reach it
    assert excess_above_floor(floor - 0.02 * np.eye(10), floor)["p_above_floor"] == 1.0
