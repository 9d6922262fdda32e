"""``defacebench preprocess``: bias-correct, register to MNI and build the condition stores."""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Sequence
from pathlib import Path

from defacebench.cli import make_parser, run_command

DESCRIPTION = """\
Turn every scan and its defacing derivatives into model-ready images in one template
grid, for every condition (raw, skullstripped, defaced-<method>, face-<method>):
reorient, N4 bias field (estimated once per scan at 8 mm, applied to every image of it),
the brain mask and 12-DOF subject -> MNI transform computed by `defacebench deface`,
one intensity scale per scan (median of the raw brain = 1), trilinear resampling into
the grid. Needs what the earlier stages wrote: OUT/splits.tsv (`defacebench cohort
SOURCE --out OUT`) and the deface outputs of every scan (`defacebench deface SOURCE OUT
--methods ...`); it stops with the command to run when they are missing. Scans the deface
stage failed on (failures.tsv) are left out, not retried.

Writes OUT/work/<grid>/<scan>.npz per scan (a rerun skips finished scans), then
OUT/stores/<grid>/<condition>.npy + index.tsv (rows in OUT/splits.tsv order; failed
scans left out and listed in excluded.tsv),
OUT/derivatives/defacebench/qc_preprocess.tsv (brain Dice vs the MNI mask, flag < 0.85),
OUT/derivatives/defacebench/failures.tsv and, per condition, a QC mosaic in
OUT/derivatives/defacebench/qc/ (it shows faces: do not share it).

grids: mni2mm (the paper's 91x109x91, cuts off the nose tip and jaw), mni2mm-head
(2 mm, whole head with face, jaw and ears), mni4mm (4 mm head box, CPU demos), or a
JSON file {"name", "shape", "affine"}.

examples:
  defacebench preprocess /data/ixi study/ --grid mni2mm --jobs 8
  defacebench preprocess /data/ixi study/ --conditions raw face-afni defaced-afni
  defacebench preprocess /data/ixi study/ --scheduler scheduler.json   # Dask cluster
"""


def build_parser() -> argparse.ArgumentParser:
    from defacebench.conditions import FACE_PLACEMENTS

    parser = make_parser("preprocess", DESCRIPTION)
    parser.add_argument("source", type=Path, help="BIDS dataset directory, or a .csv/.tsv manifest")
    parser.add_argument("out", type=Path, help="study directory")
    parser.add_argument("--grid", default="mni2mm", help="target grid: mni2mm (default), mni2mm-head, mni4mm, or a grid .json")
    parser.add_argument("--conditions", nargs="+", default=None,
                        help="conditions to build (space- or comma-separated; default: all of --methods)")
    parser.add_argument("--methods", nargs="+", default=None,
                        help="defacing methods (space- or comma-separated; default: the paper's afni,fsl,pydeface,spm)")
    parser.add_argument("--jobs", type=int, default=None, help="local worker processes (default: number of cores)")
    parser.add_argument("--scheduler", default=None, help="tcp://host:port or scheduler file of a Dask cluster")
    parser.add_argument("--face-placement", choices=FACE_PLACEMENTS, default="brain",
                        help="how face-only images and geometry controls go to the grid: brain = the scan's brain registration "
                             "(default, as the paper), head = pydeface's whole-head registration, which does not follow brain atrophy, "
                             "cut = each method's by the registration that placed its cut (pydeface's by the head, the others' by "
                             "the brain), common = head, each face-only image and control kept only where its method removed tissue in "
                             "every scan (no cut edge inside; the demo's; docs/face-placement.md)")
    parser.add_argument("--no-mosaics", action="store_true", help="skip the QC mosaics")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--quiet", action="store_true", help="the time estimate in one line, without the faster options")
    return parser


#: Warn when leaving out one scan would enlarge a common region by more than this share.
REGION_ONE_SCAN_WARNING = 0.2


def _items(values: Sequence[str] | None) -> list[str]:
    return [v.strip() for text in values or [] for v in text.split(",") if v.strip()]


