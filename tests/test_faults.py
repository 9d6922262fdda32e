"""Fault suite (issue 24): damaged stores, work files and models, diverged runs, a full disk.

Each fault gives its one-line error or recorded failure, leaves no half-written file in
place of a good one, and a rerun after the fault is removed gives byte-identical results
to an undisturbed run. Tiny volumes throughout.
"""

from __future__ import annotations

import contextlib
import errno
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from defacebench import layout
from defacebench.analysis.inputs import check_runs, find_prediction_files
from defacebench.analysis.runs import screen_runs
from defacebench.commands.train import main as train_main
from defacebench.io import atomic, store as store_mod
from defacebench.io.errors import InputError
from defacebench.io.store import open_condition, write_condition
from defacebench.model import trainer as trainer_mod
from defacebench.model.inference import load_model
from defacebench.model.profiles import get_profile
from defacebench.model.train import is_complete, train_condition
from defacebench.model.trainer import DivergedError

from model_stores import STORE_AFFINE, make_blob_store

SHAPE = (12, 14, 13)


@pytest.fixture(autouse=True)
def _fresh_verification() -> None:
    """Each test verifies stores from scratch (the per-process cache keys on path, size, mtime)."""
    store_mod._VERIFIED.clear()


def _profile(**changes):
    base = dict(grid="tiny", input_pool=1, width_multiplier=0.125, max_epochs=3, patience=3, learning_rate=1e-2, rotation_deg=5.0)
    base.update(changes)
    return get_profile("cpu", **base)


def _flip(path: Path, offset: int, n: int = 4096) -> None:
    data = bytearray(path.read_bytes())
    data[offset : offset + n] = bytes(b ^ 0xFF for b in data[offset : offset + n])
    path.write_bytes(bytes(data))


def _parts(root: Path) -> list[Path]:
    """Temporary files of the atomic writer left behind (there must be none)."""
    return sorted(root.rglob(".*.part*"))


def _run_bytes(run: Path) -> dict[str, bytes]:
    """A run's results as bytes: predictions.csv, and every weight of model.pt (the zip itself
    differs between saves: torch names its records after the temporary file)."""
    saved = torch.load(layout.model_file(run), weights_only=True)
    weights = {f"weight {k}": v.numpy().tobytes() for k, v in saved["state_dict"].items()}
    return {"predictions.csv": layout.predictions_file(run).read_bytes(), **weights}


