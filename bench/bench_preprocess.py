"""Seconds per step of the whole per-scan pipeline (five defacers + preprocessing) on 1 mm heads.

Usage: python bench/bench_preprocess.py [N_SCANS=3] [GRID=mni2mm] [VOXEL_MM=1.0] [WORKDIR]

Simulates N scans at VOXEL_MM (real base heads, see docs/simulate.md), then for each scan,
in this one process (one worker; ITK may use the machine's cores): defacing with all five
methods (`deface_subject`) and preprocessing into GRID (`preprocess_subject`). Prints the
seconds of every step per scan, their medians, the brain Dice, and the peak resident
memory of the process. Not a pass/fail test: the machine may be shared; read the medians.
"""

from __future__ import annotations

import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def main(argv: list[str]) -> int:
    from defacebench.cohort import read_cohort
    from defacebench.deface import METHODS, deface_subject
    from defacebench.imaging.grids import get_grid
    from defacebench.preprocess.scan import PreprocessTask, preprocess_subject
    from defacebench.simulate import simulate_cohort

    n = int(argv[0]) if argv else 3
    grid = get_grid(argv[1] if len(argv) > 1 else "mni2mm")
    voxel_mm = float(argv[2]) if len(argv) > 2 else 1.0
    root = Path(argv[3]) if len(argv) > 3 else Path(tempfile.mkdtemp(prefix="bench-preprocess-"))
    root.mkdir(parents=True, exist_ok=True)
    bids, study = root / "bids", root / "study"
    if not bids.is_dir():
        t0 = time.perf_counter()
        simulate_cohort(bids, n, seed=7, voxel_mm=voxel_mm)
        print(f"simulated {n} scans at {voxel_mm} mm in {time.perf_counter() - t0:.0f} s ({bids})")
    cohort = read_cohort(bids)
    conditions = ("raw", "skullstripped", *(f"defaced-{m}" for m in METHODS), *(f"face-{m}" for m in METHODS))
    rows = []
    for subject in cohort.subjects[:n]:
        t0 = time.perf_counter()
        deface = deface_subject(subject, study, METHODS, bids_root=bids, qc_png=False)
        deface_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        meta = preprocess_subject(PreprocessTask(subject, str(study), grid, conditions))
        pre_s = time.perf_counter() - t0
        steps = {f"deface.{k}": v for k, v in deface["timings"].items() if k != "total"}
        steps.update({f"preprocess.{k}": v for k, v in meta["seconds"].items()})
        steps["deface total"], steps["preprocess total"], steps["TOTAL"] = deface_s, pre_s, deface_s + pre_s
        rows.append((subject.key, steps, meta["brain_dice"], deface["skipped"] or meta["skipped"]))
        shape = "x".join(map(str, __import__("nibabel").load(str(subject.path)).shape[:3]))
        print(f"{subject.key} ({shape}): total {deface_s + pre_s:.1f} s (deface {deface_s:.1f}, preprocess {pre_s:.1f}), "
              f"brain Dice {meta['brain_dice']:.3f}{' [cached]' if rows[-1][3] else ''}", flush=True)
    names = list(dict.fromkeys(k for _, steps, _, _ in rows for k in steps))
    print(f"\nseconds per step, median over {len(rows)} scans ({grid.name}):")
    for name in names:
        values = [steps.get(name, 0.0) for _, steps, _, _ in rows]
        print(f"  {name:32s} {np.median(values):7.2f}   (min {min(values):.2f}, max {max(values):.2f})")
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    print(f"brain Dice: median {np.median([d for _, _, d, _ in rows]):.3f}, min {min(d for _, _, d, _ in rows):.3f}")
    print(f"peak resident memory of this process: {peak_gb:.2f} GB")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
