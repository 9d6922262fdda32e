"""What the refacers share: the average face shell on a subject's grid, AFNI's fill, the refaced image.

A refacer returns a :class:`Refacing`: the replaced region (``removal``, 0/1, never on the
subject's brain mask) and the replacement (``fill``, the input's units, 0 outside the
region). The refaced image is ``input x (1 - removal) + fill``: equal to the input outside
the region bit for bit, and the face-only image (the person's own replaced tissue) is
``input x removal``, as for the defacers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from defacebench.deface.context import SubjectContext
from defacebench.imaging.resample import sample_world
from defacebench.imaging.shell import blur_in_mask, reface_shell

#: AFNI's scale of the shell: 1.222 x mean(input over the shell) / mean(shell).
AFNI_SHELL_SCALE = 1.222
#: AFNI blurs the refaced region inside itself by this FWHM (``3dBlurInMask -FWHM 2.666``).
AFNI_REFACE_FWHM_MM = 2.666
#: Shell values at or above this count as tissue in AFNI's means (``step(a-99)``).
AFNI_SHELL_TISSUE_MIN = 100.0



@dataclass
class Refacing:
    """One refacer's result on the subject grid.

    Attributes
    ----------
    removal : ndarray of float32
        1 where the person's own tissue is replaced, 0 elsewhere (and on the brain mask).
    fill : ndarray of float32
        The replacement, in the input's units; 0 outside ``removal``.
    """

    removal: np.ndarray
    fill: np.ndarray


def shell_on_subject(coords: np.ndarray, where: np.ndarray | None = None) -> np.ndarray:
    """The shell at MNI mm ``coords`` (3, ...), nearest neighbour as AFNI (``-final NN``); 0 beyond its grid."""
    return sample_world(reface_shell(), coords, where, order=0, cval=0.0)


def voxel_sizes(ctx: SubjectContext) -> tuple[float, float, float]:
    """Voxel edge lengths (mm) of the subject grid."""
    return tuple(float(v) for v in np.linalg.norm(ctx.affine[:3, :3], axis=0))  # type: ignore[return-value]


def afni_fill(data: np.ndarray, region: np.ndarray, shell: np.ndarray, voxel_mm: tuple[float, float, float],
              brain: np.ndarray) -> Refacing:
    """AFNI's ``-mode_reface`` arithmetic on a region: the scaled shell, blurred inside itself.

    Parameters
    ----------
    data : ndarray
        The input image.
    region : ndarray of bool
        Where the method may replace (AFNI's deface region, or the whole non-brain shell).
    shell : ndarray
        The shell on the subject grid (positive: average tissue, 0: keep the input,
        -1: the air around the average head, written as 0).
    voxel_mm : tuple of float
        Voxel sizes, for the blur.
    brain : ndarray of bool
        The subject's brain mask: never replaced.

    Notes
    -----
    ``ibar`` is the mean of the input over the region's shell tissue (non-zero input
    voxels where the shell >= 100), ``mbar`` the mean of the shell there; the shell is
    scaled by ``1.222 x ibar / mbar`` and blurred (FWHM 2.666 mm) inside the voxels where
    it is positive, as ``@afni_refacer_run`` does.
    """
    replaced = region & (shell != 0) & ~brain
    tissue = replaced & (shell >= AFNI_SHELL_TISSUE_MIN)
    measured = tissue & (data != 0)
    fill = np.zeros(data.shape, dtype=np.float32)
    if measured.any():
        factor = AFNI_SHELL_SCALE * float(data[measured].mean()) / float(shell[measured].mean())
        positive = replaced & (shell > 0)
        fill[positive] = shell[positive] * np.float32(factor)
        fill = blur_in_mask(fill, positive, AFNI_REFACE_FWHM_MM, voxel_mm)
    fill[~replaced] = 0.0
    return Refacing(replaced.astype(np.float32), fill)


def refaced_image(defaced: np.ndarray, fill: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """The refaced image in ``dtype``: the defaced input plus the replacement (rounded and
    clipped to the range of an integer ``dtype``)."""
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        total = defaced.astype(np.int64) + np.rint(fill).astype(np.int64)
        return np.clip(total, info.min, info.max).astype(dtype)
    return (defaced.astype(np.float32) + fill.astype(np.float32)).astype(np.float32)


def region_correlations(refaced: list[np.ndarray], own: list[np.ndarray], regions: list[np.ndarray]) -> np.ndarray:
    """Correlation of every refaced region with every person's own face, on one common grid.

    Parameters
    ----------
    refaced : list of ndarray
        Refaced images of N people, on one grid (e.g. all in MNI space).
    own : list of ndarray
        Their own heads (raw), same grid and order.
    regions : list of ndarray of bool
        Each person's replaced region on that grid; person i's row is measured over
        region i.

    Returns
    -------
    ndarray (N, N)
        ``r[i, j]``: Pearson correlation of refaced image i with person j's own head over
        region i. A refacer that leaves nothing of the face has a diagonal (own face) no
        higher than the rest of its row (another person's face); see :func:`own_face_excess`.
    """
    n = len(refaced)
    out = np.full((n, n), np.nan)
    for i in range(n):
        region = np.asarray(regions[i], dtype=bool)
        if region.sum() < 3:
            continue
        a = refaced[i][region].astype(np.float64)
        for j in range(n):
            b = own[j][region].astype(np.float64)
            if a.std() > 0 and b.std() > 0:
                out[i, j] = float(np.corrcoef(a, b)[0, 1])
    return out


def own_face_excess(correlations: np.ndarray, permutations: int = 2000, seed: int = 0) -> dict[str, float]:
    """Own-face correlation minus the mean correlation with other people's faces.

    Returns ``own`` (mean diagonal), ``other`` (mean off-diagonal), ``excess`` (own - other),
    ``rank1`` (share of refaced images whose highest correlation is with their own face;
    1 / N is chance) and ``p_permutation``: the share of random relabellings of the people
    (columns permuted) whose excess is at least the observed one (one-sided, with the
    observed labelling counted).
    """
    r = np.asarray(correlations, dtype=float)
    n = r.shape[0]

    def excess(m: np.ndarray) -> float:
        return float(np.nanmean(np.diag(m)) - np.nanmean(m[~np.eye(n, dtype=bool)]))

    own, other = float(np.nanmean(np.diag(r))), float(np.nanmean(r[~np.eye(n, dtype=bool)]))
    rank1 = float(np.mean([np.nanargmax(row) == i for i, row in enumerate(r) if np.isfinite(row).any()]))
    rng = np.random.default_rng(seed)
    observed = own - other
    at_least = sum(excess(r[:, rng.permutation(n)]) >= observed - 1e-12 for _ in range(permutations))
    return {"own": own, "other": other, "excess": observed, "rank1": rank1, "p_permutation": (1 + at_least) / (1 + permutations)}


def excess_above_floor(correlations: np.ndarray, floor: np.ndarray, flips: int = 10000, seed: int = 0) -> dict[str, float]:
    """A refacer's own-face excess above a negative control's, person by person.

    Each person's advantage is their row's own-face correlation minus the mean of the row's
    others (the mean of these is :func:`own_face_excess`'s ``excess``); ``above_floor`` is the
    mean difference of the advantages between ``correlations`` and ``floor`` (the same people
    in the same order), and ``p_above_floor`` its one-sided sign-flip p-value (each person's
    difference flipped at random: exact over all flips for up to 16 people, else ``flips``
    random ones). Unlike the permutation p of :func:`own_face_excess`, whose null (people
    exchangeable) the floor itself breaks, it asks whether the refacer gives away more than
    a replacement that carries nothing of anyone.
    """
    def advantage(m: np.ndarray) -> np.ndarray:
        m = np.asarray(m, dtype=float)
        n = m.shape[0]
        off = np.where(np.eye(n, dtype=bool), np.nan, m)
        return np.diag(m) - np.nanmean(off, axis=1)

    delta = advantage(correlations) - advantage(floor)
    delta = delta[np.isfinite(delta)]
    observed = float(delta.mean()) if delta.size else float("nan")
    if delta.size <= 16:
        signs = 1 - 2 * ((np.arange(2 ** delta.size)[:, None] >> np.arange(delta.size)) & 1)
    else:
        signs = np.random.default_rng(seed).choice([-1, 1], size=(flips, delta.size))
        signs[0] = 1
    means = (signs * delta).mean(axis=1)
    return {"above_floor": observed, "p_above_floor": float(np.mean(means >= observed - 1e-12))}
