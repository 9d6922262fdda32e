"""Training: a planted age signal is learned (and an absent one is not), outputs, resume, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from defacebench.commands.train import main as train_main
from defacebench import layout
from defacebench.conditions import PREDICTION_COLUMNS
from defacebench.model.accel.settings import SPEED_FIELDS, SpeedSettings, get_speed, uses_channels_last, uses_fused_adam, uses_triton_block, uses_triton_rotate
from defacebench.model.inference import load_model
from defacebench.model.profiles import PROFILE_FIELDS, get_profile
from defacebench.model.train import train_condition

from model_stores import make_blob_store

SHAPE = (12, 14, 13)


def _profile(**changes):
    base = dict(grid="tiny", input_pool=1, width_multiplier=0.125, max_epochs=10, patience=10, learning_rate=1e-2, rotation_deg=5.0)
    base.update(changes)
    return get_profile("cpu", **base)


def _old_flat_config(profile, speed: SpeedSettings) -> dict:
    """A profile as earlier versions saved it: science and speed settings in one flat dict."""
    return {**profile.to_dict(), **speed.to_dict()}


def _mae_and_baseline(study: Path, out: Path) -> tuple[float, float]:
    pred = pd.read_csv(out / "predictions.csv")
    index = pd.read_csv(study / "stores" / "tiny" / "index.tsv", sep="\t")
    test = pred[pred["split"] == "test"]
    mean_age = index.loc[index["split"] == "train", "age"].mean()
    return float((test["predicted_age"] - test["age"]).abs().mean()), float((test["age"] - mean_age).abs().mean())


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> tuple[Path, Path]:
    study = make_blob_store(tmp_path_factory.mktemp("planted"), n=100, shape=SHAPE, planted=True)
    return study, train_condition(study, "tiny", "raw", 1, _profile(), device="cpu", progress=False, log=None)


def test_planted_signal_is_learned(planted) -> None:
    study, out = planted
    mae, baseline = _mae_and_baseline(study, out)
    assert baseline > 8
    print(f"planted: test MAE {mae:.2f}, predict-the-mean {baseline:.2f}")
    assert mae < 0.4 * baseline, (mae, baseline)


def test_unrelated_signal_is_not_learned(tmp_path: Path) -> None:
    study = make_blob_store(tmp_path, n=100, shape=SHAPE, planted=False)
    out = train_condition(study, "tiny", "raw", 1, _profile(), device="cpu", progress=False, log=None)
    mae, baseline = _mae_and_baseline(study, out)
    print(f"unrelated: test MAE {mae:.2f}, predict-the-mean {baseline:.2f}")
    assert mae > 0.8 * baseline, (mae, baseline)


def test_output_contract(planted) -> None:
    study, out = planted
    pred = pd.read_csv(out / "predictions.csv", keep_default_na=False)
    assert tuple(pred.columns) == PREDICTION_COLUMNS
    assert sorted(set(pred["split"])) == ["test", "val"] and len(pred) == 40
    assert set(pred["condition"]) == {"raw"} and set(pred["run"]) == {1}
    hist = pd.read_csv(out / "history.csv")
    assert list(hist.columns) == ["epoch", "train_loss", "val_mae", "lr", "seconds"]
    assert np.isclose(hist["lr"].iloc[-1], 1e-2 * np.exp(-1e-4 * 15 * len(hist)))  # 60 train scans / batch 4 = 15 steps per epoch
    meta = json.loads((out / "run.json").read_text())
    assert list(meta)[-1] == "complete" and meta["complete"] is True
    assert meta["parameter_count"] == sum(p.numel() for p in load_model(out).parameters())
    assert meta["best_epoch"] == int(hist.loc[hist["val_mae"].idxmin(), "epoch"])
    assert meta["seed"] == 1 and meta["device"].startswith("cpu") and meta["samples_per_s"] > 0
    assert meta["fused_first_block"] is True and meta["channels_last"] is True  # the CPU defaults (docs/training.md)
    model = load_model(out)
    assert not model.training and model.last_conv is model.features[-1].conv
    _reproduce(study, out, "raw")  # the saved model is the best epoch's


def test_complete_run_is_skipped(planted) -> None:
    study, out = planted
    before = (out / "model.pt").stat().st_mtime_ns
    train_condition(study, "tiny", "raw", 1, _profile(), device="cpu", progress=False, log=None)
    assert (out / "model.pt").stat().st_mtime_ns == before


def test_science_and_speed_settings_are_apart() -> None:
    """Every old TrainProfile field is in exactly one of the two objects (14 science, 8 speed)."""
    assert len(PROFILE_FIELDS) == 14 and len(SPEED_FIELDS) == 8 and not PROFILE_FIELDS & SPEED_FIELDS
    assert get_speed("cpu").cpu_threads == 1 and get_speed("paper").compile_mode == "reduce-overhead"
    from defacebench.io.errors import InputError

    with pytest.raises(InputError, match="unknown training setting"):
        get_profile("cpu", channels_last=True)  # a speed setting is not a profile's
    with pytest.raises(InputError, match="unknown speed setting"):
        get_speed("cpu", learning_rate=1.0)


def test_a_run_counts_when_its_science_settings_match(planted) -> None:
    """Old-format ``run.json`` (speed settings inside ``config``), settings added or removed
    since, and other speed settings: still complete; other science settings: not."""
    from defacebench.model.train import is_complete

    study, out = planted
    meta = json.loads((out / "run.json").read_text())
    assert set(meta["config"]) == PROFILE_FIELDS and set(meta["speed"]) == SPEED_FIELDS
    old = {k: v for k, v in meta.items() if k != "speed"}
    flat = _old_flat_config(_profile(), get_speed("cpu"))
    try:
        for config in (
            flat,  # as the old code wrote it
            {k: v for k, v in flat.items() if k not in ("channels_last", "compile_mode")},  # before those settings existed
            {**flat, "fused_adam": False, "channels_last": True, "compile_mode": "reduce-overhead"},  # other speed settings
            {**flat, "triton_moments": True},  # a speed setting since removed
        ):
            (out / "run.json").write_text(json.dumps({**old, "config": config}))
            assert is_complete(out, _profile(), meta["store_checksum"]), config
        assert not is_complete(out, _profile(learning_rate=2e-2))
        assert not is_complete(out, _profile(rotation_deg=0.0))
        assert not is_complete(out, _profile(), "another store")
        (out / "run.json").write_text(json.dumps({**old, "config": {**flat, "learning_rate": 2e-2}}))
        assert not is_complete(out, _profile())
        before = (out / "model.pt").stat().st_mtime_ns
        (out / "run.json").write_text(json.dumps({**old, "config": flat}))
        train_condition(study, "tiny", "raw", 1, _profile(), device="cpu", progress=False, log=None)
        assert (out / "model.pt").stat().st_mtime_ns == before  # skipped, not retrained
    finally:
        (out / "run.json").write_text(json.dumps(meta))


def test_saved_files_load_with_weights_only(planted) -> None:
    """``model.pt`` and ``checkpoint.pt`` hold plain values and tensors only."""
    _, out = planted
    state = torch.load(layout.checkpoint_file(out), weights_only=True)
    assert state["profile"] == _profile().to_dict() and state["speed"] == get_speed("cpu").to_dict()
    saved = torch.load(layout.model_file(out), weights_only=True)
    assert saved["condition"] == "raw" and saved["run"] == 1 and "state_dict" in saved


def test_layout_defaults_follow_the_measurements() -> None:
    """NDHWC with the fused first block on both devices (docs/training.md); an explicit setting wins."""
    for device_type in ("cpu", "cuda"):
        assert uses_channels_last(get_speed("paper"), device_type) is True
        assert uses_channels_last(get_speed("cpu"), device_type) is True
        assert uses_channels_last(get_speed("paper", fused_first_block=False), device_type) is False
        assert uses_channels_last(get_speed("paper", channels_last=False), device_type) is False
    assert get_speed("paper").compile_mode == "reduce-overhead"  # CUDA graphs (docs/training.md)


def test_unknown_compile_mode_is_refused() -> None:
    from defacebench.io.errors import InputError

    with pytest.raises(InputError, match="compile_mode"):
        get_speed("cpu", compile_mode="fastest")


def test_resume_gives_the_same_weights(tmp_path: Path) -> None:
    study = make_blob_store(tmp_path, n=40, shape=SHAPE, planted=True)
    profile = _profile(max_epochs=4)
    straight = train_condition(study, "tiny", "raw", 2, profile, device="cpu", progress=False, log=None)
    reference = {k: v.clone() for k, v in load_model(straight).state_dict().items()}
    ref_history = pd.read_csv(straight / "history.csv")

    class Killed(Exception):
        pass

    def kill(epoch: int, row: dict) -> None:
        if epoch == 2:
            raise Killed

    other = tmp_path / "copy"
    make_blob_store(other, n=40, shape=SHAPE, planted=True)
    with pytest.raises(Killed):
        train_condition(other, "tiny", "raw", 2, profile, device="cpu", progress=False, on_epoch_end=kill, log=None)
    run = other / "runs" / "raw" / "run-2"
    assert (run / "checkpoint.pt").is_file() and not (run / "run.json").exists()
    assert len(pd.read_csv(run / "history.csv")) == 2
    # as the old code saved it: the flat profile with the speed settings, widths a tuple, no "speed"
    state = torch.load(layout.checkpoint_file(run), weights_only=True)
    state.pop("speed")
    state["profile"] = {**_old_flat_config(profile, get_speed("cpu")), "widths": tuple(profile.widths)}
    torch.save(state, layout.checkpoint_file(run))
    said: list[str] = []
    train_condition(other, "tiny", "raw", 2, profile, device="cpu", progress=False, log=said.append)
    assert "raw run-2: resuming after epoch 2" in said
    resumed = load_model(run).state_dict()
    assert all(torch.equal(reference[k], resumed[k]) for k in reference)
    history = pd.read_csv(run / "history.csv")
    assert np.allclose(history[["train_loss", "val_mae"]], ref_history[["train_loss", "val_mae"]])


def _reproduce(study: Path, run: Path, condition: str) -> None:
    """The saved model, fed the store's images, reproduces the written test predictions."""
    from defacebench.io.store import open_condition

    pred = pd.read_csv(run / "predictions.csv", keep_default_na=False)
    store = open_condition(study, "tiny", condition)
    rows = store.rows("test")
    with torch.no_grad():
        again = load_model(run)(torch.from_numpy(np.asarray(store.images[rows], dtype=np.float32))[:, None]).numpy()
    assert np.allclose(again, pred.loc[pred["split"] == "test", "predicted_age"], atol=1e-3)