def _run(args: argparse.Namespace) -> int:
    from defacebench import layout
    from defacebench.cohort import read_cohort, read_splits
    from defacebench.conditions import METHODS, deface_methods, methods_of, needs_head_registration, removal_mask_methods, resolve_conditions
    from defacebench.engine import read_failures
    from defacebench.imaging.grids import get_grid
    from defacebench.io.errors import InputError
    from defacebench.io.estimate import print_estimate
    from defacebench.preprocess.scan import missing_inputs
    from defacebench.preprocess.stage import preprocess_study

    if args.jobs is not None and args.jobs < 1:
        raise InputError(f"--jobs must be >= 1, got {args.jobs}")
    grid = get_grid(args.grid)
    conditions = resolve_conditions(_items(args.conditions), _items(args.methods), known_methods=METHODS)
    methods = methods_of(conditions)
    cohort = read_cohort(args.source, jobs=args.jobs, scheduler=args.scheduler, study=args.out)
    for rejection in cohort.rejected:
        print(f"rejected    {rejection.name}: {rejection.reason}", file=sys.stderr)
    if not len(cohort):
        raise InputError("no usable scans", args.source)
    if not layout.splits_table(args.out).is_file():
        raise InputError(f"no split table: run `defacebench cohort {args.source} --out {args.out}` first (it writes splits.tsv)",
                         layout.splits_table(args.out))
    splits = read_splits(layout.splits_table(args.out))

    # the deface stage writes the brain mask, the MNI transform and the face-only images;
    # scans it failed on are recorded as failed here, scans it never saw stop the stage
    failed = read_failures(layout.failures_table(args.out))
    deface_failed = dict(zip(failed.loc[failed["stage"] == "deface", "key"], failed.loc[failed["stage"] == "deface", "reason"]))
    mask_methods = removal_mask_methods(conditions, args.face_placement)
    head_placed = needs_head_registration(conditions, args.face_placement)
    undone = [s for s in cohort.subjects if missing_inputs(s, args.out, methods, mask_methods, head_placed)]
    prior = {s.key: f"defacing failed: {deface_failed[s.key]}" for s in undone if s.key in deface_failed}
    never = [s for s in undone if s.key not in deface_failed]
    if never:
        needed = ",".join(deface_methods(conditions, face_placement=args.face_placement))
        raise InputError(f"{len(never)} of {len(cohort)} scan(s) have no deface outputs for {needed} (first: {never[0].key}): "
                         f"run `defacebench deface {args.source} {args.out} --methods {needed}` first", layout.derivatives_dir(args.out))

    result = preprocess_study(cohort, args.out, grid, [c.name for c in conditions], splits, jobs=args.jobs, scheduler=args.scheduler,
                              progress=not args.no_progress, mosaics=not args.no_mosaics, face_placement=args.face_placement,
                              prior_failures=prior, estimate=functools.partial(print_estimate, quiet=args.quiet))
    stores = result.stores
    done = len(cohort) - len(result.reasons)
    print(f"preprocessed {done} of {len(cohort)} scans into {grid.name} {'x'.join(map(str, grid.shape))} in {result.seconds:.0f} s")
    ok = result.qc_table[result.qc_table["status"] == "ok"]
    if len(ok):
        dice = ok["brain_dice"].astype(float)
        print(f"brain Dice  median {dice.median():.3f}, min {dice.min():.3f}; {int((dice < 0.85).sum())} flagged < 0.85 "
              f"({layout.preprocess_qc_table(args.out)})")
    print(f"stores      {len(stores.index)} rows x {len(conditions)} conditions in {layout.store_dir(args.out, grid.name)} "
          f"(written: {len(stores.written)}, unchanged: {len(stores.unchanged)})")
    for method, (voxels, worst, gain) in stores.regions.items():
        ml = abs(grid.voxel_mm[0] * grid.voxel_mm[1] * grid.voxel_mm[2]) / 1000  # one grid voxel
        lone = gain / max(voxels, 1)
        print(f"region      {method}: face-only images kept inside the {voxels * ml:.0f} mL that every scan's cut covers; "
              f"without {worst} alone it would be {lone:.0%} larger"
              + (f"  WARNING: one scan shrinks the region for all: check {worst}'s defacing QC" if lone > REGION_ONE_SCAN_WARNING else ""))
    if len(stores.excluded):
        print(f"excluded    {len(stores.excluded)} scan(s) from the stores; reasons in {layout.store_excluded(args.out, grid.name)}:")
        for key, reason in zip(stores.excluded["key"], stores.excluded["reason"]):
            print(f"  EXCLUDED  {key}: {reason}")
    if result.mosaics:
        print(f"mosaics     {len(result.mosaics)} PNG in {result.mosaics[0].parent} (they show faces: do not share)")
    sys.stdout.flush()
    return 1 if not len(stores.index) else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``defacebench preprocess``."""
    return run_command(build_parser(), _run, argv)
