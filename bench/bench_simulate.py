"""Seconds per simulated subject (one process, files written), at 1.5 mm by default.

usage: python bench/bench_simulate.py [N] [VOXEL_MM]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from defacebench.simulate import load_base_head, simulate_cohort


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 6
    voxel = float(sys.argv[2]) if len(sys.argv) > 2 else 1.5
    for name in ("robex", "pydeface"):
        load_base_head(name, voxel)  # cache build is not part of the per-subject time
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        simulate_cohort(Path(tmp) / "sim", n, seed=0, voxel_mm=voxel)
        elapsed = time.perf_counter() - start
    print(f"simulate: {n} subjects at {voxel:g} mm in {elapsed:.1f} s -> {elapsed / n:.2f} s/subject (1 process)")


if __name__ == "__main__":
    main()
