"""mri_reface-style refacing: the average face and ears registered to the subject, intensity- and noise-matched.

Steps (Schwarz et al. 2021's mri_reface, reimplemented with open parts):

1. affine: the MNI head onto the subject through the shared brain registration (12 DOF);
   mri_reface fits the head (reg_aladin), but a head affine carries the person's face size
   and position onto the average face (measured: docs/defacing.md, "Refacing");
2. nonlinear: ANTs SyN (at :data:`SYN_RESOLUTION_MM`) of the MNI head onto the subject, its
   metric restricted to the subject's head outside the brain and outside the face and ear
   labels, so the average face follows the head around it without copying the person's
   face (:func:`defacebench.imaging.nonlinear.syn_coordinates`); inside the labels the warp
   fades to the brain affine over :data:`SYN_FADE_MM` (:func:`fade_into_labels`), so the
   face meets the person's head at the region's edge but its inside is placed by the brain alone;
3. the face (:data:`FACE_BOX`) and ears (:data:`EAR_BOX`) of the average face shell
   (:func:`defacebench.imaging.shell.reface_shell`, MNI mm) are carried to the subject
   through that warp; a tolerance band of :data:`TOLERANCE_MM` around the subject's brain
   (and the shell's own 10 mm MNI margin) is never replaced;
4. the shell's tissue is mapped onto the intensity distribution (quantiles) of the
   subject's own non-brain head tissue outside the replaced region;
5. noise: Gaussian noise of the subject's tissue noise level (from neighbour differences)
   on the tissue, Rayleigh noise of the image's background level on the air.

Differs from mri_reface: its MATLAB runtime, templates (face, air-behind-head and ear
labels) and parameters are not used; the air behind the head is not replaced; the face and
ear labels are MNI boxes on defacebench's shell; the affine is the brain's, not the head's,
the face itself does not steer the warp and the warp fades out inside the face and ears;
the registrations are ANTs (Mattes MI);
the noise model is simpler (mri_reface matches local noise).
"""

from __future__ import annotations

import zlib

import numpy as np
from scipy import ndimage

from defacebench.deface.context import SubjectContext
from defacebench.deface.mni_regions import in_box
from defacebench.deface.refacing import AFNI_SHELL_TISSUE_MIN, Refacing, voxel_sizes
from defacebench.imaging.nonlinear import syn_coordinates
from defacebench.imaging.resample import sample_world, world_coordinates
from defacebench.imaging.shell import reface_shell
from defacebench.imaging.templates import mni_head

NAME = "mrireface"
NEEDS = ("brain", "to_mni")

#: mri_reface's labels as MNI boxes (|x|, y, z mm) on the shell: the face in front of the
#: ears below the forehead's top, and the ears.
FACE_BOX = ((0.0, np.inf), (20.0, np.inf), (-142.0, 40.0))
EAR_BOX = ((55.0, np.inf), (-60.0, 25.0), (-80.0, 15.0))
#: Never replaced within this distance of the subject's brain mask (mri_reface: 5-11 mm).
TOLERANCE_MM = 5.0
SYN_RESOLUTION_MM = 6.0
SYN_ITERATIONS = (40, 20)
#: The SyN metric sees the subject's head, dilated by this much (the face's outline), minus the brain.
SYN_MASK_DILATION_MM = 8.0
#: Labels are looked for this far around their affine position (the warp moves them less).
SYN_MAX_SHIFT_MM = 25.0
#: Inside the face and ear labels the warp fades linearly to the brain affine over this depth.
#: The full warp carried the shape of the person's head around the face into the average face
#: (own-face excess 0.012, rank-1 0.25 on 12 simulated people; 0.004 and chance at 10 mm;
#: docs/defacing.md). ``np.inf`` keeps the full warp (mri_reface's fit).
SYN_FADE_MM = 10.0


def replaced_labels(coords: np.ndarray) -> np.ndarray:
    """mri_reface's face and ear labels at MNI mm ``coords`` (bool)."""
    return in_box(coords, FACE_BOX) | in_box(coords, EAR_BOX)


