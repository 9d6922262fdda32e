"""Train the brain-age CNN on one condition store and predict the held-out scans.

One run writes ``STUDY/runs/<condition>/run-<k>/`` (paths from :mod:`defacebench.layout`)::

    checkpoint.pt     last finished epoch (model, optimiser, scheduler, early-stopping state)
    history.csv       epoch, train_loss, val_mae, lr, seconds
    model.pt          best weights (lowest validation MAE) and the architecture
    predictions.csv   participant_id, session_id, bids_run, split, age, predicted_age, condition, run
                      (one row per val and test scan)
    run.json          config (science settings), speed (speed settings asked for) and those
                      used, parameters, versions, device, samples_per_s, best_epoch, seed,
                      store checksum, sha256 of model.pt and predictions.csv;
                      ``"complete": true`` is its last key

A killed run resumes from ``checkpoint.pt``; a complete run is skipped. A run that
diverges (a non-finite loss, prediction or gradient norm:
:class:`~defacebench.model.trainer.DivergedError`), or ends with a non-finite best
validation MAE, writes ``run.json`` with ``"complete": false`` and the reason under
``"failed"``; the next ``train`` logs that reason and retries from the last good
checkpoint. An unreadable (truncated) checkpoint is logged and training starts over. Both count when
their science settings and store match (:func:`defacebench.model.profiles.same_profile`),
whatever speed settings they ran with, so runs saved by earlier versions, whose ``config``
also held the speed settings, are skipped too.
"""

from __future__ import annotations

import json
import math
import platform
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from defacebench import __version__, layout
from defacebench.io.atomic import atomic_path, write_table_atomic, write_text_atomic
from defacebench.model.export import ensure_exported, export_run
from defacebench.io.checksums import file_sha256
from defacebench.io.errors import InputError, StageError
from defacebench.io.store import ConditionStore, open_condition
from defacebench.model.accel.settings import PROFILE_SPEED, SpeedSettings
from defacebench.model.augment import apply_theta
from defacebench.model.cnn import BrainAgeCNN, describe, parameter_breakdown
from defacebench.model.inference import resolve_device
from defacebench.model.profiles import TrainProfile, same_profile
from defacebench.model.trainer import DivergedError, EpochCallback, Trainer


