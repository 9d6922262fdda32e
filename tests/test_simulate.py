"""Simulated ageing cohort: ground-truth maths at 3 mm, determinism, bad input.

Fast tests use the ROBEX head at 3 mm voxels; cohort-level correlations are ``slow``.
"""

from __future__ import annotations

import copy
import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from defacebench.commands.simulate import main
from defacebench.simulate.cohort import sample_cohort
from defacebench.simulate.heads import load_base_head
from defacebench.simulate.subject import sample_subject, simulate_subject

VOX = 3.0
FACE = ["cheek_fat_mm", "nose_length_mm", "ear_length_mm", "mandible_length_mm", "lower_face_height_mm"]
BRAIN = ["gm_ml", "wm_ml", "ventricles_ml", "hippocampus_ml", "brain_ml", "csf_ml", "wm_lesion_ml"]


@pytest.fixture(scope="module")
def head():
    return load_base_head("robex", VOX)


def _at_age(params: dict, age: float) -> dict:
    p = copy.deepcopy(params)
    p["age_years"] = age
    return p


@pytest.fixture(scope="module")
def young_old(head):
    params = sample_subject(np.random.default_rng(7), ["robex"])
    return [simulate_subject(head, _at_age(params, a)) for a in (56.0, 96.0)]


def test_ageing_direction_and_fold_free(young_old):
    young, old = (s.ground_truth for s in young_old)
    assert old["ventricles_ml"] > 1.3 * young["ventricles_ml"]
    assert old["hippocampus_ml"] < 0.92 * young["hippocampus_ml"]
    assert old["gm_ml"] < young["gm_ml"] and old["wm_ml"] < young["wm_ml"]
    assert young["cheek_fat_mm"] - old["cheek_fat_mm"] > 1.0
    assert old["ear_length_mm"] - young["ear_length_mm"] > 4.0
    assert old["nose_length_mm"] - young["nose_length_mm"] > 2.5
    assert old["wm_lesion_ml"] > 5 * max(young["wm_lesion_ml"], 0.1)
    assert all(s.min_jacobian > 0 for s in young_old)


def test_intracranial_volume_fixed_across_age(young_old):
    young, old = (s.ground_truth for s in young_old)
    assert abs(old["intracranial_ml"] / young["intracranial_ml"] - 1) < 0.01


def test_skull_volume_fixed_across_age_without_individual_deformation(head):
    params = sample_subject(np.random.default_rng(3), ["robex"])
    params["anatomy"]["deformation_mm"] = 0.0
    young, old = (simulate_subject(head, _at_age(params, a)).ground_truth for a in (56.0, 96.0))
    assert abs(old["skull_ml"] / young["skull_ml"] - 1) < 0.03  # 3 mm voxels: label-count noise
    assert abs(old["intracranial_ml"] / young["intracranial_ml"] - 1) < 0.01


def test_switched_off_ageing_leaves_measures_unchanged(head):
    params = sample_subject(np.random.default_rng(11), ["robex"], brain_ageing=0.0, face_ageing=1.0)
    young, old = (simulate_subject(head, _at_age(params, a)).ground_truth for a in (56.0, 96.0))
    for key in BRAIN:
        assert old[key] == pytest.approx(young[key], rel=0.02, abs=0.3), key
    assert young["cheek_fat_mm"] - old["cheek_fat_mm"] > 0.5  # face still ages
    params = sample_subject(np.random.default_rng(11), ["robex"], brain_ageing=1.0, face_ageing=0.0)
    young, old = (simulate_subject(head, _at_age(params, a)).ground_truth for a in (56.0, 96.0))
    for key in FACE:
        assert old[key] == pytest.approx(young[key], abs=0.3), key
    assert old["ventricles_ml"] > 1.3 * young["ventricles_ml"]  # brain still ages


def test_image_is_a_positive_t1_head(young_old):
    sim = young_old[0]
    img, lab = sim.image, sim.labels
    assert img.min() >= 0 and np.isfinite(img).all()
    wm, gm, csf = (np.median(img[lab == v]) for v in (3, 2, 4))
    assert wm > gm > csf  # T1 contrast
    assert np.median(img[lab == 0]) < 0.15 * wm  # dark air with Rician noise


