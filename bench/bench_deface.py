"""Seconds per step of defacing one head with all five methods (median of repeats).

Run: python bench/bench_deface.py [--repeats 3] [--voxel-mm 1 2 3]
``--voxel-mm 1`` uses pydeface's 1 mm mean head (176x256x256, float32); other sizes use a
head simulated by ``defacebench simulate --voxel-mm X`` (ROBEX base head). Brain extraction
and every registration run each time (nothing cached between repeats). Prints the load
average too: the machine is shared, so compare medians taken under similar load. The last
line, CPU seconds of the process (all threads), depends less on the load than wall time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path


def head_path(voxel_mm: float, workdir: Path) -> Path:
    if voxel_mm == 1:
        return Path(str(resources.files("pydeface") / "data" / "mean_reg2mean.nii.gz"))
    out = workdir / f"sim-{voxel_mm:g}"
    if not out.exists():
        subprocess.run([sys.executable, "-m", "defacebench.cli", "simulate", str(out), "--n", "1", "--seed", "3",
                        "--voxel-mm", f"{voxel_mm:g}", "--base-heads", "robex"], check=True, capture_output=True)
    return next(out.glob("sub-*/anat/*_T1w.nii.gz"))


def main() -> None:
    from defacebench.cohort import Subject
    from defacebench.conditions import DEFACERS as METHODS
    from defacebench.deface import deface_subject
    from defacebench.imaging.templates import mni_head, mni_head_brain_mask, pydeface_to_mni

    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--voxel-mm", type=float, nargs="+", default=[1.0])
    args = parser.parse_args()
    mni_head(2), mni_head_brain_mask(2), pydeface_to_mni()  # build/cache the templates outside the timing
    with tempfile.TemporaryDirectory() as work:
        for voxel_mm in args.voxel_mm:
            path = head_path(voxel_mm, Path(work))
            runs = []
            for i in range(args.repeats):
                out = Path(work) / f"out-{voxel_mm:g}-{i}"
                cpu = time.process_time()
                timings = deface_subject(Subject(subject="bench", age_years=0.0, path=path), out, METHODS)["timings"]
                timings["cpu_seconds_all_threads"] = time.process_time() - cpu
                runs.append(timings)
            import nibabel as nib

            shape = nib.load(str(path)).shape
            print(f"voxel {voxel_mm:g} mm, grid {shape}, {args.repeats} runs, load average {os.getloadavg()[0]:.1f} (2 cores)")
            for step in runs[0]:
                values = [r.get(step, 0.0) for r in runs]
                print(f"  {step:28s} {statistics.median(values):7.2f} s   (min {min(values):.2f})")


if __name__ == "__main__":
    main()