def device_name(device: torch.device) -> str:
    """``"cpu (N threads)"`` or the GPU's name."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    n = torch.get_num_threads()
    return f"cpu ({n} thread{'' if n == 1 else 's'})"


def run_seed(profile: TrainProfile, run: int) -> int:
    """Seed of run ``run`` (1-based): ``profile.seed + run``."""
    return int(profile.seed) + int(run)


def versions() -> dict[str, str]:
    """Versions that matter for reproducing a run."""
    return {
        "defacebench": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "cuda": str(torch.version.cuda),
        "cudnn": str(torch.backends.cudnn.version()) if torch.backends.cudnn.is_available() else "none",
    }


def read_run_json(run: Path) -> dict | None:
    """A run directory's ``run.json``, or ``None`` when missing or unreadable."""
    try:
        return json.loads(layout.run_record(run).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def is_complete(run: Path, profile: TrainProfile | None = None, checksum: str | None = None) -> bool:
    """A run directory holds a finished run (of these science settings and store, when given)."""
    meta = read_run_json(run)
    if not meta or meta.get("complete") is not True or not _finite(meta.get("best_val_mae")):
        return False
    if profile is not None and not same_profile(meta.get("config"), profile):
        return False
    return checksum is None or meta.get("store_checksum") == checksum


def _finite(value: object) -> bool:
    try:
        return math.isfinite(float(value))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False


def load_checkpoint(checkpoint: Path, dev: torch.device) -> tuple[dict | None, str | None]:
    """``(state, None)``, or ``(None, reason)`` when ``checkpoint.pt`` cannot be read (truncated, corrupt)."""
    try:
        return torch.load(checkpoint, map_location=dev, weights_only=True), None
    except Exception as exc:  # torch raises RuntimeError, EOFError, UnpicklingError... for a damaged file
        return None, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"


def _write_failed(out: Path, condition: str, run: int, grid: str, profile: TrainProfile, store: ConditionStore, reason: str, epochs: int) -> None:
    """``run.json`` of a failed run: ``"complete": false`` and why."""
    meta = {"condition": condition, "grid": grid, "run": run, "profile": profile.name, "config": profile.to_dict(),
            "store_checksum": store.checksum, "epochs_trained": epochs, "failed": reason, "complete": False}
    write_text_atomic(layout.run_record(out), json.dumps(meta, indent=2) + "\n")


def train_condition(
    study_dir: str | Path,
    grid: str | None,
    condition: str,
    run: int,
    profile: TrainProfile,
    device: str | torch.device | None = None,
    progress: bool = True,
    on_epoch_end: EpochCallback | None = None,
    log: Callable[[str], None] | None = print,
    speed: SpeedSettings | None = None,
) -> Path:
    """Train run ``run`` of ``condition`` and write its outputs; returns the run directory.

    Skips a run that is complete for the same science settings and store; resumes from
    ``checkpoint.pt`` otherwise (a checkpoint of other science settings or another store
    version is discarded and training starts over). ``speed``: how to compute it (default:
    the named profile's, :data:`~defacebench.model.accel.settings.PROFILE_SPEED`).

    Raises
    ------
    InputError
        Missing or corrupt store, unknown condition, unusable split, CUDA asked for without
        a GPU, a CUDA-only speed setting asked for on another device.
    DivergedError
        The run diverged (recorded in its ``run.json`` as failed).
    StageError
        The best validation MAE is not finite (recorded as failed).
    """
    grid = grid or profile.grid
    speed = PROFILE_SPEED.get(profile.name, SpeedSettings()) if speed is None else speed
    store = open_condition(study_dir, grid, condition)
    out = layout.run_dir(study_dir, condition, run)
    if is_complete(out, profile, store.checksum):
        ensure_exported(out)  # issue 20: runs trained before model.ts existed
        if log:
            log(f"{condition} run-{run}: complete, skipped")
        return out
    dev = resolve_device(device)
    threads = torch.get_num_threads()
    if dev.type == "cpu" and speed.cpu_threads:
        torch.set_num_threads(speed.cpu_threads)
    try:
        return _train(store, grid, condition, run, profile, speed, dev, out, progress, on_epoch_end, log)
    finally:
        torch.set_num_threads(threads)


def _train(
    store: ConditionStore,
    grid: str,
    condition: str,
    run: int,
    profile: TrainProfile,
    speed: SpeedSettings,
    dev: torch.device,
    out: Path,
    progress: bool,
    on_epoch_end: EpochCallback | None,
    log: Callable[[str], None] | None,
) -> Path:
    """Body of :func:`train_condition` (device and threads chosen)."""
    seed = run_seed(profile, run)
    try:
        trainer = Trainer(store, profile, seed, dev, speed)
    except ValueError as exc:  # e.g. a grid too small for three poolings
        raise InputError(f"store {condition!r} on grid {grid!r}: {exc}") from None
    checkpoint = layout.checkpoint_file(out)
    previous = read_run_json(out)
    if previous and previous.get("failed") and log:
        log(f"{condition} run-{run}: the last attempt failed ({previous['failed']}); retrying from its last good checkpoint")
    layout.run_record(out).unlink(missing_ok=True)
    state, unreadable = load_checkpoint(checkpoint, dev) if checkpoint.is_file() else (None, None)
    if unreadable:
        checkpoint.unlink(missing_ok=True)
        if log:
            log(f"{condition} run-{run}: checkpoint.pt is unreadable ({unreadable}); starting over")
    if state is not None:
        if same_profile(state.get("profile"), profile) and state.get("store_checksum") == store.checksum and state.get("seed") == seed:
            trainer.load_state(state)
            if log:
                log(f"{condition} run-{run}: resuming after epoch {trainer.epoch}")
        elif log:
            log(f"{condition} run-{run}: checkpoint is for another profile or store version; starting over")
    out.mkdir(parents=True, exist_ok=True)
    bar = None
    if progress:
        from defacebench.io.progress import progress_bar

        bar = progress_bar(profile.max_epochs, f"{condition} run-{run}", "epoch", initial=trainer.epoch)
    try:
        trainer.fit(out, bar, on_epoch_end)
    except DivergedError as exc:
        _write_failed(out, condition, run, grid, profile, store, str(exc), trainer.epoch)
        raise
    finally:
        if bar is not None:
            bar.close()
    if not math.isfinite(trainer.best_val_mae):
        reason = f"best validation MAE is {trainer.best_val_mae} after {trainer.epoch} epoch(s)"
        _write_failed(out, condition, run, grid, profile, store, reason, trainer.epoch)
        raise StageError(reason)
    with atomic_path(layout.model_file(out)) as tmp:
        torch.save({"model_config": trainer.model.config(), "state_dict": trainer.model.state_dict(), "condition": condition, "run": run}, tmp)
    export_run(out, trainer.model)  # issue 20: model.ts for `defacebench score`
    preds = trainer.predictions(run)
    write_table_atomic(layout.predictions_file(out), preds, sep=",")
    test = preds[preds["split"] == "test"]
    meta = {
        "condition": condition,
        "grid": grid,
        "run": run,
        "seed": seed,
        "profile": profile.name,
        "config": profile.to_dict(),
        "speed": speed.to_dict(),
        "model": trainer.model.config(),
        "parameter_count": parameter_breakdown(trainer.model)["total"],
        "parameters": parameter_breakdown(trainer.model),
        "versions": versions(),
        "device": device_name(dev),
        "fused_first_block": trainer.fused,
        "compiled": trainer.compiled,
        "channels_last": trainer.channels_last,
        "triton_block": trainer.triton_block,
        "triton_rotate": trainer.rotate is not apply_theta,
        "fused_adam": bool(trainer.optimizer.defaults.get("fused")),
        "samples_per_s": trainer.samples_per_s,
        "epochs_trained": trainer.epoch,
        "best_epoch": trainer.best_epoch,
        "best_val_mae": trainer.best_val_mae,
        "test_mae": float(np.mean(np.abs(test["predicted_age"] - test["age"]))) if len(test) else None,
        "stopped_early": trainer.bad_epochs >= profile.patience,
        "store_checksum": store.checksum,
        "model_sha256": file_sha256(layout.model_file(out)),
        "predictions_sha256": file_sha256(layout.predictions_file(out)),
        "n_train": int(len(trainer.train_rows)),
        "n_val": int(len(trainer.val_rows)),
        "n_test": int(len(trainer.test_rows)),
        "complete": True,
    }
    write_text_atomic(layout.run_record(out), json.dumps(meta, indent=2) + "\n")
    if log:
        test_mae = meta["test_mae"] if meta["test_mae"] is None else round(meta["test_mae"], 2)
        log(f"{condition} run-{run}: best val MAE {trainer.best_val_mae:.2f} at epoch {trainer.best_epoch}, test MAE {test_mae}, {trainer.samples_per_s:.0f} samples/s")
    return out


def model_summary(store: ConditionStore, profile: TrainProfile) -> str:
    """The architecture line (with the real parameter count) for a store and profile."""
    model = BrainAgeCNN(store.images.shape[1:], profile.widths, profile.width_multiplier, profile.head, input_pool=profile.input_pool)
    return describe(model)


__all__ = ["DivergedError", "is_complete", "load_checkpoint", "model_summary", "read_run_json", "run_seed", "train_condition"]
