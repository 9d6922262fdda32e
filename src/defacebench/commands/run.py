"""``defacebench run``: the whole study in one command, resumable."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from defacebench.cli import make_parser, run_command

DESCRIPTION = """\
Run the whole study on a cohort: cohort split -> deface (every method) -> preprocess
(N4, brain extraction, registration to MNI, condition stores) -> train (every condition
x runs) -> evaluate (every model on every condition, dBrainAGE, face ablation) -> analyse
(Table 1, ANOVA/Tukey and paired tests, Grad-CAM, figures) -> report.
Every stage resumes what is already done: rerun the same command after a crash.

presets: paper (the paper's ten conditions and four geometry controls, plus the refaced heads of
afnireface, afnirefaceplus and mrireface; 2 mm MNI grid, 3 runs, paper training profile; needs a GPU to
finish in hours) and demo (five methods, 4 mm grid, 1 run,
3 for the face-only conditions and their geometry controls (face_runs), CPU training
profile). A TOML file given with --config overrides a preset, e.g.
    preset = "paper"
    methods = ["afni", "fsl", "pydeface", "spm", "quickshear"]
    runs = 3

examples:
  defacebench run /data/ixi study/ --preset paper --device cuda
  defacebench run /data/ixi study/ --config study.toml --jobs 8
  defacebench run /data/ixi study/ --preset paper --scheduler scheduler.json --device cuda
"""


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser("run", DESCRIPTION)
    parser.add_argument("source", type=Path, help="BIDS dataset directory, or a .csv/.tsv manifest")
    parser.add_argument("out", type=Path, help="study directory (created; reused to resume)")
    parser.add_argument("--preset", default="paper", help="paper or demo (default paper)")
    parser.add_argument("--config", type=Path, default=None, help="TOML file overriding the preset")
    parser.add_argument("--jobs", type=int, default=None, help="local worker processes for deface/preprocess (default: cores)")
    parser.add_argument("--scheduler", default=None, help="address or scheduler file of a Dask cluster for deface, preprocess and train (one task per condition and run)")
    parser.add_argument("--device", default="auto", help="device for training and Grad-CAM: auto, cpu, cuda (default auto: CUDA when present)")
    parser.add_argument("--individual-figures", action="store_true", help="allow figures of one person's head in the report")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def _run(args: argparse.Namespace) -> int:
    from defacebench.config import get_preset, load_config
    from defacebench.io.errors import InputError
    from defacebench.study import record_config, run_and_report, study_stages

    config = load_config(args.config, args.preset) if args.config else get_preset(args.preset)
    if not args.source.exists():
        raise InputError("not found", args.source)
    if args.jobs is not None and args.jobs < 1:
        raise InputError(f"--jobs must be >= 1, got {args.jobs}")
    args.out.mkdir(parents=True, exist_ok=True)
    record_config(args.out, config)
    stages = study_stages(
        args.source, args.out, config, jobs=args.jobs, scheduler=args.scheduler, device=args.device,
        individual_figures=args.individual_figures, progress=not args.no_progress,
    )
    return run_and_report(stages, args.out)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``defacebench run``."""
    return run_command(build_parser(), _run, argv)
