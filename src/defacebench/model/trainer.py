"""The training loop of one run: build the model, train with early stopping, predict.

On CPU a run is deterministic for its seed (and thread count): shuffling and augmentation
angles come from a generator seeded with ``(seed, epoch)``, so a resumed run ends with the
same weights as one never interrupted.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from defacebench import layout
from defacebench.conditions import PREDICTION_COLUMNS
from defacebench.io.atomic import atomic_path, write_table_atomic
from defacebench.io.errors import InputError, StageError
from defacebench.io.store import ConditionStore
from defacebench.model.accel.fast import FusedBrainAgeCNN
from defacebench.model.accel.settings import SpeedSettings, uses_channels_last, uses_fused_adam, uses_triton_block, uses_triton_rotate
from defacebench.model.augment import apply_theta, rotation_theta, sample_rotation_angles
from defacebench.model.cnn import BrainAgeCNN
from defacebench.model.feed import ImageFeed
from defacebench.model.inference import ForwardPath, forward_blocks
from defacebench.model.profiles import TrainProfile

HISTORY_COLUMNS = ("epoch", "train_loss", "val_mae", "lr", "seconds")

#: Called after each epoch's checkpoint is written: ``(epoch, history_row)``.
EpochCallback = Callable[[int, dict], None]


class DivergedError(StageError):
    """Training produced a non-finite loss, prediction or gradient norm.

    Attributes
    ----------
    epoch : int
        The epoch (1-based) that diverged; the checkpoint holds the one before.
    batch : int
        The first batch (1-based) of that epoch with a non-finite value.
    what : str
        ``"loss"``, ``"gradient norm"`` or ``"validation prediction"``.
    """

    def __init__(self, epoch: int, batch: int, what: str) -> None:
        self.epoch, self.batch, self.what = epoch, batch, what
        super().__init__(f"diverged: non-finite {what} at epoch {epoch}, batch {batch}")


def _first_bad(values: torch.Tensor) -> int | None:
    """Index of the first non-finite value of a 1-D tensor, or None (one device sync)."""
    bad = torch.nonzero(~torch.isfinite(values)).flatten()
    return int(bad[0]) if len(bad) else None


def _epoch_generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


class Trainer:
    """The training loop of one run: build, train with early stopping, predict.

    Parameters
    ----------
    store : ConditionStore
        Images and index (train/val/test split).
    profile : TrainProfile
        Science settings.
    seed : int
        Seed of the weights' initialisation, shuffling and augmentation.
    device : torch.device
        Where to train.
    speed : SpeedSettings, optional
        How to compute it (default: :class:`SpeedSettings`'s defaults).
    """

    def __init__(self, store: ConditionStore, profile: TrainProfile, seed: int, device: torch.device, speed: SpeedSettings | None = None) -> None:
        speed = SpeedSettings() if speed is None else speed
        self.store, self.profile, self.seed, self.device, self.speed = store, profile, seed, device, speed
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
        self.channels_last = uses_channels_last(speed, device.type)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last_3d)
        fused_adam = {"fused": True} if uses_fused_adam(speed, device.type) else {}
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=profile.learning_rate, **fused_adam)
        self.scheduler = torch.optim.lr_scheduler.ExponentialLR(self.optimizer, gamma=math.exp(-profile.lr_decay_rate))
        zooms = np.linalg.norm(np.asarray(store.affine, dtype=float)[:3, :3], axis=0)
        self.spacing_mm = tuple((float(v) if v > 0 else 1.0) * profile.input_pool for v in zooms)
        self.feed = ImageFeed(store.images, device, downsample=self.model.downsample if profile.input_pool > 1 else None)
        self.autocast = device.type == "cuda"
        if device.type == "cuda":  # fixed input shapes: let cuDNN time its 3D convolution algorithms once
            torch.backends.cudnn.benchmark = True
        self.fused = speed.fused_first_block  # blocks start on the pooled grid when input_pool > 1 (the feed pools)
        self.triton_block = uses_triton_block(speed, device.type)
        self.path = ForwardPath(self.fused, self.channels_last, self.triton_block)
        self.rotate = apply_theta
        if uses_triton_rotate(speed, device.type):  # imported only here: it needs triton
            from defacebench.model.accel.triton_rotate import rotate_volumes

            self.rotate = rotate_volumes
        self.compiled = device.type == "cuda" and speed.compile
        train_net = FusedBrainAgeCNN(self.model, self.channels_last, self.triton_block) if self.fused else self.model.forward_downsampled
        mode = None if speed.compile_mode == "default" else speed.compile_mode
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
            return forward_blocks(self.model, x, self.path)

    def train_epoch(self) -> float:
        """One pass over the training scans in a seeded random order; returns the mean loss.

        The order, rotation matrices and targets of the whole epoch go to the device at
        once, so a step issues no host-to-device copy (nothing makes the CPU wait for the GPU).
        Each step's loss and gradient norm stay on the device; they are checked once, at the
        end of the epoch.

        Raises
        ------
        DivergedError
            A step's loss or gradient norm was not finite (the epoch's weights are then
            not to be kept: the caller writes no checkpoint for it).
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
        n_batches = (len(order) + bs - 1) // bs
        losses = torch.zeros(n_batches, device=self.device)
        norms = torch.zeros(n_batches, device=self.device)
        params = [p for p in self.model.parameters() if p.requires_grad]
        for step, start in enumerate(range(0, len(order), bs)):
            stop = min(start + bs, len(order))
            x = self.feed.batch(order[start:stop], order_dev[start:stop])
            if thetas is not None:
                x = self.rotate(x, thetas[start:stop])
            loss = F.mse_loss(self._forward(x, train=True), targets[start:stop])
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            losses[step] = loss.detach()
            grads = [p.grad for p in params if p.grad is not None]
            if grads:
                norms[step] = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)).float())
            self.optimizer.step()
            self.scheduler.step()
            total += loss.detach() * (stop - start)
        for values, what in ((losses, "loss"), (norms, "gradient norm")):
            bad = _first_bad(values)
            if bad is not None:
                raise DivergedError(self.epoch + 1, bad + 1, what)
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
        """Mean absolute error on the validation scans.

        Raises
        ------
        DivergedError
            A prediction was not finite (``epoch`` is the epoch just trained).
        """
        pred = self.predict(self.val_rows)
        bad = np.flatnonzero(~np.isfinite(pred))
        if len(bad):
            raise DivergedError(self.epoch + 1, int(bad[0]) // self.profile.eval_batch_size + 1, "validation prediction")
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
            "speed": self.speed.to_dict(),
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

    def fit(self, run: Path | None = None, progress: object = None, on_epoch_end: EpochCallback | None = None) -> None:
        """Train until ``max_epochs`` or ``patience`` epochs without a better val MAE.

        With ``run`` (a run directory) writes its ``checkpoint.pt`` and ``history.csv``
        after every epoch; restores the best weights at the end.

        Raises
        ------
        DivergedError
            From :meth:`train_epoch` or :meth:`val_mae`: the checkpoint on disk is then the
            last good epoch's.
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
            if run is not None:
                with atomic_path(layout.checkpoint_file(run)) as tmp:
                    torch.save(self.state(), tmp)
                write_table_atomic(layout.history_file(run), pd.DataFrame(self.history, columns=list(HISTORY_COLUMNS)), sep=",")
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