def _upsample(coords_small: np.ndarray, small_affine: np.ndarray, affine: np.ndarray, shape: tuple[int, int, int],
              box: tuple[slice, slice, slice]) -> np.ndarray:
    """A coordinate map on a downsampled grid, trilinearly interpolated at the voxels of ``box``
    of a grid of ``shape`` (NaN elsewhere: no label matches there)."""
    vox = np.linalg.inv(small_affine) @ affine
    axes = [np.arange(n, dtype=np.float32)[b] for n, b in zip(shape, box)]
    index = np.stack(np.meshgrid(*axes, indexing="ij"))
    points = np.tensordot(vox[:3, :3].astype(np.float32), index, axes=1) + vox[:3, 3].astype(np.float32)[:, None, None, None]
    out = np.full((3, *shape), np.nan, dtype=np.float32)
    for axis, c in enumerate(coords_small):
        out[axis][box] = ndimage.map_coordinates(c, points, order=1, mode="nearest", prefilter=False)
    return out


def _grown(mask: np.ndarray, mm: float, voxel_mm: float) -> np.ndarray:
    """``mask`` dilated by about ``mm``, on a 2x-strided copy (a metric mask needs no finer edge)."""
    small = ndimage.binary_dilation(mask[::2, ::2, ::2], iterations=max(1, int(round(mm / (2 * voxel_mm)))))
    full = np.repeat(np.repeat(np.repeat(small, 2, 0), 2, 1), 2, 2)[: mask.shape[0], : mask.shape[1], : mask.shape[2]]
    return full | mask


def fade_into_labels(coords: np.ndarray, affine_coords: np.ndarray, voxel_mm: tuple[float, float, float],
                     fade_mm: float = SYN_FADE_MM) -> np.ndarray:
    """A warp's MNI coordinates blended into the affine's inside the face and ear labels.

    ``coords`` (the warp) and ``affine_coords`` (the brain affine), both (3, *shape) MNI mm on
    one grid of ``voxel_mm``: the warp is kept outside the labels (placed by the affine) and
    at their edge, and fades linearly to the affine with depth inside them, reaching it at
    ``fade_mm``. The average face then meets the person's head at the region's edge while
    its inside is a function of the brain registration alone.
    """
    if not np.isfinite(fade_mm):
        return coords
    labels = replaced_labels(affine_coords)
    depth = ndimage.distance_transform_edt(labels, sampling=voxel_mm)
    weight = np.clip(1.0 - depth / fade_mm, 0.0, 1.0).astype(np.float32) if fade_mm > 0 else (~labels).astype(np.float32)
    return (affine_coords + weight * (coords - affine_coords)).astype(np.float32)


def mni_coordinates(ctx: SubjectContext) -> np.ndarray:
    """MNI mm of the subject voxels through the brain affine and the SyN warp, (3, *shape);
    NaN beyond :data:`SYN_MAX_SHIFT_MM` of the labels' affine position (the warp moves less)."""
    affine_start = np.linalg.inv(ctx.subject_to_mni())  # MNI -> subject
    voxel_mm = voxel_sizes(ctx)
    grown = _grown(ctx.head(), SYN_MASK_DILATION_MM, min(voxel_mm))
    # the face and ears themselves do not steer the warp (it would copy the person's face
    # shape onto the average one): it fits the head around them and carries them along
    labels = replaced_labels(world_coordinates(ctx.affine, ctx.shape, np.linalg.inv(affine_start)))
    coords_small, small_affine = ctx._timed(
        "register_syn_head", lambda: syn_coordinates(ctx.img, mni_head(2), affine_start, grown & ~ctx.brain() & ~labels,
                                                       resolution_mm=SYN_RESOLUTION_MM, iterations=SYN_ITERATIONS))
    small_mm = tuple(float(v) for v in np.linalg.norm(small_affine[:3, :3], axis=0))
    coords_small = fade_into_labels(coords_small, world_coordinates(small_affine, coords_small.shape[1:], ctx.subject_to_mni()), small_mm)
    if not labels.any():
        return np.full((3, *ctx.shape), np.nan, dtype=np.float32)
    pad = [int(np.ceil(SYN_MAX_SHIFT_MM / v)) for v in voxel_mm]
    low, high = np.argwhere(labels).min(axis=0), np.argwhere(labels).max(axis=0)
    box = tuple(slice(max(0, lo - p), min(n, hi + 1 + p)) for lo, hi, p, n in zip(low, high, pad, ctx.shape))
    return _upsample(coords_small, small_affine, ctx.affine, ctx.shape, box)  # type: ignore[arg-type]


