"""Offscreen renders of the head surface, the picture a face-recognition attacker starts from.

The surface is the iso-surface of the lightly smoothed image at the head threshold of
:func:`defacebench.imaging.masks.head_mask` (a fraction of the robust maximum): the first
crossing along each ray is the skin, or the cut face of a defaced head, or the shell of a
refaced one. Rays are cast orthographically in the scan's canonical pose, the rigid part of
its subject -> MNI registration (so heads keep their own size), from the front and two
three-quarter views, with a fixed light, at a fixed image size. Pure numpy/scipy: nothing to
install, no display.
"""

from __future__ import annotations

from dataclasses import dataclass

import nibabel as nib
import numpy as np
from scipy import ndimage

__all__ = ["VIEWS", "View", "canonical_pose", "head_volume", "render_views", "render_view"]


@dataclass(frozen=True)
class View:
    """A camera: yaw about the MNI superior axis (degrees; positive turns to the subject's left),
    the MNI point the image is centred on, pixel size and image size."""

    name: str
    yaw_deg: float
    centre_mni: tuple[float, float, float] = (0.0, 10.0, -25.0)
    pixel_mm: float = 1.2
    size_px: int = 160


#: Front and two three-quarter views, as in Schwarz et al. 2021's renders.
VIEWS: tuple[View, ...] = (View("front", 0.0), View("left", 35.0), View("right", -35.0))

#: Head threshold as a fraction of the 99th percentile of positive voxels (that of head_mask).
HEAD_FRACTION = 0.12
#: Gaussian smoothing of the image before the iso-surface (mm; at least 0.8 voxel).
SMOOTH_MM = 1.0
#: Ray step (mm) and depth range (mm from the camera plane, which sits 140 mm in front of the centre).
STEP_MM = 1.0
CAMERA_DISTANCE_MM = 140.0
DEPTH_MM = 250.0
#: Block size of the coarse pass (voxels) and its ray step (mm).
COARSE_FACTOR = 4
COARSE_STEP_MM = 6.0


def canonical_pose(to_mni: np.ndarray, centre_world: np.ndarray) -> np.ndarray:
    """The rigid part of a subject -> MNI matrix (rotation by polar decomposition), fixed at ``centre_world``.

    Scale and shear are dropped so the render keeps the person's own head size and shape;
    the translation maps ``centre_world`` where ``to_mni`` maps it.
    """
    matrix = np.asarray(to_mni, dtype=float)
    u, _, vt = np.linalg.svd(matrix[:3, :3])
    rotation = u @ vt
    if np.linalg.det(rotation) < 0:
        raise ValueError("subject -> MNI transform flips handedness")
    pose = np.eye(4)
    pose[:3, :3] = rotation
    centre = np.asarray(centre_world, dtype=float)
    pose[:3, 3] = (matrix @ np.r_[centre, 1.0])[:3] - rotation @ centre
    return pose


