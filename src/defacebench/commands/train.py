"""``defacebench train``: train the brain-age CNN on condition stores, predict held-out ages."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from defacebench.cli import make_parser, run_command
from defacebench.model.accel.settings import COMPILE_MODES

DESCRIPTION = """\
Train the paper's brain-age 3D CNN on each condition store of STUDY_DIR/stores/<grid>/
(--runs runs per condition, run k seeded with seed + k) and predict every val and test
scan. Writes STUDY_DIR/runs/<condition>/run-<k>/{model.pt, checkpoint.pt, history.csv,
predictions.csv, run.json}. Finished runs are skipped; interrupted ones resume from their
last checkpoint. Every store is verified against its per-row checksums first (a corrupt
store: exit 2, naming the file). A run that diverges (non-finite loss, prediction or
gradient norm) is written as failed and retried from its last good checkpoint next time;
the other runs go on, and the command exits 2 listing the failed runs (also written to
failures.tsv, stage train). With --scheduler each (condition, run) is one task on an existing
Dask cluster that sees STUDY_DIR at the same path (docs/cluster.md). Profiles: paper (MNI 2 mm, widths 128/64/64, up to 100 epochs) and cpu
(MNI 4 mm store average-pooled to 8 mm, 1/8 width, up to 30 epochs, 1 thread; the demo's). See docs/training.md.

example:
  defacebench train study/ --profile cpu --runs 1
  defacebench train study/ --conditions raw skullstripped --device cuda
  defacebench train study/ --scheduler scheduler.json --device cuda
"""


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser("train", DESCRIPTION)
    parser.add_argument("study_dir", type=Path, help="study directory holding stores/<grid>/")
    parser.add_argument("--profile", default="paper", help="training profile: paper or cpu (default paper)")
    parser.add_argument("--grid", default=None, help="store grid (default: the profile's, mni2mm or mni4mm)")
    parser.add_argument("--conditions", nargs="+", default=None, metavar="NAME", help="conditions to train (default: every store of the grid)")
    parser.add_argument("--runs", type=int, default=3, help="runs per condition, with different seeds (default 3)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto: CUDA when present)")
    parser.add_argument("--epochs", type=int, default=None, help="override the profile's maximum epochs")
    parser.add_argument("--patience", type=int, default=None, help="override the early-stopping patience (epochs)")
    parser.add_argument("--rotation-deg", type=float, default=None, help="override the random-rotation range (+- degrees; 0 disables)")
    parser.add_argument("--seed", type=int, default=None, help="override the base seed (run k uses seed + k)")
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                        help="NDHWC activations and weights (torch.channels_last_3d); default: on with the fused first block, on CPU and CUDA (measured faster on both, docs/training.md)")
    parser.add_argument("--compile-mode", default=None, choices=COMPILE_MODES,
                        help="CUDA: torch.compile mode of the training step (default: the profile's; paper: reduce-overhead, i.e. CUDA graphs)")
    parser.add_argument("--triton-block", action=argparse.BooleanOptionalAction, default=None,
                        help="CUDA: the first block's convolution and max pooling as Triton kernels (default: on where triton is installed; measured faster, docs/training.md)")
    parser.add_argument("--triton-rotate", action=argparse.BooleanOptionalAction, default=None,
                        help="CUDA: the random rotation as one Triton kernel (default: on where triton is installed; measured faster, docs/training.md)")
    parser.add_argument("--fused-adam", action=argparse.BooleanOptionalAction, default=None,
                        help="CUDA: Adam's update in one kernel (default: on; measured faster, docs/training.md)")
    parser.add_argument("--scheduler", default=None,
                        help="address or scheduler file of a Dask cluster: one task per (condition, run); GPU runs hold the worker resource GPU=1 (docs/cluster.md)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--quiet", action="store_true", help="the time estimate in one line, without the faster options")
    return parser


def _run(args: argparse.Namespace) -> int:
    from defacebench import layout
    from defacebench.io.errors import InputError, StageError
    from defacebench.io.store import list_conditions, open_condition
    from defacebench.engine import Failure
    from defacebench.io.estimate import print_estimate
    from defacebench.model.accel.settings import get_speed
    from defacebench.model.dispatch import TRAIN_STAGE, RunTask, record_failures, train_on_cluster
    from defacebench.model.estimate import training_estimate
    from defacebench.model.inference import resolve_device
    from defacebench.model.profiles import get_profile
    from defacebench.model.train import model_summary, train_condition

    if args.runs < 1:
        raise InputError(f"--runs must be at least 1, got {args.runs}")
    for name in ("epochs", "patience"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise InputError(f"--{name} must be at least 1, got {value}")
    profile = get_profile(args.profile, max_epochs=args.epochs, patience=args.patience, rotation_deg=args.rotation_deg, seed=args.seed)
    speed = get_speed(profile.name, channels_last=args.channels_last, compile_mode=args.compile_mode,
                      triton_block=args.triton_block, triton_rotate=args.triton_rotate, fused_adam=args.fused_adam)
    grid = args.grid or profile.grid
    if not args.study_dir.is_dir():
        raise InputError("study directory not found", args.study_dir)
    available = list_conditions(args.study_dir, grid)
    if not available:
        raise InputError(f"no condition stores for grid {grid!r} (run `defacebench preprocess` first)", layout.store_dir(args.study_dir, grid))
    conditions = args.conditions or available
    unknown = [c for c in conditions if c not in available]
    if unknown:
        raise InputError(f"unknown condition(s) {', '.join(unknown)}; stores on grid {grid!r}: {', '.join(available)}")
    device = args.device if args.scheduler else resolve_device(args.device)  # on a cluster: resolved by each worker
    first = open_condition(args.study_dir, grid, conditions[0])
    print(profile.describe())
    print(speed.describe())
    print(f"grid {grid} {tuple(first.images.shape[1:])}, device {device}, {len(conditions)} condition(s) x {args.runs} run(s)")
    print(model_summary(first, profile))
    sys.stdout.flush()
    for condition in conditions:  # verify every store before the first run trains
        open_condition(args.study_dir, grid, condition)
    # an absolute path: a worker on another node starts in another directory
    tasks = [RunTask(str(args.study_dir.absolute()), grid, c, run, profile, speed, str(device)) for c in conditions for run in range(1, args.runs + 1)]
    if args.scheduler:  # the workers' devices are not this machine's: no local warm-up
        failures = train_on_cluster(tasks, args.scheduler, progress=not args.no_progress)
    else:
        print_estimate(training_estimate(args.study_dir, grid, conditions, args.runs, profile, speed, device, True), quiet=args.quiet)
        failures = []
        for task in tasks:
            try:
                train_condition(args.study_dir, grid, task.condition, task.run, profile, device=device, progress=not args.no_progress, speed=speed)
            except StageError as exc:  # diverged: written as failed in its run.json; the rest go on
                failures.append(Failure(task.key, TRAIN_STAGE, str(exc)))
            sys.stdout.flush()
    record_failures(args.study_dir, tasks, failures)
    for failure in failures:
        print(f"{failure.key}: failed: {failure.reason}", file=sys.stderr)
    failed = [f"{f.key} ({f.reason})" for f in failures]
    if failed:
        raise InputError(f"{len(failed)} run(s) failed and are not complete: {'; '.join(failed)}; rerun `defacebench train` to retry them from their last good checkpoint")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``defacebench train``."""
    return run_command(build_parser(), _run, argv)
