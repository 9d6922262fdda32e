"""``defacebench demo``: simulate a small cohort and run the demo study end to end on a CPU."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from defacebench.cli import make_parser, run_command

#: Demo cohort: one base head (the ROBEX atlas head) so ageing, not head identity,
#: drives the images; coarse voxels and 80 people so 2 CPU cores finish in about 20
#: minutes. Defacing costs ~14 CPU s per scan (deepbet + three registrations), so the
#: cohort cannot be larger; to make 48 training scans enough, ageing is planted at 3x the
#: published rates (measured: at 1x a ridge regression on 90 training scans barely beats
#: the null baseline at 8 mm, at 3x it reaches 2.6-3.4 y against a null of 4.7 y) and
#: ages are uniform over 56-96 (see docs/design-notes.md, Demo).
DEMO_SUBJECTS = 80
DEMO_VOXEL_MM = 3.0
DEMO_BASE_HEADS = "robex"
DEMO_AGEING = 3.0
#: Ages uniform over 56-96 (SD 11.5 y) instead of the ADNI-like normal(74, 7): the same
#: ageing per year spread over a wider spread of ages is a stronger signal per scan.
DEMO_AGES = "uniform"
#: Identity on (each person their own face and head shape, anthropometric spreads): measured
#: at n = 40 it costs the face-only CNN ~1.1 y of MAE (docs/simulate.md, issue 17).
DEMO_IDENTITY_SCALE = 1.0

DESCRIPTION = f"""\
Simulate a cohort of {DEMO_SUBJECTS} T1w head MRIs aged uniformly 56-96 with brain and face ageing
planted at {DEMO_AGEING:g}x the published rates, each person with their own face, head and brain
shape (identity; --identity-scale 0 makes everyone the base head), so a small CPU study gives clear findings
(`defacebench simulate`), then run the demo study on it (`defacebench run --preset demo`):
five defacers, ten-plus conditions on the 4 mm MNI grid, a small CPU CNN, statistics,
saliency and the HTML report. Prints the report's path. Rerunning resumes.

The simulated ground truth lets you check the pipeline: with --face-ageing 0 the report
should make no face-age claim, and no face-only condition should predict age much better
than the null baseline (measured with identities, seeds 0, 1, 2: no claim; face-only at most
5 %, 15 % and 2 % better, the 15 % not significant; docs/face-placement.md).

examples:
  defacebench demo
  defacebench demo demo-noface/ --face-ageing 0
"""


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser("demo", DESCRIPTION)
    parser.add_argument("out", type=Path, nargs="?", default=Path("demo-out"), help="demo directory (default demo-out/)")
    parser.add_argument("--n", type=int, default=DEMO_SUBJECTS, help=f"simulated subjects (default {DEMO_SUBJECTS})")
    parser.add_argument("--seed", type=int, default=0, help="simulation and study seed (default 0)")
    parser.add_argument("--face-ageing", type=float, default=DEMO_AGEING, help=f"face ageing, x the published rates; 0 = none (default {DEMO_AGEING:g})")
    parser.add_argument("--brain-ageing", type=float, default=DEMO_AGEING, help=f"brain ageing, x the published rates; 0 = none (default {DEMO_AGEING:g})")
    parser.add_argument("--ages", choices=("adni", "uniform"), default=DEMO_AGES, help=f"age distribution (default {DEMO_AGES}; see defacebench simulate --help)")
    parser.add_argument("--identity-scale", type=float, default=DEMO_IDENTITY_SCALE, help=f"spread of each person's own head and face shape; 0 = everyone has the base head's shape (default {DEMO_IDENTITY_SCALE:g})")
    parser.add_argument("--voxel-mm", type=float, default=DEMO_VOXEL_MM, help=f"simulated voxel size (default {DEMO_VOXEL_MM:g})")
    parser.add_argument("--jobs", type=int, default=None, help="worker processes (default: cores)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def _run(args: argparse.Namespace) -> int:
    import dataclasses

    from defacebench import layout
    from defacebench.config import get_preset
    from defacebench.engine import default_jobs
    from defacebench.io.atomic import write_text_atomic
    from defacebench.io.errors import InputError
    from defacebench.study import Stage, record_config, run_and_report, study_stages

    if args.n < 10:
        raise InputError(f"--n must be >= 10 for a train/val/test split, got {args.n}")
    jobs = args.jobs or default_jobs()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    simulation = {
        "n": args.n, "seed": args.seed, "face_ageing": args.face_ageing, "brain_ageing": args.brain_ageing,
        "voxel_mm": args.voxel_mm, "base_heads": DEMO_BASE_HEADS, "ages": args.ages, "identity_scale": args.identity_scale,
    }
    sim_record = layout.demo_simulation_record(out)
    if sim_record.is_file() and json.loads(sim_record.read_text()) != simulation:
        raise InputError(f"{out} holds a demo simulated with other settings; use a new directory", sim_record)
    write_text_atomic(sim_record, json.dumps(simulation, indent=2) + "\n")

    bids = layout.demo_dataset(out)
    stages: list[Stage] = []
    if not layout.participants_table(bids).is_file():
        stages.append(
            Stage("simulate", "simulate", (
                str(bids), "--n", str(args.n), "--seed", str(args.seed), "--face-ageing", str(args.face_ageing),
                "--brain-ageing", str(args.brain_ageing), "--voxel-mm", str(args.voxel_mm), "--ages", args.ages,
                "--base-heads", DEMO_BASE_HEADS, "--identity-scale", str(args.identity_scale), "--jobs", str(jobs), "--preview", "--overwrite",
            ))
        )
    config = dataclasses.replace(get_preset("demo"), seed=args.seed)
    record_config(out, config)
    stages += study_stages(bids, out, config, jobs=jobs, device="cpu", progress=not args.no_progress)
    return run_and_report(stages, out)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``defacebench demo``."""
    return run_command(build_parser(), _run, argv)
