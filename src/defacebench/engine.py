"""Task execution: the same per-subject task serially, in local processes, or on Dask.

A task is a picklable top-level function applied to one item (usually one scan). The
task itself writes its outputs atomically and skips work whose outputs already exist,
so a killed run resumes where it stopped. The engine runs tasks, shows a progress bar
(done, failed, time left), and turns a task's exception into a failure record instead
of stopping the cohort.

Backends
--------
``jobs=1``
    In this process (tests, debugging).
``jobs=N``
    N local worker processes, each limited to one thread of BLAS/ITK/torch so N
    workers do not fight over the cores.
``scheduler="tcp://host:8786"`` or a scheduler JSON file
    An existing Dask cluster (e.g. started by dask-jobqueue on SLURM; see README).
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from collections.abc import Callable, Collection, Hashable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from defacebench.io.atomic import write_table_atomic
from defacebench.io.errors import InputError, one_line_warnings, warning_line
from defacebench.io.estimate import Estimate, task_estimate
from defacebench.io.progress import progress_bar

THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS",
)
FAILURE_COLUMNS = ("key", "stage", "reason")


@dataclass
class Failure:
    """One task that raised: which item, at which stage, why."""

    key: str
    stage: str
    reason: str


@dataclass
class TaskResults:
    """Results of a batch of tasks: values by key, and the failures."""

    values: dict[str, Any] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def failed_keys(self) -> set[str]:
        return {f.key for f in self.failures}


def default_jobs() -> int:
    """Number of usable cores."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def limit_threads(n: int = 1) -> None:
    """Limit BLAS, ITK and torch threads in this process (worker initialiser)."""
    for name in THREAD_VARIABLES:
        os.environ[name] = str(n)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n)


def _worker_init() -> None:
    """Worker initialiser: one thread each, and die with the parent (Linux).

    Without the parent-death signal, killing ``defacebench`` leaves its spawned workers
    computing the tasks already queued to them, competing with the rerun.
    """
    limit_threads(1)
    one_line_warnings()
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
        except OSError:  # pragma: no cover - no glibc
            pass


def _guarded(func: Callable[[Any], Any], item: Any, stage: str) -> tuple[bool, Any, list[str]]:
    """Run one task, returning (ok, value or failure reason, its warnings); never raises.

    Warnings are returned as lines rather than printed where the task ran, so the parent
    prints them above its progress bar (a worker's stderr would cut through the bar).
    """
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        try:
            ok, value = True, func(item)
        except InputError as exc:
            ok, value = False, str(exc)
        except Exception as exc:
            ok, value = False, f"{type(exc).__name__}: {exc}"
    return ok, value, [warning_line(w.message, w.category, w.filename, w.lineno) for w in caught]


def _progress(total: int, desc: str, enabled: bool, unit: str = "subject"):
    return progress_bar(total, desc, unit, enabled=enabled)


def _dask_client(scheduler: str):
    try:
        from dask.distributed import Client
    except ImportError as exc:  # pragma: no cover - dask is a dependency
        raise InputError(f"--scheduler needs dask.distributed ({exc})") from None
    if Path(scheduler).is_file():
        return Client(scheduler_file=scheduler)
    return Client(scheduler)


def cluster_resources(scheduler: str) -> dict[str, float]:
    """Worker resources the Dask cluster at ``scheduler`` declares now, summed over its
    workers (``{"GPU": 4.0}``); empty when none do (or no worker has joined yet)."""
    with _dask_client(scheduler) as client:
        workers = client.scheduler_info(n_workers=-1)["workers"].values()
    total: dict[str, float] = {}
    for worker in workers:
        for name, amount in (worker.get("resources") or {}).items():
            total[name] = total.get(name, 0.0) + float(amount)
    return total


