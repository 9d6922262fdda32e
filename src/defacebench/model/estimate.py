"""Time before training: measure a few real training steps here, multiply by the work ahead.

:func:`training_estimate` builds the first condition's :class:`~defacebench.model.trainer.Trainer`
with the run's profile, speed settings, device and thread count, and times

* training steps through :meth:`Trainer.train_epoch` itself (the same feed, rotation,
  forward, backward and optimiser step as a run): first steps that pay for lazy
  initialisation, untimed (on CUDA a full batch counted as set-up, as it pays for cuDNN
  autotuning and compilation; on a CPU one sample, then one full batch), then about
  :data:`WARM_UP_S` of batches; when one sample alone takes a batch's share of that, a second
  single sample is the measurement (the paper profile on a CPU: two samples of warm-up),
* one validation batch (:meth:`Trainer.predict`),
* one epoch's files (``checkpoint.pt`` and ``history.csv``, written atomically to a temporary folder),
* building the trainer (model, optimiser, feed), the second time (the first in a process also
  pays for lazy initialisation, once).

The work ahead is every (condition, run) not yet complete, each with its train, val and test
scans and its epochs left (``max_epochs`` less those in its ``history.csv``): an upper bound,
since early stopping may end a run sooner. The estimate assumes the runs go one after another.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from defacebench import layout
from defacebench.io.estimate import Estimate, format_duration
from defacebench.io.store import ConditionStore, open_condition
from defacebench.model.accel.settings import SpeedSettings
from defacebench.model.profiles import PROFILES, TrainProfile
from defacebench.model.train import device_name, is_complete, run_seed
from defacebench.model.trainer import Trainer

#: Time at least this much of training steps (unless one step is longer).
WARM_UP_S = 1.0
#: At most this many timed training batches.
MAX_WARM_UP_BATCHES = 20
#: Training samples/s of the paper profile on one H200, ``train_condition`` end to end (the low
#: end of 950-1,024 measured; README, Performance; docs/training.md): what a GPU would give.
PAPER_GPU_SAMPLES_PER_S = 950.0


@dataclass(frozen=True)
class TrainingSpeed:
    """What the warm-up measured (seconds)."""

    train_per_sample: float
    eval_per_sample: float
    checkpoint: float
    setup: float
    device: str = ""  # where it was measured, with the threads used

    def run_seconds(self, n_train: int, n_eval_per_epoch: int, n_predict: int, epochs: int) -> float:
        """One run: build, ``epochs`` x (train, validate, checkpoint), predict val and test."""
        per_epoch = n_train * self.train_per_sample + n_eval_per_epoch * self.eval_per_sample + self.checkpoint
        return self.setup + epochs * per_epoch + n_predict * self.eval_per_sample


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_training(store: ConditionStore, profile: TrainProfile, speed: SpeedSettings, device: torch.device) -> TrainingSpeed:
    """Time a few training steps, a validation batch, a checkpoint and the set-up on ``device``."""
    threads = torch.get_num_threads()
    if device.type == "cpu" and speed.cpu_threads:
        torch.set_num_threads(speed.cpu_threads)
    try:
        Trainer(store, profile, run_seed(profile, 1), device, speed)  # the first in a process also pays for lazy initialisation
        t0 = time.perf_counter()
        trainer = Trainer(store, profile, run_seed(profile, 1), device, speed)
        setup = time.perf_counter() - t0
        rows, bs = trainer.train_rows, profile.batch_size

        def timed(samples: int) -> float:
            trainer.train_rows = rows[: max(1, min(samples, len(rows)))]
            start = time.perf_counter()
            trainer.train_epoch()
            _sync(device)
            return (time.perf_counter() - start) / len(trainer.train_rows)

        # the first step of a batch size pays for lazy initialisation (kernels chosen per shape):
        # on CUDA a full batch (it tunes and compiles: a cost of every run, counted as set-up);
        # on a CPU one sample first, to see how slow a sample is
        full = min(bs, len(rows))
        first_samples = full if device.type == "cuda" else 1
        per_sample = timed(first_samples)
        if device.type == "cuda":
            setup += per_sample * first_samples
        if device.type == "cuda" or per_sample * bs < WARM_UP_S:
            if device.type != "cuda":
                timed(full)  # untimed: the batch size's own first step
            k = max(1, min(MAX_WARM_UP_BATCHES, math.ceil(WARM_UP_S / max(per_sample * bs, 1e-6))))
            per_sample = timed(k * bs)
        else:  # a sample is that slow (the paper profile on a CPU): one more, warm, sample
            per_sample = timed(1)
        val = trainer.val_rows[: profile.eval_batch_size]
        start = time.perf_counter()
        trainer.predict(val)
        eval_per_sample = (time.perf_counter() - start) / max(len(val), 1)
        checkpoint = _time_checkpoint(trainer)
        return TrainingSpeed(per_sample, eval_per_sample, checkpoint, setup, device_name(device))
    finally:
        torch.set_num_threads(threads)


def _time_checkpoint(trainer: Trainer) -> float:
    """Seconds to write one epoch's files as a run does: ``checkpoint.pt`` and ``history.csv``, atomically."""
    import tempfile

    import pandas as pd

    from defacebench.io.atomic import atomic_path, write_table_atomic
    from defacebench.model.trainer import HISTORY_COLUMNS

    with tempfile.TemporaryDirectory(prefix="defacebench-estimate-") as tmp:
        start = time.perf_counter()
        with atomic_path(layout.checkpoint_file(Path(tmp))) as path:
            torch.save(trainer.state(), path)
        history = pd.DataFrame([dict.fromkeys(HISTORY_COLUMNS, 0.0)] * max(1, trainer.profile.max_epochs // 2))
        write_table_atomic(layout.history_file(Path(tmp)), history, sep=",")
        return time.perf_counter() - start


def epochs_done(run: Path) -> int:
    """Epochs in a run's ``history.csv`` (0 when none): where a resumed run starts."""
    path = layout.history_file(run)
    if not path.is_file():
        return 0
    return max(0, len(path.read_text().splitlines()) - 1)


def training_estimate(study_dir: str | Path, grid: str, conditions: Sequence[str], runs: int, profile: TrainProfile, speed: SpeedSettings,
                      device: torch.device, scheduler_option: bool = False) -> Estimate | None:
    """Estimated time of the runs not yet complete; ``None`` when every run is complete.

    ``scheduler_option``: whether the command has ``--scheduler`` (then a cluster is suggested).
    """
    stores, opening = {}, {}
    for c in conditions:  # a run opens (and verifies) its store again: part of its cost
        start = time.perf_counter()
        stores[c] = open_condition(study_dir, grid, c)
        opening[c] = time.perf_counter() - start
    todo = [(c, r) for c in conditions for r in range(1, runs + 1) if not is_complete(layout.run_dir(study_dir, c, r), profile, stores[c].checksum)]
    if not todo:
        return None
    first = stores[todo[0][0]]
    measured = measure_training(first, profile, speed, device)
    seconds, samples = 0.0, 0
    for condition, run in todo:
        store = stores[condition]
        n_train, n_val, n_test = (len(store.rows(s)) for s in ("train", "val", "test"))
        epochs = max(0, profile.max_epochs - epochs_done(layout.run_dir(study_dir, condition, run)))
        # plus opening its store and, at the end, files about the size of one checkpoint (model.pt, predictions)
        seconds += measured.run_seconds(n_train, n_val, n_val + n_test, epochs) + opening[condition] + measured.checkpoint
        samples += n_train * epochs
    n_conditions = len({c for c, _ in todo})
    n_train = len(first.rows("train"))
    work = (f"{len(todo)} run(s) ({n_conditions} condition(s)) x up to {profile.max_epochs} epochs of {n_train} training scans, "
            f"profile {profile.name}")
    return Estimate("train", seconds, work, measured.device, f"measured {measured.train_per_sample:.3g} s per training sample",
                    on_cpu=device.type == "cpu", advice=tuple(training_advice(profile, samples, scheduler_option)))


def training_advice(profile: TrainProfile, samples: int, scheduler_option: bool) -> list[str]:
    """What would train faster than this CPU."""
    gpu = "a GPU: --device cuda"
    if profile.name == "paper":
        gpu += f" (one H200 trained the paper profile at {PAPER_GPU_SAMPLES_PER_S:,.0f} samples/s, docs/training.md: about {format_duration(samples / PAPER_GPU_SAMPLES_PER_S)} for this work)"
    out = [gpu]
    if scheduler_option:
        out.append("a Dask cluster training conditions and runs in parallel: --scheduler ADDRESS (docs/cluster.md)")
    if profile.name != "cpu":
        cpu = PROFILES["cpu"]
        out.append(f"a lighter profile: --profile cpu (the demo's: grid {cpu.grid}, 1/{round(1 / cpu.width_multiplier)} of the widths, up to {cpu.max_epochs} epochs)")
    out.append("less work: fewer --runs, --epochs or --conditions")
    return out
