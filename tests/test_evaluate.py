"""Cross-condition evaluation, dBrainAGE, face ablation and occlusion: the maths on small
arrays, and on studies trained on a planted face signal (face ageing on) and a planted
brain signal (face ageing off), ablation and both attributions find where the age is."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from defacebench import layout
from defacebench.analysis import ablation, crosseval
from defacebench.analysis.evaluate import evaluate_study
from defacebench.analysis.saliency import abs_shares, age_terciles, compute_saliency
from defacebench.commands.evaluate import main as evaluate_main

from face_stores import make_face_study, regions
from model_stores import make_blob_store


def _profile():
    from defacebench.model.profiles import get_profile

    return get_profile("cpu", grid="tiny", input_pool=1, width_multiplier=0.125, max_epochs=10, patience=10, learning_rate=1e-2, rotation_deg=5.0)


# --------------------------------------------------------------------------- maths
def test_paired_change_against_direct_computation() -> None:
    rng = np.random.default_rng(0)
    ages = rng.uniform(50, 90, 30)
    reference = ages + rng.normal(0, 3, 30)
    changed = reference + rng.normal(1.0, 0.5, 30)
    out = crosseval.paired_change(reference, changed, ages, n_boot=500, seed=1)
    assert out["mean_abs_change"] == pytest.approx(np.mean(np.abs(changed - reference)))
    assert out["mean_change"] == pytest.approx(np.mean(changed - reference))
    assert out["mae_change"] == pytest.approx(np.mean(np.abs(changed - ages)) - np.mean(np.abs(reference - ages)))
    assert out["mean_abs_change_ci_low"] < out["mean_abs_change"] < out["mean_abs_change_ci_high"]
    assert out["change_p"] < 1e-4  # a one-year shift in 30 scans


def _predictions(shift: dict[str, float]) -> pd.DataFrame:
    """Long cross predictions of one raw model: raw, and defaced-<m> shifted by ``shift[m]``."""
    ages = np.linspace(55, 85, 12)
    rows = []
    for test, d in {"raw": 0.0, **{f"defaced-{m}": v for m, v in shift.items()}}.items():
        for i, age in enumerate(ages):
            rows.append({"train_condition": "raw", "run": "1", "test_condition": test, "participant_id": f"sub-{i}", "session_id": "", "bids_run": "",
                         "age": age, "predicted_age": age + (1.0 if i % 2 else -1.0) + d})
    return pd.DataFrame(rows)


def test_dbrainage_and_cross_condition_tables() -> None:
    predictions = _predictions({"afni": 2.0, "fsl": 0.0})
    table = crosseval.dbrainage_table(predictions, n_boot=200).set_index("method")
    assert table.loc["afni", "mean_abs_change"] == pytest.approx(2.0)
    assert table.loc["fsl", "mean_abs_change"] == pytest.approx(0.0)
    assert table.loc["afni", "change_p_holm"] < 0.05 and table.loc["fsl", "change_p_holm"] == 1.0
    cross = crosseval.cross_condition_table(predictions)
    matrix = crosseval.mae_matrix(cross)
    assert matrix.loc["raw", "raw"] == pytest.approx(1.0)
    assert matrix.loc["raw", "defaced-afni"] == pytest.approx(2.0)  # errors of +-1 shifted by 2: 3 and 1
    assert cross.set_index("test_condition").loc["raw", "matched"]


def test_dbrainage_leaves_out_models_without_heads_and_averages_runs() -> None:
    one = _predictions({"afni": 2.0})
    two = one.assign(run="2", predicted_age=one["predicted_age"] + np.where(one["test_condition"] == "raw", 0.0, 2.0))
    face = one.assign(train_condition="face-afni")
    table = crosseval.dbrainage_table(pd.concat([one, two, face]), n_boot=200)
    assert set(table["train_condition"]) == {"raw"}
    mean = table.set_index("run").loc["mean"]
    assert mean["mean_abs_change"] == pytest.approx(3.0)  # (2 + 4) / 2


def test_ablation_sets_exactly_the_removed_voxels() -> None:
    rng = np.random.default_rng(0)
    raw = rng.uniform(0.5, 1.0, (4, 7, 8, 9)).astype(np.float32)
    masks = {"a": np.zeros((7, 8, 9), bool), "b": np.zeros((7, 8, 9), bool)}
    masks["a"][:2] = True
    masks["b"][:, :3] = True
    faces = {m: raw * mask for m, mask in masks.items()}
    seen: list[np.ndarray] = []

    def predict(images: np.ndarray) -> np.ndarray:
        seen.append(images.copy())
        return images.reshape(len(images), -1).sum(axis=1)

    average = np.full((7, 8, 9), 0.25, np.float32)
    out = ablation.ablation_predictions(predict, raw, faces, np.array([3, 0, 2]), average)
    intact = raw[[3, 0, 2]].reshape(3, -1).sum(axis=1)
    assert np.allclose(out[("none", "none")], intact)
    union = masks["a"] | masks["b"]
    assert np.allclose(out[(ablation.UNION, "zero")], (raw[[3, 0, 2]] * ~union).reshape(3, -1).sum(axis=1), rtol=1e-5)
    assert np.allclose(out[("b", "average face")], np.where(masks["b"], 0.25, raw[[3, 0, 2]]).reshape(3, -1).sum(axis=1), rtol=1e-5)


def test_abs_shares_do_not_cancel_and_say_when_empty() -> None:
    face, brain = np.zeros((7, 8, 9), bool), np.zeros((7, 8, 9), bool)
    face[0], brain[3] = True, True
    signed_cancels = np.zeros((7, 8, 9))
    signed_cancels[0, 0, 0], signed_cancels[0, 0, 1] = 1.0, -1.0  # what averaging signed maps leaves
    shares = abs_shares(np.abs(signed_cancels), face, brain)
    assert shares["abs_face_share"] == pytest.approx(1.0)
    assert np.isnan(abs_shares(np.zeros((7, 8, 9)), face, brain)["abs_face_share"])
    assert list(age_terciles(np.array([50, 60, 70, 80, 90, 55]))) == [1, 2, 2, 3, 3, 1]


# --------------------------------------------------------------------------- the stage on trained studies
def test_evaluate_writes_every_table_and_resumes(tmp_path: Path) -> None:
    from defacebench.model.train import train_condition

    study = make_blob_store(tmp_path, n=24, shape=(12, 14, 13), conditions=("raw", "defaced-afni"))
    short = _profile().__class__(**{**_profile().to_dict(), "max_epochs": 2})
    for run in (1, 2):
        train_condition(study, "tiny", "raw", run, short, device="cpu", progress=False, log=None)
    assert layout.model_ts_file(layout.run_dir(study, "raw", 1)).is_file()  # training exports TorchScript
    assert evaluate_main([str(study), "--grid", "tiny", "--device", "cpu", "--bootstrap", "100"]) == 0
    for role in layout.EVALUATION_FILES:
        assert layout.evaluation_table(study, role).is_file(), role
    cross = pd.read_csv(layout.evaluation_table(study, "cross_condition"))
    assert set(cross["test_condition"]) == {"raw", "defaced-afni"}
    mine = pd.read_csv(layout.predictions_file(layout.run_dir(study, "raw", 1)))
    matched = cross[cross["matched"] & (cross["run"] == 1)].iloc[0]
    test = mine[mine["split"] == "test"]
    assert matched["mae"] == pytest.approx(float((test["predicted_age"] - test["age"]).abs().mean()), abs=1e-3)
    assert list(pd.read_csv(layout.evaluation_table(study, "dbrainage"), dtype={"run": str})["run"]) == ["1", "2", "mean"]
    occlusion = pd.read_csv(layout.evaluation_table(study, "occlusion"), dtype={"run": str})
    assert set(occlusion["run"]) == {"1", "2", "mean"} and len(occlusion) == 9  # three regions per run and for the ensemble
    assert layout.figure_file(study, "cross_condition").is_file()
    assert evaluate_study(study, "tiny", device="cpu", n_boot=100) == {}  # up to date: nothing recomputed
    assert evaluate_main([str(tmp_path / "nothing")]) == 2


@pytest.fixture(scope="module")
def face_studies(tmp_path_factory) -> dict[bool, dict[str, object]]:
    """Two trained studies: face ageing on (raw and face-only models) and off (raw model)."""
    from defacebench.model.train import train_condition

    brain = regions()["brain"]
    out = {}
    for face_ageing in (True, False):
        study = make_face_study(tmp_path_factory.mktemp(f"face-{face_ageing}"), face_ageing)
        for condition in ("raw", "face-fsl") if face_ageing else ("raw",):
            train_condition(study, "tiny", condition, 1, _profile(), device="cpu", progress=False, log=None)
        tables = evaluate_study(study, "tiny", device="cpu", n_boot=200, brain_mask=brain)
        saliency = compute_saliency(study, "tiny", conditions=["raw"], brain_mask=brain).set_index("condition").loc["raw"]
        out[face_ageing] = {"study": study, "saliency": saliency, **tables}
    return out


def _gap(studies) -> float:
    """Null MAE minus face-only MAE in the face-ageing study: how much age the face carries."""
    on = studies[True]
    cross = on["cross_condition"]
    face_mae = float(cross[(cross["train_condition"] == "face-fsl") & cross["matched"]]["mae"].iloc[0])
    index = pd.read_csv(layout.store_index(on["study"], "tiny"), sep="\t")
    test = index[index["split"] == "test"]
    null_mae = float((test["age"] - index.loc[index["split"] == "train", "age"].mean()).abs().mean())
    return null_mae - face_mae


def _union_zero(table: pd.DataFrame) -> pd.Series:
    return table[(table["region"] == ablation.UNION) & (table["fill"] == "zero")].iloc[0]


@pytest.mark.slow
def test_face_ablation_moves_mae_only_where_the_face_carries_age(face_studies) -> None:
    gap = _gap(face_studies)
    on, off = _union_zero(face_studies[True]["face_ablation"]), _union_zero(face_studies[False]["face_ablation"])
    print(f"face-only gain over the null {gap:.2f} y; union zeroed: MAE {on['mae_change']:+.2f} y (face ageing on), {off['mae_change']:+.2f} y (off)")
    assert gap > 3
    assert on["mae_change"] >= 0.5 * gap
    assert abs(off["mae_change"]) < 0.1 * gap


@pytest.mark.slow
def test_grad_cam_and_occlusion_shares_point_the_same_way(face_studies) -> None:
    for face_ageing, expected in ((True, "face"), (False, "brain")):
        found = face_studies[face_ageing]
        occlusion = found["occlusion"].set_index("region")["share"]
        saliency = found["saliency"]
        occlusion_says = "face" if occlusion["face region"] > occlusion["brain"] else "brain"
        cam_says = "face" if saliency["abs_face_share"] > saliency["abs_brain_share"] else "brain"
        print(f"face ageing {face_ageing}: occlusion face {occlusion['face region']:.2f} brain {occlusion['brain']:.2f}; "
              f"|Grad-CAM| face {saliency['abs_face_share']:.3f} brain {saliency['abs_brain_share']:.3f}")
        assert occlusion_says == cam_says == expected


# --------------------------------------------------------------------------- the report's words
def _ablation_rows() -> pd.DataFrame:
    base = {"condition": "raw", "run": 1, "n": 20, "mean_abs_change_ci_low": 0.1, "mean_abs_change_ci_high": 0.3, "mae_change_ci_low": -0.1, "mae_change_ci_high": 0.4, "mae_p": 0.2}
    return pd.DataFrame([{**base, "region": "union", "fill": "zero", "mean_abs_change": 0.21, "mae_change": 0.12},
                         {**base, "region": "union", "fill": "average face", "mean_abs_change": 0.05, "mae_change": 0.01}])


def test_summary_quotes_ablation_in_years_and_never_a_zero_or_nan_share() -> None:
    from defacebench.report.findings import face_use_sentence

    occlusion = pd.DataFrame({"condition": "raw", "run": 1, "region": ["face region", "brain", "skull and scalp"], "share": [0.001, 0.8, 0.199]})
    saliency = pd.DataFrame({"condition": ["raw"], "abs_face_share": [0.0004], "abs_brain_share": [0.6], "abs_other_share": [0.3996]})
    text = face_use_sentence(_ablation_rows(), occlusion, saliency)
    assert "moves its predictions by 0.21 years" in text and "+0.12 years" in text and "average face moves them by 0.05 years" in text
    assert "&lt;1 %" in text and " 0 %" not in text and "nan" not in text
    empty = saliency.assign(abs_face_share=np.nan, abs_brain_share=np.nan, abs_other_share=np.nan)
    silent = face_use_sentence(None, occlusion.assign(share=np.nan), empty)
    assert "carries no signal" in silent and "changes no prediction" in silent and "nan" not in silent
    assert face_use_sentence(None, None, None) is None


def test_report_section_shows_heat_map_and_tables(tmp_path: Path) -> None:
    from defacebench.analysis.figures_eval import plot_cross_condition
    from defacebench.report.evaluation import evaluation_section

    assert "Not evaluated" in evaluation_section(tmp_path)
    predictions = _predictions({"afni": 2.0})
    tables = crosseval.write_tables(tmp_path, predictions, n_boot=100)
    plot_cross_condition(crosseval.mae_matrix(tables["cross_condition"]), layout.figure_file(tmp_path, "cross_condition"))
    ablation.write_tables(tmp_path, _ablation_rows(), pd.DataFrame())
    page = evaluation_section(tmp_path)
    assert "data:image/png;base64" in page and "dBrainAGE" in page and "every removed voxel (union)" in page
