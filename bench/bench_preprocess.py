"""Seconds per step of the whole per-scan pipeline (defacing + preprocessing) on 1 mm heads.

Usage::

    python bench/bench_preprocess.py [--scans 3] [--grid mni2mm] [--voxel-mm 1] [--workdir DIR]
                                     [--methods afni,fsl,pydeface,spm,quickshear] [--vs REV_OR_DIR] [--pairs 3]
                                     [--cohort-jobs 2]

Simulates ``--scans`` heads at ``--voxel-mm`` once into ``WORKDIR/bids`` (real base heads,
see docs/simulate.md; reused by later runs with the same WORKDIR), then for each scan, in
one process (one worker; ITK and torch may use the machine's cores), into a fresh study
directory: defacing with the methods (`deface_subject`, default the five defacers) and
preprocessing into GRID (`preprocess_subject`, raw, skullstripped and the defaced- and
face- condition of every method). Imports, the deepbet model and the templates are loaded
before the clock starts, as in a worker that has done one scan. Prints the wall and CPU
seconds (the process's, all threads) of every step, median over the scans, and the
per-scan wall time.

``--vs REV_OR_DIR`` compares with another version of the code in the same run: a checkout
directory, or a git revision (``HEAD~1``: the previous commit) that is checked out into a
temporary ``git worktree``. Each side runs in its own fresh interpreter, this tree first,
then the other, ``--pairs`` times in turn (A B A B ...), on the same simulated scans; the
ratio this/other is taken pair by pair, so a drift of the shared machine's speed moves
both sides of a pair alike. Prints the per-scan wall of both, the median ratio, and the
before/after table by step (a step the other version does not time is blank).

``--cohort-jobs N`` also runs the same scans as one cohort (``deface_cohort``, then the
preprocessing tasks) through the engine with N local worker processes, as ``defacebench
deface`` and ``preprocess`` do, and prints the cohort's wall time per scan: the throughput
of a study (each worker has one thread; their start-up counts). Give ``--scans`` >= 2N.

Not a pass/fail test: the machine may be shared (the load average is printed); read the
medians and the paired ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scans", type=int, default=3)
    parser.add_argument("--grid", default="mni2mm")
    parser.add_argument("--voxel-mm", type=float, default=1.0)
    parser.add_argument("--workdir", type=Path, default=None, help="holds bids/ (simulated once); default a new temporary directory")
    parser.add_argument("--methods", default=None, help="comma-separated (default: the five defacers)")
    parser.add_argument("--vs", default=None, help="a checkout directory or a git revision to compare with (HEAD~1: the previous commit)")
    parser.add_argument("--pairs", type=int, default=3, help="A/B pairs with --vs")
    parser.add_argument("--cohort-jobs", type=int, default=0,
                        help="also time the --scans scans as one cohort through the engine with this many local workers (0: not)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)  # one side of --vs: print JSON
    return parser.parse_args(argv)


def _simulate(bids: Path, n: int, voxel_mm: float) -> None:
    if bids.is_dir():
        return
    from defacebench.simulate import simulate_cohort

    t0 = time.perf_counter()
    simulate_cohort(bids, n, seed=7, voxel_mm=voxel_mm)
    print(f"simulated {n} scans at {voxel_mm} mm in {time.perf_counter() - t0:.0f} s ({bids})", flush=True)


def _warm_up() -> None:
    """Load what a worker loads once: imports, the deepbet model, the cached templates."""
    import ants  # noqa: F401
    import torch  # noqa: F401

    from defacebench.imaging import brain, templates

    brain._brain_extraction()
    templates.mni_head(2), templates.mni_head_brain_mask(2), templates.pydeface_to_mni(), templates.mni_brain()
    templates.pydeface_template()


def _cpu_seconds() -> float:
    """CPU seconds of this process and of its finished children (the forked helpers of issue 21)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def run_scans(bids: Path, n: int, grid_name: str, methods: tuple[str, ...]) -> list[dict]:
    """Deface and preprocess the first ``n`` scans of ``bids``, each into a fresh study; one row per scan."""
    import nibabel as nib

    from defacebench.cohort import read_cohort
    from defacebench.deface import deface_subject
    from defacebench.imaging.grids import get_grid
    from defacebench.preprocess.scan import PreprocessTask, preprocess_subject

    grid = get_grid(grid_name)
    conditions = ("raw", "skullstripped", *(f"defaced-{m}" for m in methods), *(f"face-{m}" for m in methods))
    rows = []
    for subject in read_cohort(bids).subjects[:n]:
        with tempfile.TemporaryDirectory(prefix="bench-preprocess-study-") as study:
            wall, cpu = time.perf_counter(), _cpu_seconds()
            deface = deface_subject(subject, study, methods, bids_root=bids, qc_png=True)
            deface_wall, deface_cpu = time.perf_counter() - wall, _cpu_seconds() - cpu
            wall, cpu = time.perf_counter(), _cpu_seconds()
            meta = preprocess_subject(PreprocessTask(subject, study, grid, conditions))
            pre_wall, pre_cpu = time.perf_counter() - wall, _cpu_seconds() - cpu
        steps = {f"deface.{k}": [v, deface.get("cpu_timings", {}).get(k)] for k, v in deface["timings"].items() if k != "total"}
        steps.update({f"preprocess.{k}": [v, meta.get("cpu_seconds", {}).get(k)] for k, v in meta["seconds"].items()})
        steps["deface total"], steps["preprocess total"] = [deface_wall, deface_cpu], [pre_wall, pre_cpu]
        steps["TOTAL"] = [deface_wall + pre_wall, deface_cpu + pre_cpu]
        shape = "x".join(map(str, nib.load(str(subject.path)).shape[:3]))
        rows.append({"key": subject.key, "shape": shape, "steps": steps, "brain_dice": meta["brain_dice"]})
    return rows


