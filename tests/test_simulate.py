"""Simulated ageing cohort: ground-truth maths, determinism, bad input.

Fast tests use the ROBEX head at 3 mm voxels, and at 1.5 mm (the default) where the issue's
numbers are defined (published 56 -> 96 changes, skull/ICV < 1 %); cohort-level correlations
are ``slow``.
"""

from __future__ import annotations

import copy
import hashlib
import math
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from defacebench import layout
from defacebench.commands.simulate import main
from defacebench.io.errors import InputError
from defacebench.simulate.calibration import calibration_gains
from defacebench.simulate.dataset import sample_cohort, simulate_cohort
from defacebench.simulate.headfields import head_fields
from defacebench.simulate.heads import load_base_head
from defacebench.simulate.labels import LABELS
from defacebench.simulate.measure import FACE_MEASURES
from defacebench.simulate.sampling import sample_subject
from defacebench.simulate.subject import simulate_subject

VOX = 3.0
#: Size-invariant ground truth (at the base head's size): what the correlation checks use.
FACE = [f"{m}_norm_mm" for m in FACE_MEASURES]
BRAIN = [f"{r}_norm_ml" for r in ("gm", "wm", "ventricles", "hippocampus", "brain", "csf", "intracranial", "wm_lesion")]


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
    return [simulate_subject(head, _at_age(params, a), check_jacobian=True) for a in (56.0, 96.0)]


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


@pytest.fixture(scope="module", params=[1.5, 2.0], ids=["1.5mm", "2mm"])
def average_ageing_default(request):
    """A population-average ager (rate multiplier 1, no reserve) with its own anatomy, pose and
    head size, at 56 and 96, at the default 1.5 mm and at 2 mm (the demo's size); partial
    volumes of skull and ICV."""
    head = load_base_head("robex", request.param)
    params = sample_subject(np.random.default_rng(21), ["robex"])
    params["brain_ageing"].update(rate_multiplier=1.0, reserve=0.0)
    return [
        simulate_subject(head, _at_age(params, a), check_jacobian=True, partial_volumes=("skull", "intracranial"))
        for a in (56.0, 96.0)
    ]


def test_achieved_brain_changes_match_published_ranges(average_ageing_default):
    """Achieved label volumes (ground truth), not the prescription, fall inside the issue's
    published 56 -> 96 ranges, widened by 1-2 points: GM -13..-16 %, WM -11..-13 %,
    hippocampus -25..-29 %, lateral ventricles x2.6-3.1."""
    young, old = (s.ground_truth for s in average_ageing_default)
    change = {r: old[f"{r}_norm_ml"] / young[f"{r}_norm_ml"] - 1 for r in ("gm", "hippocampus", "ventricles")}
    # white-matter lesions are white matter that turned hypointense: count them with it
    change["wm"] = (old["wm_norm_ml"] + old["wm_lesion_norm_ml"]) / (young["wm_norm_ml"] + young["wm_lesion_norm_ml"]) - 1
    assert -0.175 <= change["gm"] <= -0.115, change
    assert -0.145 <= change["wm"] <= -0.095, change
    # the hippocampus is ~1300 voxels at 1.5 mm but ~560 at 2 mm, where its label count moves
    # by an SD of ~3.7 % with pose and anatomy alone (6 subjects: -26 .. -36.5 %, mean -31 %)
    lo, hi = (-0.31, -0.23) if average_ageing_default[0].affine[0, 0] < 1.75 else (-0.37, -0.21)
    assert lo <= change["hippocampus"] <= hi, change
    assert 1.4 <= change["ventricles"] <= 2.3, change  # x2.4 .. x3.3
    assert all(s.min_jacobian > 0 for s in average_ageing_default)


def test_skull_and_intracranial_volume_fixed_across_age(average_ageing_default):
    """Skull and ICV change < 1 % from 56 to 96 at fixed anatomy (the subject's own individual
    deformation, pose and head size), by partial volume and by label count (1.5 and 2 mm)."""
    young, old = (s.ground_truth for s in average_ageing_default)
    for key in ("pv_skull_ml", "pv_intracranial_ml", "skull_ml", "intracranial_ml"):
        assert abs(old[key] / young[key] - 1) < 0.01, (key, young[key], old[key])