def distance_to_brain_mm(brain: np.ndarray, where: np.ndarray, voxel_mm: tuple[float, float, float], limit_mm: float) -> np.ndarray:
    """Distance (mm) to the brain mask where it matters: exact up to ``limit_mm`` in the box around ``where``."""
    out = np.full(brain.shape, np.inf, dtype=np.float32)
    if not where.any():
        return out
    pad = [int(np.ceil(limit_mm / v)) + 1 for v in voxel_mm]
    low, high = np.argwhere(where).min(axis=0), np.argwhere(where).max(axis=0)
    box = tuple(slice(max(0, lo - p), hi + 1 + p) for lo, hi, p in zip(low, high, pad))
    out[box] = ndimage.distance_transform_edt(~brain[box], sampling=voxel_mm)
    return out


def noise_levels(data: np.ndarray, tissue: np.ndarray, head: np.ndarray) -> tuple[float, float]:
    """(tissue sigma, background sigma) of a magnitude image.

    The background's Rayleigh sigma is measured in the air away from the head; in tissue
    (high signal) the same sigma is Gaussian, so it is the tissue's too. A background
    without noise (masked or already zeroed) falls back to robust neighbour differences in
    ``tissue`` (which include some anatomy, so they overestimate).
    """
    far = ~ndimage.binary_dilation(head[::2, ::2, ::2], iterations=3)
    air = data[::2, ::2, ::2][far]
    background_sigma = float(np.sqrt(np.mean(air.astype(np.float64) ** 2) / 2.0)) if air.size else 0.0
    if background_sigma > 0:
        return background_sigma, background_sigma
    pairs = tissue[1:] & tissue[:-1]
    diff = (data[1:] - data[:-1])[pairs]
    tissue_sigma = float(1.4826 * np.median(np.abs(diff - np.median(diff))) / np.sqrt(2.0)) if diff.size else 0.0
    return tissue_sigma, 0.0


def match_intensities(values: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Map ``values`` onto the distribution of ``reference`` (quantile matching, 1..99 %)."""
    if values.size == 0 or reference.size == 0:
        return values.astype(np.float32)
    q = np.linspace(1, 99, 99)
    source, target = np.percentile(values, q), np.percentile(reference, q)
    return np.interp(values, source, target).astype(np.float32)


def reface(ctx: SubjectContext) -> Refacing:
    """The replaced region and its replacement on the subject grid."""
    coords = mni_coordinates(ctx)
    data, brain, head = ctx.data, ctx.brain(), ctx.head()
    labels = replaced_labels(coords)
    shell = sample_world(reface_shell(), coords, labels, order=1, cval=0.0)
    outside_shell_margin = sample_world(reface_shell(), coords, labels, order=0, cval=0.0) != 0
    voxel_mm = voxel_sizes(ctx)
    candidate = labels & outside_shell_margin & ~brain
    band = distance_to_brain_mm(brain, candidate, voxel_mm, TOLERANCE_MM) <= TOLERANCE_MM
    replaced = candidate & ~band
    fill = np.zeros(ctx.shape, dtype=np.float32)
    tissue = replaced & (shell >= AFNI_SHELL_TISSUE_MIN)
    reference_tissue = head & ~brain & ~replaced & ~band
    reference = data[reference_tissue]
    fill[tissue] = match_intensities(shell[tissue], reference)
    tissue_sigma, background_sigma = noise_levels(data, reference_tissue, head)
    rng = np.random.default_rng(zlib.crc32(np.ascontiguousarray(data[::3, ::3, ::3]).tobytes()))
    fill[tissue] += rng.normal(0.0, tissue_sigma, int(tissue.sum())).astype(np.float32)
    air = replaced & ~tissue
    fill[air] = (background_sigma * np.hypot(rng.normal(size=int(air.sum())), rng.normal(size=int(air.sum())))).astype(np.float32)
    if data.min() >= 0:
        np.maximum(fill, 0.0, out=fill)
    return Refacing(replaced.astype(np.float32), fill)


def removal_mask(ctx: SubjectContext) -> np.ndarray:
    """The replaced region (0/1) on the subject grid."""
    return reface(ctx).removal
