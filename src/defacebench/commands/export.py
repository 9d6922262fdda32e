"""``defacebench export``: write the defaced BIDS dataset a site shares."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from defacebench.cli import make_parser, run_command
from defacebench.commands.deface import add_sidecar_options, sidecar_policy

DESCRIPTION = """\
Write a complete BIDS dataset to share: every T1w image of BIDS_DIR defaced with --method
(and with --applyto every T2w, FLAIR, PD, T2starw image and further T1w run, defaced with
its session T1w's removal region through a rigid registration), under the source's own
file names; JSON sidecars carried over with identifying fields removed (InstitutionName,
InstitutionAddress, StationName, DeviceSerialNumber, acquisition dates and times, UIDs,
physician and operator names, every Patient* field; --sidecar-mode allow keeps only a
list); participants.tsv and sub-X_sessions.tsv with only the chosen columns and the
exported people; dataset_description.json with defacebench in GeneratedBy; README,
CHANGES, LICENSE as they are.

Nothing that shows a face goes into OUT: no face-only image, no QC picture, no image that
was not defaced (without --applyto, T2w and other contrasts stay out), nothing of the
source's derivatives/, no scans.tsv (acquisition times). The work (deface derivatives,
face-only images) and the QC report (export_qc.html, export.tsv: every source image and
what happened to it) go BESIDE OUT, into OUT_defacebench/, which stays at the site.

A scan that fails is left out and listed; the rest is exported. A rerun of the same
command resumes (finished images are skipped). OUT must be new or empty, or an earlier
export of the same source with the same --method and --applyto.

examples:
  defacebench export /data/site share/ --method pydeface
  defacebench export /data/site share/ --method fsl --applyto --participant-columns age,sex,group
  defacebench export /data/site share/ --method spm --sidecar-mode allow --sidecar-fields allowed.txt
