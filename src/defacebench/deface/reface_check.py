"""Does a refaced region still look like its person? Own-face versus other-face correlation on a cohort.

Every person's refaced image and raw head are moved to MNI space (their brain
registration, 2 mm head grid); refaced image i is correlated with every person j's own
head over region i (:func:`defacebench.deface.refacing.region_correlations`). A refacer that
leaves nothing of the face correlates with its own person's face no better than with
another's (excess ~0, rank-1 at chance, 1 / N). The measurement needs people whose faces
differ: on a cohort drawn from one base head it can only show that the pipeline runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

from defacebench import layout
from defacebench.deface.refacing import own_face_excess, region_correlations
from defacebench.imaging.registration import load_transform
from defacebench.imaging.resample import resample_to
from defacebench.imaging.templates import mni_head
from defacebench.io.nifti import load_image


def to_mni_grid(img: nib.Nifti1Image, to_mni: np.ndarray, resolution_mm: int = 2) -> np.ndarray:
    """An image of a scan moved onto the MNI head grid through its brain registration (linear)."""
    target = mni_head(resolution_mm)
    return resample_to(img, to_mni, target.affine, target.shape, order=1)


def own_face_correlations(study: str | Path, subjects: Sequence, method: str, resolution_mm: int = 2) -> dict[str, object]:
    """Own-face and other-face correlations of ``method``'s refaced regions over ``subjects``.

    Returns
    -------
    dict
        ``correlations`` (N x N, row i: refaced image i against every person's own head over
        region i), ``own``, ``other``, ``excess`` (own - other), ``rank1`` (share of refaced
        images most like their own person; 1 / N is chance) and ``chance``.
    """
    refaced, own, regions = [], [], []
    for subject in subjects:
        files = layout.scan_files(study, subject, [method])
        to_mni = load_transform(files["to_mni"])
        own.append(to_mni_grid(load_image(subject.path, reorient=False), to_mni, resolution_mm))
        refaced.append(to_mni_grid(nib.load(str(files[f"{method}_defaced"])), to_mni, resolution_mm))
        regions.append(to_mni_grid(nib.load(str(files[f"{method}_mask"])), to_mni, resolution_mm) >= 0.5)
    correlations = region_correlations(refaced, own, regions)
    return {"correlations": correlations, **own_face_excess(correlations), "chance": 1.0 / max(1, len(subjects))}
