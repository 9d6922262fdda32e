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

#: A voxel of the MNI grid counts as replaced when its interpolated region mask reaches this
#: (all its neighbours replaced): at 0.5, voxels on the region's edge mixed in the person's
#: own kept tissue and raised the own-face correlation.
INSIDE_REGION = 0.999


def to_mni_grid(img: nib.Nifti1Image, to_mni: np.ndarray, resolution_mm: int = 2) -> np.ndarray:
    """An image of a scan moved onto the MNI head grid through its brain registration (linear)."""
    target = mni_head(resolution_mm)
    return resample_to(img, to_mni, target.affine, target.shape, order=1)


def _scan_in_mni(study: str | Path, subject, method: str, resolution_mm: int) -> tuple[nib.Nifti1Image, np.ndarray, np.ndarray]:
    """(raw image, its brain registration, the method's region in the MNI head grid) of one scan."""
    files = layout.scan_files(study, subject, [method])
    to_mni = load_transform(files["to_mni"])
    # wholly inside the region: a voxel interpolated across its edge mixes in the kept own tissue
    region = to_mni_grid(nib.load(str(files[f"{method}_mask"])), to_mni, resolution_mm) >= INSIDE_REGION
    return load_image(subject.path, reorient=False), to_mni, region


def own_face_control(study: str | Path, subjects: Sequence, method: str, noise_fraction: float = 0.05, seed: int = 0,
                     resolution_mm: int = 2) -> dict[str, object]:
    """The positive control of :func:`own_face_correlations`: each raw head with fresh noise
    (``noise_fraction`` of its 99th percentile) in place of the refaced image, over the
    method's regions: the same face, so it shows how far own-face correlation can stand
    above other-face correlation in this cohort."""
    rng = np.random.default_rng(seed)
    noisy, own, regions = [], [], []
    for subject in subjects:
        img, to_mni, region = _scan_in_mni(study, subject, method, resolution_mm)
        data = np.asarray(img.dataobj, dtype=np.float32)
        sigma = noise_fraction * float(np.percentile(data, 99))
        own.append(to_mni_grid(img, to_mni, resolution_mm))
        noisy.append(to_mni_grid(nib.Nifti1Image(data + rng.normal(0, sigma, data.shape).astype(np.float32), img.affine), to_mni, resolution_mm))
        regions.append(region)
    correlations = region_correlations(noisy, own, regions)
    return {"correlations": correlations, **own_face_excess(correlations), "chance": 1.0 / max(1, len(subjects))}


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
        img, to_mni, region = _scan_in_mni(study, subject, method, resolution_mm)
        own.append(to_mni_grid(img, to_mni, resolution_mm))
        refaced.append(to_mni_grid(nib.load(str(layout.scan_files(study, subject, [method])[f"{method}_defaced"])), to_mni, resolution_mm))
        regions.append(region)
    correlations = region_correlations(refaced, own, regions)
    return {"correlations": correlations, **own_face_excess(correlations), "chance": 1.0 / max(1, len(subjects))}
