"""Write the shareable dataset: defaced images under their source names, scrubbed sidecars, tables, description.

The export reads what the deface stage wrote (its defaced images and their sidecars, in
the export's own study beside ``OUT``) and the source dataset; it never copies a file
that shows a face: no face-only image, no QC picture, no image that was not defaced,
nothing from the source's ``derivatives/``, no ``scans.tsv`` (acquisition times).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from defacebench import __version__, layout
from defacebench.io.atomic import write_table_atomic, write_text_atomic
from defacebench.io.bids import parse_entities
from defacebench.io.errors import InputError
from defacebench.io.nifti import defaced_descrip, save_image
from defacebench.io.sidecars import ScrubPolicy, read_input_sidecar, scrub_sidecar, sidecar_path, write_sidecar

#: Keys of a defaced image's derivatives sidecar that the exported sidecar keeps (the rest is
#: the input's sidecar, scrubbed again here with the export's own policy).
DEFACING_KEYS = ("Defaced", "Description", "DefacingMethod", "RegistrationToT1w")
#: Top-level text files of the source copied as they are (the consortium's own words).
DOCUMENTS = ("README", "README.md", "README.rst", "README.txt", "CHANGES", "LICENSE")
#: Columns of participants.tsv / sessions.tsv kept when the user names none (those present).
DEFAULT_PARTICIPANT_COLUMNS = ("age", "sex")
DEFAULT_SESSION_COLUMNS = ("age",)


@dataclass
class ExportItem:
    """One image of the source and what the export does with it.

    ``derived`` is the deface stage's defaced image (None: nothing to export);
    ``status`` is ``exported``, ``failed`` or ``not exported`` with ``reason``.
    """

    source: Path
    derived: Path | None
    qc_png: Path | None = None
    status: str = "pending"
    reason: str = ""


def relative_source(path: Path, bids_root: Path) -> Path:
    """The image's path inside the source dataset (the export keeps it)."""
    return Path(path).resolve().relative_to(Path(bids_root).resolve())


def exported_sidecar(item: ExportItem, bids_root: Path, policy: ScrubPolicy) -> dict:
    """The input's sidecar scrubbed with ``policy`` plus the defacing statement of the derivative's sidecar."""
    carried, removed = scrub_sidecar(read_input_sidecar(item.source, bids_root), policy)
    derived = sidecar_path(item.derived) if item.derived else None
    statement = json.loads(derived.read_text()) if derived and derived.is_file() else {}
    content = {**carried, **{k: statement[k] for k in DEFACING_KEYS if k in statement}}
    content["Defaced"] = True
    content["SidecarScrub"] = policy.describe(len(removed))
    return content


def export_image(item: ExportItem, bids_root: Path, out: Path, policy: ScrubPolicy, method: str) -> Path:
    """Write one defaced image under its source name (skipped when already there) and its sidecar."""
    target = out / relative_source(item.source, bids_root)
    if not target.is_file():
        img = nib.load(str(item.derived))
        dtype = img.get_data_dtype()
        data = np.asanyarray(img.dataobj)
        save_image(data.astype(dtype), target, affine=img.affine, dtype=dtype, descrip=defaced_descrip(method))
    write_sidecar(target, exported_sidecar(item, bids_root, policy))
    item.status, item.reason = "exported", ""
    return target


def select_columns(available: Sequence[str], wanted: str | None, default: Sequence[str], key: str, table: Path) -> list[str]:
    """``key`` plus the wanted columns: ``all``, a comma-separated list (each must exist), or ``default`` (those present)."""
    others = [c for c in available if c != key]
    if wanted is None:
        chosen = [c for c in default if c in others]
    elif wanted.strip().lower() == "all":
        chosen = others
    else:
        chosen = [c.strip() for c in wanted.split(",") if c.strip() and c.strip() != key]
        missing = [c for c in chosen if c not in others]
        if missing:
            raise InputError(f"no column(s) {', '.join(missing)}; it has {', '.join(others) or 'none'}", table)
    return [key, *chosen]