def test_brain_ageing_leaves_skull_scalp_and_face_in_place(head):
    """Strong brain ageing (3x) and no face ageing: every voxel outside the intracranial
    cavity keeps its intensity from 56 to 96 (the old field dragged the skull and inner
    scalp along: mean change 107 and 75 units, ~10 % of white matter)."""
    params = sample_subject(np.random.default_rng(7), ["robex"], brain_ageing=3.0, face_ageing=0.0)
    young, old = (simulate_subject(head, _at_age(params, a)) for a in (56.0, 96.0))
    wm = head.stats["wm_mean"]
    for name in ("skull", "scalp", "face", "neck", "nose"):
        same = (young.labels == LABELS[name]) & (old.labels == LABELS[name])
        change = np.abs(old.image[same] - young.image[same]).mean()
        assert same.sum() > 100 and change < 0.005 * wm, (name, change)
    assert old.ground_truth["ventricles_ml"] > 1.5 * young.ground_truth["ventricles_ml"]  # the brain aged


def test_ageing_moves_nothing_when_switched_off(head):
    """Paired, deterministic: the same anatomy at 56 and 96. Brain ageing 0: every brain
    measure identical (to round-off). Face ageing 0: every face measure identical (the brain field stops
    6 mm outside the cranium). The other effect still ages."""
    params = sample_subject(np.random.default_rng(11), ["robex"], brain_ageing=0.0, face_ageing=1.0)
    young, old = (simulate_subject(head, _at_age(params, a)).ground_truth for a in (56.0, 96.0))
    for key in BRAIN + [k.replace("_norm", "") for k in BRAIN]:
        # equal up to integration round-off: the number of scaling-and-squaring steps follows
        # the largest velocity anywhere, and the face field grows with age (0.03 ml of 485 seen)
        assert old[key] == pytest.approx(young[key], rel=5e-4, abs=0.05), key
    assert young["cheek_fat_mm"] - old["cheek_fat_mm"] > 0.5  # face still ages
    params = sample_subject(np.random.default_rng(11), ["robex"], brain_ageing=1.0, face_ageing=0.0)
    young, old = (simulate_subject(head, _at_age(params, a)).ground_truth for a in (56.0, 96.0))
    for key in FACE + [k.replace("_norm", "") for k in FACE]:
        assert old[key] == young[key], key
    assert old["ventricles_ml"] > 1.3 * young["ventricles_ml"]  # brain still ages


def test_face_measures_native_and_normalised(young_old):
    """Native = size-normalised x head scale (exactly for volumes; for lengths up to the
    per-axis scale jitter, about 1.5 %)."""
    g = young_old[0].ground_truth
    params = sample_subject(np.random.default_rng(7), ["robex"])  # the fixture's subject
    scales = np.array(params["anatomy"]["head_scale"])
    assert abs(np.log(scales).mean()) > 0.005  # a head size that differs from the base head's
    for m in FACE_MEASURES:
        assert g[f"{m}_mm"] == pytest.approx(g[f"{m}_norm_mm"] * scales.prod() ** (1 / 3), rel=0.05)
        assert g[f"{m}_mm"] != g[f"{m}_norm_mm"]
    assert g["intracranial_ml"] == pytest.approx(g["intracranial_norm_ml"] * scales.prod())


def test_image_is_a_positive_t1_head(young_old):
    sim = young_old[0]
    img, lab = sim.image, sim.labels
    assert img.min() >= 0 and np.isfinite(img).all()
    wm, gm, csf = (np.median(img[lab == v]) for v in (3, 2, 4))
    assert wm > gm > csf  # T1 contrast
    assert np.median(img[lab == 0]) < 0.15 * wm  # dark air with Rician noise


def _same_subject(a, b) -> bool:
    return (np.array_equal(a.image, b.image) and np.array_equal(a.labels, b.labels)
            and np.array_equal(a.affine, b.affine) and a.ground_truth == b.ground_truth)


def test_per_head_data_is_kept_per_head_and_not_shared_mutably(head):
    """One field set per head object; the gains a caller gets are its own copy."""
    assert head_fields(head) is head_fields(head)
    assert load_base_head("robex", VOX) is head and load_base_head("robex", int(VOX)) is head
    params = sample_subject(np.random.default_rng(3), ["robex"])
    first = simulate_subject(head, params)
    gains = calibration_gains(head)
    gains["ventricles"] *= 3  # must not reach the next subject
    assert calibration_gains(head) != gains
    assert _same_subject(first, simulate_subject(head, params))


