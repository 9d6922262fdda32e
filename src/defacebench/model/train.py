"""Train the brain-age CNN on one condition store and predict the held-out scans.

One run writes ``STUDY/runs/<condition>/run-<k>/``::

    checkpoint.pt     last finished epoch (model, optimiser, scheduler, early-stopping state)
    history.csv       epoch, train_loss, val_mae, lr, seconds
    model.pt          best weights (lowest validation MAE) and the architecture
    predictions.csv   participant_id, session_id, bids_run, split, age, predicted_age, condition, run
                      (one row per val and test scan)
    run.json          config, profile, parameters, versions, device, samples_per_s, best_epoch,
                      seed, store checksum; ``"complete": true`` is its last key

A killed run resumes from ``checkpoint.pt``; a complete run is skipped. On CPU a run is
deterministic for its seed: shuffling and augmentation angles come from a generator
seeded with ``(seed, epoch)``, so a resumed run ends with the same weights.
"""

from __future__ import annotations

import copy
import json
import math
import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from defacebench import __version__
from defacebench.conditions import PREDICTION_COLUMNS
from defacebench.io.atomic import atomic_path, write_table_atomic, write_text_atomic
from defacebench.io.errors import InputError
from defacebench.model.augment import apply_theta, rotation_theta, sample_rotation_angles
from defacebench.model.cnn import BrainAgeCNN, describe, parameter_breakdown
from defacebench.model.fast import FusedBrainAgeCNN, fused_forward
from defacebench.model.profiles import (
    TrainProfile,
    profile_from_dict,
    same_profile,
    uses_channels_last,
    uses_fused_adam,
    uses_triton_block,
    uses_triton_rotate,
)
from defacebench.io.store import ConditionStore, open_condition

HISTORY_COLUMNS = ("epoch", "train_loss", "val_mae", "lr", "seconds")

#: Called after each epoch's checkpoint is written: ``(epoch, history_row)``.
EpochCallback = Callable[[int, dict], None]


def run_dir(study_dir: str | Path, condition: str, run: int) -> Path:
    """``STUDY/runs/<condition>/run-<run>``."""
    return Path(study_dir) / "runs" / condition / f"run-{run}"


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``None``/``"auto"`` -> CUDA when available, else CPU; refuses CUDA without a GPU."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda asked for, but no CUDA GPU is available")
    return dev