def run_cohort(bids: Path, n: int, grid_name: str, methods: tuple[str, ...], jobs: int) -> dict:
    """The first ``n`` scans as one cohort, into one fresh study, as ``defacebench deface`` and
    ``preprocess`` run them: ``deface_cohort`` then the preprocessing tasks, both through the
    engine with ``jobs`` local workers (spawned here, so their start-up and imports count)."""
    from defacebench.cohort import Cohort, read_cohort
    from defacebench.deface import deface_cohort
    from defacebench.engine import run_tasks
    from defacebench.imaging.grids import get_grid
    from defacebench.preprocess.scan import PreprocessTask, preprocess_subject

    subjects = read_cohort(bids).subjects[:n]
    conditions = ("raw", "skullstripped", *(f"defaced-{m}" for m in methods), *(f"face-{m}" for m in methods))
    with tempfile.TemporaryDirectory(prefix="bench-preprocess-cohort-") as study:
        wall, cpu = time.perf_counter(), _cpu_seconds()
        defaced = deface_cohort(Cohort(subjects), study, methods, jobs=jobs, bids_root=bids, progress=False)
        deface_wall = time.perf_counter() - wall
        tasks = [PreprocessTask(s, study, get_grid(grid_name), conditions) for s in subjects]
        done = run_tasks(preprocess_subject, tasks, keys=[s.key for s in subjects], jobs=jobs, stage="preprocess", progress=False)
        wall, cpu = time.perf_counter() - wall, _cpu_seconds() - cpu
    failed = len(defaced.failures) + len(done.failures)
    return {"jobs": jobs, "scans": len(subjects), "wall_s": wall, "deface_wall_s": deface_wall, "cpu_s": cpu, "failed": failed}