def _write_table(source: Path, target: Path, key: str, keep_ids: Iterable[str], wanted: str | None, default: Sequence[str]) -> list[str]:
    frame = pd.read_csv(source, sep="\t", dtype=str, keep_default_na=False)
    if key not in frame.columns:
        raise InputError(f"no {key} column", source)
    columns = select_columns(list(frame.columns), wanted, default, key, source)
    keep = set(keep_ids)
    write_table_atomic(target, frame.loc[frame[key].isin(keep), columns])
    side = source.with_suffix(".json")
    if side.is_file():  # column descriptions: only those of kept columns
        described = json.loads(side.read_text())
        write_text_atomic(target.with_suffix(".json"), json.dumps({k: v for k, v in described.items() if k in columns}, indent=2) + "\n")
    return columns


def write_tables(bids_root: Path, out: Path, exported: Sequence[Path], participant_columns: str | None = None,
                 session_columns: str | None = None) -> dict[str, list[str]]:
    """participants.tsv and every sub-X_sessions.tsv, with only exported people and sessions and the chosen columns."""
    sessions: dict[str, set[str]] = {}
    for path in exported:
        ent = parse_entities(path)
        sessions.setdefault(f"sub-{ent['sub']}", set()).update({f"ses-{ent['ses']}"} if "ses" in ent else set())
    written = {"participants": _write_table(layout.participants_table(bids_root), layout.participants_table(out), "participant_id",
                                            sessions, participant_columns, DEFAULT_PARTICIPANT_COLUMNS)}
    for pid, labels in sorted(sessions.items()):
        table = Path(bids_root) / pid / f"{pid}_sessions.tsv"
        if labels and table.is_file():
            written[pid] = _write_table(table, Path(out) / pid / table.name, "session_id", labels, session_columns, DEFAULT_SESSION_COLUMNS)
    return written


def write_description(bids_root: Path, out: Path, method_record: Mapping | None, method: str, applyto: bool, policy: ScrubPolicy) -> Path:
    """The source's dataset_description.json with defacebench added to ``GeneratedBy``."""
    path = Path(bids_root) / "dataset_description.json"
    content = json.loads(path.read_text()) if path.is_file() else {}
    if not isinstance(content, dict):
        raise InputError("dataset_description.json is not a JSON object", path)
    content.setdefault("Name", Path(bids_root).name)
    content.setdefault("BIDSVersion", "1.9.0")
    content["DatasetType"] = "raw"
    tool = f" ({method_record.get('Tool')}, {method_record.get('Version')})" if method_record else ""
    images = "every T1w and every other anatomical image (T2w, FLAIR, PD, further T1w runs, with the T1w's removal region)" if applyto else "every T1w image"
    steps = {"Name": "defacebench", "Version": __version__,
             "Description": f"Shareable copy: {images} defaced with the {method} method{tool}; sidecars scrubbed "
                            f"({policy.describe(0)['Rules']}); participants and sessions tables reduced to chosen columns."}
    content["GeneratedBy"] = [g for g in content.get("GeneratedBy", []) if isinstance(g, dict) and g.get("Name") != "defacebench"] + [steps]
    if content.get("DatasetDOI") and "SourceDatasets" not in content:
        content["SourceDatasets"] = [{"DOI": content["DatasetDOI"]}]
    return write_text_atomic(Path(out) / "dataset_description.json", json.dumps(content, indent=2) + "\n")


def copy_documents(bids_root: Path, out: Path) -> list[Path]:
    """README, CHANGES, LICENSE of the source, as they are."""
    copied = []
    for name in DOCUMENTS:
        source = Path(bids_root) / name
        if source.is_file():
            target = Path(out) / name
            shutil.copyfile(source, target)
            copied.append(target)
    return copied


def write_export_table(items: Sequence[ExportItem], bids_root: Path, path: Path) -> Path:
    """export.tsv beside OUT: every source image, what happened to it and why."""
    rows = [{"source": str(relative_source(i.source, bids_root)), "status": i.status, "reason": i.reason,
             "qc_png": "" if i.qc_png is None else str(i.qc_png)} for i in items]
    return write_table_atomic(path, pd.DataFrame(rows, columns=["source", "status", "reason", "qc_png"]))