def test_cli_trains_then_skips(tmp_path: Path, capsys) -> None:
    # the cpu profile as the demo uses it: 2x average pooling at the input
    study = make_blob_store(tmp_path, n=12, shape=(20, 24, 22), conditions=("raw", "face-fsl"))
    argv = [str(study), "--grid", "tiny", "--profile", "cpu", "--runs", "1", "--epochs", "1", "--no-progress", "--device", "cpu", "--conditions", "face-fsl"]
    assert train_main(argv) == 0
    out = capsys.readouterr().out
    assert "profile name=cpu" in out and "trainable parameters" in out and "face-fsl run-1: best val MAE" in out
    run = study / "runs" / "face-fsl" / "run-1"
    meta = json.loads((run / "run.json").read_text())
    assert meta["complete"] is True and meta["model"]["input_pool"] == 2
    assert not (study / "runs" / "raw").exists()
    _reproduce(study, run, "face-fsl")
    assert train_main(argv) == 0
    assert "complete, skipped" in capsys.readouterr().out


def test_cli_bad_input_exit_2(tmp_path: Path, capsys) -> None:
    assert train_main([str(tmp_path / "missing")]) == 2
    assert "not found" in capsys.readouterr().err
    assert train_main([str(tmp_path), "--grid", "tiny"]) == 2  # no stores
    assert "no condition stores" in capsys.readouterr().err
    study = make_blob_store(tmp_path / "s", n=12, shape=SHAPE)
    assert train_main([str(study), "--grid", "tiny", "--conditions", "defaced-nope"]) == 2
    err = capsys.readouterr().err
    assert "unknown condition" in err and err.count("\n") == 1
    assert train_main([str(study), "--grid", "tiny", "--profile", "gpu-huge"]) == 2
    assert train_main([str(study), "--grid", "tiny", "--runs", "0"]) == 2