def _cohort_line(cohort: dict) -> str:
    failed = f", {cohort['failed']} failed" if cohort["failed"] else ""
    return (f"cohort of {cohort['scans']} scans, --jobs {cohort['jobs']}: {cohort['wall_s']:.1f} s wall (deface {cohort['deface_wall_s']:.1f} s), "
            f"{cohort['wall_s'] / cohort['scans']:.2f} s per scan, {cohort['cpu_s'] / cohort['scans']:.1f} CPU s per scan{failed}")


def _median(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def step_medians(rows: list[dict]) -> dict[str, tuple[float | None, float | None]]:
    """Per step: the median wall and CPU seconds over scans (None where not timed)."""
    names = list(dict.fromkeys(k for row in rows for k in row["steps"]))
    return {name: (_median([r["steps"].get(name, [None, None])[0] for r in rows]),
                   _median([r["steps"].get(name, [None, None])[1] for r in rows])) for name in names}


def _fmt(value: float | None, width: int = 7) -> str:
    return " " * (width - 1) + "-" if value is None else f"{value:{width}.2f}"


def _load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} (1 min), {five:.1f} (5 min) on {os.cpu_count()} cores"


def _checkout(rev_or_dir: str, keep: list[Path]) -> Path:
    """A directory with the other version's ``src/``: the given checkout, or a temporary git worktree of a revision."""
    path = Path(rev_or_dir)
    if (path / "src" / "defacebench").is_dir():
        return path.resolve()
    tmp = Path(tempfile.mkdtemp(prefix="bench-preprocess-vs-"))
    subprocess.run(["git", "-C", str(HERE), "worktree", "add", "--detach", str(tmp / "tree"), rev_or_dir], check=True, capture_output=True)
    keep.append(tmp / "tree")
    return tmp / "tree"


