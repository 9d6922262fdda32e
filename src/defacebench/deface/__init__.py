"""Defacing methods (AFNI, FSL, pydeface, SPM, quickshear) and refacers (afnireface, afnirefaceplus,
mrireface): removal masks, defaced (or refaced) and face-only images.

Each method module exposes ``removal_mask(ctx) -> ndarray`` (fraction removed per voxel
on the input's own grid) and, for MNI-defined methods, ``mni_removal(coords)``; a refacer
also ``reface(ctx) -> Refacing`` (the replaced region and its replacement,
:mod:`defacebench.deface.refacing`).
"""

from defacebench.deface.registry import METHODS, get_method, parse_methods
from defacebench.deface.runner import deface_cohort, deface_subject, split_image

__all__ = ["METHODS", "get_method", "parse_methods", "deface_subject", "deface_cohort", "split_image"]
