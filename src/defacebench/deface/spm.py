"""spm_deface: 12-parameter affine subject -> MNI, remove -1.1*y + 0.98*z + 100 < 0 (MNI mm).

Differs from SPM: spm_maff8 (affine to tissue priors) is replaced by the shared ANTs
brain -> MNI brain affine; removed voxels become 0, as SPM does for integer images
(NaN for float images in SPM).
"""

from __future__ import annotations

import numpy as np

from defacebench.deface.context import SubjectContext
from defacebench.deface.mni_regions import spm_plane

NAME = "spm"
NEEDS = ("brain", "to_mni")


def mni_removal(coords: np.ndarray) -> np.ndarray:
    """spm_deface's half-space at MNI mm ``coords`` (bool)."""
    return spm_plane(coords)


def removal_mask(ctx: SubjectContext) -> np.ndarray:
    """Fraction removed per voxel (0/1) on the subject grid."""
    return mni_removal(ctx.mni_coordinates()).astype(np.float32)
