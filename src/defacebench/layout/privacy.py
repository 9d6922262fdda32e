"""Paths of the privacy stage (issue 19): per-scan renders and attack features, the cohort tables."""

from __future__ import annotations

from pathlib import Path

from defacebench.layout.base import PathLike, Scan, anat_dir

__all__ = ["privacy_features", "privacy_figure", "privacy_render", "privacy_table", "privacy_scan_table", "privacy_residual_table",
           "RAW_LABEL"]

#: The label of the unmodified head among the rendered methods.
RAW_LABEL = "raw"


def _anat(study: PathLike, scan: Scan) -> Path:
    return anat_dir(Path(study) / "derivatives" / "defacebench", scan.subject, scan.session)


def privacy_render(study: PathLike, scan: Scan, method: str) -> Path:
    """``<prefix>_desc-<method>_render.png``: the front and three-quarter renders of one head (they show a face: never shared)."""
    return _anat(study, scan) / f"{scan.key}_desc-{method}_render.png"


def privacy_features(study: PathLike, scan: Scan) -> Path:
    """``<prefix>_desc-privacy_features.npz``: per method and view, the detector's result and the face descriptor."""
    return _anat(study, scan) / f"{scan.key}_desc-privacy_features.npz"


def privacy_table(study: PathLike) -> Path:
    """``results/privacy.csv``: per method, detection and identification rates with CIs, chance, residual face."""
    return Path(study) / "results" / "privacy.csv"


def privacy_scan_table(study: PathLike) -> Path:
    """``results/privacy_scans.csv``: per scan and method, face found, rank of the true person, residual face."""
    return Path(study) / "results" / "privacy_scans.csv"


def privacy_residual_table(study: PathLike) -> Path:
    """``results/privacy_residual.csv``: per method and facial region, the share of the skin surface left."""
    return Path(study) / "results" / "privacy_residual.csv"


def privacy_figure(study: PathLike) -> Path:
    """``figures/privacy_frontier.png``: accuracy cost against re-identification, one point per method."""
    return Path(study) / "figures" / "privacy_frontier.png"
