"""``defacebench report``: the self-contained HTML report of a study."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from defacebench.cli import make_parser, run_command

DESCRIPTION = """\
Write STUDY/report.html from the analysis results (run `defacebench analyse` first): cohort,
methods and versions, Table 1, the paper's and the paired tests, the null baseline,
figures and QC failures, with a plain-language summary. Images are embedded; the file
opens offline. Figures show cohort averages or the MNI template; --individual-figures adds
one test scan in every condition (it can identify a person).

example:
  defacebench report study/
"""


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser("report", DESCRIPTION)
    parser.add_argument("study", type=Path, help="study directory (with results/ from `defacebench analyse`)")
    parser.add_argument("--out", type=Path, default=None, help="where to write the report (default STUDY/report.html)")
    parser.add_argument("--individual-figures", action="store_true", help="also show one test scan in every condition (identifying)")
    return parser


def _run(args: argparse.Namespace) -> int:
    from defacebench.analysis.stage import draw_individual_example
    from defacebench.report.page import write_report

    if args.individual_figures:  # the analysis stage draws figures; the report only embeds them
        draw_individual_example(args.study)
    path = write_report(args.study, individual_figures=args.individual_figures, out=args.out)
    print(f"wrote       {path}")
    sys.stdout.flush()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``defacebench report``."""
    return run_command(build_parser(), _run, argv)
