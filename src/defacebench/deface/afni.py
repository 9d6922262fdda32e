"""AFNI @afni_refacer_run -mode_deface: head -> MNI head 9 DOF; remove the face/ears shell.

The shell is non-brain head tissue outside the 10 mm-dilated MNI brain mask within
-142 < z < -30 mm and y > -59 mm (MNI). Differs from AFNI: 3dAllineate's lpa cost is
replaced by ANTs Mattes MI at 4 mm; the 9-parameter fit is a 12-parameter affine with
its shear removed (initialised from the brain registration); the MNI head is pydeface's
mean head carried into MNI space, not AFNI's MNI152_2009 head; the shell is evaluated
analytically at each voxel's MNI position instead of resampling AFNI's shell dataset.
"""

from __future__ import annotations

import numpy as np

from defacebench.deface.context import SubjectContext
from defacebench.deface.mni_regions import AFNI_BRAIN_MARGIN_MM, afni_box, distance_to_mni_brain

NAME = "afni"
NEEDS = ("brain", "to_mni", "head_to_mni")


def mni_removal(coords: np.ndarray) -> np.ndarray:
    """AFNI's shell region at MNI mm ``coords`` (bool)."""
    region = afni_box(coords)
    region &= distance_to_mni_brain(coords, region) > AFNI_BRAIN_MARGIN_MM
    return region


def removal_mask(ctx: SubjectContext) -> np.ndarray:
    """Fraction removed per voxel (0/1) on the subject grid."""
    return mni_removal(ctx.mni_coordinates(ctx.subject_head_to_mni())).astype(np.float32)
