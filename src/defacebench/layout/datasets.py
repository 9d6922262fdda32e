"""Paths outside a study directory: the demo directory, a simulated dataset's ground truth
and sessions, and the shareable dataset ``defacebench export`` writes beside its work.

Re-exported by :mod:`defacebench.layout`; import them from there.
"""

from __future__ import annotations

from pathlib import Path

from defacebench.layout.base import SIMULATION_PIPELINE, PathLike, Scan, anat_dir

# --------------------------------------------------------------------------- demo and simulation
def demo_dataset(demo: PathLike) -> Path:
    """The simulated BIDS dataset inside a demo directory."""
    return Path(demo) / "bids"


def demo_simulation_record(demo: PathLike) -> Path:
    """The simulation settings of a demo directory (a rerun must match them)."""
    return Path(demo) / "simulation.json"


def participants_table(dataset: PathLike) -> Path:
    """``DATASET/participants.tsv``: one row per participant of a BIDS dataset."""
    return Path(dataset) / "participants.tsv"


def simulation_dir(dataset: PathLike) -> Path:
    """``DATASET/derivatives/simulation``: the simulator's ground truth."""
    return Path(dataset) / "derivatives" / SIMULATION_PIPELINE


def simulation_dseg_table(dataset: PathLike) -> Path:
    """``dseg.tsv``: label value -> name of the ground-truth label images."""
    return simulation_dir(dataset) / "dseg.tsv"


def simulation_truth_table(dataset: PathLike) -> Path:
    """``ground_truth.tsv``: one row of ground-truth measures per simulated subject."""
    return simulation_dir(dataset) / "ground_truth.tsv"


def simulation_preview(dataset: PathLike) -> Path:
    """``preview.png``: youngest and oldest subject, ground truth against age."""
    return simulation_dir(dataset) / "preview.png"


def _scan_prefix(subject: str, session: str | None) -> str:
    return f"sub-{subject}_ses-{session}" if session else f"sub-{subject}"


def simulated_t1w(dataset: PathLike, subject: str, session: str | None = None) -> Path:
    """``DATASET/sub-X[/ses-Y]/anat/sub-X[_ses-Y]_T1w.nii.gz``: a simulated scan's image."""
    return anat_dir(dataset, subject, session) / f"{_scan_prefix(subject, session)}_T1w.nii.gz"


def simulation_files(dataset: PathLike, subject: str, session: str | None = None) -> dict[str, Path]:
    """The ground-truth files of one simulated scan, by role: ``dseg`` (labels),
    ``brain_mask`` (intracranial), ``record`` (``_simulation.json``: parameters and measures)."""
    anat, p = anat_dir(simulation_dir(dataset), subject, session), _scan_prefix(subject, session)
    return {"dseg": anat / f"{p}_dseg.nii.gz", "brain_mask": anat / f"{p}_desc-brain_mask.nii.gz",
            "record": anat / f"{p}_simulation.json"}


def simulation_labels(dataset: PathLike, scan: Scan) -> list[Path]:
    """Candidate ground-truth label images of a scan (per session, then per subject)."""
    root = simulation_dir(dataset)
    return [anat_dir(root, scan.subject, scan.session) / f"{scan.key}_dseg.nii.gz",
            anat_dir(root, scan.subject, None) / f"sub-{scan.subject}_dseg.nii.gz"]



# --------------------------------------------------------------------------- issue 16: the exported dataset
def export_files(out: PathLike) -> dict[str, Path]:
    """What ``defacebench export`` keeps beside ``OUT`` (in ``OUT_defacebench/``, never shared: it shows faces):
    ``side`` (that folder), ``record`` (export.json: settings a rerun must match), ``study`` (where it defaces),
    ``table`` (export.tsv: every exported image), ``report`` (export_qc.html)."""
    side = Path(out).parent / f"{Path(out).name}_defacebench"
    return {"side": side, "record": side / "export.json", "study": side / "study", "table": side / "export.tsv",
            "report": side / "export_qc.html"}


# --------------------------------------------------------------------------- issue 17: sessions
def sessions_table(dataset: PathLike, subject: str) -> Path:
    """``DATASET/sub-X/sub-X_sessions.tsv``: a person's sessions and their ages (BIDS)."""
    return Path(dataset) / f"sub-{subject}" / f"sub-{subject}_sessions.tsv"
