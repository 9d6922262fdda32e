"""Cost and accuracy of --applyto and export on simulated heads with a moved, contrast-inverted T2w each.

Run: python bench/bench_sharing.py [--n 3] [--voxel-mm 1.5] [--method spm]
Per subject a T2w is made from its T1w: rotated (8, -5, 6 degrees), shifted (6, -4, 5 mm),
intensities inverted inside the head. Prints, per subject, the head-mask Dice that checks
the rigid registration, the Dice of the T2w's cut (moved back) with the T1w's cut inside the
head, and the seconds of: defacing the T1w scans, --applyto (rigid registration + writes),
the whole `defacebench export --applyto` (which defaces again in its own folder), and the
load average (the machine is shared).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=3)
    parser.add_argument("--voxel-mm", type=float, default=1.5)
    parser.add_argument("--method", default="spm")
    args = parser.parse_args()

    from sharing_helpers import add_siemens_metadata, leaks, moved_inverted

    from defacebench import layout
    from defacebench.cli import main as cli
    from defacebench.cohort import read_cohort
    from defacebench.deface.applyto import applyto_cohort
    from defacebench.export import face_problems, structure_problems
    from defacebench.imaging.masks import head_mask
    from defacebench.imaging.registration import mask_dice
    from defacebench.imaging.resample import resample_to

    work = Path(tempfile.mkdtemp(prefix="bench-sharing-"))
    bids = work / "bids"
    cli(["simulate", str(bids), "--n", str(args.n), "--seed", "5", "--voxel-mm", f"{args.voxel_mm:g}"])
    moves = {}
    for t1w_path in sorted(bids.glob("sub-*/anat/*_T1w.nii.gz")):
        add_siemens_metadata(t1w_path)
        t1w = nib.load(str(t1w_path))
        t2w, moves[t1w_path.name.split("_")[0]] = moved_inverted(t1w)
        t2w_path = t1w_path.with_name(t1w_path.name.replace("_T1w", "_T2w"))
        nib.save(nib.Nifti1Image(np.rint(np.asarray(t2w.dataobj)).astype(np.int16), t1w.affine), str(t2w_path))
        add_siemens_metadata(t2w_path)
    study = work / "study"
    start = time.perf_counter()
    cli(["deface", str(bids), str(study), "--methods", args.method, "--no-progress"])
    deface_s = time.perf_counter() - start
    cohort = read_cohort(bids)
    start = time.perf_counter()
    applyto_cohort(cohort, study, [args.method], progress=False)
    applyto_s = time.perf_counter() - start
    print(f"\n{'subject':10s} {'head Dice':>9s} {'cut Dice':>8s}")
    for scan in cohort.subjects:
        t1w = nib.load(str(scan.path))
        head = head_mask(np.asarray(t1w.dataobj, dtype=np.float32))
        files = layout.applied_files(study, scan, f"{scan.key}_T2w.nii.gz", [args.method])
        t1w_cut = np.asarray(nib.load(str(layout.scan_files(study, scan, [args.method])[f"{args.method}_mask"])).dataobj) >= 0.5
        back = resample_to(nib.load(str(files[f"{args.method}_mask"])), np.linalg.inv(moves[f"sub-{scan.subject}"]), t1w.affine, t1w.shape, order=1) >= 0.5
        import pandas as pd

        head_dice = float(pd.read_csv(files["qc_tsv"], sep="\t")["head_dice"].iloc[0])
        print(f"{scan.key:10s} {head_dice:9.3f} {mask_dice(back & head, t1w_cut & head):8.3f}")
    share = work / "share"
    start = time.perf_counter()
    cli(["export", str(bids), str(share), "--method", args.method, "--applyto", "--no-progress"])
    export_s = time.perf_counter() - start
    start = time.perf_counter()
    cli(["export", str(bids), str(share), "--method", args.method, "--applyto", "--no-progress"])
    rerun_s = time.perf_counter() - start
    print(f"\n{args.n} subjects at {args.voxel_mm:g} mm, method {args.method}, load average {os.getloadavg()[0]:.1f}")
    print(f"deface T1w      {deface_s:6.1f} s  ({deface_s / args.n:.1f} s per scan)")
    print(f"applyto T2w     {applyto_s:6.1f} s  ({applyto_s / args.n:.1f} s per image: rigid registration, resampling, writes, QC PNG)")
    print(f"export --applyto {export_s:5.1f} s  (defaces again in OUT_defacebench/; copy + sidecars + tables + checks = the rest)")
    print(f"export rerun    {rerun_s:6.1f} s  (resume with nothing left: reads, sidecars, tables, checks)")
    print(f"leaks in OUT: {leaks(share) or 'none'}; BIDS structure problems: {structure_problems(share) or 'none'}; "
          f"face problems: {face_problems(share) or 'none'}")


if __name__ == "__main__":
    main()