@contextlib.contextmanager
def _disk_full_on(monkeypatch: pytest.MonkeyPatch, module, call: int):
    """The ``call``-th atomic write through ``module`` half-writes its file, then fails with ENOSPC."""
    real = atomic.atomic_path
    count = {"n": 0}

    @contextlib.contextmanager
    def full(path):
        with real(path) as tmp:
            yield tmp
            count["n"] += 1
            if count["n"] == call:
                size = tmp.stat().st_size
                with open(tmp, "r+b") as fh:
                    fh.truncate(size // 2)
                raise OSError(errno.ENOSPC, "No space left on device", str(tmp))

    monkeypatch.setattr(module, "atomic_path", full)
    yield count
    monkeypatch.setattr(module, "atomic_path", real)


# --------------------------------------------------------------------------- stores
def test_flipped_bytes_in_a_store_stop_train_with_one_line(tmp_path: Path, capsys) -> None:
    """The issue's case: 4 KB flipped in the middle of a store; train exits 2 naming it."""
    study = make_blob_store(tmp_path, n=12, shape=(20, 24, 22), conditions=("raw", "skullstripped"))
    path = layout.store_array(study, "tiny", "skullstripped")
    good = path.read_bytes()
    _flip(path, len(good) // 2)
    argv = [str(study), "--grid", "tiny", "--profile", "cpu", "--runs", "1", "--epochs", "1", "--no-progress", "--device", "cpu"]
    assert train_main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(path) in err and "corrupt" in err and "rerun `defacebench preprocess`" in err
    assert not list(layout.runs_root(study).rglob("run.json"))  # no run marked complete (none started)
    path.write_bytes(good)
    store_mod._VERIFIED.clear()
    assert train_main(argv) == 0
    assert all(is_complete(run) for run in layout.run_dirs(study))


def test_one_flipped_voxel_is_found_in_its_row(tmp_path: Path) -> None:
    study = make_blob_store(tmp_path, n=10, shape=SHAPE)
    path = layout.store_array(study, "tiny", "raw")
    header = len(path.read_bytes()) - 10 * int(np.prod(SHAPE)) * 2
    _flip(path, header + 7 * int(np.prod(SHAPE)) * 2 + 100, n=1)
    with pytest.raises(InputError, match=r"row\(s\) 7 do not match"):
        open_condition(study, "tiny", "raw")
    assert open_condition(study, "tiny", "raw", verify=False).images.shape == (10, *SHAPE)


def test_truncated_store_is_refused(tmp_path: Path) -> None:
    study = make_blob_store(tmp_path, n=10, shape=SHAPE)
    path = layout.store_array(study, "tiny", "raw")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(InputError, match="truncated") as caught:
        open_condition(study, "tiny", "raw")
    assert str(path) in str(caught.value)


def test_a_store_without_row_checksums_is_checked_whole(tmp_path: Path) -> None:
    """Stores written before the per-row CRCs open, verified against the whole-array checksum."""
    study = make_blob_store(tmp_path, n=10, shape=SHAPE)
    meta_path = layout.store_meta(study, "tiny", "raw")
    meta = json.loads(meta_path.read_text())
    del meta["row_crc32"]
    meta_path.write_text(json.dumps(meta))
    assert open_condition(study, "tiny", "raw").checksum == meta["checksum"]
    store_mod._VERIFIED.clear()
    path = layout.store_array(study, "tiny", "raw")
    _flip(path, path.stat().st_size - 50, n=2)
    with pytest.raises(InputError, match="whole array"):
        open_condition(study, "tiny", "raw")


def test_disk_full_while_writing_stores_keeps_the_good_ones(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    conditions = ("raw", "skullstripped", "face-fsl")
    reference = make_blob_store(tmp_path / "ref", n=10, shape=SHAPE, conditions=conditions)
    study = make_blob_store(tmp_path / "s", n=10, shape=SHAPE, conditions=conditions, seed=5)  # older stores
    old = {c: layout.store_array(study, "tiny", c).read_bytes() for c in conditions}
    with _disk_full_on(monkeypatch, store_mod, call=2), pytest.raises(OSError) as caught:
        make_blob_store(study, n=10, shape=SHAPE, conditions=conditions)  # the 2nd store write fails halfway
    assert caught.value.errno == errno.ENOSPC
    assert not _parts(study)
    assert layout.store_array(study, "tiny", "skullstripped").read_bytes() == old["skullstripped"]  # the good file stays
    make_blob_store(study, n=10, shape=SHAPE, conditions=conditions)  # the rerun
    for c in conditions:
        assert layout.store_array(study, "tiny", c).read_bytes() == layout.store_array(reference, "tiny", c).read_bytes()
        assert layout.store_meta(study, "tiny", c).read_bytes() == layout.store_meta(reference, "tiny", c).read_bytes()
        open_condition(study, "tiny", c)


# --------------------------------------------------------------------------- work files
def _preprocess_helpers():
    import test_preprocess as tp

    return tp


def test_flipped_work_file_is_a_recorded_failure_then_redone(tmp_path: Path) -> None:
    tp = _preprocess_helpers()
    bids, study = tp.make_study(tmp_path, n=3)
    tp.run_study(bids, study, mosaics=False)
    before = tp.store_bytes(study, "test8mm")
    work = layout.work_file(study, "test8mm", "sub-02")
    import zipfile

    with zipfile.ZipFile(work) as zf:
        info = zf.getinfo("raw.npy")  # an image, not the metadata: the scan still looks finished
    _flip(work, info.header_offset + 80 + info.compress_size // 2, n=64)
    layout.store_state(study, "test8mm").unlink()  # the stores must be reassembled: the work file is read
    result = tp.run_study(bids, study, mosaics=False)
    assert set(result.reasons) == {"sub-02"} and "sub-02.npz is unreadable" in result.reasons["sub-02"] and "CRC" in result.reasons["sub-02"]
    assert not work.exists()
    assert sorted(open_condition(study, "test8mm", "raw").index["participant_id"]) == ["sub-01", "sub-03"]
    failures = pd.read_csv(layout.failures_table(study), sep="\t")
    assert list(failures["key"]) == ["sub-02"]
    again = tp.run_study(bids, study, mosaics=False)
    assert not again.reasons and again.values["sub-02"]["skipped"] is False
    assert tp.store_bytes(study, "test8mm") == before


def test_work_file_deleted_or_truncated_between_stages(tmp_path: Path) -> None:
    from defacebench.cohort import read_cohort, read_splits
    from defacebench.preprocess.stores import build_stores

    tp = _preprocess_helpers()
    bids, study = tp.make_study(tmp_path, n=3)
    tp.run_study(bids, study, mosaics=False)
    before = tp.store_bytes(study, "test8mm")
    layout.work_file(study, "test8mm", "sub-01").unlink()
    truncated = layout.work_file(study, "test8mm", "sub-03")
    truncated.write_bytes(truncated.read_bytes()[:3000])
    report = build_stores(study, tp.TEST_GRID, tp.CONDITIONS, read_cohort(bids).subjects, read_splits(layout.splits_table(study)))
    assert sorted(report.excluded["key"]) == ["sub-01", "sub-03"]
    assert sorted(open_condition(study, "test8mm", "raw").index["participant_id"]) == ["sub-02"]
    assert not _parts(study)
    tp.run_study(bids, study, mosaics=False)
    assert tp.store_bytes(study, "test8mm") == before


# --------------------------------------------------------------------------- models and runs
@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path, dict[str, bytes]]:
    """An undisturbed reference run (3 epochs) and its bytes."""
    study = make_blob_store(tmp_path_factory.mktemp("ref"), n=40, shape=SHAPE)
    run = train_condition(study, "tiny", "raw", 1, _profile(), device="cpu", progress=False, log=None)
    return study, run, _run_bytes(run)


def test_truncated_model_is_refused_and_left_out(tmp_path: Path, trained) -> None:
    import shutil

    _, run, _ = trained
    study = tmp_path / "study"
    shutil.copytree(run.parents[2], study)
    copy = layout.run_dir(study, "raw", 1)
    model = layout.model_file(copy)
    model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])
    with pytest.raises(InputError, match="model.pt does not match the sha256") as caught:
        load_model(copy)
    assert str(model) in str(caught.value)
    with pytest.raises(InputError, match="unreadable model"):  # no record to compare with: torch's error, one line
        load_model(model.rename(tmp_path / "model.pt"))


def test_truncated_checkpoint_starts_over_with_a_reason(tmp_path: Path, trained) -> None:
    _, _, reference = trained
    study = make_blob_store(tmp_path, n=40, shape=SHAPE)

    class Killed(Exception):
        pass

    def kill(epoch: int, row: dict) -> None:
        if epoch == 2:
            raise Killed

    with pytest.raises(Killed):
        train_condition(study, "tiny", "raw", 1, _profile(), device="cpu", progress=False, on_epoch_end=kill, log=None)
    checkpoint = layout.checkpoint_file(layout.run_dir(study, "raw", 1))
    checkpoint.write_bytes(checkpoint.read_bytes()[:1000])
    said: list[str] = []
    run = train_condition(study, "tiny", "raw", 1, _profile(), device="cpu", progress=False, log=said.append)
    assert any("checkpoint.pt is unreadable" in line and "starting over" in line for line in said), said
    assert _run_bytes(run) == reference


def test_disk_full_while_writing_a_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, trained) -> None:
    _, _, reference = trained
    study = make_blob_store(tmp_path, n=40, shape=SHAPE)
    run = layout.run_dir(study, "raw", 1)
    with _disk_full_on(monkeypatch, trainer_mod, call=2), pytest.raises(OSError) as caught:  # epoch 2's checkpoint
        train_condition(study, "tiny", "raw", 1, _profile(), device="cpu", progress=False, log=None)
    assert caught.value.errno == errno.ENOSPC
    assert not _parts(study) and not layout.run_record(run).exists()
    state = torch.load(layout.checkpoint_file(run), weights_only=True)  # the good one of epoch 1 is in place
    assert state["epoch"] == 1
    said: list[str] = []
    train_condition(study, "tiny", "raw", 1, _profile(), device="cpu", progress=False, log=said.append)
    assert "raw run-1: resuming after epoch 1" in said
    assert _run_bytes(run) == reference


