from __future__ import annotations

import dataclasses

import json
from pathlib import Path

import pytest

from defacebench.commands import demo as demo_cmd
from defacebench.commands import run as run_cmd
from defacebench.config import get_preset
from defacebench.io.errors import InputError
from defacebench.study import Stage, record_config, run_study, study_stages


def test_stages_follow_the_data_flow_and_carry_the_config(tmp_path: Path) -> None:
    config = get_preset("demo")
    stages = study_stages(tmp_path / "bids", tmp_path / "out", config, jobs=2)
    assert [s.name for s in stages] == ["cohort", "deface", "privacy", "preprocess", "train", "train-face", "evaluate", "analyse", "report"]
    privacy = stages[2].argv
    assert privacy[privacy.index("--scans") + 1] == "test"  # the demo measures its test people
    # a BIDS folder, even one not simulated yet (the demo's): its simulation labels are read; a manifest has none
    assert privacy[privacy.index("--source") + 1] == str(tmp_path / "bids")
    assert "--source" not in study_stages(tmp_path / "cohort.csv", tmp_path / "out", config)[2].argv
    assert "privacy" not in [s.name for s in study_stages(tmp_path, tmp_path / "out", dataclasses.replace(config, privacy_scans="none"))]
    stages = [s for s in stages if s.name != "privacy"]
    preprocess = stages[2].argv
    assert preprocess[preprocess.index("--grid") + 1] == "mni4mm"
    assert set(config.conditions) <= set(preprocess)
    assert preprocess[preprocess.index("--face-placement") + 1] == "common"  # issue 22 (docs/face-placement.md)
    train, face = stages[3].argv, stages[4].argv
    assert train[train.index("--profile") + 1] == "cpu" and train[train.index("--runs") + 1] == "1"
    assert face[face.index("--runs") + 1] == "3" and "face-afni" in face and "facemask-afni" in face and "face-afni" not in train
    assert set(train[train.index("--conditions") + 1:]) | set(face[face.index("--conditions") + 1:]) >= set(config.conditions)
    assert stages[0].argv[stages[0].argv.index("--split") + 1] == "0.6,0.15,0.25"
    gpu = [s for s in study_stages(tmp_path / "bids", tmp_path / "out", config, device="cuda") if s.name != "privacy"]
    for stage in (gpu[3], gpu[4], gpu[5]):  # training and Grad-CAM run on the device asked for
        assert stage.argv[stage.argv.index("--device") + 1] == "cuda", stage.name


def test_a_study_with_geometry_controls_defaces_with_pydeface_for_their_registration(tmp_path: Path) -> None:
    config = dataclasses.replace(get_preset("paper"), methods=("afni",), conditions=("raw", "face-afni", "facemask-afni"))
    deface = study_stages(tmp_path / "bids", tmp_path / "out", config)[1].argv
    assert deface[deface.index("--methods") + 1] == "afni,pydeface"
    preprocess = {s.name: s for s in study_stages(tmp_path / "bids", tmp_path / "out", config)}["preprocess"].argv
    assert preprocess[preprocess.index("--methods") + 1] == "afni"  # only the conditions asked for are built
    config = dataclasses.replace(config, conditions=("raw", "face-afni"))
    deface = study_stages(tmp_path / "bids", tmp_path / "out", config)[1].argv
    assert deface[deface.index("--methods") + 1] == "afni"


def test_every_stage_command_exists() -> None:
    import importlib.util

    for stage in study_stages(Path("b"), Path("o"), get_preset("paper")):
        assert importlib.util.find_spec(f"defacebench.commands.{stage.command}"), stage.command


def test_run_study_stops_at_first_failure(tmp_path: Path) -> None:
    logs: list[str] = []
    stages = [
        Stage("cohort", "cohort", (str(tmp_path / "missing"),)),
        Stage("never", "cohort", ("--help",)),
    ]
    assert run_study(stages, log=logs.append) == 2
    assert "stopped at stage 'cohort'" in logs[-1] and not any("never" in line for line in logs)


def test_record_config_refuses_other_settings(tmp_path: Path) -> None:
    record_config(tmp_path, get_preset("demo"))
    record_config(tmp_path, get_preset("demo"))  # same settings: resume
    assert json.loads((tmp_path / "study.json").read_text())["grid"] == "mni4mm"
    with pytest.raises(InputError, match="other settings"):
        record_config(tmp_path, get_preset("paper"))


@pytest.mark.parametrize(
    ("main", "argv", "message"),
    [
        (run_cmd.main, ["{tmp}/missing", "{tmp}/out"], "not found"),
        (run_cmd.main, ["{tmp}", "{tmp}/out", "--preset", "nope"], "unknown preset"),
        (demo_cmd.main, ["{tmp}/demo", "--n", "3"], "--n must be >= 10"),
    ],
)
def test_bad_input_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str], main, argv: list[str], message: str) -> None:
    assert main([a.format(tmp=tmp_path) for a in argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()
