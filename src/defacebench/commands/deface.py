"""``defacebench deface``: deface every scan with AFNI, FSL, pydeface, SPM and quickshear methods."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from defacebench.cli import make_parser, run_command

DESCRIPTION = """\
Deface every T1w scan of a BIDS dataset (or a CSV/TSV manifest) with each method and keep
both halves: OUT/derivatives/defacebench/sub-X[/ses-Y]/anat/
  <prefix>_desc-<method>defaced_T1w.nii.gz   defaced head
  <prefix>_desc-<method>face_T1w.nii.gz      face-only (exactly what was removed)
  <prefix>_desc-<method>_mask.nii.gz         fraction removed per voxel (1 = removed)
  <prefix>_desc-brain_mask.nii.gz, <prefix>_from-T1w_to-MNI152NLin2009aSym_mode-image_xfm.txt
  <prefix>_desc-deface_qc.png                removed regions in blue, per method
plus qc.tsv (volume removed, brain/face/nose/ear fractions removed per scan and method),
qc_summary.tsv (per method over scans) and failures.tsv.
All images stay on the input's own grid: defaced + face == input. Refacers (afnireface,
afnirefaceplus, mrireface) write the refaced head in the defaced place: refaced == input
outside the replaced region (the mask), the brain untouched. Reruns skip finished scans.

example:
  defacebench deface /data/ixi study/ --methods afni,fsl,pydeface,spm --jobs 2
"""


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser("deface", DESCRIPTION)
    parser.add_argument("source", type=Path, help="BIDS dataset directory, or a .csv/.tsv manifest")
    parser.add_argument("out", type=Path, help="study directory (outputs go to OUT/derivatives/defacebench)")
    parser.add_argument("--methods", default="afni,fsl,pydeface,spm,quickshear", help="comma-separated methods (default: the five defacers; refacers: afnireface, afnirefaceplus, mrireface)")
    parser.add_argument("--backend", choices=("builtin", "native"), default="builtin", help="built-in reimplementations (default) or the real tools when installed")
    parser.add_argument("--participant-label", nargs="+", default=None, help="only these subjects (with or without 'sub-')")
    parser.add_argument("--jobs", type=int, default=1, help="local worker processes (default 1)")
    parser.add_argument("--scheduler", default=None, help="address or scheduler file of a Dask cluster")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def _run(args: argparse.Namespace) -> int:
    from defacebench import layout
    from defacebench.cohort import Cohort, read_cohort
    from defacebench.deface import deface_cohort, parse_methods
    from defacebench.deface.native import available
    from defacebench.io.errors import InputError

    methods = parse_methods(args.methods)
    if args.jobs < 1:
        raise InputError(f"--jobs must be >= 1, got {args.jobs}")
    if args.backend == "native":
        missing = [m for m in methods if not available(m)]
        if missing:
            raise InputError(f"--backend native: real tools not installed for {', '.join(missing)}")
    cohort = read_cohort(args.source)
    subjects = cohort.subjects
    if args.participant_label:
        wanted = {label.removeprefix("sub-") for label in args.participant_label}
        subjects = [s for s in subjects if s.subject in wanted]
        unknown = wanted - {s.subject for s in subjects}
        if unknown:
            raise InputError(f"--participant-label not found: {', '.join(sorted(unknown))}")
    if not subjects:
        raise InputError("no usable scans", args.source)
    for rejection in cohort.rejected:
        print(f"rejected    {rejection.name}: {rejection.reason}", file=sys.stderr)
    bids_root = args.source if args.source.is_dir() else None
    results = deface_cohort(Cohort(subjects, rejected=list(cohort.rejected), source=cohort.source), args.out, methods, jobs=args.jobs, scheduler=args.scheduler,
                            backend=args.backend, bids_root=bids_root, progress=not args.no_progress)
    print(f"defaced     {len(results.values)} of {len(subjects)} scans with {', '.join(methods)} in {results.seconds:.0f} s")
    summary_path = layout.deface_qc_summary(args.out)
    print(f"wrote       {layout.deface_qc_table(args.out)} and {summary_path}")
    if summary_path.is_file():
        import pandas as pd

        summary = pd.read_csv(summary_path, sep="\t")
        if not summary.empty:
            print("per method  nose removed (median, min), brain spared (share of scans < 0.1 %), ears removed (share)")
            for row in summary.itertuples(index=False):
                print(f"  {row.method:11s} {row.nose_removed_median:5.2f} {row.nose_removed_min:5.2f}   "
                      f"{row.brain_spared_fraction:5.2f}   {row.ears_removed_fraction:5.2f}   ({row.scans} scans)")
    if results.failures:
        print(f"failed      {len(results.failures)} scan(s); reasons in {layout.failures_table(args.out)}")
    sys.stdout.flush()
    return 1 if results.failures and not results.values else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``defacebench deface``."""
    return run_command(build_parser(), _run, argv)
