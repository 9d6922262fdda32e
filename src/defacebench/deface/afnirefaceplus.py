"""AFNI ``@afni_refacer_run -mode_reface_plus``: the whole non-brain shell (face, ears, scalp, skull) replaced.

Everywhere the shell is non-zero (outside the 10 mm-dilated MNI brain mask and AFNI's neck
column, within the shell's grid) the input becomes the scaled, blurred shell, as in
:mod:`defacebench.deface.afnireface`; the shell's air (-1) becomes 0, so the person's
own head outline goes too. The shell is placed through the 12-DOF brain registration (why:
:func:`defacebench.deface.afnireface.reface`). Differs from AFNI as afnireface does.
"""

from __future__ import annotations

import numpy as np

from defacebench.deface.context import SubjectContext
from defacebench.deface.refacing import Refacing, afni_fill, shell_on_subject, voxel_sizes

NAME = "afnirefaceplus"
NEEDS = ("brain", "to_mni")


def reface(ctx: SubjectContext) -> Refacing:
    """The replaced region and its replacement on the subject grid."""
    shell = shell_on_subject(ctx.mni_coordinates())
    return afni_fill(ctx.data, np.ones(ctx.shape, dtype=bool), shell, voxel_sizes(ctx), ctx.brain())


def removal_mask(ctx: SubjectContext) -> np.ndarray:
    """The replaced region (0/1) on the subject grid."""
    return reface(ctx).removal