def test_a_cold_worker_process_gives_the_same_subject(head):
    """A freshly spawned process (no fields, no gains in memory: nothing warmed up) builds
    the same bytes as this one: no per-head cache needs filling in any order."""
    params = sample_subject(np.random.default_rng(3), ["robex"])
    here = simulate_subject(head, params)
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        there = pool.submit(simulate_subject, head, params).result()
    assert _same_subject(here, there)


def test_cohort_ages_and_sex():
    cohort = sample_cohort(400, 5, ["robex", "pydeface"])
    ages = np.array([p["age_years"] for p in cohort])
    assert ages.min() >= 56 and ages.max() <= 96
    assert 72 < ages.mean() < 76 and 5.5 < ages.std() < 8
    assert 0.38 < np.mean([p["sex"] == "M" for p in cohort]) < 0.54
    assert sample_cohort(3, 5, ["robex"])[2] == sample_cohort(5, 5, ["robex"])[2]


def test_cohort_uniform_ages_span_the_calibrated_range():
    ages = np.array([p["age_years"] for p in sample_cohort(400, 5, ["robex"], ages="uniform")])
    assert ages.min() >= 56 and ages.max() <= 96
    assert 74 < ages.mean() < 78 and 10.5 < ages.std() < 12.5  # uniform 56-96: SD 11.5
    assert np.histogram(ages, bins=4, range=(56, 96))[0].min() > 80  # every decade is populated
    with pytest.raises(InputError, match="age distribution"):
        simulate_cohort(Path("unused"), 2, ages="gaussian")


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
    assert all(p.is_file() for p in layout.simulation_files(tmp_path / "a", "002").values())
    assert layout.simulated_t1w(tmp_path / "a", "001").is_file() and layout.simulation_truth_table(tmp_path / "a").is_file()
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


def _cohort_truth(n: int, brain: float, face: float, seed: int = 0, voxel_mm: float = 1.5, identity_scale: float = 1.0) -> pd.DataFrame:
    head = load_base_head("robex", voxel_mm)
    rows = []
    for p in sample_cohort(n, seed, ["robex"], brain, face, identity_scale=identity_scale):
        g = {k: v for k, v in simulate_subject(head, p).ground_truth.items() if not isinstance(v, dict)}
        rows.append({**g, "age": p["age_years"]})
    return pd.DataFrame(rows)


@pytest.mark.slow
def test_cohort_correlations_with_age():
    """The issue's check on a default 30-subject cohort (ROBEX, 1.5 mm, seed 0), identity off
    (the people alike, as when the thresholds were set), and the same cohort with identity on,
    where person-to-person anatomy weakens every correlation (docs/simulate.md) but none
    changes sign.

    The face measure is the size-normalised cheek fat (``cheek_fat_norm_mm``): in native mm
    the subject's head size (ICV SD 7 %, i.e. 2.3 % in length) adds noise unrelated to age;
    native-mm values are printed beside it. Volumes must hold in both.
    """
    keys = ["ventricles_ml", "ventricles_norm_ml", "cheek_fat_mm", "cheek_fat_norm_mm", "hippocampus_ml", "hippocampus_norm_ml"]
    r = _cohort_truth(30, 1.0, 1.0, identity_scale=0.0).corr()["age"]
    print("30-subject r, identity off:", r[keys].round(3).to_dict())
    assert r["ventricles_ml"] > 0.6 and r["ventricles_norm_ml"] > 0.6
    assert r["cheek_fat_norm_mm"] < -0.5
    assert r["hippocampus_ml"] < 0 and r["hippocampus_norm_ml"] < 0
    r = _cohort_truth(30, 1.0, 1.0).corr()["age"]
    print("30-subject r, identity on:", r[keys].round(3).to_dict())
    assert r["ventricles_norm_ml"] > 0.35 and r["cheek_fat_norm_mm"] < -0.15 and r["hippocampus_norm_ml"] < 0


#: Under no association, r over n subjects has SD about 1/sqrt(n - 1): 0.13 at n = 60, so the
#: issue's |r| < 0.15 holds for each measure only about 75 % of the time, whatever the simulator
#: (seed 0 at 1.5 mm gave cheek fat r = -0.19 with the face measures exactly age-free: see the
#: paired test above). So, without choosing a seed: (1) the issue's cohort (n = 60, seed 0,
#: 1.5 mm) must pass a sound family-wise bound (Fisher z, Bonferroni, alpha 0.001); (2) the
#: issue's threshold |r| < 0.15 must hold over five such cohorts pooled (seeds 0-4, n = 300,
#: r SD 0.058; all at 3 mm for time), where it is a 2.6-SD test that a real leak would fail.
def _null_bound(n: int, k: int) -> float:
    z_crit = 3.29 + 0.3 * math.log(k)  # about two-sided 0.001 / k
    return math.tanh(z_crit / math.sqrt(n - 3))