def head_volume(img: nib.Nifti1Image, smooth_mm: float = SMOOTH_MM) -> np.ndarray:
    """The image smoothed and divided by the head threshold: the skin is the 1.0 iso-surface."""
    data = np.asarray(img.dataobj, dtype=np.float32)
    if data.ndim != 3:
        raise ValueError(f"expected a 3D image, got shape {data.shape}")
    positive = data[data > 0]
    if positive.size == 0:
        return np.zeros(data.shape, np.float32)
    threshold = HEAD_FRACTION * float(np.percentile(positive[:: max(1, positive.size // 200_000)], 99))
    voxel_mm = np.sqrt((img.affine[:3, :3] ** 2).sum(axis=0))
    sigma = np.maximum(float(smooth_mm), 0.8 * voxel_mm) / voxel_mm
    return ndimage.gaussian_filter(data, sigma) / np.float32(threshold)


def _camera(view: View) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    t = np.deg2rad(view.yaw_deg)
    rz = np.array([[np.cos(t), -np.sin(t), 0.0], [np.sin(t), np.cos(t), 0.0], [0.0, 0.0, 1.0]])
    right = rz @ np.array([-1.0, 0.0, 0.0])  # the viewer's right is the subject's left (RAS -x)
    up = np.array([0.0, 0.0, 1.0])
    into = rz @ np.array([0.0, -1.0, 0.0])  # looking at the face, from anterior to posterior
    return right, up, into


def _march(volume: np.ndarray, vox_origins: np.ndarray, vox_step: np.ndarray, first_step: np.ndarray,
           n_steps: int, step_mm: float) -> np.ndarray:
    """Depth (mm) of the first ``volume >= 1`` crossing along each ray from ``first_step``; NaN where none."""
    depth = np.full(len(vox_origins), np.nan, np.float32)
    alive = np.arange(len(vox_origins))
    previous = np.zeros(len(vox_origins), np.float32)
    chunk = 16
    for c0 in range(0, n_steps, chunk):
        if alive.size == 0:
            break
        k = np.arange(c0, min(c0 + chunk, n_steps), dtype=np.float32)
        steps = first_step[alive, None] + k[None, :]
        points = vox_origins[alive, None, :] + steps[..., None] * vox_step
        values = ndimage.map_coordinates(volume, points.reshape(-1, 3).T, order=1, cval=0.0).reshape(alive.size, k.size)
        full = np.concatenate([previous[alive, None], values], axis=1)
        inside = full[:, 1:] >= 1.0
        hit = inside.any(axis=1)
        first = inside.argmax(axis=1)[hit]
        before, after = full[hit, first], full[hit, first + 1]
        # a ray that starts inside the head (first sample) has no crossing to interpolate
        fraction = np.where(first + c0 == 0, 0.0, np.clip((1.0 - before) / np.maximum(after - before, 1e-6), 0.0, 1.0))
        depth[alive[hit]] = (steps[hit, first] - 1.0 + fraction) * step_mm
        previous[alive] = values[:, -1]
        alive = alive[~hit]
    return depth


def render_view(volume: np.ndarray, world_to_voxel: np.ndarray, view: View,
                coarse: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Render ``volume`` (see :func:`head_volume`) seen from ``view``; ``world_to_voxel`` maps canonical (MNI-pose) mm to voxels.

    Rays are first marched through ``coarse`` (the volume max-pooled by :data:`COARSE_FACTOR`,
    :func:`coarse_volume`) in steps of :data:`COARSE_STEP_MM` to find where the head can
    start, then through the full volume in 1 mm steps from just before it.

    Returns
    -------
    shaded : ndarray
        ``size_px x size_px`` uint8: Lambertian shading of the first iso-surface crossing of
        each ray, 0 where a ray meets nothing.
    depth_mm : ndarray
        ``size_px x size_px`` float32: distance of that crossing from the camera plane, NaN
        where a ray meets nothing.
    """
    right, up, into = _camera(view)
    n = view.size_px
    offsets = (np.arange(n) - n / 2 + 0.5) * view.pixel_mm
    cols, rows = np.meshgrid(offsets, -offsets)
    start = np.asarray(view.centre_mni, float) - into * CAMERA_DISTANCE_MM
    origins = (start + cols[..., None] * right + rows[..., None] * up).reshape(-1, 3)
    m3, t3 = world_to_voxel[:3, :3].astype(np.float32), world_to_voxel[:3, 3].astype(np.float32)
    vox_origins = origins.astype(np.float32) @ m3.T + t3
    vox_step = (m3 @ into.astype(np.float32)) * np.float32(STEP_MM)
    coarse = coarse_volume(volume) if coarse is None else coarse
    ratio = COARSE_STEP_MM / STEP_MM
    coarse_origins = (vox_origins + 0.5) / COARSE_FACTOR - 0.5
    coarse_depth = _march(coarse, coarse_origins, vox_step * ratio / COARSE_FACTOR,
                          np.zeros(len(origins), np.float32), int(DEPTH_MM / COARSE_STEP_MM), COARSE_STEP_MM)
    candidate = np.isfinite(coarse_depth)
    first = np.maximum(0.0, (coarse_depth[candidate] - 2 * COARSE_STEP_MM) / STEP_MM).astype(np.float32)
    depth = np.full(len(origins), np.nan, np.float32)
    depth[candidate] = _march(volume, vox_origins[candidate], vox_step, np.floor(first), int(DEPTH_MM / STEP_MM), STEP_MM)
    found = np.isfinite(depth)
    image = np.zeros(len(origins), np.float32)
    if found.any():
        surface = vox_origins[found] + (depth[found] / STEP_MM)[:, None] * vox_step
        gradient = np.stack([ndimage.map_coordinates(volume, surface.T + d[:, None], order=1)
                             - ndimage.map_coordinates(volume, surface.T - d[:, None], order=1) for d in np.eye(3, dtype=np.float32)], axis=1)
        normal = -(gradient @ m3)  # voxel-space gradient to canonical space: its covector transform
        normal /= np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-9)
        light = -into + 0.35 * up + 0.15 * right
        light /= np.linalg.norm(light)
        image[found] = 0.12 + 0.88 * np.clip(normal @ light, 0.0, 1.0)
    return np.round(image.reshape(n, n) * 255).astype(np.uint8), depth.reshape(n, n)


def coarse_volume(volume: np.ndarray) -> np.ndarray:
    """``volume`` max-pooled over blocks of :data:`COARSE_FACTOR` voxels (a crossing can only lie where it is >= 1)."""
    f = COARSE_FACTOR
    padded = np.pad(volume, [(0, (-s) % f) for s in volume.shape])
    shape = tuple(s // f for s in padded.shape)
    pooled = padded.reshape(shape[0], f, shape[1], f, shape[2], f).max(axis=(1, 3, 5))
    return ndimage.maximum_filter(pooled, size=3)


def render_views(img: nib.Nifti1Image, to_mni: np.ndarray, views: tuple[View, ...] = VIEWS,
                 head_centre_world: np.ndarray | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Render the head surface of ``img`` in its canonical pose from every view.

    Parameters
    ----------
    img : nibabel.Nifti1Image
        A raw, defaced or refaced head.
    to_mni : ndarray
        4x4 RAS matrix, subject world mm -> MNI world mm (the brain registration); only its
        rigid part is used (:func:`canonical_pose`).
    views : tuple of View
    head_centre_world : ndarray, optional
        The point the pose is fixed at; pass the raw head's so that every method's render of
        one scan shares one pose (default: the centre of mass of this image's head).

    Returns
    -------
    dict
        View name -> (uint8 shaded image, float32 depth in mm) (:func:`render_view`).
    """
    volume = head_volume(img)
    if head_centre_world is None:
        head_centre_world = head_centre(img, volume)
    pose = canonical_pose(to_mni, head_centre_world)
    world_to_voxel = np.linalg.inv(img.affine) @ np.linalg.inv(pose)
    coarse = coarse_volume(volume)
    return {view.name: render_view(volume, world_to_voxel, view, coarse) for view in views}


def head_centre(img: nib.Nifti1Image, volume: np.ndarray | None = None) -> np.ndarray:
    """World mm centre of mass of the head (voxels above the head threshold)."""
    volume = head_volume(img) if volume is None else volume
    inside = volume >= 1.0
    if not inside.any():
        raise ValueError("no head in the image")
    return (img.affine @ np.r_[np.array(ndimage.center_of_mass(inside)), 1.0])[:3]