"""


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser("export", DESCRIPTION)
    parser.add_argument("source", type=Path, help="BIDS dataset directory")
    parser.add_argument("out", type=Path, help="the dataset to write (new or empty; its work and QC go to OUT_defacebench/)")
    parser.add_argument("--method", required=True, help="the defacing method (afni, fsl, pydeface, spm, quickshear, ...)")
    parser.add_argument("--applyto", action="store_true", help="also export T2w, FLAIR, PD and further T1w runs, defaced with the T1w's removal region")
    parser.add_argument("--participant-columns", default=None, help="participants.tsv columns to keep besides participant_id: a comma list or 'all' (default: age,sex)")
    parser.add_argument("--session-columns", default=None, help="sessions.tsv columns to keep besides session_id: a comma list or 'all' (default: age)")
    add_sidecar_options(parser)
    parser.add_argument("--backend", choices=("builtin", "native"), default="builtin", help="built-in reimplementation (default) or the real tool")
    parser.add_argument("--jobs", type=int, default=1, help="local worker processes (default 1)")
    parser.add_argument("--scheduler", default=None, help="address or scheduler file of a Dask cluster")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def references(subjects: Sequence, applyto: bool) -> list:
    """The scans the deface stage runs on: every T1w, or with --applyto the first T1w run of each session."""
    if not applyto:
        return list(subjects)
    sessions: dict[tuple, list] = {}
    for s in subjects:
        sessions.setdefault((s.subject, s.session), []).append(s)
    order = lambda s: (s.run is not None, int(s.run) if (s.run or "").isdigit() else 0, s.run or "", str(s.path))  # noqa: E731
    return [min(group, key=order) for group in sessions.values()]


def _plan(source: Path, study: Path, refs: Sequence, method: str, applyto: bool, reasons: dict[str, str]) -> list:
    """One ExportItem per anatomical image of the source: what to export from where, or why not."""
    from defacebench import layout
    from defacebench.deface.applyto import APPLYTO_SUFFIXES, session_targets
    from defacebench.export import ExportItem
    from defacebench.io.bids import strip_nifti_suffix

    planned: dict[Path, ExportItem] = {}
    for scan in refs:
        files = layout.scan_files(study, scan, [method])
        if files["qc_tsv"].is_file() and files[f"{method}_defaced"].is_file():
            planned[Path(scan.path).resolve()] = ExportItem(Path(scan.path), files[f"{method}_defaced"], files["qc_png"])
        for target in session_targets(scan, APPLYTO_SUFFIXES + ("T1w",)) if applyto else []:
            applied = layout.applied_files(study, scan, target.name, [method])
            if applied["qc_tsv"].is_file():
                planned[target.resolve()] = ExportItem(target, applied[f"{method}_defaced"], applied["qc_png"])
    items = []
    anat = sorted({*source.glob("sub-*/anat/*.nii*"), *source.glob("sub-*/ses-*/anat/*.nii*")})
    for path in (p for p in anat if p.name.endswith((".nii", ".nii.gz"))):
        item = planned.get(path.resolve())
        if item is None:
            stem, suffix = strip_nifti_suffix(path.name), strip_nifti_suffix(path.name).rpartition("_")[2]
            reason = reasons.get(stem) or next((r for k, r in reasons.items() if stem.startswith(k + "_")), "")
            if not reason and suffix in APPLYTO_SUFFIXES:
                reason = "no T1w in its session to take the removal region from" if applyto else "shows a face: not defaced (use --applyto)"
            elif not reason:
                reason = f"shows a face: {suffix} images are not defaced by defacebench" if suffix != "T1w" else "not defaced"
            item = ExportItem(path, None, None, "not exported", reason)
        items.append(item)
    return items


def _run(args: argparse.Namespace) -> int:
    from defacebench import layout
    from defacebench.cohort import Cohort, read_cohort
    from defacebench.deface import deface_cohort, parse_methods
    from defacebench.deface.applyto import APPLYTO_SUFFIXES, applyto_cohort
    from defacebench.export import (copy_documents, export_image, face_problems, prepare_destination, structure_problems,
                                    write_description, write_export_table, write_qc_report, write_tables)
    from defacebench.io.errors import InputError
    from defacebench.io.sidecars import sidecar_path

    methods = parse_methods(args.method)
    if len(methods) != 1:
        raise InputError(f"--method takes one method, got {', '.join(methods)}")
    method = methods[0]
    if args.jobs < 1:
        raise InputError(f"--jobs must be >= 1, got {args.jobs}")
    if not args.source.is_dir():
        raise InputError("export needs a BIDS dataset directory", args.source)
    source, out = args.source, args.out
    policy = sidecar_policy(args)
    cohort = read_cohort(source)
    refs = references(cohort.subjects, args.applyto)
    if not refs:
        raise InputError("no usable T1w scans", source)
    prepare_destination(out, source, {"method": method, "applyto": bool(args.applyto), "backend": args.backend})
    files = layout.export_files(out)
    study = files["study"]
    progress = not args.no_progress
    chosen = Cohort(refs, rejected=list(cohort.rejected), source=cohort.source)
    results = deface_cohort(chosen, study, [method], jobs=args.jobs, scheduler=args.scheduler, backend=args.backend,
                            bids_root=source, progress=progress, sidecar_policy=policy)
    reasons = {f.key: f.reason for f in results.failures}
    if args.applyto:
        applied = applyto_cohort(chosen, study, [method], APPLYTO_SUFFIXES + ("T1w",), jobs=args.jobs, scheduler=args.scheduler,
                                 backend=args.backend, bids_root=source, policy=policy, progress=progress)
        reasons.update({f.key: f"applyto: {f.reason}" for f in applied.failures})
    items = _plan(source, study, refs, method, args.applyto, reasons)
    for item in items:
        if item.derived is not None:
            export_image(item, source, out, policy, method)
    exported = [item.source for item in items if item.status == "exported"]
    if not exported:
        raise InputError("no scan could be defaced: nothing exported; reasons in " + str(layout.failures_table(study)))
    columns = write_tables(source, out, exported, args.participant_columns, args.session_columns)
    first = next(i for i in items if i.status == "exported")
    record = json.loads(sidecar_path(first.derived).read_text()).get("DefacingMethod")
    write_description(source, out, record, method, args.applyto, policy)
    copy_documents(source, out)
    write_export_table(items, source, files["table"])
    write_qc_report(items, source, files["report"], method)

    left = [i for i in items if i.status != "exported"]
    print(f"exported    {len(exported)} image(s) defaced with {method} to {out}")
    print(f"tables      participants.tsv: {', '.join(columns['participants'])}"
          + (f"; sessions.tsv: {', '.join(next(v for k, v in columns.items() if k != 'participants'))}" if len(columns) > 1 else ""))
    for item in left:
        print(f"  NOT EXPORTED  {item.source.relative_to(source)}: {item.reason}", file=sys.stderr)
    problems = structure_problems(out) + face_problems(out)
    print(f"checks      BIDS structure and face check: {'passed' if not problems else f'{len(problems)} problem(s)'}")
    for problem in problems:
        print(f"  PROBLEM   {problem}", file=sys.stderr)
    print(f"QC          {files['report']} and {files['table']} (beside OUT: they show faces, keep them at the site)")
    sys.stdout.flush()
    return 1 if problems else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``defacebench export``."""
    return run_command(build_parser(), _run, argv)
