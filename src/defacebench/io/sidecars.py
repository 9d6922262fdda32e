"""JSON sidecars: the input's (BIDS inheritance), scrubbed of identifying fields, and written beside images.

A scanner's BIDS sidecar (dcm2niix writes one per series) names the hospital, its street
address, the department, the scanner's station name and serial number, the acquisition
date and time, DICOM UIDs and sometimes the operator's and physicians' names. Everything
defacebench writes carries the input's sidecar over only after :func:`scrub_sidecar`:

* **deny mode** (default): every field matching :data:`DEFAULT_DENY` (shell-style
  patterns, case-sensitive, also inside nested objects) is removed, plus any extra
  patterns a site adds;
* **allow mode** (strict sites): only fields matching an allow list are kept
  (:data:`DEFAULT_ALLOW`: acquisition parameters an analysis needs, or the site's own list).

In both modes a kept text value that repeats a removed value (``"ProtocolName":
"St Elsewhere T1"`` beside ``"InstitutionName": "St Elsewhere"``) is removed too.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from defacebench.io.atomic import write_text_atomic
from defacebench.io.bids import parse_entities, strip_nifti_suffix
from defacebench.io.errors import InputError

#: Fields removed in deny mode (shell-style patterns; ``Patient*`` is every Patient field).
DEFAULT_DENY: tuple[str, ...] = (
    "InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName", "InstitutionCode*",
    "StationName", "DeviceSerialNumber",
    "AcquisitionTime", "AcquisitionDateTime", "AcquisitionDate", "ContentTime", "ContentDate",
    "SeriesTime", "SeriesDate", "StudyTime", "StudyDate", "*DateTime", "*Date", "DateOf*", "TimeOf*",
    "SeriesInstanceUID", "StudyInstanceUID", "*UID",
    "ReferringPhysicianName", "PerformingPhysicianName", "*Physician*", "OperatorsName", "Operator*",
    "Patient*", "AccessionNumber", "StudyID", "ImageComments", "RequestAttributesSequence",
)
#: Fields kept in allow mode when the site gives no list: acquisition parameters only.
DEFAULT_ALLOW: tuple[str, ...] = (
    "Modality", "MagneticFieldStrength", "ImagingFrequency", "Manufacturer", "ManufacturersModelName",
    "SoftwareVersions", "MRAcquisitionType", "ScanningSequence", "SequenceVariant", "ScanOptions",
    "SequenceName", "PulseSequenceDetails", "ImageType", "NonlinearGradientCorrection",
    "SliceThickness", "SpacingBetweenSlices", "EchoTime", "RepetitionTime", "InversionTime",
    "FlipAngle", "PartialFourier", "BaseResolution", "PixelBandwidth", "DwellTime",
    "ReceiveCoilName", "ReceiveCoilActiveElements", "CoilString", "PercentPhaseFOV", "PercentSampling",
    "PhaseEncodingSteps", "AcquisitionMatrixPE", "ReconMatrixPE", "ParallelReductionFactorInPlane",
    "ParallelAcquisitionTechnique", "PhaseEncodingDirection", "InPlanePhaseEncodingDirectionDICOM",
    "EchoTrainLength", "MTState", "SpoilingState", "ConversionSoftware", "ConversionSoftwareVersion",
)
MODES = ("deny", "allow")
#: Removed text values shorter than this are not searched for in kept values (``"M"``, ``"1"``).
MIN_REPEATED_VALUE_CHARS = 4


@dataclass(frozen=True)
class ScrubPolicy:
    """Which sidecar fields leave the site.

    Parameters
    ----------
    mode : {"deny", "allow"}
        ``deny``: remove fields matching ``fields``; ``allow``: keep only those.
    fields : tuple of str
        Shell-style field name patterns (``Patient*``), matched case-sensitively.
    """

    mode: str = "deny"
    fields: tuple[str, ...] = DEFAULT_DENY

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise InputError(f"sidecar mode must be one of {', '.join(MODES)}, got {self.mode!r}")

    def removes(self, name: str) -> bool:
        """Whether a field called ``name`` is removed."""
        matched = any(fnmatch.fnmatchcase(name, pattern) for pattern in self.fields)
        return matched if self.mode == "deny" else not matched

    def describe(self, removed: int) -> dict[str, object]:
        """The policy as recorded in written sidecars: mode, which list, how many fields went.

        Field names are not listed: a shared file should not even say which identifying
        fields the scanner wrote.
        """
        default = DEFAULT_DENY if self.mode == "deny" else DEFAULT_ALLOW
        extra = len(set(self.fields) - set(default))
        rules = f"defacebench {self.mode} list" + (f" + {extra} site pattern(s)" if extra else "")
        if self.mode == "allow" and set(self.fields) != set(default):
            rules = f"site allow list ({len(self.fields)} pattern(s))"
        return {"Mode": self.mode, "Rules": rules, "FieldsRemoved": int(removed)}


def parse_field_list(spec: str | Path | None) -> tuple[str, ...]:
    """Field patterns from a comma-separated list or a file (one per line, ``#`` comments, or a JSON list)."""
    if spec is None or str(spec).strip() == "":
        return ()
    path = Path(str(spec))
    if path.is_file():
        text = path.read_text(encoding="utf-8")
        if text.lstrip().startswith("["):
            try:
                items = [str(v) for v in json.loads(text)]
            except ValueError as exc:
                raise InputError(f"sidecar field list is not a JSON list ({exc})", path) from None
        else:
            items = [line.split("#", 1)[0] for line in text.splitlines()]
    else:
        items = str(spec).split(",")
    return tuple(dict.fromkeys(item.strip() for item in items if item.strip()))


def make_policy(mode: str = "deny", fields: str | Path | None = None) -> ScrubPolicy:
    """The policy of a command line: deny mode adds ``fields`` to :data:`DEFAULT_DENY`;
    allow mode keeps only ``fields`` (default :data:`DEFAULT_ALLOW`)."""
    extra = parse_field_list(fields)
    if mode == "deny":
        return ScrubPolicy("deny", tuple(dict.fromkeys(DEFAULT_DENY + extra)))
    return ScrubPolicy(mode, extra or DEFAULT_ALLOW)


def _strings(value: object) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _strings(item)


def _drop(content: Mapping, policy: ScrubPolicy, removed: list[str], prefix: str = "") -> dict:
    kept = {}
    for name, value in content.items():
        if policy.removes(str(name)):
            removed.append(prefix + str(name))
        elif isinstance(value, Mapping) and policy.mode == "deny":
            kept[name] = _drop(value, policy, removed, prefix=f"{prefix}{name}.")
        else:
            kept[name] = value
    return kept


def scrub_sidecar(content: Mapping, policy: ScrubPolicy | None = None) -> tuple[dict, list[str]]:
    """Remove identifying fields from a sidecar.

    Returns
    -------
    kept : dict
        The sidecar without the removed fields.
    removed : list of str
        Names of removed fields (``a.b`` for nested ones), in input order.
    """
    policy = policy or ScrubPolicy()
    removed: list[str] = []
    kept = _drop(content, policy, removed)
    # values of removed fields must not survive inside kept text (names, addresses, dates)
    secrets = set()
    for name in removed:
        node: object = content
        for part in name.split("."):
            node = node.get(part) if isinstance(node, Mapping) else None
        secrets.update(s.strip() for s in _strings(node) if len(s.strip()) >= MIN_REPEATED_VALUE_CHARS)
    if secrets:
        for name in list(kept):
            if any(secret in text for text in _strings(kept[name]) for secret in secrets):
                removed.append(f"{name} (repeats a removed value)")
                del kept[name]
    return kept, removed


def sidecar_path(image: str | Path) -> Path:
    """``.../sub-01_T1w.nii.gz`` -> ``.../sub-01_T1w.json`` (the BIDS sidecar beside an image)."""
    image = Path(image)
    return image.with_name(strip_nifti_suffix(image.name) + ".json")


def _applies(candidate: Path, entities: dict[str, str], suffix: str) -> bool:
    """BIDS inheritance: same suffix, and every entity of the sidecar's name is the image's."""
    stem = candidate.name[: -len(".json")]
    if stem == suffix:
        return True
    found = parse_entities(stem)
    if found.pop("suffix", None) != suffix:
        return False
    return all(entities.get(k) == v for k, v in found.items())


def find_sidecars(image: str | Path, bids_root: str | Path | None = None) -> list[Path]:
    """The JSON sidecars that apply to ``image``, least specific first (BIDS inheritance principle).

    Searched: the dataset root, ``sub-X/``, ``sub-X/ses-Y/`` and the image's own folder
    (only that folder when ``bids_root`` is None or does not hold the image).
    """
    image = Path(image)
    entities = parse_entities(image)
    suffix = entities.pop("suffix", "")
    if not suffix:
        own = sidecar_path(image)
        return [own] if own.is_file() else []
    folders = [image.parent]
    if bids_root is not None:
        root = Path(bids_root)
        try:
            rel = image.parent.relative_to(root)
        except ValueError:
            rel = None
        if rel is not None:
            folders = [root] + [root.joinpath(*rel.parts[: i + 1]) for i in range(len(rel.parts))]
    found: list[Path] = []
    for folder in folders:
        here = [p for p in folder.glob("*.json") if _applies(p, entities, suffix)]
        found.extend(sorted(here, key=lambda p: (len(parse_entities(p.name[: -len(".json")])), p.name)))
    return found


def read_input_sidecar(image: str | Path, bids_root: str | Path | None = None) -> dict:
    """The merged sidecar of an input image (more specific files override), unscrubbed.

    Raises
    ------
    InputError
        A sidecar that applies is not a JSON object.
    """
    merged: dict = {}
    for path in find_sidecars(image, bids_root):
        try:
            content = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InputError(f"unreadable sidecar ({type(exc).__name__}: {exc})", path) from None
        if not isinstance(content, dict):
            raise InputError("sidecar is not a JSON object", path)
        merged.update(content)
    return merged


def source_uri(image: str | Path, bids_root: str | Path | None, dataset: str = "raw") -> str:
    """A BIDS URI for a source file: ``bids:raw:sub-01/anat/sub-01_T1w.nii.gz``.

    Outside ``bids_root`` (a manifest) only the file name is given: absolute paths can name
    people or sites, and the derivatives must not.
    """
    image = Path(image)
    try:
        rel = image.resolve().relative_to(Path(bids_root).resolve()).as_posix() if bids_root is not None else image.name
    except ValueError:
        rel = image.name
    return f"bids:{dataset}:{rel}"


def write_sidecar(image: str | Path, content: Mapping) -> Path:
    """Write the JSON sidecar of ``image`` atomically; return its path."""
    return write_text_atomic(sidecar_path(image), json.dumps(dict(content), indent=2, default=str) + "\n")
