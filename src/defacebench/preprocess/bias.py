"""N4 bias field: estimated once per scan at low resolution, applied to every derived image.

N4 at 1 mm costs 24-50 s per head (docs/preprocessing.md), and the bias field is smooth,
so it is estimated on the head block-averaged to about ``resolution_mm`` (10 mm by
default), cropped to the head's bounding box, inside a head mask, with ANTsPy's N4
(4 levels x 30 iterations, B-spline mesh 1 -> 8 spans). N4's cost grows with voxels x
iterations. Its log is interpolated back to the native grid (separable linear
interpolation), and every image derived from the scan (raw, skull-stripped, defaced,
face-only) is divided by that same field. The study fits it per compartment
(:func:`compartment_bias_field`: brain, rest of the head) so that brain ageing cannot
reach the face's correction.

On a 1 mm head (pydeface's mean head) with a known synthetic field the recovered field
correlates with it at r = 0.984 (8 mm, 4 x 50 iterations: 0.987 at 2.6 times the cost;
full-resolution N4 with shrink 6: 0.995 at 5-10 times the cost). See docs/preprocessing.md.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from defacebench.imaging.blocks import block_mean
from defacebench.imaging.masks import tissue_mask
from defacebench.imaging.percentile import percentile
from defacebench.io.errors import StageError
from defacebench.io.forked import Forked

ITK_THREADS = "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"
#: Default voxel size (mm) at which the bias field is estimated.
BIAS_RESOLUTION_MM = 10.0
#: N4 iterations per fitting level (each level doubles the B-spline mesh).
N4_ITERATIONS: tuple[int, ...] = (30, 30, 30, 30)
#: The head outside the brain is a thin shell plus the face and neck: its fit stops two
#: levels earlier (mesh 1 -> 2 spans, ~100 mm; the scanner's bias is that smooth).
#: Measured on a simulated head at 56 and 96 years (no face ageing, deepbet masks): with
#: 4 levels the field over the face differed 0.88-1.10x between the two ages (the brain
#: mask's outline, which follows atrophy, changes what the shell fit sees), with 3 levels
#: 0.99-1.02x, with 2 levels 0.998-1.005x.
NON_BRAIN_N4_ITERATIONS: tuple[int, ...] = (30, 30)


@dataclass
class BiasField:
    """A low-resolution N4 bias field and how to bring it back to the native grid.

    Attributes
    ----------
    log_field : ndarray
        Natural log of the field on the block-averaged grid.
    factors : tuple of int
        Block size (native voxels per low-resolution voxel) along each axis.
    shape : tuple of int
        Native grid shape.
    """

    log_field: np.ndarray
    factors: tuple[int, int, int]
    shape: tuple[int, int, int]

    def full(self) -> np.ndarray:
        """The multiplicative field on the native grid (float32, positive)."""
        out = self.log_field.astype(np.float32)
        for axis, (n, k) in enumerate(zip(self.shape, self.factors)):
            weights = _linear_weights(n, out.shape[axis], k)
            out = np.moveaxis(np.tensordot(weights, out, axes=([1], [axis])), 0, axis)
        return np.exp(out, dtype=np.float32)

    def correct(self, data: np.ndarray) -> np.ndarray:
        """``data`` divided by the field (float32)."""
        return np.asarray(data, dtype=np.float32) / self.full()


def _linear_weights(n_out: int, n_in: int, factor: int) -> np.ndarray:
    """(n_out, n_in) linear interpolation matrix from block centres to native voxels (clamped ends)."""
    pos = (np.arange(n_out, dtype=np.float64) - (factor - 1) / 2.0) / factor
    pos = np.clip(pos, 0, n_in - 1)
    lo = np.minimum(np.floor(pos).astype(int), max(n_in - 2, 0))
    frac = pos - lo
    weights = np.zeros((n_out, n_in), dtype=np.float32)
    rows = np.arange(n_out)
    weights[rows, lo] += (1 - frac).astype(np.float32)
    if n_in > 1:
        weights[rows, lo + 1] += frac.astype(np.float32)
    return weights


def block_factors(voxel_mm: Sequence[float], resolution_mm: float) -> tuple[int, int, int]:
    """Native voxels per block along each axis so blocks are about ``resolution_mm`` wide."""
    return tuple(max(1, int(round(resolution_mm / float(v)))) for v in voxel_mm)  # type: ignore[return-value]


def estimate_bias_field(
    data: np.ndarray,
    voxel_mm: Sequence[float],
    mask: np.ndarray | None = None,
    resolution_mm: float = BIAS_RESOLUTION_MM,
    iterations: Sequence[int] = N4_ITERATIONS,
) -> BiasField:
    """Estimate the N4 bias field of a head at low resolution.

    Parameters
    ----------
    data : ndarray
        The head image on its native grid (RAS, float).
    voxel_mm : sequence of float
        Native voxel sizes.
    mask : ndarray, optional
        Fit the field to these voxels only (e.g. the brain, or the head outside it; no
        air); default: the whole head (:func:`~defacebench.imaging.masks.tissue_mask`).
    resolution_mm : float
        Approximate voxel size of the estimation grid.
    iterations : sequence of int
        N4 iterations per fitting level.

    Raises
    ------
    StageError
        Empty head mask, or ANTs failed.
    """
    import ants

    factors = block_factors(voxel_mm, resolution_mm)
    if mask is None:
        small = block_mean(data, factors)
        # the head mask at half the native resolution (cheap) and then averaged into blocks:
        # sharper than a mask of the 8 mm image (field r 0.989 vs 0.983 on a synthetic field)
        half = tuple(2 if f % 2 == 0 else 1 for f in factors)
        mask_half = tissue_mask(block_mean(data, half))
        small_mask = block_mean(mask_half.astype(np.float32), tuple(f // h for f, h in zip(factors, half))) > 0.5
        small_mask = small_mask[tuple(slice(0, n) for n in small.shape)]
    else:
        # blocks mostly inside ``mask``, each the mean of its ``mask`` voxels only: nothing
        # outside the mask (not even a block's other voxels) shapes the field
        inside = np.asarray(mask, dtype=bool)
        weight = block_mean(inside.astype(np.float32), factors)
        small = block_mean(np.where(inside, np.asarray(data, dtype=np.float32), 0), factors) / np.maximum(weight, np.float32(1e-6))
        small_mask = weight > 0.5
    if small_mask.sum() < 27:
        raise StageError(f"head mask too small for bias correction ({int(small_mask.sum())} voxels at {resolution_mm:g} mm)")
    spacing = tuple(float(v) * f for v, f in zip(voxel_mm, factors))
    # N4's cost grows with the voxels it sees: crop to the head's bounding box (+1 voxel)
    # and extend the field outside it from its edge.
    nonzero = np.argwhere(small_mask)
    lo = np.maximum(nonzero.min(axis=0) - 1, 0)
    hi = np.minimum(nonzero.max(axis=0) + 2, small.shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    small_box, mask_box = small[box], small_mask[box]
    # N4 works on positive intensities; keep the field independent of a global scale.
    scale = float(np.percentile(small_box[mask_box], 50)) or 1.0
    # One ITK thread: N4's multi-threaded sums differ in their last digits with the thread
    # count. ITK latches the count at its first use in a process, so set it before any ANTs call
    # (as registration.register does); the engine's workers start with one thread anyway.
    old_threads = os.environ.get(ITK_THREADS)
    os.environ[ITK_THREADS] = "1"
    image = ants.from_numpy(np.maximum(small_box / scale, 0).astype(np.float32), spacing=spacing)
    weight = ants.from_numpy(mask_box.astype(np.float32), spacing=spacing)
    try:
        field = ants.n4_bias_field_correction(
            image, mask=weight, shrink_factor=1, return_bias_field=True, convergence={"iters": list(iterations), "tol": 1e-7}
        ).numpy()
    except Exception as exc:
        raise StageError(f"N4 bias correction failed ({type(exc).__name__}: {exc})") from exc
    finally:
        if old_threads is None:
            os.environ.pop(ITK_THREADS, None)
        else:
            os.environ[ITK_THREADS] = old_threads
    if not np.all(np.isfinite(field)) or np.any(field <= 0):
        raise StageError("N4 returned a non-positive or non-finite bias field")
    log_field = np.log(field).astype(np.float32)
    log_field -= np.float32(np.median(log_field[mask_box]))
    log_field = np.pad(log_field, [(int(a), int(n - b)) for a, b, n in zip(lo, hi, small.shape)], mode="edge")  # median field 1 inside the head: intensities keep their scale
    return BiasField(log_field, factors, tuple(data.shape[:3]))  # type: ignore[arg-type]


def compartment_bias_field(
    data: np.ndarray,
    voxel_mm: Sequence[float],
    brain: np.ndarray,
    resolution_mm: float = BIAS_RESOLUTION_MM,
    iterations: Sequence[int] = N4_ITERATIONS,
    non_brain_iterations: Sequence[int] = NON_BRAIN_N4_ITERATIONS,
) -> np.ndarray:
    """One multiplicative field per scan from two N4 fits: the brain's inside the brain mask,
    the rest of the head's outside it (float32, native grid).

    N4 fitted to the whole head absorbs part of the brain's age-related darkening (grey and
    white matter lose T1 contrast) into its field, and that field also divides the face:
    measured on a simulated head aged 56 and 96 with no face ageing, the whole-head field
    over the face differed by 0.90-1.15x between the two ages, enough for the CNN to read
    age from face-only images (test MAE 65 % below the null). Fitted per compartment,
    brain changes cannot reach the face's correction nor face changes the brain's. Every
    image of the scan is still divided by this one field.
    """
    data = np.asarray(data, dtype=np.float32)
    brain = np.asarray(brain, dtype=bool)
    # the two fits are independent: the second on the other core when there is one (N4 holds the GIL)
    import ants  # noqa: F401  imported once, here, not in the helper and again here

    outside_fit = Forked(_non_brain_fit, data, voxel_mm, brain, resolution_mm, non_brain_iterations)
    inside = estimate_bias_field(data, voxel_mm, mask=brain, resolution_mm=resolution_mm, iterations=iterations).full()
    outside = outside_fit.result().full()
    return np.where(brain, inside, outside).astype(np.float32)


def _non_brain_fit(data: np.ndarray, voxel_mm: Sequence[float], brain: np.ndarray, resolution_mm: float, iterations: Sequence[int]) -> BiasField:
    """The field of the head outside the brain (:func:`non_brain_head`)."""
    return estimate_bias_field(data, voxel_mm, mask=non_brain_head(data, brain), resolution_mm=resolution_mm, iterations=iterations)


def non_brain_head(data: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """Head voxels outside the brain mask, found without looking at the brain's intensities.

    The brain is filled with the non-brain tissue's 99th percentile before :func:`~defacebench.imaging.masks.tissue_mask`
    (at half resolution), so the threshold and the outline do not change with the brain.
    """
    tissue = data[~brain]
    filled = np.where(brain, np.float32(percentile(tissue, 99)) if tissue.size else np.float32(1), data)
    half = tissue_mask(filled[::2, ::2, ::2])
    head = np.repeat(np.repeat(np.repeat(half, 2, 0), 2, 1), 2, 2)[: data.shape[0], : data.shape[1], : data.shape[2]]
    return head & ~brain
