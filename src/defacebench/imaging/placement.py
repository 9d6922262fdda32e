"""A subject -> MNI placement that does not follow brain atrophy: the intracranial cavity's outline.

The brain registration (:meth:`defacebench.deface.context.SubjectContext.subject_to_mni`,
brain intensities to the MNI brain, 12 DOF) follows atrophy: as the brain shrinks, the fit
moves and scales, and everything outside the brain (the face) moves in MNI space with age.
The inside of the skull does not shrink with age, so registering the cavity's outline (a
smoothed binary mask) to the MNI brain mask places the head by something age does not
change, while keeping the brain about as well aligned.

It is only as atrophy-invariant as the mask it is given: a true intracranial mask (brain plus
all CSF, such as the simulator's ground truth) gives a placement that does not follow age, a
brain extractor's mask (deepbet) shrinks with the brain and brings the drift back, closing and
filling notwithstanding. Measured in docs/face-placement.md. Not used by default anywhere;
callers opt in.
"""

from __future__ import annotations

import functools

import nibabel as nib
import numpy as np
from scipy import ndimage

from defacebench.imaging.registration import register
from defacebench.imaging.templates import mni_brain_mask, pydeface_to_mni

__all__ = ["SMOOTH_MM", "face_placement_transform", "head_placement_transform", "intracranial_mask", "smoothed_mask"]

#: Gaussian sigma (mm) applied to both masks before registration: gives the mean-squares
#: metric a gradient a few voxels wide around each outline.
SMOOTH_MM = 3.0


def smoothed_mask(mask: np.ndarray, affine: np.ndarray, sigma_mm: float = SMOOTH_MM) -> np.ndarray:
    """A binary mask as float32, Gaussian-smoothed by ``sigma_mm`` (per axis in voxels from the affine)."""
    zooms = np.linalg.norm(np.asarray(affine)[:3, :3], axis=0)
    return ndimage.gaussian_filter(np.asarray(mask, dtype=np.float32), sigma=tuple(float(sigma_mm) / zooms))


def intracranial_mask(brain_mask: np.ndarray, closing_iterations: int = 2) -> np.ndarray:
    """The cavity from a brain mask: closed (bridges sulcal CSF a brain extractor leaves out), holes filled.

    A simulator's intracranial ground truth passes through nearly unchanged.
    """
    mask = np.asarray(brain_mask) > 0
    if closing_iterations > 0:
        padded = np.pad(mask, closing_iterations)
        closed = ndimage.binary_closing(padded, iterations=int(closing_iterations))
        mask = closed[(slice(closing_iterations, -closing_iterations),) * mask.ndim] | mask
    return ndimage.binary_fill_holes(mask)


@functools.lru_cache(maxsize=2)
def _mni_cavity(sigma_mm: float) -> nib.Nifti1Image:
    ref = mni_brain_mask()
    return nib.Nifti1Image(smoothed_mask(np.asarray(ref.dataobj) > 0, ref.affine, sigma_mm), ref.affine)


def face_placement_transform(
    img: nib.Nifti1Image,
    brain_mask: np.ndarray,
    kind: str = "affine",
    sigma_mm: float = SMOOTH_MM,
    closing_iterations: int = 2,
    resolution_mm: float = 4.0,
    iterations: tuple[int, ...] = (100, 50),
    seed: int = 0,
) -> np.ndarray:
    """Subject world -> MNI world, fitted on the intracranial cavity's outline (atrophy-invariant).

    Parameters
    ----------
    img : nibabel.Nifti1Image
        The scan; only its grid (affine, shape) is used.
    brain_mask : ndarray
        Intracranial mask on ``img``'s grid (brain plus CSF out to the skull's inner
        surface). A brain extractor's mask is accepted but follows atrophy, and so will
        the placement.
    kind : {"affine", "affine9", "similarity", "rigid"}
        Degrees of freedom (see :func:`defacebench.imaging.registration.register`); 12 by
        default, the one measured to keep the brain aligned.
    sigma_mm : float
        Smoothing of both masks.
    closing_iterations : int
        Closing of ``brain_mask`` before its holes are filled (:func:`intracranial_mask`).
    resolution_mm, iterations, seed
        As in :func:`~defacebench.imaging.registration.register` (the brain registration's
        settings by default).

    Returns
    -------
    ndarray
        4x4 RAS matrix mapping subject world mm to MNI world mm.
    """
    mask = np.asarray(brain_mask)
    if mask.shape[:3] != tuple(img.shape[:3]):
        raise ValueError(f"brain mask shape {mask.shape} does not match the image {img.shape}")
    if not np.any(mask > 0):
        raise ValueError("brain mask is empty")
    cavity = intracranial_mask(mask, closing_iterations)
    moving = nib.Nifti1Image(smoothed_mask(cavity, img.affine, sigma_mm), img.affine)
    return register(_mni_cavity(float(sigma_mm)), moving, kind=kind, metric="meansquares",
                    resolution_mm=resolution_mm, iterations=iterations, seed=seed)


def head_placement_transform(template_to_subject: np.ndarray) -> np.ndarray:
    """Subject world -> MNI world through the whole-head registration of pydeface's template.

    The deface stage registers pydeface's mean head onto every scan (12 DOF, mutual
    information over the whole head: scalp, skull, face and brain;
    ``SubjectContext.pydeface_template_to_subject``). Its inverse, followed by the
    template's own placement in MNI space (:func:`~defacebench.imaging.templates.pydeface_to_mni`),
    places the scan by its head rather than its brain. Heads do not shrink with age, so the
    face does not drift in MNI space as the brain atrophies (docs/face-placement.md,
    "Head placement": r = -0.02 to -0.18 against -0.52 to -0.65 for the brain registration,
    three simulated cohorts), and it needs no intracranial mask, so it runs on real data.

    Parameters
    ----------
    template_to_subject : ndarray
        4x4 RAS matrix, pydeface template world mm -> subject world mm.

    Returns
    -------
    ndarray
        4x4 RAS matrix, subject world mm -> MNI world mm.
    """
    matrix = np.asarray(template_to_subject, dtype=float)
    if matrix.shape != (4, 4) or not np.all(np.isfinite(matrix)) or abs(np.linalg.det(matrix[:3, :3])) < 1e-6:
        raise ValueError("template -> subject transform is not an invertible finite 4x4 matrix")
    return pydeface_to_mni() @ np.linalg.inv(matrix)
