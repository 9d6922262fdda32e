"""What every layout module shares: the scan protocol, pipeline names, transform suffixes, ``anat_dir``."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from defacebench.io.bids import subject_anat_dir

PathLike = str | Path

#: Name of the BIDS derivatives pipeline folder defacebench writes.
PIPELINE = "defacebench"
#: Name of the simulator's ground-truth derivatives folder inside a simulated dataset.
SIMULATION_PIPELINE = "simulation"

XFM_SUFFIX = "from-T1w_to-MNI152NLin2009aSym_mode-image_xfm.txt"
HEAD_XFM_SUFFIX = "from-T1w_to-MNI152NLin2009aSym_desc-head9dof_mode-image_xfm.txt"
PYDEFACE_XFM_SUFFIX = "from-pydeface_to-T1w_mode-image_xfm.txt"


class Scan(Protocol):
    """What layout needs of a scan: BIDS subject and session labels and the scan key."""

    subject: str
    session: str | None

    @property
    def key(self) -> str: ...


def anat_dir(root: PathLike, subject: str, session: str | None = None) -> Path:
    """``root/sub-X[/ses-Y]/anat``."""
    return subject_anat_dir(root, subject, session)