def run_tasks(
    func: Callable[[Any], Any],
    items: Sequence[Any],
    keys: Sequence[Hashable] | None = None,
    *,
    jobs: int | None = None,
    scheduler: str | None = None,
    stage: str = "task",
    progress: bool = True,
    on_failure: Callable[[Failure], None] | None = None,
    resources: dict[str, float] | None = None,
    unit: str = "subject",
    on_value: Callable[[str, Any], None] | None = None,
    estimate: Callable[[Estimate], None] | None = None,
) -> TaskResults:
    """Apply ``func`` to each item; collect values and failures.

    Parameters
    ----------
    func : callable
        Picklable top-level function of one item. It raises on failure.
    items : sequence
        Work items (e.g. :class:`defacebench.cohort.Subject`).
    keys : sequence, optional
        Names of the items in progress output and failure records (default: str(item)).
    jobs : int, optional
        Local worker processes (default: number of cores); 1 runs in this process.
    scheduler : str, optional
        Address or scheduler file of an existing Dask cluster; overrides ``jobs``.
    stage : str
        Stage name written into failure records.
    progress : bool
        Show a progress bar on stderr.
    on_failure : callable, optional
        Called with each :class:`Failure` as it happens (e.g. to save failures.tsv).
    resources : dict, optional
        Dask only: worker resources each task holds while it runs (e.g. ``{"GPU": 1}``: only
        workers started with ``--resources GPU=1`` run it, one at a time per unit).
    unit : str
        What one item is, in the progress bar (``"subject"``, ``"run"``).
    on_value : callable, optional
        Called with ``(key, value)`` of each task that succeeded, as it finishes.
    estimate : callable, optional
        Time before work: the first items run here, one at a time, until two took at least
        :data:`WARM_UP_MIN_S` each (items already done finish at once); the second one's time
        times the items left, over the workers, goes to ``estimate`` as an
        :class:`~defacebench.io.estimate.Estimate` before the rest is dispatched (here, with
        all threads; a local worker has one, so a multi-threaded task can take longer there).
        Not with ``scheduler``: the client of a cluster does no task itself.

    A Dask worker lost mid-task (killed, pre-empted) makes the scheduler run the task again on
    another worker (up to ``distributed.scheduler.allowed-failures`` times); a task it gives up
    on is recorded as a failure like one that raised.
    """
    keys = [str(k) for k in (keys if keys is not None else items)]
    results = TaskResults()
    start = time.perf_counter()
    jobs = default_jobs() if jobs is None else max(1, int(jobs))
    bar = _progress(len(items), stage, progress, unit)

    def record(key: str, ok: bool, value: Any, notes: Sequence[str] = ()) -> None:
        for line in notes:
            bar.write(line, file=sys.stderr)
        if ok:
            results.values[key] = value
            if on_value is not None:
                on_value(key, value)
        else:
            failure = Failure(key, stage, str(value).replace("\n", " ").replace("\t", " "))
            results.failures.append(failure)
            if on_failure is not None:
                on_failure(failure)
        bar.set_postfix(done=len(results.values), failed=len(results.failures), refresh=False)
        bar.update(1)

    try:
        if estimate is not None and not scheduler:  # never compute on a cluster's client (a login node)
            keys, items = _warm_up(func, list(keys), list(items), stage, record, estimate, jobs, scheduler)
        if scheduler:
            from dask.distributed import as_completed as dask_completed

            batch = uuid.uuid4().hex[:8]  # two studies on one cluster must not share a task key
            with _dask_client(scheduler) as client:
                futures = {client.submit(_guarded, func, item, stage, key=f"{stage}-{key}-{batch}", pure=False, resources=resources): key
                           for key, item in zip(keys, items)}
                for future in dask_completed(futures):
                    try:
                        outcome = future.result()
                    except Exception as exc:  # KilledWorker: its workers kept dying (out of memory, pre-empted)
                        outcome = (False, f"worker lost ({type(exc).__name__}: {exc})", [])
                    record(futures[future], *outcome)
        elif jobs == 1 or len(items) <= 1:
            for key, item in zip(keys, items):
                record(key, *_guarded(func, item, stage))
        else:
            import multiprocessing as mp

            context = mp.get_context("spawn")
            with ProcessPoolExecutor(max_workers=min(jobs, len(items)), mp_context=context, initializer=_worker_init) as pool:
                futures = {pool.submit(_guarded, func, item, stage): key for key, item in zip(keys, items)}
                for future in as_completed(futures):
                    try:
                        outcome = future.result()
                    except Exception as exc:  # a worker died (killed, out of memory)
                        outcome = (False, f"worker process died ({type(exc).__name__}: {exc})", [])
                    record(futures[future], *outcome)
    finally:
        bar.close()
    results.seconds = time.perf_counter() - start
    return results


#: A warm-up task that took less than this was (probably) already done: time the next one.
WARM_UP_MIN_S = 0.5


def _warm_up(func, keys: list[str], items: list, stage: str, record, estimate: Callable[[Estimate], None], jobs: int, scheduler: str | None) -> tuple[list[str], list]:
    """Run items here until two took :data:`WARM_UP_MIN_S` each (the first of them also pays
    for imports and caches built once, e.g. the deface template), report the estimate from the
    last; return the items left."""
    timed: list[tuple[str, float]] = []
    while items and len(timed) < 2:
        key, item = keys.pop(0), items.pop(0)
        t0, cpu0 = time.perf_counter(), _cpu_seconds()
        record(key, *_guarded(func, item, stage))
        seconds = time.perf_counter() - t0
        if jobs > 1:  # a worker has one thread and no helper process (issue 21): at least the task's CPU seconds
            seconds = max(seconds, _cpu_seconds() - cpu0)
        if seconds >= WARM_UP_MIN_S:
            timed.append((key, seconds))
    if timed and items:
        key, seconds = timed[-1]
        estimate(task_estimate(stage, seconds, len(items), key, jobs, scheduler, default_jobs()))
    return keys, items


def _cpu_seconds() -> float:
    """CPU seconds of this process, all threads, and of its finished children (forked helpers)."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def read_failures(path: str | Path) -> pd.DataFrame:
    """Read a ``failures.tsv`` (empty table when absent)."""
    path = Path(path)
    if not path.is_file():
        return pd.DataFrame(columns=list(FAILURE_COLUMNS))
    return pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)


def write_failures(path: str | Path, failures: Sequence[Failure], stage: str | None = None, keys: Collection[str] | None = None) -> Path:
    """Write ``failures.tsv`` atomically, replacing earlier rows of the same stage.

    Rows of other stages are kept, so deface and preprocess can share one file;
    a rerun that now succeeds drops its old failure. With ``keys``, only that stage's rows
    of those keys are replaced (a rerun of some training runs keeps the others' rows).
    """
    old = read_failures(path)
    if stage is not None and not old.empty:
        old = old[(old["stage"] != stage) | (~old["key"].isin(list(keys)) if keys is not None else False)]
    new = pd.DataFrame([(f.key, f.stage, f.reason) for f in failures], columns=list(FAILURE_COLUMNS))
    table = pd.concat([old, new], ignore_index=True) if not old.empty else new
    return write_table_atomic(path, table)
