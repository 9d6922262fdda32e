"""BIDS names in, BIDS derivatives out.

Only the small part of BIDS that defacebench needs: parsing entities from a file
name, the ``sub-X[/ses-Y]/anat`` folder, and writing ``dataset_description.json``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from defacebench import __version__
from defacebench.io.atomic import write_text_atomic

#: BIDS entity order for anatomical file names.
_ENTITY_RE = re.compile(r"([a-zA-Z]+)-([a-zA-Z0-9]+)")
NIFTI_SUFFIXES = (".nii.gz", ".nii")
PIPELINE_NAME = "defacebench"


def strip_nifti_suffix(name: str) -> str:
    """``sub-01_T1w.nii.gz`` -> ``sub-01_T1w``."""
    for ext in NIFTI_SUFFIXES:
        if name.endswith(ext):
            return name[: -len(ext)]
    return name


def parse_entities(path: str | Path) -> dict[str, str]:
    """Entities and suffix of a BIDS file name: ``{'sub': '01', 'ses': 'a', 'suffix': 'T1w'}``."""
    stem = strip_nifti_suffix(Path(path).name)
    parts = stem.split("_")
    entities: dict[str, str] = {}
    for part in parts[:-1] if len(parts) > 1 else parts:
        match = _ENTITY_RE.fullmatch(part)
        if match:
            entities[match.group(1)] = match.group(2)
    if len(parts) > 1 and "-" not in parts[-1]:
        entities["suffix"] = parts[-1]
    return entities


def subject_anat_dir(root: str | Path, subject: str, session: str | None = None) -> Path:
    """``root/sub-X[/ses-Y]/anat``."""
    path = Path(root) / f"sub-{subject}"
    if session:
        path = path / f"ses-{session}"
    return path / "anat"


def write_dataset_description(
    root: str | Path,
    name: str,
    dataset_type: str = "derivative",
    source: str | None = None,
    description: str | None = None,
) -> Path:
    """Write ``dataset_description.json`` (BIDS 1.9) for a raw dataset or a derivative."""
    content: dict[str, object] = {"Name": name, "BIDSVersion": "1.9.0", "DatasetType": dataset_type}
    if dataset_type == "derivative":
        content["GeneratedBy"] = [{"Name": PIPELINE_NAME, "Version": __version__, "Description": description or name}]
        if source:
            content["SourceDatasets"] = [{"URL": str(source)}]
            content["DatasetLinks"] = {"raw": str(source)}  # resolves the sidecars' bids:raw: Sources
    elif description:
        content["Description"] = description
    path = Path(root) / "dataset_description.json"
    return write_text_atomic(path, json.dumps(content, indent=2) + "\n")