@pytest.mark.slow
@pytest.mark.parametrize("brain, face, measures", [(1.0, 0.0, FACE), (0.0, 1.0, BRAIN[:-1])], ids=["face-off", "brain-off"])
def test_switched_off_ageing_uncorrelated(brain, face, measures):
    t = _cohort_truth(60, brain, face)
    r = t.corr()["age"]
    print("n=60 seed 0 1.5 mm:", {k: round(float(r[k]), 3) for k in measures})
    for key in measures:
        assert abs(r[key]) < _null_bound(len(t), len(measures)), (key, r[key])
    pooled = pd.concat([_cohort_truth(60, brain, face, seed=s, voxel_mm=3.0) for s in range(5)])
    r_pooled = pooled.corr(numeric_only=True)["age"]
    print("n=300 seeds 0-4:", {k: round(float(r_pooled[k]), 3) for k in measures})
    for key in measures:
        assert abs(r_pooled[key]) < 0.15, (key, r_pooled[key])


# --------------------------------------------------------------------------- issue 17: identity and sessions
from defacebench.simulate.identity import ANTHROPOMETRIC_CV, subject_head_scale  # noqa: E402
from defacebench.simulate.measure import landmark_measures  # noqa: E402
from defacebench.simulate.template_ageing import anatomy_velocity  # noqa: E402


def _face_truth(head, cohort: list[dict]) -> pd.DataFrame:
    """Face measures of every scan from its velocity alone (landmarks; no image is made)."""
    hf, gains = head_fields(head), calibration_gains(head)
    centre = np.array(head.landmarks["brain_centre"])
    rows = []
    for p in cohort:
        velocity, _ = anatomy_velocity(hf, p, gains)
        rows.append({**landmark_measures(head, hf, velocity, subject_head_scale(p), centre), "age": p["age_years"],
                     "participant_id": p["participant_id"], "session": p.get("session")})
    return pd.DataFrame(rows)


def _residual_cv(t: pd.DataFrame, measure: str) -> float:
    """SD of the size-normalised measure after a linear age fit, over its mean."""
    y = t[f"{measure}_norm_mm"].to_numpy()
    residual = y - np.polyval(np.polyfit(t["age"], y, 1), t["age"])
    return float(residual.std(ddof=2) / y.mean())


def test_identity_spreads_match_anthropometry_and_switch_off(head):
    """Over 60 people the age-residualised, size-normalised spread (CV) of each face measure
    lies in the published adult range (docs/simulate.md); with identity scale 0 every measure
    is the simulator's before identity (the same numbers) and the spread falls back (lower
    face height 1.9 %, far below the published 4.7-6.9 %)."""
    on = _face_truth(head, sample_cohort(60, 0, ["robex"]))
    off_cohort = sample_cohort(60, 0, ["robex"], identity_scale=0.0)
    off = _face_truth(head, off_cohort)
    before = _face_truth(head, [{k: v for k, v in p.items() if k != "identity"} for p in off_cohort])
    pd.testing.assert_frame_equal(off, before)
    for measure, (lo, hi) in ANTHROPOMETRIC_CV.items():
        cv_on, cv_off = _residual_cv(on, measure), _residual_cv(off, measure)
        print(f"{measure}: CV {100 * cv_on:.1f} % with identity, {100 * cv_off:.1f} % without; published {100 * lo:.1f}-{100 * hi:.1f} %")
        assert lo <= cv_on <= hi, (measure, cv_on)
        assert cv_off < cv_on, (measure, cv_off)
    assert _residual_cv(off, "lower_face_height") < 0.5 * ANTHROPOMETRIC_CV["lower_face_height"][0]


def test_identity_does_not_depend_on_age():
    """By construction: the same person drawn at any age gets the same identity, and scale 0
    zeroes every mode (no -0.0 in the record)."""
    draws = [sample_subject(np.random.default_rng(5), ["robex"], age_years=a)["identity"] for a in (56.0, 75.0, 96.0)]
    assert draws[0] == draws[1] == draws[2]
    assert any(abs(v) > 0 for v in draws[0]["face"].values())
    off = sample_subject(np.random.default_rng(5), ["robex"], identity_scale=0.0)["identity"]
    assert all(math.copysign(1, v) == 1 and v == 0 for v in off["face"].values())


