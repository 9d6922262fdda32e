"""fsl_deface (BigFoV): subject brain -> MNI brain 12 DOF, MNI box mask, nothing within 7 mm of the brain.

Differs from FSL: BET is replaced by deepbet, FLIRT (correlation ratio) by ANTs (Mattes
MI) at 4 mm, and the boxes are evaluated analytically at every subject voxel's MNI
position instead of resampling a 1 mm MNI mask (binary, no trilinear edge).
"""

from __future__ import annotations

import numpy as np

from defacebench.deface.context import SubjectContext
from defacebench.deface.mni_regions import FSL_BRAIN_MARGIN_MM, distance_to_mni_brain, fsl_boxes

NAME = "fsl"
NEEDS = ("brain", "to_mni")


def mni_removal(coords: np.ndarray) -> np.ndarray:
    """fsl_deface's removal region at MNI mm ``coords`` (bool)."""
    region = fsl_boxes(coords, bigfov=True)
    region &= distance_to_mni_brain(coords, region) > FSL_BRAIN_MARGIN_MM
    return region


def removal_mask(ctx: SubjectContext) -> np.ndarray:
    """Fraction removed per voxel (0/1) on the subject grid."""
    return mni_removal(ctx.mni_coordinates()).astype(np.float32)
