"""``defacebench privacy``: how identifiable is each method's output? Face detection and identification on head renders."""

from __future__ import annotations

import argparse
import functools
import json
from collections.abc import Sequence
from pathlib import Path

from defacebench.cli import make_parser, run_command

DESCRIPTION = """\
Measure how identifiable every de-identified head of STUDY still is, as a face-recognition
attacker would (Schwarz et al. 2021): each scan's raw head, each method's defaced or refaced
head and the skull-stripped head are rendered offscreen (head surface, canonical pose from
the scan's MNI registration, front and two three-quarter views), then
  attack 1, detection:      dlib's CNN face detector: is a face still found?
  attack 2, identification: every probe render ranked against a gallery of raw renders of
                            every person of the cohort, by dlib's 128-D face descriptor
                            ("face") and by the face's surface shape (its depth map:
                            "surface", an attacker with a 3D photo or another MRI): rank-1
                            and rank-5 rates with 95 % CIs, beside chance (1/N and 5/N)
  residual face:            the share of the skin of the eyes and brow, nose, mouth and lips,
                            chin, cheeks and ears each method leaves unchanged
The gallery picture of a person comes from another session of that person where the cohort
has one; otherwise from the same scan, and the rates are an upper bound (the report says so).
Both networks ship in the face_recognition_models package; nothing is downloaded.

Writes STUDY/results/privacy.csv (per method), privacy_scans.csv (per scan and method) and
privacy_residual.csv (per method and region); per scan, derivatives/defacebench/sub-X/anat/
<prefix>_desc-privacy_features.npz and <prefix>_desc-<method>_render.png (the renders show
faces: never share them). Reruns skip finished scans; a failed scan is recorded in
failures.tsv and left out. `defacebench run` runs it after defacing; the report then draws
the privacy-utility frontier.

examples:
  defacebench privacy study/
  defacebench privacy study/ --methods pydeface,fsl --scans test --jobs 2
  defacebench privacy study/ --source bids/    # a simulated cohort: ground-truth nose and ear labels
"""


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser("privacy", DESCRIPTION)
    parser.add_argument("study", type=Path, help="study directory (with the deface stage's derivatives)")
    parser.add_argument("--methods", default=None, help="comma list of methods (default: the study's, from study.json, else every method defaced)")
    parser.add_argument("--scans", choices=("all", "test"), default="all", help="every scan of splits.tsv, or the test split only (default all)")
    parser.add_argument("--source", type=Path, default=None, help="the BIDS dataset; on a simulated one its ground-truth labels are used")
    parser.add_argument("--no-renders", action="store_true", help="do not keep the PNG renders (features only)")
    parser.add_argument("--jobs", type=int, default=1, help="local worker processes (default 1)")
    parser.add_argument("--scheduler", default=None, help="address or scheduler file of a Dask cluster")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--quiet", action="store_true", help="no progress bar and no time estimate")
    return parser


def study_scans(study: Path, which: str) -> list:
    """The scans to measure: rows of ``splits.tsv`` (``which`` = ``test``: the test split), else every defaced scan."""
    from defacebench import layout
    from defacebench.cohort import read_splits
    from defacebench.io.errors import InputError
    from defacebench.privacy.scan import PrivacyScan

    path = layout.splits_table(study)
    if path.is_file():
        table = read_splits(path)
        if which == "test":
            table = table[table["split"] == "test"]
        sessions = table["session_id"] if "session_id" in table else [""] * len(table)
        runs = table["run"] if "run" in table else [""] * len(table)
        return [PrivacyScan(str(p).removeprefix("sub-"), str(s).removeprefix("ses-") or None, str(r).removeprefix("run-") or None)
                for p, s, r in zip(table["participant_id"], sessions, runs)]
    if which == "test":
        raise InputError(f"--scans test needs {path.name} (run defacebench cohort first)", path)
    qc = layout.deface_qc_table(study)
    if not qc.is_file():
        raise InputError("no deface outputs here (run defacebench deface first)", study)
    scans = []
    for tsv in sorted(layout.derivatives_dir(study).glob("sub-*/**/anat/*_desc-deface_qc.tsv")):
        entities = dict(part.split("-", 1) for part in tsv.name.removesuffix("_desc-deface_qc.tsv").split("_"))
        scans.append(PrivacyScan(entities["sub"], entities.get("ses"), entities.get("run")))
    return scans


def study_methods(study: Path, text: str | None) -> tuple[str, ...]:
    """``--methods``, else the study's methods (study.json), else every method in the deface QC table."""
    import pandas as pd

    from defacebench import layout
    from defacebench.conditions import parse_methods
    from defacebench.io.errors import InputError

    if text:
        return parse_methods(text)
    config = layout.study_config(study)
    if config.is_file():
        return parse_methods(json.loads(config.read_text())["methods"])
    qc = layout.deface_qc_table(study)
    if qc.is_file():
        return parse_methods(sorted(set(pd.read_csv(qc, sep="\t", dtype=str)["method"])))
    raise InputError("no deface outputs here (run defacebench deface first)", study)


def _run(args: argparse.Namespace) -> int:
    from defacebench import layout
    from defacebench.io.errors import InputError
    from defacebench.io.estimate import print_estimate
    from defacebench.privacy.stage import run_privacy

    if not args.study.is_dir():
        raise InputError("study directory not found", args.study)
    if args.jobs < 1:
        raise InputError(f"--jobs must be at least 1, got {args.jobs}")
    methods = study_methods(args.study, args.methods)
    scans = study_scans(args.study, args.scans)
    if not scans:
        raise InputError("no scans to measure", args.study)
    labels = {}
    if args.source is not None:
        for scan in scans:
            found = [p for p in layout.simulation_labels(args.source, scan) if p.is_file()]
            if found:
                labels[scan.key] = found[0]
    quiet = args.quiet or args.no_progress
    estimate = functools.partial(print_estimate, quiet=args.quiet)
    table = run_privacy(args.study, scans, methods, labels=labels, jobs=args.jobs, scheduler=args.scheduler, progress=not quiet,
                        write_renders=not args.no_renders, estimate=estimate)
    for row in table.itertuples():
        print(f"{row.method:<16} face found {row.detection_rate:5.0%}   rank-1 face {row.face_rank1_rate:5.0%} "
              f"[{row.face_rank1_ci_low:.0%}, {row.face_rank1_ci_high:.0%}]   surface {row.surface_rank1_rate:5.0%} "
              f"[{row.surface_rank1_ci_low:.0%}, {row.surface_rank1_ci_high:.0%}]   chance {row.rank1_chance:.0%}", flush=True)
    print(f"wrote       {layout.privacy_table(args.study)}", flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``defacebench privacy``."""
    return run_command(build_parser(), _run, argv)