def _child(tree: Path, args: argparse.Namespace) -> dict:
    """One side of a pair: this script on ``tree``'s package in a fresh interpreter; its JSON and the child's own CPU seconds."""
    command = [sys.executable, str(Path(__file__).resolve()), "--child", "--scans", str(args.scans), "--grid", args.grid,
               "--voxel-mm", str(args.voxel_mm), "--workdir", str(args.workdir)]
    if args.methods:
        command += ["--methods", args.methods]
    if args.cohort_jobs:
        command += ["--cohort-jobs", str(args.cohort_jobs)]
    env = {**os.environ, "PYTHONPATH": str(tree / "src")}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = time.perf_counter()
    proc = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - wall
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{tree}: bench failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["process_wall_s"] = wall
    result["process_cpu_s"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return result


def compare(args: argparse.Namespace) -> int:
    """Paired A/B runs of this tree against ``args.vs``; print per-scan walls, the ratio and the table by step."""
    keep: list[Path] = []
    try:
        other = _checkout(args.vs, keep)
        sides: dict[str, list[dict]] = {"this": [], "other": []}
        print(f"A = this tree ({HERE}), B = {args.vs} ({other}); {args.pairs} pairs of {args.scans} scans; {_load()}", flush=True)
        for pair in range(args.pairs):
            for side, tree in (("this", HERE), ("other", other)):
                sides[side].append(_child(tree, args))
            a, b = (statistics.median(r["steps"]["TOTAL"][0] for r in sides[s][-1]["rows"]) for s in ("this", "other"))
            print(f"pair {pair + 1}: per-scan wall A {a:.2f} s, B {b:.2f} s, A/B {a / b:.3f}; {_load()}", flush=True)
            if args.cohort_jobs:
                print("  " + "; ".join(f"{side}: {_cohort_line(sides[side][-1]['cohort'])}" for side in ("this", "other")), flush=True)
        per_scan = {s: [statistics.median(r["steps"]["TOTAL"][0] for r in run["rows"]) for run in runs] for s, runs in sides.items()}
        ratios = [a / b for a, b in zip(per_scan["this"], per_scan["other"])]
        print(f"\nper-scan wall (median over scans, then over {args.pairs} runs): A {statistics.median(per_scan['this']):.2f} s, "
              f"B {statistics.median(per_scan['other']):.2f} s; paired ratio A/B median {statistics.median(ratios):.3f} "
              f"(min {min(ratios):.3f}, max {max(ratios):.3f})")
        if args.cohort_jobs:
            per = {s: [run["cohort"]["wall_s"] / run["cohort"]["scans"] for run in runs] for s, runs in sides.items()}
            cohort_ratios = [a / b for a, b in zip(per["this"], per["other"])]
            print(f"cohort of {args.scans} scans with --jobs {args.cohort_jobs}, wall per scan (median over {args.pairs} runs): "
                  f"A {statistics.median(per['this']):.2f} s, B {statistics.median(per['other']):.2f} s; paired ratio A/B median "
                  f"{statistics.median(cohort_ratios):.3f} (min {min(cohort_ratios):.3f}, max {max(cohort_ratios):.3f})")
            for side, runs in sides.items():
                print(f"  {'A' if side == 'this' else 'B'}: " + "; ".join(_cohort_line(run["cohort"]) for run in runs))
        cpu = {s: statistics.median(run["process_cpu_s"] for run in runs) for s, runs in sides.items()}
        print(f"CPU seconds of a whole run (interpreter, imports, warm-up, {args.scans} scans): A {cpu['this']:.1f}, B {cpu['other']:.1f}")
        tables = {s: step_medians([row for run in runs for row in run["rows"]]) for s, runs in sides.items()}
        names = list(dict.fromkeys([*tables["this"], *tables["other"]]))
        print(f"\nseconds per step, median over {args.pairs} x {args.scans} scans:")
        print(f"  {'step':34s} {'B wall':>7s} {'B cpu':>7s} {'A wall':>7s} {'A cpu':>7s}")
        for name in names:
            (bw, bc), (aw, ac) = tables["other"].get(name, (None, None)), tables["this"].get(name, (None, None))
            print(f"  {name:34s} {_fmt(bw)} {_fmt(bc)} {_fmt(aw)} {_fmt(ac)}")
    finally:
        for tree in keep:
            subprocess.run(["git", "-C", str(HERE), "worktree", "remove", "--force", str(tree)], capture_output=True)
            shutil.rmtree(tree.parent, ignore_errors=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if args.workdir is None:
        args.workdir = Path(tempfile.mkdtemp(prefix="bench-preprocess-"))
    args.workdir = args.workdir.resolve()
    args.workdir.mkdir(parents=True, exist_ok=True)
    if args.vs and not args.child:
        _simulate(args.workdir / "bids", args.scans, args.voxel_mm)
        return compare(args)
    from defacebench.conditions import DEFACERS, parse_methods

    methods = tuple(parse_methods(args.methods.split(","))) if args.methods else DEFACERS
    _simulate(args.workdir / "bids", args.scans, args.voxel_mm)
    _warm_up()
    rows = run_scans(args.workdir / "bids", args.scans, args.grid, methods)
    cohort = run_cohort(args.workdir / "bids", args.scans, args.grid, methods, args.cohort_jobs) if args.cohort_jobs else None
    if args.child:
        print(json.dumps({"rows": rows, "cohort": cohort}))
        return 0
    for row in rows:
        total = row["steps"]["TOTAL"]
        print(f"{row['key']} ({row['shape']}): {total[0]:.1f} s wall, {total[1]:.1f} s CPU, brain Dice {row['brain_dice']:.3f}")
    print(f"\nseconds per step, median over {len(rows)} scans ({args.grid}; {', '.join(methods)}; {_load()}):")
    print(f"  {'step':34s} {'wall':>7s} {'cpu':>7s}")
    for name, (wall, cpu) in step_medians(rows).items():
        print(f"  {name:34s} {_fmt(wall)} {_fmt(cpu)}")
    print(f"per-scan wall: median {_median([r['steps']['TOTAL'][0] for r in rows]):.2f} s")
    if cohort:
        print(_cohort_line(cohort))
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    print(f"peak resident memory of this process: {peak_gb:.2f} GB")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
