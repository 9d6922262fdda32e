"""What the deface stage says about the images it writes: method records and BIDS derivatives sidecars.

Every image of a scan gets a JSON sidecar (``<image>.json``) with ``Sources`` (BIDS URIs
of the input), the method, its backend, version and parameters, the space, and the
input's own sidecar carried over after :func:`defacebench.io.sidecars.scrub_sidecar`.
Defaced images say in plain words that they were defaced and how; face-only images say
that they identify the person.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from defacebench import __version__
from defacebench.deface.context import REGISTRATION_ITERATIONS, REGISTRATION_RESOLUTION_MM
from defacebench.deface.registry import get_method
from defacebench.io.sidecars import ScrubPolicy, read_input_sidecar, scrub_sidecar, sidecar_path, source_uri, write_sidecar

#: The space of every image the deface stage writes: the input's own voxel grid and affine.
SPACE = "orig (the voxel grid and affine of the source image)"
_SKIP = {"NAME", "NEEDS"}


def _plain(value: object) -> object:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def method_record(method: str, backend: str = "builtin") -> dict[str, object]:
    """Name, backend, tool, version and parameters of a method, from its module.

    The parameters are the module's upper-case constants (its own and those it imports:
    box limits, margins, buffers) and, for methods that register to MNI, the shared
    registration settings. The tool and summary come from the module docstring's first line.
    """
    module = get_method(method)
    first = (module.__doc__ or method).strip().splitlines()[0]
    tool, _, summary = first.partition(": ")
    params = {name: _plain(value) for name, value in vars(module).items()
              if name.isupper() and name not in _SKIP and isinstance(value, int | float | str | tuple | list | np.ndarray)}
    if set(getattr(module, "NEEDS", ())) - {"brain"}:
        params["RegistrationResolutionMm"] = REGISTRATION_RESOLUTION_MM
        params["RegistrationIterations"] = list(REGISTRATION_ITERATIONS)
    if backend == "native":
        try:
            version = f"{method} {importlib.metadata.version(method)} (native tool)"
        except importlib.metadata.PackageNotFoundError:
            version = "native tool (version not recorded)"
    else:
        version = f"defacebench {__version__} (built-in reimplementation)"
    return {"Name": method, "Backend": backend, "Tool": tool, "Summary": summary or first, "Version": version, "Parameters": params}


def carried_sidecar(source: str | Path, bids_root: str | Path | None, policy: ScrubPolicy | None) -> tuple[dict, list[str]]:
    """The input's sidecar, scrubbed, and the names of the removed fields."""
    return scrub_sidecar(read_input_sidecar(source, bids_root), policy)


def defaced_statement(method: str, record: Mapping[str, object], contrast: str = "T1w", via: str | None = None) -> str:
    """The plain sentence a defaced image's sidecar carries."""
    how = f" through a rigid registration of this {contrast} to the session's T1w ({via})" if via else ""
    return (f"This image was defaced: the voxels of the face (and, depending on the method, ears and neck) "
            f"that the {method} method ({record['Tool']}, {record['Backend']} backend, {record['Version']}) marks for removal "
            f"were set to zero{how}. The brain and the rest of the head are unchanged.")


def image_sidecar(role: str, method: str | None, sources: Sequence[str], carried: Mapping, removed: Sequence[str],
                  policy: ScrubPolicy, backend: str = "builtin", contrast: str = "T1w", via: str | None = None) -> dict:
    """The sidecar of one written image.

    Parameters
    ----------
    role : {"defaced", "face", "mask", "brain_mask"}
        What the image is.
    method : str or None
        The method (None for the brain mask).
    sources : sequence of str
        BIDS URIs of the inputs.
    carried, removed
        The input's scrubbed sidecar and the names of the fields the scrub removed.
    via : str, optional
        For images of another contrast: how the T1w's removal region was carried over.
    """
    record = method_record(method, backend) if method else None
    content: dict[str, object] = {}
    if role in ("defaced", "face"):
        content.update(carried)
        content["SkullStripped"] = False
    content["Sources"] = list(sources)
    content["Space"] = SPACE
    if role == "defaced":
        content["Defaced"] = True
        content["Description"] = defaced_statement(str(method), record, contrast, via)  # type: ignore[arg-type]
    elif role == "face":
        content["Description"] = (f"Face-only image: exactly the tissue the {method} method removed from the source. "
                                  "It shows the person's face and identifies them: never share it.")
    elif role == "mask":
        content["Type"] = "Face"
        content["Description"] = f"Fraction of each voxel the {method} method removed (1 = removed)."
    else:
        content["Type"] = "Brain"
        content["Description"] = "Brain mask used by the defacing methods (deepbet unless given)."
    if record is not None:
        content["DefacingMethod"] = record
    if via:
        content["RegistrationToT1w"] = via
    if role in ("defaced", "face"):
        content["SidecarScrub"] = policy.describe(len(removed))
    return content


def write_scan_sidecars(subject, paths: Mapping[str, Path], methods: Sequence[str], backend: str,
                        bids_root: str | Path | None, policy: ScrubPolicy | None = None, only_missing: bool = False) -> list[Path]:
    """Write the sidecar of every image of one scan's deface outputs (``layout.scan_files`` roles)."""
    policy = policy or ScrubPolicy()
    carried, removed = carried_sidecar(subject.path, bids_root, policy)
    sources = [source_uri(subject.path, bids_root)]
    written = []
    jobs: list[tuple[Path, str, str | None]] = [(paths["brain_mask"], "brain_mask", None)]
    jobs += [(paths[f"{m}_{role}"], role, m) for m in methods for role in ("defaced", "face", "mask")]
    for image, role, method in jobs:
        if not image.is_file() or (only_missing and sidecar_path(image).is_file()):
            continue
        written.append(write_sidecar(image, image_sidecar(role, method, sources, carried, removed, policy, backend)))
    return written
