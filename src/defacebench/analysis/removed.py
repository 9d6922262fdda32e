"""What a method removed from each scan, in the raw store's placement.

The face-only store of a method is not always placed like the raw store: with
``face_placement`` ``head``, ``cut`` or ``common`` (issue 22, docs/face-placement.md) it goes
to the grid by the head registration, and ``common`` also keeps only the region every scan's
cut covers. Every analysis that asks which voxels of the *raw* image a method removed (the
removal-frequency figure, the face region of occlusion and saliency, face ablation) reads
``raw - defaced-<m>`` instead whenever the defaced store exists: the defaced image is always
placed like the raw one, and preprocessing composes it as raw minus the brain-placed face.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from defacebench.conditions import is_refacer
from defacebench.io.store import list_conditions, open_condition


class RawMinusDefaced:
    """Rows of ``raw - defaced`` (float32), read lazily from the two memory-mapped stores."""

    def __init__(self, raw: np.ndarray, defaced: np.ndarray) -> None:
        if raw.shape != defaced.shape:
            raise ValueError(f"raw store {raw.shape} and defaced store {defaced.shape} differ")
        self.raw, self.defaced, self.shape = raw, defaced, raw.shape

    def __len__(self) -> int:
        return len(self.raw)

    def __getitem__(self, index) -> np.ndarray:
        return np.asarray(self.raw[index], np.float32) - np.asarray(self.defaced[index], np.float32)


def removed_images(study_dir: str | Path, grid: str, method: str, raw: np.ndarray | None = None):
    """The tissue ``method`` removed from each scan, rows and placement of the raw store.

    ``raw - defaced-<method>`` when both stores exist and the method is a defacer (a
    refacer's defaced image holds its replacement), else the face-only store itself.
    """
    stored = list_conditions(study_dir, grid)
    if not is_refacer(method) and f"defaced-{method}" in stored and (raw is not None or "raw" in stored):
        raw = open_condition(study_dir, grid, "raw").images if raw is None else raw
        return RawMinusDefaced(raw, open_condition(study_dir, grid, f"defaced-{method}").images)
    return open_condition(study_dir, grid, f"face-{method}").images