def test_diverged_run_is_failed_then_retried_from_its_last_good_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, trained) -> None:
    _, _, reference = trained
    study = make_blob_store(tmp_path, n=40, shape=SHAPE)
    run = layout.run_dir(study, "raw", 1)
    real = torch.nn.functional.mse_loss
    calls = {"n": 0}
    batches = -(-24 // 4)  # 24 training scans, batch size 4

    def poisoned(pred, target):
        calls["n"] += 1
        loss = real(pred, target)
        return loss * float("nan") if calls["n"] == batches + 2 else loss  # epoch 2, batch 2

    monkeypatch.setattr(trainer_mod.F, "mse_loss", poisoned)
    with pytest.raises(DivergedError, match="non-finite loss at epoch 2, batch 2"):
        train_condition(study, "tiny", "raw", 1, _profile(), device="cpu", progress=False, log=None)
    monkeypatch.setattr(trainer_mod.F, "mse_loss", real)
    record = json.loads(layout.run_record(run).read_text())
    assert record["complete"] is False and "epoch 2, batch 2" in record["failed"] and record["epochs_trained"] == 1
    assert not is_complete(run)
    _, left_out = screen_runs(study)
    assert "training failed: diverged" in left_out["reason"].iloc[0]
    said: list[str] = []
    train_condition(study, "tiny", "raw", 1, _profile(), device="cpu", progress=False, log=said.append)
    assert any("last attempt failed (diverged: non-finite loss at epoch 2, batch 2)" in line for line in said), said
    assert "raw run-1: resuming after epoch 1" in said
    assert _run_bytes(run) == reference and is_complete(run)


def test_non_finite_validation_prediction_fails_the_run(tmp_path: Path, capsys) -> None:
    """NaN voxels written into a store (checksums match: the data are bad, not damaged)."""
    study = make_blob_store(tmp_path, n=12, shape=(20, 24, 22))
    store = open_condition(study, "tiny", "raw")
    images = np.array(store.images, dtype=np.float32)
    images[store.rows("val")[0], 5:8] = np.nan
    write_condition(study, "tiny", "raw", images, store.index, STORE_AFFINE)
    argv = [str(study), "--grid", "tiny", "--profile", "cpu", "--runs", "1", "--epochs", "1", "--no-progress", "--device", "cpu"]
    assert train_main(argv) == 2
    err = capsys.readouterr().err
    assert "raw run-1: failed: diverged: non-finite validation prediction at epoch 1, batch 1" in err
    assert err.strip().splitlines()[-1].startswith("defacebench train: error: 1 run(s) failed")
    record = json.loads(layout.run_record(layout.run_dir(study, "raw", 1)).read_text())
    assert record["complete"] is False


def test_infinite_best_mae_is_never_complete(tmp_path: Path, trained) -> None:
    _, run, _ = trained
    record = json.loads(layout.run_record(run).read_text())
    fake = tmp_path / "runs" / "raw" / "run-1"
    fake.mkdir(parents=True)
    for name in ("predictions.csv", "model.pt"):
        (fake / name).write_bytes((run / name).read_bytes())
    layout.run_record(fake).write_text(json.dumps({**record, "best_val_mae": float("inf")}))
    assert not is_complete(fake)
    with pytest.raises(InputError, match="no run can be used.*best validation MAE is inf"):
        find_prediction_files(tmp_path)


def test_analysis_uses_only_trusted_runs_and_lists_the_others(tmp_path: Path, trained) -> None:
    from defacebench.analysis.runs import write_left_out_runs
    from defacebench.report.sections import left_out_runs_html

    _, run, _ = trained
    record = json.loads(layout.run_record(run).read_text())

    def copy_run(condition: str, k: int, **changes) -> Path:
        out = layout.run_dir(tmp_path, condition, k)
        out.mkdir(parents=True)
        for name in ("predictions.csv", "model.pt"):
            (out / name).write_bytes((run / name).read_bytes())
        layout.run_record(out).write_text(json.dumps({**record, **changes}))
        return out

    copy_run("raw", 1)
    copy_run("raw", 2, complete=False, failed="diverged: non-finite loss at epoch 3, batch 1")
    edited = copy_run("raw", 3)
    layout.predictions_file(edited).write_text(layout.predictions_file(edited).read_text().replace("test", "val", 1))
    copy_run("raw", 4, best_val_mae=None)
    layout.run_dir(tmp_path, "raw", 5).mkdir()  # started, never finished
    assert set(find_prediction_files(tmp_path)) == {("raw", "1")}
    assert [info["run"] for info in check_runs(tmp_path)] == [record["run"]]
    left_out = write_left_out_runs(tmp_path)
    reasons = dict(zip(left_out["run"], left_out["reason"]))
    assert sorted(reasons) == ["2", "3", "4", "5"]
    assert "training failed" in reasons["2"] and "predictions.csv does not match the sha256" in reasons["3"]
    assert "best validation MAE is None" in reasons["4"] and "no run.json" in reasons["5"]
    html = left_out_runs_html(tmp_path)
    assert "4 trained run(s) were left out" in html and "predictions.csv does not match" in html
