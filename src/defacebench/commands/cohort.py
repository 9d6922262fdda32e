"""``defacebench cohort``: read and check a cohort, report rejected scans, warnings and notes, write the split."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from defacebench.cli import make_parser, run_command

DESCRIPTION = """\
Read a BIDS dataset (sub-*/[ses-*/]anat/*_T1w.nii[.gz], ages from participants.tsv or
sub-*/sub-*_sessions.tsv) or a CSV/TSV manifest (path,age[,subject,session,sex]);
print a summary with every rejected scan and its reason; write an age-stratified
train/val/test split grouped by subject (all sessions of a person in one split).

Each image's voxel data are read once (in parallel with --jobs) and the scan is rejected
when they cannot be read in full (a truncated .nii.gz), hold NaN or Inf, are constant or
empty, when the affine is degenerate or the image is 4D. A scan that looks already defaced
or skull-stripped is kept with a warning and the evidence; participants.tsv / sessions.tsv
rows without an image are notes. Everything found goes to OUT/cohort_checks.tsv. A warning
also says when the test split is too small for any paired test to reach significance.

example:
  defacebench cohort /data/ixi --out study/ --split 0.7,0.2,0.1 --seed 0 --jobs 4
  defacebench cohort /data/ixi --quick          # headers only, as fast as listing files
"""


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser("cohort", DESCRIPTION)
    parser.add_argument("source", type=Path, help="BIDS dataset directory, or a .csv/.tsv manifest")
    parser.add_argument("--out", type=Path, default=None, help="study directory; the split goes to OUT/splits.tsv, the checks to OUT/cohort_checks.tsv (default: print only)")
    parser.add_argument("--split", default="0.7,0.2,0.1", help="train,val,test fractions (default: the paper's 0.7,0.2,0.1)")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the split (default 0)")
    parser.add_argument("--strict", action="store_true", help="any rejected scan is an error (exit 2, one line)")
    parser.add_argument("--quick", action="store_true", help="check headers only: no voxel data read, no defaced/skull-stripped warnings")
    parser.add_argument("--jobs", type=int, default=1, help="local worker processes for the image checks (default 1)")
    parser.add_argument("--scheduler", default=None, help="address or scheduler file of a Dask cluster for the image checks")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def parse_fractions(text: str) -> tuple[float, ...]:
    """``"0.7,0.2,0.1"`` -> ``(0.7, 0.2, 0.1)``; raises InputError on anything else."""
    from defacebench.io.errors import InputError

    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise InputError(f"--split must be three comma-separated numbers, got {text!r}") from None
    if len(values) != 3 or any(v < 0 for v in values) or values[0] <= 0:
        raise InputError(f"--split must be three non-negative numbers with train > 0, got {text!r}")
    return values


def study_conditions(out: Path | None) -> tuple[str, ...]:
    """The conditions the study in ``out`` trains (its ``study.json``), else the paper preset's."""
    import json

    from defacebench import layout
    from defacebench.config import StudyConfig

    try:
        return tuple(json.loads(layout.study_config(out).read_text())["conditions"]) if out is not None else StudyConfig().conditions
    except (OSError, ValueError, KeyError, TypeError):
        return StudyConfig().conditions


def _run(args: argparse.Namespace) -> int:
    from defacebench import layout
    from defacebench.cohort import assign_splits, read_cohort, write_splits
    from defacebench.cohort_checks import CheckRow, split_size_warnings, write_checks
    from defacebench.io.errors import InputError

    fractions = parse_fractions(args.split)
    if args.jobs < 1:
        raise InputError(f"--jobs must be >= 1, got {args.jobs}")
    cohort = read_cohort(args.source, quick=args.quick, jobs=args.jobs, scheduler=args.scheduler, progress=not args.no_progress,
                         study=args.out)
    print(cohort.format_summary())
    if args.strict and cohort.rejected:
        raise InputError(f"{len(cohort.rejected)} scan(s) rejected and --strict given (reasons above)", args.source)
    checks = list(cohort.checks)
    splits = assign_splits(cohort, fractions, seed=args.seed) if len(cohort) else None
    if splits is not None:
        counts = splits.groupby("split")["participant_id"].nunique().reindex(["train", "val", "test"], fill_value=0)
        print("split       " + "  ".join(f"{k}: {v} subjects" for k, v in counts.items()))
        for line in split_size_warnings(int((splits["split"] == "test").sum()), study_conditions(args.out)):
            print(f"warning: {line}", file=sys.stderr)
            checks.append(CheckRow("test split", "split", "warning", line))
    if args.out is not None:
        print(f"wrote       {write_checks(layout.cohort_checks_table(args.out), checks)}")
    if splits is None:
        raise InputError("no usable scans", args.source)
    if args.out is not None:
        print(f"wrote       {write_splits(splits, layout.splits_table(args.out))}")
    sys.stdout.flush()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``defacebench cohort``."""
    return run_command(build_parser(), _run, argv)
