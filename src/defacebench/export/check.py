"""Around the shareable dataset: whose OUT it is, whether it is valid BIDS, whether anything shows a face, QC.

The structure check combines the ``bids-validator`` package's file-name rules (every
file's path must be a valid BIDS raw-data path) with the rules the export relies on:
a dataset_description.json with Name and BIDSVersion, a JSON sidecar beside every image,
participants.tsv listing exactly the subject folders, sessions.tsv listing exactly a
subject's session folders. The face check refuses pictures, HTML, derivatives,
``desc-`` derivative names and images whose header does not say they were defaced.
"""

from __future__ import annotations

import hashlib
import html
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import nibabel as nib
import pandas as pd

from defacebench import __version__, layout
from defacebench.io.atomic import write_text_atomic
from defacebench.io.errors import InputError
from defacebench.io.sidecars import sidecar_path

PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".svg", ".html", ".htm", ".pdf")


def _same_or_inside(a: Path, b: Path) -> bool:
    a, b = a.resolve(), b.resolve()
    return a == b or b in a.parents


def prepare_destination(out: Path, bids_root: Path, settings: Mapping[str, object]) -> dict:
    """Check that ``out`` may be written and record the export's settings beside it.

    ``out`` must be new, empty, or an earlier export of the same source with the same
    settings (a resume). Stray temporary files of a killed run are removed.

    Raises
    ------
    InputError
        ``out`` is the source or inside it (or holds it), is not empty and not a
        defacebench export, or was exported with other settings.
    """
    files = layout.export_files(out)
    if _same_or_inside(out, bids_root) or _same_or_inside(bids_root, out) or _same_or_inside(files["side"], bids_root):
        raise InputError(f"the export must be outside the source dataset {bids_root} (and not hold it)", out)
    record = {"tool": "defacebench export", "version": __version__, **settings,
              "source_sha256": hashlib.sha256(str(bids_root.resolve()).encode()).hexdigest()}
    if files["record"].is_file():
        old = json.loads(files["record"].read_text())
        changed = sorted(k for k in record if k != "version" and old.get(k) != record[k])
        if changed:
            raise InputError(f"OUT was exported with other settings ({', '.join(changed)}: "
                             f"{', '.join(str(old.get(k)) for k in changed)}); choose a new OUT to export again", out)
    elif out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(f"OUT is not empty and is not a defacebench export (no {files['record']}); "
                         "choose a new or empty folder", out)
    for stray in list(out.rglob(".*.part*")) if out.is_dir() else []:
        stray.unlink()
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(files["record"], json.dumps(record, indent=2) + "\n")
    return record


def _rel_paths(out: Path) -> list[str]:
    return sorted("/" + p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())


def structure_problems(out: str | Path) -> list[str]:
    """What makes ``out`` not a valid BIDS raw dataset, one line each (empty: it passes)."""
    from bids_validator import BIDSValidator

    out = Path(out)
    problems = []
    description = out / "dataset_description.json"
    try:
        content = json.loads(description.read_text())
        for field in ("Name", "BIDSVersion"):
            if not content.get(field):
                problems.append(f"dataset_description.json has no {field}")
    except (OSError, ValueError) as exc:
        problems.append(f"dataset_description.json unreadable ({type(exc).__name__})")
    validator = BIDSValidator()
    problems += [f"not a BIDS path: {rel}" for rel in _rel_paths(out) if not validator.is_bids(rel)]
    images = [p for p in out.rglob("*") if p.name.endswith((".nii", ".nii.gz"))]
    problems += [f"no sidecar: {p.relative_to(out)}" for p in images if not sidecar_path(p).is_file()]
    subjects = {p.name for p in out.glob("sub-*") if p.is_dir()}
    table = out / "participants.tsv"
    if table.is_file():
        frame = pd.read_csv(table, sep="\t", dtype=str, keep_default_na=False)
        if list(frame.columns[:1]) != ["participant_id"]:
            problems.append("participants.tsv: first column is not participant_id")
        else:
            listed = set(frame["participant_id"])
            problems += [f"participants.tsv lacks {s}" for s in sorted(subjects - listed)]
            problems += [f"participants.tsv lists {s} with no folder" for s in sorted(listed - subjects)]
    elif subjects:
        problems.append("no participants.tsv")
    for sub in sorted(subjects):
        sessions_table = out / sub / f"{sub}_sessions.tsv"
        if sessions_table.is_file():
            listed = set(pd.read_csv(sessions_table, sep="\t", dtype=str, keep_default_na=False).get("session_id", []))
            present = {p.name for p in (out / sub).glob("ses-*") if p.is_dir()}
            problems += [f"{sessions_table.name} lacks {s}" for s in sorted(present - listed)]
            problems += [f"{sessions_table.name} lists {s} with no folder" for s in sorted(listed - present)]
    return problems


def face_problems(out: str | Path) -> list[str]:
    """Anything in ``out`` that could show a face, one line each (empty: nothing does)."""
    out = Path(out)
    problems = []
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        rel = path.relative_to(out).as_posix()
        if path.suffix.lower() in PICTURE_SUFFIXES:
            problems.append(f"picture or page: {rel}")
        elif rel.startswith("derivatives/") or "_desc-" in path.name:
            problems.append(f"derivative: {rel}")
        elif path.name.endswith((".nii", ".nii.gz")):
            descrip = nib.load(str(path)).header["descrip"].item().decode("ascii", "replace")
            if not descrip.startswith(("defaced", "refaced")):
                problems.append(f"image not marked defaced: {rel}")
    return problems


def write_qc_report(items: Sequence, bids_root: Path, path: Path, method: str) -> Path:
    """export_qc.html beside OUT: per image its status and QC picture (it shows faces: it stays at the site)."""
    rows = []
    for item in items:
        rel = html.escape(str(Path(item.source).resolve().relative_to(bids_root.resolve())))
        picture = ""
        if item.qc_png is not None and Path(item.qc_png).is_file():
            picture = f'<img src="{html.escape(os.path.relpath(item.qc_png, path.parent))}" width="480">'
        rows.append(f"<tr><td>{rel}</td><td>{html.escape(item.status)}</td><td>{html.escape(item.reason)}</td><td>{picture}</td></tr>")
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>defacebench export QC</title></head><body>"
            f"<h1>Export QC: {html.escape(method)}</h1><p>Check that every cut removed the face and spared the brain "
            "(removed = blue). This page shows faces: keep it at the site.</p>"
            "<table border='1' cellpadding='4'><tr><th>image</th><th>status</th><th>reason</th><th>QC</th></tr>"
            + "".join(rows) + "</table></body></html>\n")
    return write_text_atomic(path, page)
