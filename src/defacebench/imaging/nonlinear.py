"""Nonlinear (ANTs SyN) registration returned as a coordinate map, for the mri_reface-style refacer.

:func:`syn_coordinates` registers ``moving`` onto ``fixed`` (an affine start, then SyN only,
at a low resolution, the metric restricted to a fixed-image mask) and returns, for every
voxel of the downsampled fixed grid, the MOVING world mm that it maps to. The map is found
by pushing three coordinate images (x, y, z of a padded moving-space grid) through ANTs's
own resampling, so no transform-file convention is spelled here. Determinism as in
:mod:`defacebench.imaging.registration` (seeded regular sampling, one ITK thread).
"""

from __future__ import annotations

import nibabel as nib
import numpy as np

from defacebench.imaging.registration import LPS, _to_ants, ants_session, block_downsample
from defacebench.imaging.resample import world_coordinates

__all__ = ["syn_coordinates"]

#: Air around the moving image's box in which coordinates are still defined (mm).
COORDINATE_PAD_MM = 80.0
#: ANTs's value beyond the coordinate grid (it takes no NaN).
OUTSIDE_MM = 1e7


def _coordinate_grid(moving: nib.Nifti1Image, step_mm: float) -> tuple[np.ndarray, tuple[int, int, int]]:
    """An axis-aligned RAS grid covering ``moving``'s world box plus :data:`COORDINATE_PAD_MM`."""
    corners = np.array([[i, j, k, 1.0] for i in (0, moving.shape[0] - 1) for j in (0, moving.shape[1] - 1) for k in (0, moving.shape[2] - 1)])
    world = (moving.affine @ corners.T)[:3]
    low, high = world.min(axis=1) - COORDINATE_PAD_MM, world.max(axis=1) + COORDINATE_PAD_MM
    shape = tuple(int(np.ceil((h - lo) / step_mm)) + 1 for lo, h in zip(low, high))
    affine = np.diag([step_mm, step_mm, step_mm, 1.0])
    affine[:3, 3] = low
    return affine, shape  # type: ignore[return-value]


def syn_coordinates(
    fixed: nib.Nifti1Image,
    moving: nib.Nifti1Image,
    initial: np.ndarray,
    fixed_mask: np.ndarray | None = None,
    resolution_mm: float = 4.0,
    iterations: tuple[int, ...] = (40, 20),
    metric: str = "mattes",
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Moving world mm of every voxel of ``fixed`` downsampled to ``resolution_mm``.

    Parameters
    ----------
    fixed, moving : nibabel.Nifti1Image
        The subject and the template.
    initial : ndarray (4, 4)
        Affine start, moving world -> fixed world (RAS mm).
    fixed_mask : ndarray of bool, optional
        Where the metric is evaluated, on ``fixed``'s grid.
    resolution_mm, iterations, metric, seed
        Downsampling, SyN iterations per level, ANTs metric (``mattes`` or ``CC``), seed.

    Returns
    -------
    coords : ndarray (3, *small_shape) of float32
        Moving world mm (RAS) per voxel of the downsampled fixed grid.
    small_affine : ndarray (4, 4)
        Voxel -> world of that downsampled grid.

    Raises
    ------
    StageError
        ANTs failed (:func:`~defacebench.imaging.registration.ants_session`).
    """
    import ants

    with ants_session(seed, "defacebench-syn-") as workdir:
        fixed_small = block_downsample(fixed, resolution_mm)
        fixed_ants = _to_ants(fixed_small)
        moving_ants = _to_ants(block_downsample(moving, resolution_mm))
        masks = {}
        if fixed_mask is not None:
            small = block_downsample(fixed, resolution_mm, np.asarray(fixed_mask, dtype=np.float32))
            masks["mask"] = _to_ants(small, (np.asarray(small.dataobj) >= 0.5).astype(np.float32))
        lps = LPS @ np.linalg.inv(initial) @ LPS  # ANTs maps fixed LPS points to moving LPS points
        tx = ants.create_ants_transform(transform_type="AffineTransform", dimension=3, matrix=lps[:3, :3], offset=lps[:3, 3])
        start = str(workdir / "initial.mat")
        ants.write_transform(tx, start)
        result = ants.registration(
            fixed=fixed_ants, moving=moving_ants, type_of_transform="SyNOnly", initial_transform=[start],
            outprefix=str(workdir / "syn_"), syn_metric=metric, syn_sampling=32, reg_iterations=tuple(iterations),
            grad_step=0.2, flow_sigma=3, total_sigma=0, **masks,
        )
        grid_affine, grid_shape = _coordinate_grid(moving, float(resolution_mm))
        coords = world_coordinates(grid_affine, grid_shape)
        warped = []
        for axis in range(3):
            image = _to_ants(nib.Nifti1Image(coords[axis], grid_affine))
            out = ants.apply_transforms(fixed=fixed_ants, moving=image, transformlist=result["fwdtransforms"], interpolator="linear",
                                        defaultvalue=OUTSIDE_MM)
            warped.append(out.numpy().astype(np.float32))
    mapped = np.stack(warped)
    # beyond the padded box (the far corners of a large field of view) the warp is the affine start
    outside = ~np.all(np.abs(mapped) < OUTSIDE_MM / 2, axis=0)
    if outside.any():
        linear = world_coordinates(fixed_small.affine, fixed_small.shape[:3], np.linalg.inv(initial))
        mapped[:, outside] = linear[:, outside]
    return mapped, fixed_small.affine
