"""``defacebench evaluate``: every trained model scored on every condition, dBrainAGE, face ablation."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from defacebench.cli import make_parser, run_command

DESCRIPTION = """\
Score every trusted run of STUDY/runs/, without retraining, on the test images of every
condition stored on its grid, and write
  STUDY/results/cross_condition.csv   train condition x test condition x run: n, MAE, mean signed error
  STUDY/results/cross_predictions.csv one row per model, test condition and test scan
  STUDY/results/dbrainage.csv         per head model and method: mean |pred(defaced) - pred(raw)|
                                      (years, bootstrap CI), paired Wilcoxon tests (Holm over methods)
  STUDY/results/face_ablation.csv     raw-head models with each method's removed voxels (and their
                                      union) set to zero or to the training cohort's average face
  STUDY/results/occlusion.csv         raw-head models with the face region, brain, or skull and scalp
                                      set to zero: mean |change in prediction| and its share
  STUDY/figures/cross_condition.png   the train x test MAE heat map
Skipped when every output is newer than every model and store (--force recomputes).
`defacebench run` runs it after training, before analyse.

example:
  defacebench evaluate study/
"""


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser("evaluate", DESCRIPTION)
    parser.add_argument("study", type=Path, help="study directory (with runs/ and stores/)")
    parser.add_argument("--grid", default=None, help="store grid (default: the runs' grid)")
    parser.add_argument("--bootstrap", type=int, default=2000, metavar="N", help="bootstrap resamples (default 2000)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    parser.add_argument("--device", default="auto", help="torch device: auto, cpu, cuda or cuda:N (default auto)")
    parser.add_argument("--max-runs", type=int, default=None, metavar="K", help="score only runs 1..K of each condition (default all)")
    parser.add_argument("--force", action="store_true", help="recompute even when the results are up to date")
    return parser


def _run(args: argparse.Namespace) -> int:
    from defacebench import layout
    from defacebench.analysis.evaluate import evaluate_study
    from defacebench.io.errors import InputError

    if args.bootstrap < 100:
        raise InputError(f"--bootstrap must be at least 100, got {args.bootstrap}")
    evaluate_study(args.study, grid=args.grid, device=args.device, n_boot=args.bootstrap, seed=args.seed, force=args.force, max_runs=args.max_runs,
                   log=lambda msg: print(msg, flush=True))
    print(f"wrote       {layout.results_dir(args.study)}", flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``defacebench evaluate``."""
    return run_command(build_parser(), _run, argv)
