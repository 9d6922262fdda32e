"""``defacebench cohort``: read a cohort, report rejected scans, write the split."""

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

example:
  defacebench cohort /data/ixi --out study/ --split 0.7,0.2,0.1 --seed 0
"""


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser("cohort", DESCRIPTION)
    parser.add_argument("source", type=Path, help="BIDS dataset directory, or a .csv/.tsv manifest")
    parser.add_argument("--out", type=Path, default=None, help="study directory; the split goes to OUT/splits.tsv (default: print only)")
    parser.add_argument("--split", default="0.7,0.2,0.1", help="train,val,test fractions (default: the paper's 0.7,0.2,0.1)")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the split (default 0)")
    parser.add_argument("--strict", action="store_true", help="any rejected scan is an error (exit 2)")
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


def _run(args: argparse.Namespace) -> int:
    from defacebench import layout
    from defacebench.cohort import assign_splits, read_cohort, write_splits
    from defacebench.io.errors import InputError

    fractions = parse_fractions(args.split)
    cohort = read_cohort(args.source)
    print(cohort.format_summary())
    if args.strict and cohort.rejected:
        raise InputError(f"{len(cohort.rejected)} scan(s) rejected and --strict given", args.source)
    if not len(cohort):
        raise InputError("no usable scans", args.source)
    splits = assign_splits(cohort, fractions, seed=args.seed)
    counts = splits.groupby("split")["participant_id"].nunique().reindex(["train", "val", "test"], fill_value=0)
    print("split       " + "  ".join(f"{k}: {v} subjects" for k, v in counts.items()))
    if args.out is not None:
        path = write_splits(splits, layout.splits_table(args.out))
        print(f"wrote       {path}")
    sys.stdout.flush()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``defacebench cohort``."""
    return run_command(build_parser(), _run, argv)
