"""Deterministic linear registration with ANTsPy, and resampling through world matrices.

Transforms are plain 4x4 matrices in RAS world millimetres (the NIfTI convention),
so every image and mask of a subject is resampled through the same matrix with scipy.
:func:`register` returns the matrix mapping MOVING world mm to FIXED world mm.

ANTs works in LPS and writes its transforms to files; here each registration runs in
a private temporary directory that is removed afterwards.

Determinism: the same inputs give bit-identical matrices. Three things are needed, all
measured: (1) a non-zero ANTs random seed (ANTs reads ``--random-seed 0`` as "unseeded"
and jitters its regular sampling grid differently each run: ~0.01 differences), so
``seed`` is passed as ``seed + 1``; (2) regular metric sampling; (3) one ITK thread, since
ITK's multi-threaded metric sums differ in their last digits between runs (~0.002).
ITK latches its thread count from ``ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS`` the first time
it is used in a process (not at ``import ants``), so :func:`register` sets the variable
to 1 around its ANTs call: when it is the first ITK user of the process (or ITK started
with one thread, as in the engine's workers), every later registration is single-threaded
and exact. If other code ran ITK multi-threaded earlier in the process, results can differ
in the third decimal. A single thread is also faster here: at 4 mm the images are small.
Registration runs on images downsampled to ``resolution_mm`` (default 4 mm) with a
short shrink/smoothing pyramid: ample for a 12-parameter affine, and fast.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np

from defacebench.imaging.blocks import block_affine, block_mean
from defacebench.io.atomic import write_text_atomic
from defacebench.io.errors import StageError

#: RAS <-> LPS flip of world coordinates (its own inverse).
LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
#: ANTs type_of_transform per kind. ``affine9`` is fitted as 12 parameters and then
#: stripped of shear (see :func:`remove_shear`).
KINDS = {"rigid": "Rigid", "similarity": "Similarity", "affine": "Affine", "affine9": "Affine"}
ITK_THREADS = "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"
METRICS = {"mattes": "mattes", "mi": "mattes", "cc": "CC", "gc": "GC", "meansquares": "meansquares"}


def _to_ants(img: nib.Nifti1Image, data: np.ndarray | None = None):
    """A nibabel image (any orientation, oblique allowed) as an ANTsImage in LPS."""
    import ants

    affine = LPS @ img.affine
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    direction = affine[:3, :3] / spacing
    array = np.asarray(img.dataobj if data is None else data, dtype=np.float32)
    return ants.from_numpy(array, origin=tuple(float(v) for v in affine[:3, 3]), spacing=tuple(float(v) for v in spacing), direction=direction)


def block_downsample(img: nib.Nifti1Image, resolution_mm: float, data: np.ndarray | None = None) -> nib.Nifti1Image:
    """Average blocks of voxels so the voxel size approaches ``resolution_mm`` (fast anti-aliased shrink).

    The integer block size per axis is ``floor(resolution_mm / voxel size)``; the
    affine is updated so every block's centre keeps its world position.
    """
    array = np.asarray(img.dataobj if data is None else data, dtype=np.float32)
    zooms = np.linalg.norm(img.affine[:3, :3], axis=0)
    factors = tuple(int(f) for f in np.maximum(1, np.floor(resolution_mm / zooms + 1e-6)))
    if all(f == 1 for f in factors):
        return nib.Nifti1Image(array, img.affine)
    return nib.Nifti1Image(block_mean(array, factors), block_affine(img.affine, factors))


def _ants_affine_matrix(transform) -> np.ndarray:
    """An ANTs affine transform (fixed LPS point -> moving LPS point) as a 4x4 matrix."""
    params = np.asarray(transform.parameters, dtype=float)
    center = np.asarray(transform.fixed_parameters, dtype=float)
    linear = params[:9].reshape(3, 3)
    translation = params[9:12]
    matrix = np.eye(4)
    matrix[:3, :3] = linear
    matrix[:3, 3] = translation + center - linear @ center
    return matrix


def remove_shear(matrix: np.ndarray) -> np.ndarray:
    """Keep rotation, per-axis scale and translation of an affine (9 DOF), drop its shear.

    ``A = R @ K`` with ``R`` a rotation and ``K`` upper triangular (QR); the result is
    ``R @ diag(K)`` with the same translation of the linear part's centre of action.
    """
    linear = matrix[:3, :3]
    q, r = np.linalg.qr(linear)
    signs = np.sign(np.diag(r))
    q, r = q * signs, (r.T * signs).T
    out = matrix.copy()
    out[:3, :3] = q @ np.diag(np.diag(r))
    return out


@contextlib.contextmanager
def ants_session(seed: int, prefix: str) -> Iterator[Path]:
    """One deterministic ANTs call: one ITK thread, ANTs's sampler seeded with ``seed + 1``
    (0 is "unseeded" to ANTs) and a private temporary directory, all restored or removed
    afterwards; any failure inside becomes a :class:`StageError`.

    Set before any ANTs call: ITK latches its thread count at its first use, maybe here.
    """
    import ants

    old_threads = os.environ.get(ITK_THREADS)
    os.environ[ITK_THREADS] = "1"
    old_seed = ants.config._random_seed
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        ants.config._random_seed = int(seed) + 1
        yield workdir
    except StageError:
        raise
    except Exception as exc:
        raise StageError(f"registration failed ({type(exc).__name__}: {exc})") from exc
    finally:
        ants.config._random_seed = old_seed
        if old_threads is None:
            os.environ.pop(ITK_THREADS, None)
        else:
            os.environ[ITK_THREADS] = old_threads
        shutil.rmtree(workdir, ignore_errors=True)


def register(
    fixed: nib.Nifti1Image,
    moving: nib.Nifti1Image,
    kind: str = "affine",
    metric: str = "mattes",
    fixed_mask: nib.Nifti1Image | np.ndarray | None = None,
    moving_mask: nib.Nifti1Image | np.ndarray | None = None,
    seed: int = 0,
    resolution_mm: float = 4.0,
    iterations: tuple[int, ...] = (100, 50),
    initial: np.ndarray | None = None,
    sampling_rate: float = 0.25,
) -> np.ndarray:
    """Linear registration of ``moving`` onto ``fixed``.

    Parameters
    ----------
    fixed, moving : nibabel.Nifti1Image
        Images in any orientation (oblique allowed).
    kind : {"affine", "affine9", "similarity", "rigid"}
        12, 9 (rotation, translation, per-axis scale), 7 or 6 degrees of freedom.
    metric : {"mattes", "mi", "cc", "gc", "meansquares"}
        Similarity metric of ANTs (``mi`` is Mattes mutual information).
    fixed_mask, moving_mask : image or array, optional
        Where the metric is evaluated (same grid as the image).
    seed : int
        Random seed of the sampling grid's jitter (passed to ANTs as ``seed + 1``:
        ANTs treats 0 as unseeded).
    resolution_mm : float
        Both images are block-averaged to about this voxel size first.
    iterations : tuple of int
        Iterations per pyramid level (shrink factors ..., 2, 1 relative to
        ``resolution_mm``).
    initial : ndarray, optional
        Initial guess, a 4x4 RAS matrix moving world -> fixed world
        (default: align centres of mass).
    sampling_rate : float
        Fraction of voxels (regular grid, seeded jitter) where the metric is sampled, for
        a fixed image at ``resolution_mm``; scaled down for a finer fixed grid (a 3 mm
        image stays at 3 mm under integer block averaging) so the number of sampled
        points, and the cost, stay those of ``resolution_mm``.

    Returns
    -------
    ndarray
        4x4 RAS world matrix mapping MOVING world mm to FIXED world mm.

    Raises
    ------
    StageError
        ANTs failed.
    """
    import ants

    if kind not in KINDS:
        raise ValueError(f"kind must be one of {sorted(KINDS)}, got {kind!r}")
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {sorted(METRICS)}, got {metric!r}")
    if int(seed) < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    levels = len(iterations)
    shrink = tuple(2**i for i in reversed(range(levels)))
    sigmas = tuple(float(s // 2) for s in shrink)

    with ants_session(seed, "defacebench-ants-") as workdir:
        fixed_small = block_downsample(fixed, resolution_mm)
        fixed_ants = _to_ants(fixed_small)
        # integer blocks leave e.g. a 3 mm image at 3 mm: sample the same number of points
        # as at resolution_mm (the metric's cost), not 2.4x as many
        voxel_ml = float(abs(np.linalg.det(fixed_small.affine[:3, :3])))
        rate = float(sampling_rate) * min(1.0, voxel_ml / float(resolution_mm) ** 3)
        moving_ants = _to_ants(block_downsample(moving, resolution_mm))
        masks = {}
        for name, mask, ref in (("mask", fixed_mask, fixed), ("moving_mask", moving_mask, moving)):
            if mask is not None:
                array = np.asarray(mask.dataobj if isinstance(mask, nib.Nifti1Image) else mask) > 0
                small = block_downsample(ref, resolution_mm, array.astype(np.float32))
                masks[name] = _to_ants(small, (np.asarray(small.dataobj) >= 0.5).astype(np.float32))
        initial_files = None
        if initial is not None:
            # ANTs maps fixed LPS points to moving LPS points: the inverse, in LPS.
            lps = LPS @ np.linalg.inv(initial) @ LPS
            tx = ants.create_ants_transform(transform_type="AffineTransform", dimension=3, matrix=lps[:3, :3], offset=lps[:3, 3])
            initial_files = [str(workdir / "initial.mat")]
            ants.write_transform(tx, initial_files[0])
        result = ants.registration(
            fixed=fixed_ants,
            moving=moving_ants,
            type_of_transform=KINDS[kind],
            initial_transform=initial_files,
            outprefix=str(workdir / "reg_"),
            aff_metric=METRICS[metric],
            aff_sampling=32,
            aff_random_sampling_rate=rate,
            aff_iterations=tuple(iterations),
            aff_shrink_factors=shrink,
            aff_smoothing_sigmas=sigmas,
            **masks,
        )
        transform = ants.read_transform(result["fwdtransforms"][0])
        fixed_to_moving_lps = _ants_affine_matrix(transform)
    fixed_to_moving = LPS @ fixed_to_moving_lps @ LPS
    matrix = np.linalg.inv(fixed_to_moving)
    if kind == "affine9":
        matrix = remove_shear(matrix)
    if not np.all(np.isfinite(matrix)):
        raise StageError("registration returned a non-finite transform")
    return matrix


def save_transform(matrix: np.ndarray, path: str | Path) -> Path:
    """Write a 4x4 matrix as text (atomic)."""
    matrix = np.asarray(matrix, dtype=float)
    if matrix.shape != (4, 4):
        raise ValueError(f"expected a 4x4 matrix, got {matrix.shape}")
    text = "\n".join(" ".join(f"{v:.10g}" for v in row) for row in matrix) + "\n"
    return write_text_atomic(path, text)


def load_transform(path: str | Path) -> np.ndarray:
    """Read a 4x4 matrix written by :func:`save_transform`."""
    matrix = np.loadtxt(str(path), dtype=float)
    if matrix.shape != (4, 4) or not np.all(np.isfinite(matrix)):
        raise ValueError(f"{path}: not a finite 4x4 matrix")
    return matrix


def mask_dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice overlap of two binary masks (1.0 when both are empty)."""
    a, b = np.asarray(a) > 0.5, np.asarray(b) > 0.5
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else float(2 * np.logical_and(a, b).sum() / total)

