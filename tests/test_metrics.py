"""Metrics of the analysis stage (Table 1, null baseline, age-bias correction) and the
synthetic study builder the analysis, figure and report tests share."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from defacebench.analysis import inputs, metrics
from defacebench.conditions import condition_label, order_conditions
from defacebench.io.errors import InputError

CONDITIONS = ("raw", "skullstripped", "defaced-afni", "defaced-fsl", "face-afni", "face-fsl")


def make_study(
    root: Path,
    noise_sd: dict[str, float] | None = None,
    n_test: int = 40,
    n_val: int = 20,
    n_train: int = 60,
    runs: int = 2,
    seed: int = 0,
    conditions: tuple[str, ...] = CONDITIONS,
    null_conditions: tuple[str, ...] = (),
) -> Path:
    """A study directory with ``splits.tsv`` and synthetic ``runs/<c>/run-<k>/`` files.

    Predictions are ``age + subject effect + N(0, noise_sd[c])``; conditions in
    ``null_conditions`` predict the training mean age plus noise unrelated to age.
    """
    rng = np.random.default_rng(seed)
    noise_sd = noise_sd or {c: 2.0 + i for i, c in enumerate(conditions)}
    n = n_train + n_val + n_test
    ages = rng.uniform(55, 90, n).round(1)
    split = np.array(["train"] * n_train + ["val"] * n_val + ["test"] * n_test)
    ids = [f"sub-{i:03d}" for i in range(n)]
    pd.DataFrame({"participant_id": ids, "session_id": "", "run": "", "age": ages, "split": split}).to_csv(root / "splits.tsv", sep="\t", index=False)
    train_mean = ages[split == "train"].mean()
    subject_effect = rng.normal(0, 1.0, n)
    held = split != "train"
    for condition in conditions:
        for run in range(1, runs + 1):
            run_dir = root / "runs" / condition / f"run-{run}"
            run_dir.mkdir(parents=True, exist_ok=True)
            if condition in null_conditions:
                predicted = train_mean + rng.normal(0, 0.5, n)
            else:
                predicted = ages + subject_effect + rng.normal(0, noise_sd[condition], n)
            pd.DataFrame({
                "participant_id": np.array(ids)[held], "session_id": "", "bids_run": "", "split": split[held],
                "age": ages[held], "predicted_age": predicted[held].round(3), "condition": condition, "run": run,
            }).to_csv(run_dir / "predictions.csv", index=False)
            epochs = np.arange(1, 6)
            pd.DataFrame({"epoch": epochs, "train_loss": 100 / epochs, "val_mae": 10 / epochs + noise_sd.get(condition, 1), "lr": 1e-4, "seconds": 1.0}).to_csv(run_dir / "history.csv", index=False)
            (run_dir / "run.json").write_text(json.dumps({"condition": condition, "run": run, "device": "cpu", "parameter_count": 1234, "best_epoch": 5, "best_val_mae": 10 / 5 + noise_sd.get(condition, 1), "samples_per_s": 10.0, "complete": True}))
    return root


def test_regression_metrics_match_scipy() -> None:
    rng = np.random.default_rng(1)
    age = rng.uniform(50, 90, 50)
    pred = 0.7 * age + 20 + rng.normal(0, 3, 50)
    m = metrics.regression_metrics(age, pred)
    assert m["mae"] == pytest.approx(np.mean(np.abs(pred - age)))
    assert m["pearson_r"] == pytest.approx(stats.pearsonr(age, pred)[0])
    assert m["mean_signed_error"] == pytest.approx(np.mean(pred - age))
    assert m["bias_slope"] == pytest.approx(stats.linregress(age, pred - age).slope)
    assert m["r2"] == pytest.approx(1 - np.sum((pred - age) ** 2) / np.sum((age - age.mean()) ** 2))


def test_table1_columns_and_values(tmp_path: Path) -> None:
    study = make_study(tmp_path, runs=3)
    predictions = inputs.load_predictions(study)
    table = metrics.table1(predictions, training_mean_age=70.0)
    assert list(table["condition"]) == list(CONDITIONS)
    assert {"mae_run_1", "mae_run_2", "mae_run_3", "mae_mean", "abs_error_sd", "null_mae"} <= set(table.columns)
    raw = predictions[(predictions["condition"] == "raw") & (predictions["split"] == "test")]
    per_run = raw.groupby("run").apply(lambda g: np.mean(np.abs(g["predicted_age"] - g["age"])), include_groups=False)
    row = table.set_index("condition").loc["raw"]
    assert row["mae_mean"] == pytest.approx(per_run.mean())
    assert row["mae_run_2"] == pytest.approx(per_run["2"])
    per_subject = raw.assign(e=(raw["predicted_age"] - raw["age"]).abs()).groupby("participant_id")["e"].mean()
    assert row["abs_error_sd"] == pytest.approx(per_subject.std(ddof=1))
    test_ages = raw.drop_duplicates("participant_id")["age"]
    assert row["null_mae"] == pytest.approx(np.mean(np.abs(test_ages - 70.0)))
    # noisier conditions have higher MAE (planted: sd 2, 3, 4, ...)
    assert table["mae_mean"].is_monotonic_increasing


def test_condition_labels_and_order() -> None:
    assert order_conditions(["face-spm", "defaced-spm", "raw", "face-afni", "skullstripped", "defaced-quickshear"]) == ["raw", "skullstripped", "defaced-spm", "defaced-quickshear", "face-afni", "face-spm"]
    assert condition_label("defaced-fsl") == "FSL df"
    assert condition_label("face-pydeface") == "pydeface f"
    assert condition_label("skullstripped") == "ss"


def test_bias_correction_uses_validation_only(tmp_path: Path) -> None:
    study = make_study(tmp_path, runs=1, conditions=("raw",))
    predictions = inputs.load_predictions(study)
    # shrink predictions towards 70 (regression to the mean): the val fit must undo it
    shrunk = predictions.assign(predicted_age=70 + 0.5 * (predictions["predicted_age"] - 70))
    corrected = metrics.bias_corrected_metrics(shrunk).iloc[0]
    assert corrected["val_slope"] == pytest.approx(0.5, abs=0.1)
    before = metrics.run_metrics(shrunk).iloc[0]
    assert abs(corrected["bias_slope"]) < abs(before["bias_slope"])
    # changing test ages must not change the fitted correction
    moved = shrunk.copy()
    moved.loc[moved["split"] == "test", "age"] += 5
    assert metrics.bias_corrected_metrics(moved).iloc[0]["val_slope"] == pytest.approx(corrected["val_slope"])


def test_missing_runs_and_predictions_are_input_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no trained runs"):
        inputs.load_predictions(tmp_path)
    (tmp_path / "runs" / "raw" / "run-1").mkdir(parents=True)
    with pytest.raises(InputError, match="no run can be used.*no run.json"):
        inputs.load_predictions(tmp_path)
    (tmp_path / "runs" / "raw" / "run-1" / "run.json").write_text(json.dumps({"best_val_mae": 3.0, "complete": True}))
    with pytest.raises(InputError, match="no predictions.csv"):
        inputs.load_predictions(tmp_path)
    (tmp_path / "runs" / "raw" / "run-1" / "predictions.csv").write_text("participant_id,age\nsub-1,50\n")
    with pytest.raises(InputError, match="lack column"):
        inputs.load_predictions(tmp_path)


def test_training_mean_age_says_where_it_came_from(tmp_path: Path) -> None:
    study = make_study(tmp_path, runs=1, conditions=("raw",))
    predictions = inputs.load_predictions(study)
    splits = pd.read_csv(study / "splits.tsv", sep="\t")
    age, source = inputs.training_mean_age(study, predictions)
    assert age == pytest.approx(splits.loc[splits["split"] == "train", "age"].mean()) and source.startswith("splits.tsv (60 training scans)")
    store = study / "stores" / "g"
    store.mkdir(parents=True)
    (study / "splits.tsv").rename(store / "index.tsv")  # the store index holds the same splits
    assert inputs.training_mean_age(study, predictions, "g") == (age, "stores/g/index.tsv (60 training scans)")
    (store / "index.tsv").unlink()
    age, source = inputs.training_mean_age(study, predictions)
    val = predictions[predictions["split"] == "val"]
    assert age == pytest.approx(val["age"].mean()) and source.startswith("validation predictions (20 scans")


def test_an_incomplete_run_is_left_out(tmp_path: Path) -> None:
    study = make_study(tmp_path, runs=2, conditions=("raw",))
    assert [(i["condition"], i["run"]) for i in inputs.check_runs(study)] == [("raw", 1), ("raw", 2)]
    (study / "runs" / "raw" / "run-2" / "run.json").write_text(json.dumps({"complete": False}))
    assert [(i["condition"], i["run"]) for i in inputs.check_runs(study)] == [("raw", 1)]
    assert set(inputs.load_predictions(study)["run"]) == {"1"}
    (study / "runs" / "raw" / "run-1" / "run.json").write_text(json.dumps({"complete": False}))
    with pytest.raises(InputError, match="not complete"):
        inputs.load_predictions(study)
    assert inputs.resolve_grid(study) is None and inputs.resolve_grid(study, "mni2mm") == "mni2mm"