def test_triton_block_is_the_cuda_default_and_needs_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    """triton_block: on by default on CUDA where triton is installed (docs/training.md), off on
    CPU; asking for it on CPU is an input error."""
    import importlib.util

    from defacebench.io.errors import InputError

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "triton" else None)
    assert uses_triton_block(get_speed("paper"), "cuda") is True
    assert uses_triton_block(get_speed("paper"), "cpu") is False
    assert uses_triton_block(get_speed("paper", triton_block=False), "cuda") is False
    assert uses_triton_block(get_speed("paper", fused_first_block=False), "cuda") is False
    with pytest.raises(InputError, match="CUDA"):
        uses_triton_block(get_speed("paper", triton_block=True), "cpu")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    assert uses_triton_block(get_speed("paper"), "cuda") is False  # no triton: the cuBLAS path
    for uses, setting in ((uses_triton_rotate, "triton_rotate"), (uses_fused_adam, "fused_adam")):
        monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object())
        assert uses(get_speed("paper"), "cuda") is True  # the measured CUDA defaults
        assert uses(get_speed("paper", **{setting: False}), "cuda") is False
        assert uses(get_speed("paper"), "cpu") is False
        with pytest.raises(InputError, match=setting):
            uses(get_speed("paper", **{setting: True}), "cpu")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    assert uses_triton_rotate(get_speed("paper"), "cuda") is False and uses_fused_adam(get_speed("paper"), "cuda") is True  # no triton