def test_cohort_ages_and_sex():
    cohort = sample_cohort(400, 5, ["robex", "pydeface"])
    ages = np.array([p["age_years"] for p in cohort])
    assert ages.min() >= 56 and ages.max() <= 96
    assert 72 < ages.mean() < 76 and 5.5 < ages.std() < 8
    assert 0.38 < np.mean([p["sex"] == "M" for p in cohort]) < 0.54
    assert sample_cohort(3, 5, ["robex"])[2] == sample_cohort(5, 5, ["robex"])[2]


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def test_cli_writes_bids_and_is_byte_identical(tmp_path, head):
    args = ["--n", "2", "--seed", "4", "--voxel-mm", "3", "--base-heads", "robex"]
    assert main([str(tmp_path / "a"), *args]) == 0
    assert main([str(tmp_path / "b"), *args, "--jobs", "2"]) == 0
    a, b = _digest(tmp_path / "a"), _digest(tmp_path / "b")
    assert a == b
    assert "sub-001/anat/sub-001_T1w.nii.gz" in a
    assert "derivatives/simulation/sub-002/anat/sub-002_dseg.nii.gz" in a
    assert "derivatives/simulation/sub-002/anat/sub-002_simulation.json" in a
    parts = pd.read_csv(tmp_path / "a" / "participants.tsv", sep="\t")
    assert list(parts.columns) == ["participant_id", "age", "sex", "base_head"]
    from defacebench.cohort import read_bids

    assert len(read_bids(tmp_path / "a")) == 2
    assert main([str(tmp_path / "c"), "--n", "2", "--seed", "5", "--voxel-mm", "3", "--base-heads", "robex"]) == 0
    assert _digest(tmp_path / "c") != a


@pytest.mark.parametrize(
    "extra",
    [["--n", "0"], ["--bogus"], ["--n", "1", "--base-heads", "nohead"], ["--n", "1", "--jobs", "0"]],
)
def test_bad_input_exit_2(tmp_path, capsys, extra):
    out = tmp_path / "out"
    assert main([str(out), "--voxel-mm", "3", *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err and "\n" not in err
    assert not out.exists() and not list(tmp_path.glob(".out*"))


def test_non_empty_out_needs_overwrite(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    assert main([str(out), "--n", "1", "--voxel-mm", "3", "--base-heads", "robex"]) == 2
    assert (out / "keep.txt").exists()
    assert main([str(out / "sub" / "deeper"), "--n", "1", "--voxel-mm", "3"]) == 2  # parent missing
    assert main([str(out), "--n", "1", "--voxel-mm", "3", "--base-heads", "robex", "--overwrite"]) == 0
    assert not (out / "keep.txt").exists() and (out / "participants.tsv").exists()


def _cohort_truth(n: int, brain: float, face: float) -> pd.DataFrame:
    head = load_base_head("robex", VOX)
    rows = []
    for p in sample_cohort(n, 0, ["robex"], brain, face):
        g = {k: v for k, v in simulate_subject(head, p).ground_truth.items() if not isinstance(v, dict)}
        s = float(np.prod(p["anatomy"]["head_scale"]) ** (1 / 3))  # head size, known ground truth
        g.update({k: g[k] / s**3 for k in BRAIN}, **{k: g[k] / s for k in FACE}, age=p["age_years"])
        rows.append(g)
    return pd.DataFrame(rows)


@pytest.mark.slow
def test_cohort_correlations_with_age():
    t = _cohort_truth(30, 1.0, 1.0)
    r = t.corr()["age"]
    assert r["ventricles_ml"] > 0.6
    assert r["cheek_fat_mm"] < -0.5
    assert r["hippocampus_ml"] < 0


@pytest.mark.slow
@pytest.mark.parametrize("brain, face, measures", [(1.0, 0.0, FACE), (0.0, 1.0, BRAIN[:-1])])
def test_switched_off_ageing_uncorrelated(brain, face, measures):
    r = _cohort_truth(60, brain, face).corr()["age"]
    for key in measures:
        assert abs(r[key]) < 0.15, (key, r[key])
