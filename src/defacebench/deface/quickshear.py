"""quickshear: cut below the plane through the two most anterior lower-hull vertices of the brain.

The brain mask is reoriented to RPS, projected onto the sagittal plane; the lower
convex hull of its outline gives a line through its two most anterior vertices, shifted
down by ``buffer`` voxels; everything below it (anterior part) is removed. The package's
loop runs over ``shape[2]`` instead of ``shape[1]`` and pairs cut heights with the wrong
indices when the positive heights are not a prefix, which breaks non-cubic grids; this
module implements the documented algorithm with the package's own edge and hull
functions and loops over the anterior-posterior axis. On cubic grids it equals the
package (tested). The buffer is in voxels, as in quickshear.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np

from defacebench.deface.context import SubjectContext

NAME = "quickshear"
NEEDS = ("brain",)
BUFFER_VOXELS = 10


def shear_removal(brain_mask: np.ndarray, affine: np.ndarray, buffer: float = BUFFER_VOXELS) -> np.ndarray:
    """Boolean removal mask of quickshear on the brain mask's grid."""
    import quickshear as qs

    src = nib.io_orientation(affine)
    rps = nib.orientations.axcodes2ornt("RPS")
    to_rps = nib.orientations.ornt_transform(src, rps)
    from_rps = nib.orientations.ornt_transform(rps, src)
    mask_rps = nib.orientations.apply_orientation(np.asarray(brain_mask) > 0, to_rps)
    low = qs.convex_hull(qs.edge_mask(mask_rps))
    if low.ndim != 2 or low.shape[1] < 2:
        raise ValueError("quickshear: brain mask outline too small for a hull")
    xdiffs, ydiffs = np.diff(low)
    slope = ydiffs[0] / xdiffs[0]
    yint = low[1][0] - (low[0][0] * slope) - buffer
    ys = np.arange(mask_rps.shape[1]) * slope + yint
    removal = np.zeros(mask_rps.shape, dtype=bool)
    for x, y in enumerate(ys):
        if y > 0:
            removal[:, x, : int(y)] = True
    return nib.orientations.apply_orientation(removal, from_rps).astype(bool)


def removal_mask(ctx: SubjectContext) -> np.ndarray:
    """Fraction removed per voxel (0/1) on the subject grid."""
    return shear_removal(ctx.brain(), ctx.affine).astype(np.float32)
