from __future__ import annotations

import os
from pathlib import Path

import pytest

from defacebench.engine import Failure, read_failures, run_tasks, write_failures
from defacebench.io.errors import InputError


def square_or_fail(x: int) -> int:
    if x == 3:
        raise InputError("bad subject", "sub-03")
    if x == 5:
        raise RuntimeError("registration diverged")
    return x * x


def worker_threads(_: int) -> str:
    return os.environ.get("OMP_NUM_THREADS", "")


@pytest.mark.parametrize("jobs", [1, 2])
def test_failures_do_not_stop_the_rest(jobs: int) -> None:
    seen: list[Failure] = []
    results = run_tasks(square_or_fail, list(range(7)), [f"s{i}" for i in range(7)], jobs=jobs, stage="deface", progress=False, on_failure=seen.append)
    assert results.values == {f"s{i}": i * i for i in (0, 1, 2, 4, 6)}
    reasons = {f.key: f.reason for f in results.failures}
    assert reasons == {"s3": "sub-03: bad subject", "s5": "RuntimeError: registration diverged"}
    assert {f.key for f in seen} == {"s3", "s5"} and all(f.stage == "deface" for f in seen)


def test_workers_limit_threads() -> None:
    results = run_tasks(worker_threads, [0, 1], jobs=2, progress=False)
    assert set(results.values.values()) == {"1"}


def test_failures_tsv_replaces_rows_of_the_same_stage(tmp_path: Path) -> None:
    path = tmp_path / "failures.tsv"
    write_failures(path, [Failure("sub-01", "deface", "a"), Failure("sub-02", "deface", "b")], stage="deface")
    write_failures(path, [Failure("sub-03", "preprocess", "c")], stage="preprocess")
    write_failures(path, [Failure("sub-02", "deface", "b again")], stage="deface")
    table = read_failures(path)
    assert sorted(zip(table["key"], table["reason"])) == [("sub-02", "b again"), ("sub-03", "c")]


def test_dask_scheduler_backend() -> None:
    from dask.distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        results = run_tasks(square_or_fail, list(range(6)), jobs=1, scheduler=cluster.scheduler_address, stage="x", progress=False)
    assert results.values == {"0": 0, "1": 1, "2": 4, "4": 16}
    assert results.failed_keys == {"3", "5"}
