"""Training runs as tasks on an existing Dask cluster: one task per (condition, run).

``defacebench train --scheduler ADDR`` sends every run to the cluster through
:func:`defacebench.engine.run_tasks`, Dask's own scheduling: a task that trains on a GPU holds
the worker resource ``GPU`` (``resources={"GPU": 1}``), so only workers started with
``--resources GPU=1`` run it, one at a time each, and it trains on the device that worker sees
(``CUDA_VISIBLE_DEVICES`` as SLURM or the worker's launcher set it). Nothing is sent back but a
few log lines: every output is written by the worker, atomically, into the study directory on
the shared file system, exactly as a serial run writes it (:func:`~defacebench.model.train.train_condition`).

So a lost worker loses at most one epoch: the scheduler runs the task again on another worker
(Dask's ``allowed-failures``), which resumes from the run's last ``checkpoint.pt``; on CPU the
resumed run ends with the same weights as one never interrupted (the shuffling and rotation
angles are seeded per epoch, the thread count is the profile's). A task that fails (a diverged
run, a missing GPU, a worker lost too often) is recorded in ``failures.tsv`` (stage ``train``)
and the other runs go on.

Why no Dask ``retries``: a run's failure is returned as a value, not raised, and retrying a
diverged run at once would diverge again from the same checkpoint with the same seed; the
next ``defacebench train`` retries it, as it does after a serial run.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from defacebench import layout
from defacebench.engine import Failure, cluster_resources, read_failures, run_tasks, write_failures
from defacebench.model.accel.settings import SpeedSettings
from defacebench.model.profiles import TrainProfile
from defacebench.model.train import read_run_json, train_condition

#: The worker resource a GPU training task holds.
GPU_RESOURCE = "GPU"
#: Stage name of training failures in ``failures.tsv``.
TRAIN_STAGE = "train"

# torch's thread count is per process and train_condition sets it for the run: a worker with
# several threads must not interleave two runs (the second would change the first's threads).
_ONE_RUN_PER_PROCESS = threading.Lock()


@dataclass(frozen=True)
class RunTask:
    """One training run to do: what to train, and how.

    ``device`` is as asked (``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"``) and is resolved
    where the task runs, so that ``auto`` means the worker's GPU when it has one.
    """

    study_dir: str
    grid: str
    condition: str
    run: int
    profile: TrainProfile
    speed: SpeedSettings
    device: str = "auto"

    @property
    def key(self) -> str:
        """``"<condition> run-<k>"``: the task's name in logs and ``failures.tsv``."""
        return f"{self.condition} run-{self.run}"


def train_task(task: RunTask) -> list[str]:
    """Train one run (on a worker, or here); returns its log lines.

    Raises what :func:`~defacebench.model.train.train_condition` raises; the engine records it.
    """
    lines: list[str] = []
    with _ONE_RUN_PER_PROCESS:
        out = train_condition(task.study_dir, task.grid, task.condition, task.run, task.profile, device=task.device,
                              progress=False, log=lines.append, speed=task.speed)
    meta = read_run_json(out) or {}
    where = _worker_address()
    if meta.get("device") and where:
        lines.append(f"{task.key}: trained on {meta['device']} at {where}")
    return lines


def _worker_address() -> str | None:
    try:
        from dask.distributed import get_worker

        return str(get_worker().address)
    except (ImportError, ValueError):  # not on a Dask worker
        return None


def training_resources(device: str, declared: Mapping[str, float] | None = None) -> dict[str, float] | None:
    """The worker resources a training task holds: ``{"GPU": 1}`` to train on a GPU, else none.

    ``cuda``/``cuda:N`` need a GPU; ``cpu`` does not; ``auto`` asks for one when the cluster's
    workers declare ``GPU`` now (``declared``), and otherwise trains on whatever the worker
    has. A cluster that starts empty and adapts should be given ``--device cuda`` or ``cpu``.
    """
    if str(device).startswith("cuda") or (str(device) == "auto" and (declared or {}).get(GPU_RESOURCE, 0) > 0):
        return {GPU_RESOURCE: 1}
    return None


def train_on_cluster(
    tasks: Sequence[RunTask],
    scheduler: str,
    *,
    progress: bool = True,
    log: Callable[[str], None] | None = print,
) -> list[Failure]:
    """Train ``tasks`` on the Dask cluster at ``scheduler``; returns the failed runs.

    All tasks share ``device``; each run's log lines are printed as it finishes.
    """
    if not tasks:
        return []
    emit = log or (lambda line: None)
    device = tasks[0].device
    resources = training_resources(device, cluster_resources(scheduler) if device == "auto" else None)
    held = ", ".join(f"{k}={v:g}" for k, v in (resources or {}).items()) or "none"
    emit(f"{len(tasks)} run(s) to Dask scheduler {scheduler}; device {device} (resolved on each worker), worker resources per run: {held}")

    def show(key: str, lines: list[str]) -> None:
        for line in lines:
            emit(line)

    results = run_tasks(train_task, tasks, [t.key for t in tasks], scheduler=scheduler, stage=TRAIN_STAGE, progress=progress,
                        resources=resources, unit="run", on_value=show)
    return results.failures


def record_failures(study_dir: str | Path, tasks: Sequence[RunTask], failures: Sequence[Failure]) -> Path | None:
    """Write the failed runs of ``tasks`` into ``failures.tsv`` (stage ``train``), dropping
    the earlier rows of the runs that now succeeded and keeping those of runs not in ``tasks``.

    Returns the table, or ``None`` when nothing changed (no failure now, none recorded before).
    """
    path = layout.failures_table(study_dir)
    keys = [t.key for t in tasks]
    if not failures:
        old = read_failures(path)
        if old.empty or not ((old["stage"] == TRAIN_STAGE) & old["key"].isin(keys)).any():
            return None
    return write_failures(path, failures, stage=TRAIN_STAGE, keys=keys)


__all__ = ["GPU_RESOURCE", "RunTask", "record_failures", "train_on_cluster", "train_task", "training_resources"]
