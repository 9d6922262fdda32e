"""Redo a finished study's face-only conditions and geometry controls with another face placement.

Usage::

    python bench/redo_face_conditions.py SRC DST [--face-placement common]

Copies the study SRC to DST without its face-only and control runs, work files, stores,
results and report (the deface outputs, the split and the other conditions' runs are kept,
so only the face conditions change), records SRC's configuration with ``face_placement``
replaced, then runs the stages a ``defacebench run`` would after defacing: preprocess,
train, train-face, evaluate, analyse, report. Trained runs whose store did not change are
reused. Used for the per-seed tables of docs/face-placement.md; compare DST's
``results/face_signal.csv`` with SRC's. Rerunning resumes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from defacebench.conditions import FACE_KINDS, FACE_PLACEMENTS
    from defacebench.config import StudyConfig
    from defacebench.study import record_config, run_study, study_stages

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", type=Path, help="a finished study")
    parser.add_argument("dst", type=Path, help="new study directory")
    parser.add_argument("--face-placement", choices=FACE_PLACEMENTS, default="common")
    args = parser.parse_args(argv)
    saved = json.loads((args.src / "study.json").read_text())
    if not args.dst.exists():
        def ignore(folder: str, names: list[str]) -> list[str]:
            if Path(folder).name == "runs":
                return [n for n in names if n.split("-", 1)[0] in FACE_KINDS]
            return [n for n in names if Path(folder) == args.src and n in ("work", "stores", "results", "figures", "report.html", "study.json")]
        shutil.copytree(args.src, args.dst, ignore=ignore, symlinks=True)
    known = {f.name for f in dataclasses.fields(StudyConfig)}
    config = dataclasses.replace(StudyConfig(), **{k: tuple(v) if isinstance(v, list) else v for k, v in saved.items() if k in known})
    config = dataclasses.replace(config, face_placement=args.face_placement)
    (args.dst / "study.json").unlink(missing_ok=True)
    record_config(args.dst, config)
    keep = ("preprocess", "train", "train-face", "evaluate", "analyse", "report")
    return run_study([s for s in study_stages(args.dst / "bids", args.dst, config, progress=False) if s.name in keep])


if __name__ == "__main__":
    sys.exit(main())
