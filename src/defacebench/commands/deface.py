"""``defacebench deface``: deface every scan with AFNI, FSL, pydeface, SPM and quickshear methods."""

from __future__ import annotations

import argparse
import functools
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
Every image gets a JSON sidecar (Sources, method, backend, version, parameters, space) that
carries the input's sidecar with identifying fields removed (--sidecar-mode, --sidecar-fields);
defaced images say so in their header's descrip.

--applyto also defaces the other anatomical images of each T1w's session (T2w, FLAIR, PDw,
PD, T2starw) with that T1w's removal region, carried by a rigid ANTs registration (checked:
head-mask Dice >= 0.85, else a recorded failure); outputs sit beside the T1w's
(<prefix>_desc-<method>defaced_<suffix>.nii.gz, ..._desc-<suffix>deface_qc.png) and
qc_applyto.tsv lists them.

example:
  defacebench deface /data/ixi study/ --methods afni,fsl,pydeface,spm --jobs 2
  defacebench deface /data/site study/ --methods pydeface --applyto --sidecar-mode allow
"""


def add_sidecar_options(parser: argparse.ArgumentParser) -> None:
    """``--sidecar-mode`` and ``--sidecar-fields`` (shared with ``defacebench export``)."""
    parser.add_argument("--sidecar-mode", choices=("deny", "allow"), default="deny",
                        help="deny (default): drop identifying sidecar fields (InstitutionName, DeviceSerialNumber, "
                             "AcquisitionTime, Patient*, ...); allow: keep only the listed fields")
    parser.add_argument("--sidecar-fields", default=None,
                        help="field patterns, comma-separated or a file (one per line): added to the deny list, "
                             "or the allow list itself (default: acquisition parameters)")


def sidecar_policy(args: argparse.Namespace):
    """The :class:`~defacebench.io.sidecars.ScrubPolicy` of the sidecar options."""
    from defacebench.io.sidecars import make_policy

    return make_policy(args.sidecar_mode, args.sidecar_fields)


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser("deface", DESCRIPTION)
    parser.add_argument("source", type=Path, help="BIDS dataset directory, or a .csv/.tsv manifest")
    parser.add_argument("out", type=Path, help="study directory (outputs go to OUT/derivatives/defacebench)")
    parser.add_argument("--methods", default="afni,fsl,pydeface,spm,quickshear", help="comma-separated methods (default: the five defacers; refacers: afnireface, afnirefaceplus, mrireface)")
    parser.add_argument("--backend", choices=("builtin", "native"), default="builtin", help="built-in reimplementations (default) or the real tools when installed")
    parser.add_argument("--participant-label", nargs="+", default=None, help="only these subjects (with or without 'sub-')")
    parser.add_argument("--jobs", type=int, default=None, help="local worker processes (default: number of cores)")
    parser.add_argument("--scheduler", default=None, help="address or scheduler file of a Dask cluster")
    parser.add_argument("--applyto", action="store_true", help="also deface each session's T2w, FLAIR, PD images with its T1w's removal region")
    add_sidecar_options(parser)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--quiet", action="store_true", help="the time estimate in one line, without the faster options")
    return parser


def _run(args: argparse.Namespace) -> int:
    from defacebench import layout
    from defacebench.cohort import Cohort, read_cohort
    from defacebench.deface import deface_cohort, parse_methods
    from defacebench.deface.native import available
    from defacebench.io.errors import InputError
    from defacebench.io.estimate import print_estimate

    methods = parse_methods(args.methods)
    if args.jobs is not None and args.jobs < 1:
        raise InputError(f"--jobs must be >= 1, got {args.jobs}")
    if args.backend == "native":
        missing = [m for m in methods if not available(m)]
        if missing:
            raise InputError(f"--backend native: real tools not installed for {', '.join(missing)}")
    cohort = read_cohort(args.source, jobs=args.jobs, scheduler=args.scheduler, study=args.out)
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
    policy = sidecar_policy(args)
    chosen = Cohort(subjects, rejected=list(cohort.rejected), source=cohort.source)
    results = deface_cohort(chosen, args.out, methods, jobs=args.jobs, scheduler=args.scheduler,
                            backend=args.backend, bids_root=bids_root, progress=not args.no_progress, sidecar_policy=policy,
                            estimate=functools.partial(print_estimate, quiet=args.quiet))
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
    if args.applyto:
        from defacebench.deface.applyto import applyto_cohort

        applied = applyto_cohort(chosen, args.out, methods, jobs=args.jobs, scheduler=args.scheduler, backend=args.backend,
                                 bids_root=bids_root, policy=policy, progress=not args.no_progress)
        done = sum(len(v["done"]) for v in applied.values.values())
        print(f"applyto     {done} other image(s) defaced with their T1w's removal region ({layout.applyto_qc_table(args.out)})")
        for failure in applied.failures:
            print(f"  FAILED    {failure.key}: {failure.reason}", file=sys.stderr)
    if results.failures:
        print(f"failed      {len(results.failures)} scan(s); reasons in {layout.failures_table(args.out)}")
    sys.stdout.flush()
    return 1 if results.failures and not results.values else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``defacebench deface``."""
    return run_command(build_parser(), _run, argv)
