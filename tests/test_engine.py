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


def test_workers_die_with_their_parent(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys
    import textwrap
    import time

    script = tmp_path / "parent.py"
    pids = tmp_path / "pids"
    script.write_text(textwrap.dedent(f"""
        import os, time
        from defacebench.engine import run_tasks
        def sleepy(i):
            with open({str(pids)!r}, "a") as fh:
                fh.write(f"{{os.getpid()}}\\n")
            time.sleep(60)
        if __name__ == "__main__":
            run_tasks(sleepy, [0, 1], jobs=2, progress=False)
    """))
    parent = subprocess.Popen([sys.executable, str(script)], cwd=tmp_path)
    deadline = time.time() + 60
    while time.time() < deadline and (not pids.exists() or len(pids.read_text().split()) < 2):
        time.sleep(0.2)
    workers = [int(p) for p in pids.read_text().split()]
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    time.sleep(1.0)
    def running(pid: int) -> bool:  # zombies (dead, not yet reaped) do not count
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return False
        return state != "Z"

    alive = [pid for pid in workers if running(pid)]
    for pid in alive:
        os.kill(pid, signal.SIGKILL)
    assert not alive


def square_with_a_note(x: int) -> int:
    import warnings

    if x % 2:
        warnings.warn(f"sub-{x:02d} afni: removed 0.14% of the brain", stacklevel=2)
    return x * x


@pytest.mark.parametrize("jobs", [1, 2])
def test_task_warnings_print_as_lines_above_the_progress_bar(jobs: int, capsys) -> None:
    results = run_tasks(square_with_a_note, list(range(4)), [f"s{i}" for i in range(4)], jobs=jobs, progress=True)
    assert results.values == {f"s{i}": i * i for i in range(4)}
    lines = [line for line in capsys.readouterr().err.replace("\r", "\n").splitlines() if "afni" in line]
    assert sorted(lines) == ["warning: sub-01 afni: removed 0.14% of the brain", "warning: sub-03 afni: removed 0.14% of the brain"], lines


def test_progress_bar_in_a_log_file_redraws_rarely(tmp_path: Path, monkeypatch) -> None:
    import sys

    from defacebench.io.progress import LOG_INTERVAL_S, progress_bar

    log = (tmp_path / "log.txt").open("w")
    monkeypatch.setattr(sys, "stderr", log)  # a file, not a terminal
    bar = progress_bar(200, "deface", "subject")
    assert bar.mininterval == LOG_INTERVAL_S >= 10
    for _ in range(200):
        bar.update(1)
    bar.close()
    log.close()
    frames = [f for f in (tmp_path / "log.txt").read_text().replace("\r", "\n").splitlines() if f.strip()]
    assert len(frames) <= 3 and "200/200" in frames[-1], frames  # the start, perhaps one redraw, the end
