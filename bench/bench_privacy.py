"""Seconds per scan x method of the privacy stage (issue 19) on one head, median of repeats.

Run: python bench/bench_privacy.py [--repeats 3] [--voxel-mm 1 3] [--methods afni,fsl,pydeface,spm,quickshear]

``--voxel-mm 1`` uses pydeface's 1 mm mean head (176x256x256); other sizes a head simulated by
``defacebench simulate --voxel-mm X`` (the demo uses 3 mm). The head is defaced once with the
methods (``defacebench deface``, not timed); each repeat then runs one scan's whole privacy work
(:func:`defacebench.privacy.scan.privacy_scan`: the raw head rebuilt, every head rendered from
three views, dlib's detector and descriptor on every render, the surface descriptor, the
residual face, the PNGs and features written) in this process, with the dlib models loaded
once beforehand (a worker loads them once). The heads per scan are the raw head, each method's
output and the skull-stripped head; the figure per scan x method divides by their number.
Prints the load average and the CPU seconds (the machine is shared).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_deface import head_path  # noqa: E402


def main() -> None:
    from defacebench import layout
    from defacebench.privacy.faces import face_models
    from defacebench.privacy.scan import PrivacyScan, PrivacyTask, privacy_scan

    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--voxel-mm", type=float, nargs="+", default=[1.0])
    parser.add_argument("--methods", default="afni,fsl,pydeface,spm,quickshear")
    args = parser.parse_args()
    methods = tuple(args.methods.split(","))
    face_models()
    with tempfile.TemporaryDirectory() as work:
        for voxel_mm in args.voxel_mm:
            source = Path(work) / f"bids-{voxel_mm:g}"
            anat = source / "sub-01" / "anat"
            anat.mkdir(parents=True)
            shutil.copy(head_path(voxel_mm, Path(work)), anat / "sub-01_T1w.nii.gz")
            (source / "participants.tsv").write_text("participant_id\tage\nsub-01\t70\n")
            (source / "dataset_description.json").write_text('{"Name": "bench", "BIDSVersion": "1.9.0"}\n')
            study = Path(work) / f"study-{voxel_mm:g}"
            subprocess.run([sys.executable, "-m", "defacebench.cli", "deface", str(source), str(study), "--methods", ",".join(methods),
                            "--quiet", "--no-progress"], check=True, capture_output=True)
            scan = PrivacyScan("01")
            walls, cpus = [], []
            for _ in range(args.repeats):
                layout.privacy_features(study, scan).unlink(missing_ok=True)
                t0, c0 = time.perf_counter(), time.process_time()
                privacy_scan(PrivacyTask(study, scan, methods))
                walls.append(time.perf_counter() - t0)
                cpus.append(time.process_time() - c0)
            heads = len(methods) + 2
            wall, cpu = statistics.median(walls), statistics.median(cpus)
            print(f"{voxel_mm:g} mm: {wall:.2f} s wall, {cpu:.2f} s CPU per scan ({heads} heads: raw, {len(methods)} methods, skull-stripped); "
                  f"{wall / heads:.2f} s wall, {cpu / heads:.2f} s CPU per scan x method "
                  f"(min {min(walls):.2f}, max {max(walls):.2f} s per scan over {args.repeats}; load average {os.getloadavg()[0]:.1f})", flush=True)


if __name__ == "__main__":
    main()
