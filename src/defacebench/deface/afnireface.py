"""AFNI ``@afni_refacer_run -mode_reface``: AFNI's deface region filled with the scaled average face shell.

The region is the ``afni`` method's (non-brain head outside the 10 mm-dilated MNI brain
mask within -142 < z < -30 mm and y > -59 mm, through the same 9-parameter head
transform), where the shell is non-zero. There the input is replaced by the shell
(:func:`defacebench.imaging.shell.reface_shell`, sampled nearest neighbour through the
full 12-DOF brain registration) scaled by
1.222 x mean(input over the region's shell tissue) / mean(shell there), blurred FWHM
2.666 mm inside the shell's tissue; the air of the shell (-1) becomes 0.
Differs from AFNI: the shell is defacebench's own (two open heads, not AFNI's ~20), the
region's registration is the ``afni`` method's (see :mod:`defacebench.deface.afni`) and
the shell's is the brain's own (AFNI places both by its 9-DOF head fit), the input is
not unifized before the scale is measured, and the subject's own brain mask is never
replaced (AFNI relies on the MNI margin alone).
"""

from __future__ import annotations

import numpy as np

from defacebench.deface.afni import mni_removal
from defacebench.deface.context import SubjectContext
from defacebench.deface.refacing import Refacing, afni_fill, shell_on_subject, voxel_sizes

NAME = "afnireface"
NEEDS = ("brain", "to_mni", "head_to_mni")


def reface(ctx: SubjectContext) -> Refacing:
    """The replaced region and its replacement on the subject grid."""
    region = mni_removal(ctx.mni_coordinates(ctx.subject_head_to_mni()))
    # the shell through the full brain registration: the same MNI image for every person.
    # Through its 9-parameter part the shell followed the person's head where it departs from
    # the brain's shear (own-face excess 0.008 against 0.0004 on 12 simulated people,
    # docs/defacing.md); the 12 parameters are the kept brain's, so they tell nothing new.
    shell = shell_on_subject(ctx.mni_coordinates(), region)
    return afni_fill(ctx.data, region, shell, voxel_sizes(ctx), ctx.brain())


def removal_mask(ctx: SubjectContext) -> np.ndarray:
    """The replaced region (0/1) on the subject grid."""
    return reface(ctx).removal
