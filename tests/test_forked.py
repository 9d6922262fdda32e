"""The forked helper on the spare core (issue 21): same values as in-process, failures handled,
and the deface and N4 steps that use it give the same outputs with and without it."""

from __future__ import annotations

import gzip
import os
import time
import warnings

import numpy as np
import pytest

from defacebench.engine import run_tasks
from defacebench.io import forked
from defacebench.io.forked import Forked, spare_cores


def pid_and_square(x: int) -> tuple[int, int]:
    return os.getpid(), x * x


def fail_here_only(parent: int) -> str:
    if os.getpid() != parent:
        os._exit(3)  # the child dies without answering
    return "here"


def sleep_in_child(parent: int) -> str:
    if os.getpid() != parent:
        time.sleep(30)
    return "here"


def warn_and_raise(message: str) -> None:
    warnings.warn(message, UserWarning, stacklevel=1)
    raise ValueError("no registration")


def spare(_: int) -> int:
    return spare_cores()


@pytest.fixture
def two_cores(monkeypatch):
    """A machine with a spare core for this process, whatever runs the tests."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(forked, "_usable_cores", lambda: 2)


def test_forked_value_comes_from_another_process(two_cores) -> None:
    helper = Forked(pid_and_square, 7)
    assert helper.forked
    pid, value = helper.result()
    assert value == 49 and pid != os.getpid()
    assert helper.result() == (pid, 49)  # computed once
    here = Forked(pid_and_square, 7, fork=False)
    assert not here.forked and here.result() == (os.getpid(), 49) and here.wall_s >= 0


def test_forked_raises_and_warns_here(two_cores) -> None:
    helper = Forked(warn_and_raise, "child warning")
    with pytest.warns(UserWarning, match="child warning"), pytest.raises(ValueError, match="no registration"):
        helper.result()


def test_dead_or_silent_child_is_redone_here(two_cores) -> None:
    dead = Forked(fail_here_only, os.getpid())
    assert dead.result() == "here" and not dead.forked
    silent = Forked(sleep_in_child, os.getpid())
    start = time.perf_counter()
    assert silent.result(timeout_s=0.5) == "here" and time.perf_counter() - start < 10


def test_no_fork_to_be_had_computes_here(two_cores, monkeypatch) -> None:
    def refuse() -> int:
        raise BlockingIOError("Resource temporarily unavailable")

    monkeypatch.setattr(os, "fork", refuse)
    helper = Forked(pid_and_square, 3)
    assert not helper.forked and helper.result() == (os.getpid(), 9)


def test_no_spare_core_in_workers_or_under_one_thread(two_cores, monkeypatch) -> None:
    assert spare_cores() == 1
    assert set(run_tasks(spare, [0, 1], jobs=2, progress=False).values.values()) == {0}
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert spare_cores() == 0 and not Forked(pid_and_square, 2).forked


def test_no_spare_core_in_a_dask_worker(two_cores) -> None:
    from dask.distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        results = run_tasks(spare, [0], scheduler=cluster.scheduler_address, progress=False)
    assert results.values == {"0": 0} and spare_cores() == 1


def _outputs(study) -> dict[str, bytes]:
    """Every file under ``study/derivatives``: NIfTI decompressed, the PNG's pixels, the rest as bytes."""
    from PIL import Image

    out = {}
    for path in sorted((study / "derivatives").rglob("*.*")):
        name = str(path.relative_to(study))
        if path.name.endswith(".nii.gz"):
            out[name] = gzip.decompress(path.read_bytes())
        elif path.suffix == ".png":
            out[name] = np.asarray(Image.open(path)).tobytes()
        else:
            out[name] = path.read_bytes()
    return out


def test_deface_outputs_identical_with_and_without_the_helper(tmp_path, monkeypatch, two_cores) -> None:
    from deface_helpers import robex_scan

    from defacebench.deface import deface_subject

    methods = ["fsl", "pydeface", "quickshear"]  # pydeface's template registration and the picture may be forked
    results, outputs = {}, {}
    for n in (1, 0):
        monkeypatch.setattr(forked, "_usable_cores", lambda n=n: 1 + n)
        study = tmp_path / f"spare{n}"
        subject, _, _ = robex_scan(study, methods)
        results[n] = deface_subject(subject, study, methods)
        outputs[n] = _outputs(study)
    helped = ("register_brain_to_mni (wait)", "register_pydeface_template (wait)", "qc_png (wait)")
    assert all(step in results[1]["timings"] for step in helped) and not any(step in results[0]["timings"] for step in helped)
    assert results[1]["timings"]["register_pydeface_template"] > 0 and results[1]["cpu_timings"]["qc_png"] > 0
    assert [r["method"] for r in results[1]["qc"]] == methods
    assert outputs[0].keys() == outputs[1].keys() and len(outputs[0]) >= 12
    assert [name for name in outputs[0] if outputs[0][name] != outputs[1][name]] == []


def test_bias_field_identical_with_and_without_the_helper(monkeypatch, two_cores) -> None:
    from test_bias import synthetic_head

    from defacebench.preprocess import bias
    from defacebench.preprocess.bias import compartment_bias_field

    seen: list[bool] = []

    class Recording(Forked):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            seen.append(self.forked)

    monkeypatch.setattr(bias, "Forked", Recording)
    data, _, _ = synthetic_head()
    g = [(np.arange(n) - (n - 1) / 2) * 4.0 for n in data.shape]
    x, y, z = np.meshgrid(*g, indexing="ij")
    brain = (x / 64) ** 2 + (y / 84) ** 2 + (z / 79) ** 2 < 1
    with_helper = compartment_bias_field(data, (4.0,) * 3, brain, resolution_mm=12.0)
    monkeypatch.setattr(forked, "_usable_cores", lambda: 1)
    np.testing.assert_array_equal(compartment_bias_field(data, (4.0,) * 3, brain, resolution_mm=12.0), with_helper)
    assert seen == [True, False]


def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@pytest.mark.parametrize("jobs", [1, 2])
def test_warm_up_estimate_of_workers_counts_cpu_seconds(jobs, monkeypatch) -> None:
    """Workers have one thread and no helper: with --jobs N > 1 a warm-up task counts at
    least its CPU seconds (its own and its helpers'), here made 5 s per task."""
    from defacebench import engine

    clock = iter(range(0, 1000, 5))
    monkeypatch.setattr(engine, "_cpu_seconds", lambda: float(next(clock)))
    said: list = []
    run_tasks(nap, [0.6, 0.6, 0.0, 0.0], jobs=jobs, progress=False, estimate=said.append)
    (estimate,) = said
    assert (estimate.seconds > 4.0) == (jobs > 1), estimate.seconds
