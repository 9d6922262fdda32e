"""pydeface: its template registered ONTO the subject (12 DOF, MI); soft face mask.

pydeface warps ``facemask.nii.gz`` (1 = keep, 0 = face) to the subject with trilinear
interpolation and multiplies: defaced = input x mask, face-only = input x (1 - mask).
Outside the warped template's field of view FLIRT writes 0, so pydeface also removes
what lies beyond it; this is kept. Differs from pydeface: FLIRT (mutual information,
12 DOF) is replaced by ANTs Mattes MI at 4 mm.
"""

from __future__ import annotations

import numpy as np

from defacebench.deface.context import SubjectContext

NAME = "pydeface"
NEEDS = ("brain", "to_mni", "template_to_subject")


def removal_from_matrix(template_to_subject: np.ndarray, affine: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """1 - warped face mask on a grid, given the template world -> grid world matrix."""
    from defacebench.preprocess.registration import resample_to
    from defacebench.templates import pydeface_template

    _, facemask = pydeface_template()
    keep = resample_to(facemask, template_to_subject, affine, shape, order=1, cval=0.0)
    return np.clip(1.0 - keep, 0.0, 1.0).astype(np.float32)


def removal_mask(ctx: SubjectContext) -> np.ndarray:
    """Fraction removed per voxel (soft, 0..1) on the subject grid."""
    return removal_from_matrix(ctx.pydeface_template_to_subject(), ctx.affine, ctx.shape)
