"""Does a refaced region still look like its person? Own-face versus other-face correlation on a cohort.

Every person's refaced image and raw head are moved to MNI space (their brain
registration, 2 mm head grid); refaced image i is correlated with every person j's own
head over region i (:func:`defacebench.deface.refacing.region_correlations`), on the voxels
inside every person's field of view. A refacer that leaves nothing of the face correlates with
its own person's face no better than with another's (excess ~0, rank-1 at chance, 1 / N). The
measurement needs people whose faces differ: on a cohort drawn from one base head it can only
show that the pipeline runs.

The comparison frame is each person's brain registration, so a replacement placed through
that registration (the same MNI image for everyone) is, by construction, no more like its own
person than anyone else; what a refacer's placement takes from the person's head beyond the
brain (which every refacer keeps) shows as excess (docs/defacing.md, "Where the own-face
correlation came from").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

from defacebench import layout
from defacebench.deface.refacing import afni_fill, own_face_excess, region_correlations, shell_on_subject
from defacebench.imaging.registration import load_transform
from defacebench.imaging.resample import resample_to, world_coordinates
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


def _scan_in_mni(study: str | Path, subject, method: str, resolution_mm: int) -> tuple[nib.Nifti1Image, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(raw image, its brain registration, the method's region on the scan's grid, that region
    and the scan's field of view in the MNI head grid) of one scan."""
    files = layout.scan_files(study, subject, [method])
    to_mni = load_transform(files["to_mni"])
    mask = nib.load(str(files[f"{method}_mask"]))
    # wholly inside the region: a voxel interpolated across its edge mixes in the kept own tissue
    region = to_mni_grid(mask, to_mni, resolution_mm) >= INSIDE_REGION
    img = load_image(subject.path, reorient=False)
    field_of_view = to_mni_grid(nib.Nifti1Image(np.ones(img.shape[:3], dtype=np.float32), img.affine), to_mni, resolution_mm) >= INSIDE_REGION
    return img, to_mni, np.asarray(mask.dataobj) > 0, region, field_of_view


def seen_by_everyone(regions: list[np.ndarray], fields_of_view: list[np.ndarray]) -> list[np.ndarray]:
    """Each region cut to the voxels inside every scan's field of view.

    Beyond a scan's field of view its head is 0 in MNI space: a region that reaches past
    another person's field of view would be compared with that person's zeros there and with
    its own person's tissue, which raised the own-face correlation (measured:
    docs/defacing.md) without any face in it.
    """
    common = np.logical_and.reduce(fields_of_view)
    return [region & common for region in regions]


def _correlate(study: str | Path, subjects: Sequence, method: str, image: Callable[[nib.Nifti1Image, object, np.ndarray], np.ndarray],
               resolution_mm: int) -> dict[str, object]:
    """Row i: ``image(raw, subject, region)`` of scan i (on its own grid) against every person's
    raw head over region i (within every field of view), all in the MNI head grid."""
    compared, own, regions, views = [], [], [], []
    for subject in subjects:
        img, to_mni, mask, region, view = _scan_in_mni(study, subject, method, resolution_mm)
        own.append(to_mni_grid(img, to_mni, resolution_mm))
        compared.append(to_mni_grid(nib.Nifti1Image(image(img, subject, mask).astype(np.float32), img.affine), to_mni, resolution_mm))
        regions.append(region)
        views.append(view)
    correlations = region_correlations(compared, own, seen_by_everyone(regions, views))
    return {"correlations": correlations, **own_face_excess(correlations), "chance": 1.0 / max(1, len(subjects))}


def own_face_control(study: str | Path, subjects: Sequence, method: str, noise_fraction: float = 0.05, seed: int = 0,
                     resolution_mm: int = 2) -> dict[str, object]:
    """The positive control of :func:`own_face_correlations`: each raw head with fresh noise
    (``noise_fraction`` of its 99th percentile) in place of the refaced image, over the
    method's regions: the same face, so it shows how far own-face correlation can stand
    above other-face correlation in this cohort."""
    rng = np.random.default_rng(seed)

    def noisy(img: nib.Nifti1Image, subject, region: np.ndarray) -> np.ndarray:
        data = np.asarray(img.dataobj, dtype=np.float32)
        return data + rng.normal(0, noise_fraction * float(np.percentile(data, 99)), data.shape).astype(np.float32)

    return _correlate(study, subjects, method, noisy, resolution_mm)


def own_face_floor(study: str | Path, subjects: Sequence, method: str, resolution_mm: int = 2) -> dict[str, object]:
    """The negative control of :func:`own_face_correlations`: over each of ``method``'s regions,
    the average face shell placed through the scan's brain registration (AFNI's fill,
    :func:`~defacebench.deface.refacing.afni_fill`), the same MNI image for everyone, so it
    carries nothing of anyone's face. Its excess is the measurement's floor: what sampling
    each scan on its own grid adds (a few ten-thousandths, docs/defacing.md)."""
    def shell(img: nib.Nifti1Image, subject, region: np.ndarray) -> np.ndarray:
        files = layout.scan_files(study, subject, [method])
        data = np.asarray(img.dataobj, dtype=np.float32)
        brain = np.asarray(nib.load(str(files["brain_mask"])).dataobj) > 0
        coords = world_coordinates(img.affine, data.shape, load_transform(files["to_mni"]))
        voxel_mm = tuple(float(v) for v in np.linalg.norm(img.affine[:3, :3], axis=0))
        fill = afni_fill(data, region, shell_on_subject(coords, region), voxel_mm, brain).fill  # type: ignore[arg-type]
        return np.where(region, fill, data)

    return _correlate(study, subjects, method, shell, resolution_mm)


def own_face_correlations(study: str | Path, subjects: Sequence, method: str, resolution_mm: int = 2) -> dict[str, object]:
    """Own-face and other-face correlations of ``method``'s refaced regions over ``subjects``.

    Returns
    -------
    dict
        ``correlations`` (N x N, row i: refaced image i against every person's own head over
        region i within every scan's field of view), ``own``, ``other``, ``excess`` (own -
        other), ``rank1`` (share of refaced images most like their own person; 1 / N is
        chance) and ``chance``.
    """
    def refaced(img: nib.Nifti1Image, subject, region: np.ndarray) -> np.ndarray:
        return np.asarray(nib.load(str(layout.scan_files(study, subject, [method])[f"{method}_defaced"])).dataobj, dtype=np.float32)

    return _correlate(study, subjects, method, refaced, resolution_mm)