def test_a_compiled_step_only_ever_sees_full_batches(tmp_path: Path) -> None:
    """The epoch's last, smaller batch goes through the eager fused path (same function), so a
    compiled CUDA step is never recompiled for it nor records a second CUDA graph."""
    from defacebench.model.trainer import Trainer
    from defacebench.io.store import open_condition

    study = make_blob_store(tmp_path, n=102, shape=SHAPE, planted=True)  # 61 training scans
    trainer = Trainer(open_condition(study, "tiny", "raw"), _profile(), 1, torch.device("cpu"))
    assert len(trainer.train_rows) % trainer.profile.batch_size == 1
    seen: list[int] = []
    compiled_step = trainer._train_net
    trainer.compiled = True  # as on CUDA; the step itself stays the eager one here
    trainer._train_net = lambda x: seen.append(x.shape[0]) or compiled_step(x)
    loss = trainer.train_epoch()
    assert np.isfinite(loss)
    assert seen and set(seen) == {trainer.profile.batch_size} and len(seen) == len(trainer.train_rows) // 4


def test_cuda_speed_settings_on_cpu_are_input_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from defacebench.io.errors import InputError

    study = make_blob_store(tmp_path, n=12, shape=SHAPE, planted=True)
    with pytest.raises(InputError, match="fused_adam"):
        train_condition(study, "tiny", "raw", 1, _profile(), device="cpu", progress=False, log=None, speed=get_speed("cpu", fused_adam=True))
    for flag, setting in (("--fused-adam", "fused_adam"), ("--triton-rotate", "triton_rotate"), ("--triton-block", "triton_block")):
        assert train_main([str(study), "--grid", "tiny", "--device", "cpu", flag, "--no-progress"]) == 2
        assert f"{setting} needs a CUDA device" in capsys.readouterr().err
