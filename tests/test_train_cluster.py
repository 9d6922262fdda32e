"""Training runs as tasks on a Dask cluster: the same results as a serial run, and a lost
worker's run resumes from its checkpoint on another worker."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from defacebench import layout
from defacebench.commands.train import main as train_main
from defacebench.engine import Failure, read_failures
from defacebench.model.dispatch import RunTask, record_failures, training_resources

from model_stores import make_blob_store

SHAPE = (20, 24, 22)
CONDITIONS = ("raw", "face-fsl")
RUNS = 2
FAST_EPOCHS = 3  # the fast test: enough to compare results
KILL_EPOCHS = 12  # the lost-worker test: long enough to kill a worker halfway through a run


def _argv(study: Path, epochs: int, *more: str) -> list[str]:
    # the cpu profile (one torch thread per run, in this process and on every worker)
    return [str(study), "--grid", "tiny", "--profile", "cpu", "--runs", str(RUNS), "--epochs", str(epochs), "--patience", str(epochs),
            "--no-progress", *more]


def _runs(study: Path) -> list[Path]:
    return [layout.run_dir(study, c, r) for c in CONDITIONS for r in range(1, RUNS + 1)]


def _assert_same_runs(study: Path, reference: Path) -> None:
    """Same predictions (to the bit), weights and history as the serial runs."""
    for run, ref in zip(_runs(study), _runs(reference)):
        assert layout.predictions_file(run).read_bytes() == layout.predictions_file(ref).read_bytes(), run
        mine, theirs = (torch.load(layout.model_file(p), weights_only=True)["state_dict"] for p in (run, ref))
        assert all(torch.equal(mine[k], theirs[k]) for k in theirs), run
        pd.testing.assert_frame_equal(pd.read_csv(layout.history_file(run)).drop(columns="seconds"),
                                      pd.read_csv(layout.history_file(ref)).drop(columns="seconds"))


def _store(path: Path) -> Path:
    return make_blob_store(path, n=40, shape=SHAPE, conditions=CONDITIONS)


def _serial(path: Path, epochs: int) -> Path:
    study = _store(path)
    assert train_main(_argv(study, epochs, "--device", "cpu")) == 0
    return study


@pytest.fixture(scope="module")
def cluster():
    from dask.distributed import LocalCluster

    # two worker processes, each declaring one GPU (stand-ins: they see no CUDA device, so
    # --device auto resolves to the CPU on them), one task thread each
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, resources={"GPU": 1}, dashboard_address=None,
                      env={"CUDA_VISIBLE_DEVICES": ""}) as cluster:
        yield cluster


def test_cluster_runs_equal_serial_runs(cluster, tmp_path: Path, capsys) -> None:
    serial = _serial(tmp_path / "serial", FAST_EPOCHS)
    study = _store(tmp_path / "cluster")
    assert train_main(_argv(study, FAST_EPOCHS, "--device", "auto", "--scheduler", cluster.scheduler_address)) == 0
    out = capsys.readouterr().out
    assert "worker resources per run: GPU=1" in out
    workers = {line.rsplit(" at ", 1)[1] for line in out.splitlines() if ": trained on " in line}
    assert len(workers) == 2, out  # both workers trained
    _assert_same_runs(study, serial)
    for run in _runs(study):
        assert json.loads(layout.run_record(run).read_text())["device"] == "cpu (1 thread)"
    assert not layout.failures_table(study).exists()


def _kill_a_worker_mid_run(study: Path, cluster, done: threading.Event) -> str:
    """SIGKILL the worker training a run that has a checkpoint and epochs left; the run's key."""
    from dask.distributed import Client

    with Client(cluster.scheduler_address) as client:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not done.is_set():
            for task_key, run in ((f"train-{c} run-{r}", layout.run_dir(study, c, r)) for c in CONDITIONS for r in range(1, RUNS + 1)):
                history = layout.history_file(run)
                if layout.run_record(run).exists() or not history.is_file():
                    continue
                if not 2 <= len(pd.read_csv(history)) <= KILL_EPOCHS - 4:
                    continue
                for address, keys in client.processing().items():
                    if any(str(k).startswith(f"{task_key}-") for k in keys):  # the engine adds a token per batch
                        pid = client.run(os.getpid, workers=[address])[address]
                        os.kill(pid, signal.SIGKILL)
                        return task_key.removeprefix("train-")
            time.sleep(0.02)
    raise AssertionError("no run was caught mid-training")


@pytest.mark.slow  # ~20 s on 2 idle cores, a minute on busy ones
def test_a_lost_worker_run_resumes_on_another(cluster, tmp_path: Path, capsys) -> None:
    serial = _serial(tmp_path / "serial", KILL_EPOCHS)
    study = _store(tmp_path / "cluster")
    argv = _argv(study, KILL_EPOCHS, "--device", "auto", "--scheduler", cluster.scheduler_address)
    codes: list[int] = []
    done = threading.Event()

    def train() -> None:
        codes.append(train_main(argv))
        done.set()

    thread = threading.Thread(target=train)
    thread.start()
    try:
        killed = _kill_a_worker_mid_run(study, cluster, done)
    finally:
        thread.join(timeout=300)
    assert codes == [0]  # the scheduler ran the lost task again; every run finished
    out = capsys.readouterr().out
    assert f"{killed}: resuming after epoch" in out, out
    _assert_same_runs(study, serial)
    assert train_main(argv) == 0  # rerun: nothing left to do
    assert capsys.readouterr().out.count("complete, skipped") == len(_runs(study))


