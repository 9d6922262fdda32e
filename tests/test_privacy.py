"""The privacy stage (issue 19): renders, ranks, rates, residual face, the stage on a tiny study, the frontier."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from defacebench import layout
from defacebench.imaging.registration import save_transform
from defacebench.privacy.identify import descriptor_distances, gallery_for, rate_summary, true_rank, wilson_interval
from defacebench.privacy.render import VIEWS, canonical_pose, render_views
from defacebench.privacy.scan import PrivacyScan
from defacebench.privacy.summary import method_table, scan_rows

#: A non-identity affine: 3 mm voxels, axes permuted nowhere but shifted and slightly rotated.
ANGLE = np.deg2rad(8.0)
AFFINE = np.array([[3.0 * np.cos(ANGLE), -3.0 * np.sin(ANGLE), 0.0, -70.0],
                   [3.0 * np.sin(ANGLE), 3.0 * np.cos(ANGLE), 0.0, -105.0],
                   [0.0, 0.0, 3.0, -90.0],
                   [0.0, 0.0, 0.0, 1.0]])
SHAPE = (57, 75, 61)  # distinct axis sizes


def head(nose_mm: float = 18.0, nose_z_mm: float = -25.0, affine: np.ndarray = AFFINE) -> nib.Nifti1Image:
    """An ellipsoid head (world mm, centred at the origin) with a nose bump at the front."""
    ijk = np.indices(SHAPE).reshape(3, -1).T
    xyz = ijk @ affine[:3, :3].T + affine[:3, 3]
    x, y, z = xyz.T
    inside = (x / 70) ** 2 + (y / 90) ** 2 + (z / 80) ** 2 <= 1
    nose = ((x / 12) ** 2 + ((y - 88) / nose_mm) ** 2 + ((z - nose_z_mm) / 18) ** 2) <= 1
    data = np.where(inside | nose, 1000.0, 0.0).astype(np.float32).reshape(SHAPE)
    return nib.Nifti1Image(data, affine)


def test_a_render_shows_the_head_and_moves_with_its_nose() -> None:
    plain = render_views(head(nose_mm=0.1), np.eye(4))
    nosed = render_views(head(), np.eye(4))
    for view in VIEWS:
        shaded, depth = nosed[view.name]
        assert shaded.shape == (view.size_px, view.size_px) and shaded.dtype == np.uint8
        assert 0.2 < np.isfinite(depth).mean() < 0.9 and (shaded > 0).mean() == np.isfinite(depth).mean()
    front = VIEWS[0]
    row = int(front.size_px / 2 + (front.centre_mni[2] - (-25.0)) / front.pixel_mm)  # the nose's image row
    col = front.size_px // 2
    # the nose sits ~18 mm in front of the face: that much nearer to the camera
    nearer = plain["front"][1][row, col] - nosed["front"][1][row, col]
    assert 12.0 < nearer < 22.0


def test_the_canonical_pose_undoes_a_rotated_scan() -> None:
    """A head scanned tilted by 20 degrees, with the transform that undoes it, renders as the upright head."""
    upright = render_views(head(), np.eye(4))
    t = np.deg2rad(20.0)
    tilt = np.array([[1, 0, 0, 0], [0, np.cos(t), -np.sin(t), 0], [0, np.sin(t), np.cos(t), 0], [0, 0, 0, 1.0]])  # world -> scanner world
    tilted_head = head(affine=AFFINE)
    data = np.asarray(tilted_head.dataobj)
    scanned = nib.Nifti1Image(data, tilt @ AFFINE)  # the same voxels, placed tilted in the scanner
    to_mni = np.linalg.inv(tilt) @ np.diag([1.1, 0.9, 1.05, 1.0])  # with a scale the pose must drop
    pose = canonical_pose(to_mni, np.zeros(3))
    assert np.allclose(pose[:3, :3] @ pose[:3, :3].T, np.eye(3), atol=1e-9)
    again = render_views(scanned, to_mni, head_centre_world=tilt[:3, :3] @ np.zeros(3))
    a, b = upright["front"][1], again["front"][1]
    both = np.isfinite(a) & np.isfinite(b)
    assert both.mean() > 0.3 and np.nanmedian(np.abs(a[both] - b[both])) < 1.5
    wrong = render_views(scanned, np.eye(4))["front"][1]  # without the pose the face is turned away
    either = np.isfinite(a) & np.isfinite(wrong)
    assert np.nanmedian(np.abs(a[either] - wrong[either])) > 3.0


def test_ranks_ties_and_intervals() -> None:
    assert true_rank(np.array([0.5, 0.1, 0.9]), own=1) == 1
    assert true_rank(np.array([0.5, 0.1, 0.9]), own=0) == 2
    ranks = [true_rank(np.zeros(10), own=3, seed=s) for s in range(2000)]  # no information: chance, not best or worst
    assert abs(np.mean(np.array(ranks) == 1) - 0.1) < 0.03 and min(ranks) == 1 and max(ranks) == 10
    low, high = wilson_interval(0, 20)
    assert low == 0.0 and 0.15 < high < 0.17  # the Wilson upper bound of 0/20 is 16.1 %
    low, high = wilson_interval(10, 20)
    assert low == pytest.approx(0.299, abs=0.002) and high == pytest.approx(0.701, abs=0.002)
    assert rate_summary([True, False, True, True])["rate"] == 0.75
    assert np.allclose(descriptor_distances(np.ones((3, 4)), np.stack([np.ones((3, 4)), np.zeros((3, 4))])), [0.0, 2.0])


def test_the_gallery_uses_another_session_where_there_is_one() -> None:
    persons = ["01", "01", "02", "03", "03"]
    g = gallery_for(persons, 0)
    assert g.scans == (1, 2, 3) and g.own == 0 and not g.same_scan
    assert gallery_for(persons, 1).scans[0] == 0
    g = gallery_for(persons, 2)
    assert g.scans == (0, 2, 3) and g.same_scan  # person 02 has one scan: an upper bound
    runs = ["01", "01", "01"]  # person 01: two runs of session 1, one of session 2
    assert gallery_for(runs, 0, sessions=["1", "1", "2"]).scans == (2,)  # another session before another run


def _features(descriptors: dict[str, np.ndarray], found: dict[str, bool]) -> dict[str, np.ndarray]:
    methods = list(descriptors)
    d = np.stack([descriptors[m] for m in methods])
    return {"methods": np.array(methods), "found": np.array([[found[m]] * 3 for m in methods]), "descriptors": d, "surfaces": d.copy()}


def synthetic_gallery(n: int = 60, sessions: int = 2, seed: int = 0) -> tuple[dict, dict]:
    """People with their own descriptor, seen again in each session with noise; three methods:
    ``none`` removes nothing, ``all`` leaves one descriptor for everyone, ``half`` blurs identity."""
    rng = np.random.default_rng(seed)
    identity = rng.normal(size=(n, 3, 16))
    features, persons = {}, {}
    for p in range(n):
        for s in range(sessions):
            raw = identity[p] + 0.1 * rng.normal(size=(3, 16))
            key = f"sub-{p:03d}_ses-{s}"
            features[key] = _features({"raw": raw, "none": raw.copy(), "all": np.zeros((3, 16)),
                                       "half": 0.5 * raw + 1.5 * rng.normal(size=(3, 16))},
                                      {"raw": True, "none": True, "all": False, "half": False})
            persons[key] = f"{p:03d}"
    return features, persons


def test_a_method_that_removes_nothing_scores_the_raw_rates_and_one_that_removes_the_face_scores_chance() -> None:
    features, persons = synthetic_gallery()
    table = method_table(scan_rows(features, persons), ["raw", "none", "all", "half"]).set_index("method")
    for attack in ("face", "surface"):
        assert table.loc["raw", f"{attack}_rank1_rate"] > 0.95
        assert table.loc["none", f"{attack}_rank1_rate"] == table.loc["raw", f"{attack}_rank1_rate"]
        chance = table.loc["all", "rank1_chance"]
        assert chance == pytest.approx(1 / 60)
        assert table.loc["all", f"{attack}_rank1_ci_low"] <= chance <= table.loc["all", f"{attack}_rank1_ci_high"]
        assert table.loc["raw", f"{attack}_rank1_rate"] > table.loc["half", f"{attack}_rank1_rate"] > table.loc["all", f"{attack}_rank1_rate"]
    assert table.loc["raw", "detection_rate"] == 1.0 and table.loc["all", "detection_rate"] == 0.0
    assert not table["same_scan_gallery"].any()
    one_session, persons1 = synthetic_gallery(n=20, sessions=1)
    single = method_table(scan_rows(one_session, persons1), ["raw"]).set_index("method")
    assert single.loc["raw", "same_scan_gallery"] and single.loc["raw", "face_rank1_rate"] == 1.0  # it matches itself: an upper bound


def test_the_pareto_front_and_the_frontier_sentence(tmp_path: Path) -> None:
    from defacebench.report.privacy import draw_frontier, frontier_points, frontier_sentence, pareto_optimal

    assert pareto_optimal(np.array([0.0, 1.0, 0.5, 2.0]), np.array([1.0, 0.0, 0.5, 0.6])).tolist() == [True, True, True, False]
    privacy = pd.DataFrame({"method": ["raw", "fsl", "afni", "skullstripped"], "rank1_chance": 0.05,
                            "face_rank1_rate": [1.0, 0.05, 0.30, 0.05], "face_rank1_ci_low": [0.8, 0.0, 0.1, 0.0], "face_rank1_ci_high": [1.0, 0.2, 0.5, 0.2],
                            "surface_rank1_rate": [0.9, 0.05, 0.40, 0.05], "surface_rank1_ci_low": [0.7, 0.0, 0.2, 0.0],
                            "surface_rank1_ci_high": [1.0, 0.3, 0.6, 0.2]})
    table1 = pd.DataFrame({"condition": ["raw", "defaced-fsl", "defaced-afni", "skullstripped"], "mae_mean": [4.0, 4.2, 4.5, 5.0]})
    pairwise = pd.DataFrame({"a": ["raw", "raw"], "b": ["defaced-fsl", "defaced-afni"], "mae_diff": [-0.2, -0.5],
                             "boot_ci_low": [-0.6, -0.9], "boot_ci_high": [0.1, -0.1], "wilcoxon_p_holm": [0.5, 0.04]})
    points = frontier_points(privacy, table1, pairwise).set_index("method")
    assert points.loc["fsl", "cost_years"] == pytest.approx(0.2) and points.loc["fsl", "cost_ci_low"] == pytest.approx(-0.1)
    assert points.loc["afni", "rank1"] == 0.40 and points.loc["afni", "attack"] == "surface"  # the stronger attack
    assert points["pareto"].to_dict() == {"raw": True, "fsl": True, "afni": False, "skullstripped": False}
    sentence = frontier_sentence(points.reset_index())
    assert "<b>FSL</b>" in sentence and "Dominated" in sentence and "AFNI" in sentence.split("Dominated")[1]
    figure = draw_frontier(points.reset_index(), tmp_path / "f.png")
    assert figure.stat().st_size > 10_000


def tiny_study(root: Path, noses: dict[str, tuple[float, float]]) -> Path:
    """A study with deface outputs of ellipsoid heads: ``pydeface`` removes the front of the head,
    ``quickshear`` removes nothing (its defaced head is the raw head)."""
    rows = []
    for subject, (nose_mm, nose_z) in noses.items():
        raw = head(nose_mm, nose_z)
        data = np.asarray(raw.dataobj, dtype=np.float32)
        scan = PrivacyScan(subject)
        files = layout.scan_files(root, scan, ("pydeface", "quickshear"))
        files["to_mni"].parent.mkdir(parents=True, exist_ok=True)
        save_transform(np.eye(4), files["to_mni"])
        y = (np.indices(SHAPE).reshape(3, -1).T @ AFFINE[:3, :3].T + AFFINE[:3, 3])[:, 1].reshape(SHAPE)
        removed = (y > 55).astype(np.float32)
        for method, mask in (("pydeface", removed), ("quickshear", np.zeros_like(removed))):
            nib.save(nib.Nifti1Image(data * (1 - mask), AFFINE), files[f"{method}_defaced"])
            nib.save(nib.Nifti1Image(data * mask, AFFINE), files[f"{method}_face"])
            nib.save(nib.Nifti1Image(mask, AFFINE), files[f"{method}_mask"])
        rows.append({"participant_id": f"sub-{subject}", "session_id": "", "run": "", "age": 70.0, "split": "test"})
    pd.DataFrame(rows).to_csv(layout.splits_table(root), sep="\t", index=False)
    return root


def test_the_stage_on_a_tiny_study_records_a_broken_scan_and_resumes(tmp_path: Path, capsys) -> None:
    from defacebench.commands.privacy import main

    study = tiny_study(tmp_path / "study", {"01": (22.0, -25.0), "02": (10.0, -40.0), "03": (30.0, -15.0), "04": (16.0, -30.0)})
    broken = layout.scan_files(study, PrivacyScan("04"))["to_mni"]
    broken.write_text("not a matrix\n")
    assert main([str(study), "--methods", "pydeface,quickshear", "--no-progress"]) == 0
    table = pd.read_csv(layout.privacy_table(study)).set_index("method")
    assert table.loc["raw", "n_people"] == 3  # the broken scan is left out, the others measured
    failures = pd.read_csv(layout.failures_table(study), sep="\t")
    assert failures[failures["stage"] == "privacy"]["key"].tolist() == ["sub-04"]
    scans = pd.read_csv(layout.privacy_scan_table(study))
    for attack in ("face", "surface"):  # removing nothing scores exactly the raw head's ranks
        by = scans.pivot(index="scan", columns="method", values=f"{attack}_rank")
        assert (by["quickshear"] == by["raw"]).all()
    features = np.load(layout.privacy_features(study, PrivacyScan("01")))
    methods = features["methods"].tolist()
    assert methods == ["raw", "pydeface", "quickshear"]  # no brain mask here: no skull-stripped head
    surfaces = features["surfaces"]
    assert np.allclose(surfaces[methods.index("quickshear")], surfaces[0]) and not np.allclose(surfaces[methods.index("pydeface")], surfaces[0])
    left = features["left_mm2"] / np.maximum(features["skin_mm2"], 1e-9)
    nose = features["regions"].tolist().index("nose")
    assert left[methods.index("quickshear"), nose] == 1.0 and left[methods.index("pydeface"), nose] == 0.0
    render = layout.privacy_render(study, PrivacyScan("01"), "raw")
    assert render.is_file()
    stamp = layout.privacy_features(study, PrivacyScan("01")).stat().st_mtime_ns
    assert main([str(study), "--methods", "pydeface,quickshear", "--no-progress"]) == 0  # a rerun skips finished scans
    assert layout.privacy_features(study, PrivacyScan("01")).stat().st_mtime_ns == stamp
    assert "rank-1" in capsys.readouterr().out
    from defacebench.report.privacy import privacy_section

    section = privacy_section(study)  # one session each: the report warns of the upper bound
    assert "same scan" in section and "Face skin left per region" in section and "<img" not in section


def test_bad_input_gets_one_line_and_exit_2(tmp_path: Path, capsys) -> None:
    from defacebench.commands.privacy import main

    assert main([str(tmp_path / "missing")]) == 2
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty")]) == 2
    assert main([str(tmp_path / "empty"), "--methods", "nosuchmethod"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("defacebench privacy: error:") for line in err)