def device_name(device: torch.device) -> str:
    """``"cpu (N threads)"`` or the GPU's name."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    n = torch.get_num_threads()
    return f"cpu ({n} thread{'' if n == 1 else 's'})"


def run_seed(profile: TrainProfile, run: int) -> int:
    """Seed of run ``run`` (1-based): ``profile.seed + run``."""
    return int(profile.seed) + int(run)


def _epoch_generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


class ImageFeed:
    """Batches of a store's images on the device, as ``(B, 1, X, Y, Z)`` float32.

    With ``downsample`` (the model's input pooling) the pooled store is kept instead, and
    batches come out on the pooled grid (the model then runs ``forward_downsampled``).

    On CUDA the whole store is copied to the GPU once (float16) when it fits in 60 % of
    the free memory; on CPU it is read into memory when under ``cpu_limit_bytes``.
    Otherwise batches are read from the memory map.
    """

    def __init__(self, images: np.ndarray, device: torch.device, cpu_limit_bytes: int = 4 << 30, downsample: torch.nn.Module | None = None) -> None:
        self.device = device
        self.images = images
        self.resident: torch.Tensor | None = None
        self.downsample = downsample
        nbytes = images.size * images.dtype.itemsize
        if downsample is not None:  # keep the downsampled store (float32) resident instead
            chunks = []
            with torch.no_grad():
                for start in range(0, len(images), 32):
                    chunk = torch.from_numpy(np.array(images[start : start + 32], dtype=np.float32)).to(device)
                    chunks.append(downsample(chunk[:, None])[:, 0])
            self.resident = torch.cat(chunks)
        elif device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(device)
            if nbytes < 0.6 * free:
                self.resident = torch.empty(images.shape, dtype=torch.float16, device=device)
                for start in range(0, len(images), 64):
                    chunk = torch.from_numpy(np.array(images[start : start + 64]))  # a writable copy of the memory map
                    self.resident[start : start + 64].copy_(chunk.to(torch.float16), non_blocking=False)
        elif nbytes < cpu_limit_bytes:
            self.resident = torch.from_numpy(np.array(images, dtype=np.float16))

    def batch(self, rows: np.ndarray, rows_on_device: torch.Tensor | None = None) -> torch.Tensor:
        """Images of ``rows``; pass ``rows_on_device`` too to avoid a host-to-device copy."""
        if self.resident is not None:
            idx = rows_on_device if rows_on_device is not None else torch.as_tensor(rows, dtype=torch.long, device=self.resident.device)
            x = self.resident.index_select(0, idx)
        else:
            x = torch.from_numpy(np.array(self.images[np.asarray(rows)])).to(self.device)
        return x.float().unsqueeze(1)


class Trainer:
    """The training loop of one run: build, train with early stopping, predict.

    Parameters
    ----------
    store : ConditionStore
        Images and index (train/val/test split).
    profile : TrainProfile
        Hyper-parameters.
    seed : int
        Seed of the weights' initialisation, shuffling and augmentation.
    device : torch.device
        Where to train.
    """

    def __init__(self, store: ConditionStore, profile: TrainProfile, seed: int, device: torch.device) -> None:
        self.store, self.profile, self.seed, self.device = store, profile, seed, device
        self.train_rows, self.val_rows, self.test_rows = (store.rows(s) for s in ("train", "val", "test"))
        if len(self.train_rows) == 0 or len(self.val_rows) == 0:
            raise InputError(f"store {store.condition!r} needs train and val scans (has {len(self.train_rows)} train, {len(self.val_rows)} val)")
        self.ages = torch.as_tensor(store.ages, dtype=torch.float32)
        if not torch.isfinite(self.ages).all():
            raise InputError(f"store {store.condition!r}: the index has missing or non-finite ages")
        torch.manual_seed(seed)
        self.model = BrainAgeCNN(
            input_shape=store.images.shape[1:],
            widths=profile.widths,
            width_multiplier=profile.width_multiplier,
            head=profile.head,
            output_bias=float(self.ages[self.train_rows].mean()),
            input_pool=profile.input_pool,
        ).to(device)
        self.channels_last = uses_channels_last(profile, device.type)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last_3d)
        fused_adam = {"fused": True} if uses_fused_adam(profile, device.type) else {}
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=profile.learning_rate, **fused_adam)
        self.scheduler = torch.optim.lr_scheduler.ExponentialLR(self.optimizer, gamma=math.exp(-profile.lr_decay_rate))
        zooms = np.linalg.norm(np.asarray(store.affine, dtype=float)[:3, :3], axis=0)
        self.spacing_mm = tuple((float(v) if v > 0 else 1.0) * profile.input_pool for v in zooms)
        self.feed = ImageFeed(store.images, device, downsample=self.model.downsample if profile.input_pool > 1 else None)
        self.autocast = device.type == "cuda"
        if device.type == "cuda":  # fixed input shapes: let cuDNN time its 3D convolution algorithms once
            torch.backends.cudnn.benchmark = True
        self.fused = profile.fused_first_block  # blocks start on the pooled grid when input_pool > 1 (the feed pools)
        self.triton_block = uses_triton_block(profile, device.type)
        self.rotate = apply_theta
        if uses_triton_rotate(profile, device.type):
            from defacebench.model.triton_rotate import rotate_volumes

            self.rotate = rotate_volumes
        self.compiled = device.type == "cuda" and profile.compile
        train_net = FusedBrainAgeCNN(self.model, self.channels_last, self.triton_block) if self.fused else self.model.forward_downsampled
        mode = None if profile.compile_mode == "default" else profile.compile_mode
        self._train_net = torch.compile(train_net, mode=mode) if self.compiled else train_net
        self.epoch = 0
        self.history: list[dict] = []
        self.best_val_mae = math.inf
        self.best_epoch = 0
        self.best_state = copy.deepcopy(self.model.state_dict())
        self.bad_epochs = 0
        self.train_seconds = 0.0

    # -- one step, one epoch -------------------------------------------------------
    def _forward(self, x: torch.Tensor, train: bool = False) -> torch.Tensor:
        with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            if train and (not self.compiled or x.shape[0] == self.profile.batch_size):
                return self._train_net(x).float()
            # evaluation, and (compiled) an epoch's last, smaller batch: eager, so that one
            # batch costs no recompilation with dynamic shapes and no new CUDA graph
            return fused_forward(self.model, x, self.channels_last, self.triton_block) if self.fused else self.model.forward_downsampled(x).float()

    def train_epoch(self) -> float:
        """One pass over the training scans in a seeded random order; returns the mean loss.

        The order, rotation matrices and targets of the whole epoch go to the device at
        once, so a step issues no host-to-device copy (nothing makes the CPU wait for the GPU).
        """
        gen = _epoch_generator(self.seed, self.epoch + 1)
        order = self.train_rows[torch.randperm(len(self.train_rows), generator=gen).numpy()]
        order_dev = torch.as_tensor(order, dtype=torch.long).to(self.device)
        targets = self.ages[order].to(self.device)
        thetas = None
        if self.profile.rotation_deg > 0:
            angles = sample_rotation_angles(len(order), self.profile.rotation_deg, gen)
            grid = self.model.block_input_shape if self.profile.input_pool > 1 else self.model.input_shape
            thetas = rotation_theta(angles, grid, self.spacing_mm).to(self.device, torch.float32)
        bs = self.profile.batch_size
        self.model.train()
        total = torch.zeros((), device=self.device)
        for start in range(0, len(order), bs):
            stop = min(start + bs, len(order))
            x = self.feed.batch(order[start:stop], order_dev[start:stop])
            if thetas is not None:
                x = self.rotate(x, thetas[start:stop])
            loss = F.mse_loss(self._forward(x, train=True), targets[start:stop])
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.scheduler.step()
            total += loss.detach() * (stop - start)
        return float(total) / len(order)

    @torch.no_grad()
    def predict(self, rows: np.ndarray) -> np.ndarray:
        """Predicted ages of ``rows`` (no augmentation)."""
        self.model.eval()
        out = []
        for start in range(0, len(rows), self.profile.eval_batch_size):
            out.append(self._forward(self.feed.batch(rows[start : start + self.profile.eval_batch_size])).float().cpu())
        return torch.cat(out).numpy().astype(np.float64) if out else np.zeros(0)

    def val_mae(self) -> float:
        pred = self.predict(self.val_rows)
        return float(np.mean(np.abs(pred - self.ages[self.val_rows].numpy())))

    # -- state -------------------------------------------------------------------
    def state(self) -> dict:
        return {
            "epoch": self.epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "best_state": self.best_state,
            "best_val_mae": self.best_val_mae,
            "best_epoch": self.best_epoch,
            "bad_epochs": self.bad_epochs,
            "history": self.history,
            "train_seconds": self.train_seconds,
            "seed": self.seed,
            "profile": self.profile.to_dict(),
            "store_checksum": self.store.checksum,
        }

    def load_state(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.epoch = int(state["epoch"])
        self.best_state = state["best_state"]
        self.best_val_mae = float(state["best_val_mae"])
        self.best_epoch = int(state["best_epoch"])
        self.bad_epochs = int(state["bad_epochs"])
        self.history = list(state["history"])
        self.train_seconds = float(state["train_seconds"])

    @property
    def finished(self) -> bool:
        return self.epoch >= self.profile.max_epochs or self.bad_epochs >= self.profile.patience

    def fit(self, checkpoint: Path | None = None, progress: object = None, on_epoch_end: EpochCallback | None = None) -> None:
        """Train until ``max_epochs`` or ``patience`` epochs without a better val MAE.

        Writes ``checkpoint`` after every epoch; restores the best weights at the end.
        """
        while not self.finished:
            t0 = time.perf_counter()
            loss = self.train_epoch()
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            seconds_train = time.perf_counter() - t0
            mae = self.val_mae()
            self.epoch += 1
            self.train_seconds += seconds_train
            if mae < self.best_val_mae:
                self.best_val_mae, self.best_epoch, self.bad_epochs = mae, self.epoch, 0
                self.best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
            else:
                self.bad_epochs += 1
            row = {"epoch": self.epoch, "train_loss": loss, "val_mae": mae, "lr": self.scheduler.get_last_lr()[0], "seconds": time.perf_counter() - t0}
            self.history.append(row)
            if checkpoint is not None:
                with atomic_path(checkpoint) as tmp:
                    torch.save(self.state(), tmp)
                write_table_atomic(checkpoint.parent / "history.csv", pd.DataFrame(self.history, columns=list(HISTORY_COLUMNS)), sep=",")
            if progress is not None:
                progress.set_postfix(loss=f"{loss:.1f}", val_mae=f"{mae:.2f}", best=f"{self.best_val_mae:.2f}@{self.best_epoch}", refresh=False)
                progress.update(1)
            if on_epoch_end is not None:
                on_epoch_end(self.epoch, row)
        self.model.load_state_dict(self.best_state)

    @property
    def samples_per_s(self) -> float:
        n = len(self.train_rows) * self.epoch
        return n / self.train_seconds if self.train_seconds > 0 else float("nan")

    def predictions(self, run: int) -> pd.DataFrame:
        """One row per val and test scan, with the restored best model's prediction."""
        rows = np.concatenate([self.val_rows, self.test_rows])
        index = self.store.index.iloc[rows]
        return pd.DataFrame(
            {
                "participant_id": index["participant_id"].to_numpy(),
                "session_id": index["session_id"].to_numpy(),
                "bids_run": index["run"].to_numpy() if "run" in index else "",
                "split": index["split"].to_numpy(),
                "age": self.ages[rows].numpy().astype(np.float64),
                "predicted_age": self.predict(rows),
                "condition": self.store.condition,
                "run": run,
            },
            columns=list(PREDICTION_COLUMNS),
        )


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


def read_run_json(path: Path) -> dict | None:
    try:
        return json.loads((path / "run.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def is_complete(path: Path, profile: TrainProfile | None = None, checksum: str | None = None) -> bool:
    """A run directory holds a finished run (of this profile and store, when given)."""
    meta = read_run_json(path)
    if not meta or meta.get("complete") is not True:
        return False
    if profile is not None and not same_profile(meta.get("config"), profile):
        return False
    return checksum is None or meta.get("store_checksum") == checksum


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
) -> Path:
    """Train run ``run`` of ``condition`` and write its outputs; returns the run directory.

    Skips a run that is complete for the same profile and store; resumes from
    ``checkpoint.pt`` otherwise (a checkpoint of another profile or store version is
    discarded and training starts over).

    Raises
    ------
    InputError
        Missing store, unknown condition, unusable split, CUDA asked for without a GPU.
    """
    grid = grid or profile.grid
    store = open_condition(study_dir, grid, condition)
    out = run_dir(study_dir, condition, run)
    if is_complete(out, profile, store.checksum):
        if log:
            log(f"{condition} run-{run}: complete, skipped")
        return out
    dev = resolve_device(device)
    threads = torch.get_num_threads()
    if dev.type == "cpu" and profile.cpu_threads:
        torch.set_num_threads(profile.cpu_threads)
    try:
        return _train(store, grid, condition, run, profile, dev, out, progress, on_epoch_end, log)
    finally:
        torch.set_num_threads(threads)


def _train(
    store: ConditionStore,
    grid: str,
    condition: str,
    run: int,
    profile: TrainProfile,
    dev: torch.device,
    out: Path,
    progress: bool,
    on_epoch_end: EpochCallback | None,
    log: Callable[[str], None] | None,
) -> Path:
    """Body of :func:`train_condition` (device and threads chosen)."""
    seed = run_seed(profile, run)
    try:
        trainer = Trainer(store, profile, seed, dev)
    except ValueError as exc:  # e.g. a grid too small for three poolings
        raise InputError(f"store {condition!r} on grid {grid!r}: {exc}") from None
    checkpoint = out / "checkpoint.pt"
    (out / "run.json").unlink(missing_ok=True)
    if checkpoint.is_file():
        state = torch.load(checkpoint, map_location=dev, weights_only=False)
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
        trainer.fit(checkpoint, bar, on_epoch_end)
    finally:
        if bar is not None:
            bar.close()
    with atomic_path(out / "model.pt") as tmp:
        torch.save({"model_config": trainer.model.config(), "state_dict": trainer.model.state_dict(), "condition": condition, "run": run}, tmp)
    preds = trainer.predictions(run)
    write_table_atomic(out / "predictions.csv", preds, sep=",")
    test = preds[preds["split"] == "test"]
    meta = {
        "condition": condition,
        "grid": grid,
        "run": run,
        "seed": seed,
        "profile": profile.name,
        "config": profile.to_dict(),
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
        "n_train": int(len(trainer.train_rows)),
        "n_val": int(len(trainer.val_rows)),
        "n_test": int(len(trainer.test_rows)),
        "complete": True,
    }
    write_text_atomic(out / "run.json", json.dumps(meta, indent=2) + "\n")
    if log:
        log(f"{condition} run-{run}: best val MAE {trainer.best_val_mae:.2f} at epoch {trainer.best_epoch}, test MAE {meta['test_mae'] if meta['test_mae'] is None else round(meta['test_mae'], 2)}, {trainer.samples_per_s:.0f} samples/s")
    return out


def load_model(path: str | Path, device: str | torch.device = "cpu") -> BrainAgeCNN:
    """The best model of a run (``run_dir`` or its ``model.pt``), in eval mode.

    Grad-CAM target: the last block, ``model.features[-1]`` (docs/analysis.md).
    """
    path = Path(path)
    file = path / "model.pt" if path.is_dir() else path
    if not file.is_file():
        raise InputError("no trained model here (run `defacebench train` first)", file)
    saved = torch.load(file, map_location=device, weights_only=False)
    model = BrainAgeCNN(**saved["model_config"])
    model.load_state_dict(saved["state_dict"])
    return model.to(device).eval()


def model_summary(store: ConditionStore, profile: TrainProfile) -> str:
    """The architecture line (with the real parameter count) for a store and profile."""
    model = BrainAgeCNN(store.images.shape[1:], profile.widths, profile.width_multiplier, profile.head, input_pool=profile.input_pool)
    return describe(model)


__all__ = [
    "ImageFeed",
    "Trainer",
    "load_model",
    "model_summary",
    "profile_from_dict",
    "run_dir",
    "train_condition",
]