def test_training_resources() -> None:
    assert training_resources("cuda") == training_resources("cuda:1") == {"GPU": 1}
    assert training_resources("cpu", {"GPU": 2}) is None
    assert training_resources("auto", {"GPU": 2}) == {"GPU": 1}
    assert training_resources("auto", {}) is None


def test_failed_runs_are_recorded_and_cleared(tmp_path: Path) -> None:
    from defacebench.model.profiles import get_profile
    from defacebench.model.accel.settings import get_speed

    profile, speed = get_profile("cpu"), get_speed("cpu")
    tasks = [RunTask(str(tmp_path), "tiny", c, 1, profile, speed) for c in CONDITIONS]
    assert record_failures(tmp_path, tasks, []) is None  # nothing failed, nothing written
    record_failures(tmp_path, tasks, [Failure("raw run-1", "train", "worker lost")])
    record_failures(tmp_path, tasks[1:], [Failure("face-fsl run-1", "train", "diverged")])  # a rerun of face-fsl alone keeps raw's row
    table = read_failures(layout.failures_table(tmp_path))
    assert list(table["key"]) == ["raw run-1", "face-fsl run-1"] and set(table["stage"]) == {"train"}
    record_failures(tmp_path, tasks[1:], [])
    assert list(read_failures(layout.failures_table(tmp_path))["key"]) == ["raw run-1"]
    record_failures(tmp_path, tasks, [])  # now raw succeeded too
    assert read_failures(layout.failures_table(tmp_path)).empty


def test_a_study_sends_its_training_runs_to_the_scheduler(tmp_path: Path) -> None:
    from defacebench.commands.train import build_parser
    from defacebench.config import get_preset
    from defacebench.study import study_stages

    stages = {s.name: s for s in study_stages(tmp_path / "bids", tmp_path / "out", get_preset("demo"), scheduler="tcp://10.0.0.5:8786")}
    for name in ("deface", "preprocess", "train", "train-face"):
        assert "tcp://10.0.0.5:8786" in stages[name].argv, name
    assert build_parser().parse_args(list(stages["train"].argv)).scheduler == "tcp://10.0.0.5:8786"
    assert "--scheduler" not in stages["analyse"].argv
    local = {s.name: s for s in study_stages(tmp_path / "bids", tmp_path / "out", get_preset("demo"))}
    assert "--scheduler" not in local["train"].argv


def test_the_slurm_gpu_example_builds_its_job_script() -> None:
    pytest.importorskip("dask_jobqueue")  # not a dependency: checked where it is installed
    text = (Path(__file__).parents[1] / "docs" / "cluster.md").read_text()
    section = text.split("## A worked example: dask-jobqueue on a GPU partition", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict = {"__name__": "gpu_cluster"}  # its main block (scale, wait forever) does not run
    exec(compile(code, "docs/cluster.md", "exec"), namespace)
    with namespace["cluster"] as cluster:
        script = cluster.job_script()
    for line in ("#SBATCH -p gpu", "#SBATCH --gres=gpu:1", "#SBATCH --cpus-per-task=8", "--nthreads 1 ", "--resources GPU=1"):
        assert line in script, line


def test_a_failed_cluster_run_is_recorded_and_the_others_go_on(cluster, tmp_path: Path, capsys) -> None:
    # --device cuda on workers that see no GPU: every task fails on its worker, none stops the rest
    study = _store(tmp_path)
    assert train_main(_argv(study, 1, "--device", "cuda", "--scheduler", cluster.scheduler_address)) == 2
    err = capsys.readouterr().err
    assert "4 run(s) failed" in err and "no CUDA GPU is available" in err
    table = read_failures(layout.failures_table(study))
    assert sorted(table["key"]) == sorted(f"{c} run-{r}" for c in CONDITIONS for r in range(1, RUNS + 1))
    assert set(table["stage"]) == {"train"}
    assert not any(layout.run_record(run).exists() for run in _runs(study))


def test_tasks_name_the_study_by_its_absolute_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a worker on another node does not start in this directory
    import defacebench.model.dispatch as dispatch

    sent: list[RunTask] = []
    monkeypatch.setattr(dispatch, "train_on_cluster", lambda tasks, scheduler, **kw: sent.extend(tasks) or [])
    _store(tmp_path / "study")
    monkeypatch.chdir(tmp_path)
    assert train_main(_argv(Path("study"), 1, "--device", "cuda", "--scheduler", "tcp://10.0.0.5:8786")) == 0
    assert len(sent) == len(CONDITIONS) * RUNS
    assert all(t.study_dir == str(tmp_path / "study") and t.device == "cuda" for t in sent)  # cuda: resolved on the worker, not here


def test_a_task_whose_workers_keep_dying_is_a_recorded_failure() -> None:
    import dask
    from dask.distributed import LocalCluster

    from defacebench.engine import run_tasks

    # allowed-failures 0: the scheduler gives up on a task at its first lost worker (KilledWorker)
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
            results = run_tasks(os._exit, [3], ["dies"], scheduler=cluster.scheduler_address, stage="train", progress=False)
    assert results.values == {} and [f.key for f in results.failures] == ["dies"]
    assert results.failures[0].reason.startswith("worker lost (KilledWorker")
