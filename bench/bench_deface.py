"""Seconds per step of defacing one 1 mm head (pydeface's mean head) with all five methods.

Run: python bench/bench_deface.py [--repeats 3]. Prints the median per step.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path


def main() -> None:
    from defacebench.cohort import Subject
    from defacebench.deface import METHODS, deface_subject
    from defacebench.templates import mni_head, pydeface_template
    from importlib import resources

    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    mni_head(2)  # build/cache the template outside the timing
    path = resources.files("pydeface") / "data" / "mean_reg2mean.nii.gz"
    runs = []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            runs.append(deface_subject(Subject(subject="bench", age_years=0.0, path=Path(str(path))), tmp, METHODS)["timings"])
    for step in runs[0]:
        print(f"{step:28s} {statistics.median(r.get(step, 0.0) for r in runs):7.2f} s")
    _ = pydeface_template


if __name__ == "__main__":
    main()