def test_extreme_identity_is_fold_free_and_stays_a_head(head):
    """Three times the published spreads: still fold-free, and the brain ageing still ages."""
    params = sample_subject(np.random.default_rng(9), ["robex"], identity_scale=3.0)
    young, old = (simulate_subject(head, _at_age(params, a), check_jacobian=True) for a in (56.0, 96.0))
    assert young.min_jacobian > 0 and old.min_jacobian > 0
    assert old.ground_truth["ventricles_norm_ml"] > 1.3 * young.ground_truth["ventricles_norm_ml"]
    plain = simulate_subject(head, {k: v for k, v in _at_age(params, 56.0).items() if k != "identity"})
    assert abs(young.ground_truth["nose_length_norm_mm"] - plain.ground_truth["nose_length_norm_mm"]) > 1.0


def test_two_sessions_of_a_person_are_more_alike_than_two_people(head):
    """For every face measure the within-person change between sessions (the cohort's mean
    age change removed) is smaller than the between-person SD of the first session."""
    cohort = sample_cohort(24, 3, ["robex"], sessions=2, interval_years=4.0)
    t = _face_truth(head, cohort)
    first, second = (t[t["session"] == s].set_index("participant_id") for s in ("01", "02"))
    assert np.allclose(second["age"] - first["age"], 4.0)
    for m in FACE_MEASURES:
        for suffix in ("_mm", "_norm_mm"):
            change = second[m + suffix] - first[m + suffix]
            within = float((change - change.mean()).std())
            between = float(first[m + suffix].std())
            print(f"{m}{suffix}: within {within:.2f}, between {between:.2f}")
            assert within < between, (m, suffix, within, between)


def test_sessions_on_disk_bids_ages_and_grouped_split(tmp_path, head):
    """--sessions 2: ses-* folders, sessions.tsv with per-session ages that the cohort reader
    uses, a split that keeps a person's sessions together, the same identity and new
    acquisition per session; --jobs 2 gives the same bytes."""
    import json

    from defacebench.cohort import assign_splits, read_bids

    args = ["--n", "3", "--seed", "2", "--voxel-mm", "3", "--sessions", "2", "--interval-years", "5"]
    assert main([str(tmp_path / "a"), *args]) == 0
    assert main([str(tmp_path / "b"), *args, "--jobs", "2"]) == 0
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    root = tmp_path / "a"
    ses = pd.read_csv(layout.sessions_table(root, "002"), sep="\t")
    assert list(ses["session_id"]) == ["ses-01", "ses-02"] and ses["age"].diff().iloc[1] == pytest.approx(5.0)
    frame = read_bids(root).to_frame()
    assert len(frame) == 6 and frame.groupby("participant_id")["age"].apply(lambda a: a.max() - a.min()).round(1).eq(5.0).all()
    splits = assign_splits(read_bids(root), fractions=(1, 1, 1))
    assert splits.groupby("participant_id")["split"].nunique().eq(1).all()
    records = [json.loads(layout.simulation_files(root, "002", s)["record"].read_text())["parameters"] for s in ("01", "02")]
    assert records[0]["identity"] == records[1]["identity"] and records[0]["brain_ageing"] == records[1]["brain_ageing"]
    assert records[0]["pose"] != records[1]["pose"] and records[0]["intensity"] != records[1]["intensity"]
    truth = pd.read_csv(layout.simulation_truth_table(root), sep="\t")
    assert {"session_id", "identity_nose_length_mm", "identity_scale"} <= set(truth.columns) and len(truth) == 6
    assert layout.simulation_files(root, "001", "02")["dseg"].is_file()
    from defacebench.simulate.preview import face_surface, write_preview

    face = face_surface(root, "sub-001", "02")
    assert face.shape == (181, 161) and 0.3 < (face > 0).mean() < 0.95  # a head seen from the front
    assert write_preview(root, truth, tmp_path / "preview.png").stat().st_size > 10_000


@pytest.mark.parametrize("extra", [["--sessions", "0"], ["--sessions", "3", "--interval-years", "25"], ["--identity-scale", "-1"]])
def test_bad_session_and_identity_input_exit_2(tmp_path, capsys, extra):
    assert main([str(tmp_path / "out"), "--n", "1", "--voxel-mm", "3", *extra]) == 2
    assert "\n" not in capsys.readouterr().err.strip()
