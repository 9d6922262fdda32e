"""Seconds and peak memory per simulated subject (files written), per voxel size and job count.

usage: python bench/bench_simulate.py [N] [VOXEL_MM ...] [--jobs J] [--base-heads robex,pydeface]

Base-head labels and the per-head calibration are built (and cached) before the clock starts;
with one job the per-process field bases (about 1-3 s once per worker) are built inside it.
On a shared machine compare CPU-s/subject (user + system time), not wall time.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

from defacebench.simulate import load_base_head, simulate_cohort
from defacebench.simulate.calibration import calibration_gains


def _cpu_s() -> float:
    """User + system CPU seconds of this process and its finished children (robust to a busy machine)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("n", type=int, nargs="?", default=8)
    parser.add_argument("voxel_mm", type=float, nargs="*", default=[1.5])
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--base-heads", default="robex,pydeface")
    args = parser.parse_args()
    heads = args.base_heads.split(",")
    for voxel in args.voxel_mm:
        for name in heads:
            calibration_gains(load_base_head(name, voxel))  # disk caches: not per-subject cost
        with tempfile.TemporaryDirectory() as tmp:
            start, cpu0 = time.perf_counter(), _cpu_s()
            simulate_cohort(Path(tmp) / "sim", args.n, seed=0, voxel_mm=voxel, base_heads=heads, jobs=args.jobs)
            elapsed, cpu = time.perf_counter() - start, _cpu_s() - cpu0
        peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
        child_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1e6
        print(f"simulate: {args.n} subjects at {voxel:g} mm, {args.jobs} job(s), heads {args.base_heads}: "
              f"{elapsed:.1f} s -> {elapsed / args.n:.2f} s/subject wall, {cpu / args.n:.2f} CPU-s/subject; "
              f"peak RSS {peak_gb:.2f} GB (largest worker {child_gb:.2f} GB)")


if __name__ == "__main__":
    main()
