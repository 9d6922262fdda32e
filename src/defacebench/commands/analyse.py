"""``defacebench analyse``: statistics, saliency and figures from trained runs."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from defacebench.cli import make_parser, run_command

DESCRIPTION = """\
Read STUDY/runs/<condition>/run-<k>/predictions.csv of every trained run and write
STUDY/results/*.csv (Table 1, the paper's one-way ANOVA and Tukey HSD, the paired
Friedman / Wilcoxon-Holm / bootstrap tests, the null baseline) and STUDY/figures/*.png
(Fig. 1 removed regions, Fig. 3 Grad-CAM saliency, Fig. 4 error distributions,
predicted-vs-true age, training curves). Saliency needs the condition stores and model.pt
files; it is skipped when the maps are newer than every model.

example:
  defacebench analyse study/ --grid mni2mm
"""


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser("analyse", DESCRIPTION)
    parser.add_argument("study", type=Path, help="study directory (with runs/ and stores/)")
    parser.add_argument("--grid", default=None, help="store grid for Fig. 1 and saliency (default: the runs' grid)")
    parser.add_argument("--bootstrap", type=int, default=2000, metavar="N", help="paired bootstrap resamples (default 2000)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    parser.add_argument("--no-saliency", action="store_true", help="skip Grad-CAM (figures from existing maps are still drawn)")
    parser.add_argument("--force-saliency", action="store_true", help="recompute Grad-CAM even when the maps are up to date")
    parser.add_argument("--saliency-scans", type=int, default=None, metavar="N", help="at most N test scans per run for Grad-CAM (default all)")
    parser.add_argument("--device", default="auto", help="torch device for Grad-CAM: auto, cpu, cuda or cuda:N (default auto: CUDA when present)")
    return parser


def _run(args: argparse.Namespace) -> int:
    from defacebench.analysis.stage import analyse_study
    from defacebench.io.errors import InputError

    if args.bootstrap < 100:
        raise InputError(f"--bootstrap must be at least 100, got {args.bootstrap}")
    out = analyse_study(
        args.study,
        grid=args.grid,
        n_boot=args.bootstrap,
        seed=args.seed,
        saliency=not args.no_saliency,
        force_saliency=args.force_saliency,
        device=args.device,
        max_saliency_scans=args.saliency_scans,
        log=lambda msg: print(msg, flush=True),
    )
    print(f"wrote       {out}")
    sys.stdout.flush()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``defacebench analyse``."""
    return run_command(build_parser(), _run, argv)
