"""Head masks from intensity alone (no template, no model).

Two masks with two jobs, kept apart on purpose:

:func:`head_mask`
    Defacing and its QC: everything that is head, including dim tissue (fat, cartilage
    of the nose and ears), sinuses filled slice by slice. Threshold 12 % of the robust
    maximum, largest component, closed.
:func:`tissue_mask`
    Where the N4 bias field is fitted: bright tissue only (10 % of the 99th percentile,
    opened so thin dim shells do not steer the fit), holes filled. It raises when there
    is no head, because a bias fit cannot go on without one.

Folding them into one would change the N4 fit and so every condition store; see
docs/design-notes.md.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from defacebench.imaging.percentile import percentile
from defacebench.io.errors import StageError

__all__ = ["head_mask", "head_outline", "tissue_mask"]

#: Voxels of edge padding around the image for :func:`head_outline`.
OUTLINE_PAD_VOXELS = 4


def head_mask(data: np.ndarray, fraction: float = 0.12) -> np.ndarray:
    """Head tissue: above ``fraction`` of the robust maximum, largest component, holes filled."""
    positive = data[data > 0]
    if positive.size == 0:
        return np.zeros(data.shape, dtype=bool)
    threshold = fraction * percentile(positive, 99)
    mask = data > threshold
    # work on a 2x-downsampled copy for speed, then bring back to full size
    small = mask[::2, ::2, ::2]
    labels, n = ndimage.label(small)
    if n > 1:
        sizes = ndimage.sum_labels(small, labels, index=np.arange(1, n + 1))
        small = labels == (1 + int(np.argmax(sizes)))
    small = ndimage.binary_closing(small, iterations=2)
    small = np.stack([ndimage.binary_fill_holes(s) for s in small])  # slice-wise fill of the sinuses
    small = ndimage.binary_fill_holes(small)
    full = np.repeat(np.repeat(np.repeat(small, 2, 0), 2, 1), 2, 2)[: data.shape[0], : data.shape[1], : data.shape[2]]
    return (full & (data > 0.5 * threshold)) | (mask & full)


def head_outline(data: np.ndarray, brain: np.ndarray | None = None, fraction: float = 0.12) -> np.ndarray:
    """The head as a filled solid with partial volumes at the skin: 1 inside, 0 in the air, 0..1 at the skin.

    The binary :func:`head_mask` (with the brain) is computed on the image edge-padded by a
    few voxels, so a head cut by the field of view (the neck and chin, often) keeps its tissue
    up to the image border (without the padding the mask's closing erodes two voxels off every
    border). Voxels within one voxel of its surface take ``intensity / threshold`` clipped to
    0..1 (the threshold is :func:`head_mask`'s): the skin's position to a fraction of a voxel,
    as a face-only image has it, while the tissue's own intensities never enter.

    Used for the geometry control (``facemask-<m>``): a binary outline would locate the face
    only to whole voxels and so hold less geometry than the face-only image it controls.
    """
    data = np.asarray(data, dtype=np.float32)
    pad = OUTLINE_PAD_VOXELS
    inner = tuple(slice(pad, pad + n) for n in data.shape[:3])
    solid = head_mask(np.pad(data, pad, mode="edge"), fraction)[inner]
    if brain is not None:
        solid |= np.asarray(brain, dtype=bool)
    # a solid: dark cavities inside (sinuses, eyes) are 1 too, slice by slice and in 3D,
    # so only the outer skin sees intensities
    for axis in range(3):
        solid = np.moveaxis(np.stack([ndimage.binary_fill_holes(s) for s in np.moveaxis(solid, axis, 0)]), 0, axis)
    solid = ndimage.binary_fill_holes(solid)
    positive = data[data > 0]
    if positive.size == 0:
        return solid.astype(np.float32)
    threshold = fraction * percentile(positive, 99)
    core = ndimage.binary_erosion(solid, border_value=1)
    band = ndimage.binary_dilation(solid) & ~core
    out = core.astype(np.float32)
    out[band] = np.clip(data[band] / threshold, 0.0, 1.0)
    return out


def tissue_mask(data: np.ndarray, threshold_fraction: float = 0.1) -> np.ndarray:
    """Binary head mask: above ``threshold_fraction`` of the 99th percentile, opened, holes filled, largest component.

    Raises
    ------
    StageError
        When nothing is above the threshold.
    """
    data = np.asarray(data, dtype=np.float32)
    top = percentile(data, 99)
    if not np.isfinite(top) or top <= 0:
        raise StageError("no head found: the 99th intensity percentile is not positive")
    mask = ndimage.binary_opening(data > threshold_fraction * top, iterations=1)
    labels, n = ndimage.label(mask)
    if n == 0:
        raise StageError("no head found above the intensity threshold")
    sizes = ndimage.sum_labels(mask, labels, index=np.arange(1, n + 1))
    mask = labels == (int(np.argmax(sizes)) + 1)
    return ndimage.binary_fill_holes(mask)
