"""Standard-space templates: the MNI152 2009a brain (nilearn) and an MNI-space head.

nilearn ships the MNI152 2009a 1 mm brain template and brain mask (no download).
No MNI head with face, ears and neck ships in a pip package, so :func:`mni_head` builds
one once: pydeface's mean head (``pydeface/data/mean_reg2mean.nii.gz``, MIT) is
skull-stripped with deepbet and registered brain-to-brain (12 DOF) onto the MNI brain,
then resampled onto :data:`HEAD_GRID`, a 1 mm grid on the MNI lattice that extends
the brain template's box down to the neck and forward to the nose tip. The result is
cached atomically in ``$DEFACEBENCH_CACHE`` (default ``~/.cache/defacebench``).
"""

from __future__ import annotations

import functools
import os
from importlib import resources
from pathlib import Path

import nibabel as nib
import numpy as np

from defacebench.imaging.blocks import block_affine, block_mean
from defacebench.imaging.brain import extract_brain
from defacebench.imaging.grids import Grid
from defacebench.imaging.masks import head_outline
from defacebench.imaging.registration import load_transform, register, save_transform
from defacebench.imaging.resample import LinearResampler, resample_to
from defacebench.io.atomic import atomic_path

#: Bump when the way the head template is built changes (invalidates the cache).
HEAD_TEMPLATE_VERSION = 1
#: MNI-space head field of view (1 mm, on the lattice of nilearn's MNI152 grid):
#: x -98..98, y -134..108, z -160..116 mm.
HEAD_GRID_ORIGIN_MM = (-98.0, -134.0, -160.0)
HEAD_GRID_SHAPE = (197, 243, 277)


def cache_dir() -> Path:
    """Where built templates live: ``$DEFACEBENCH_CACHE`` or ``~/.cache/defacebench``."""
    path = Path(os.environ.get("DEFACEBENCH_CACHE") or Path.home() / ".cache" / "defacebench")
    path.mkdir(parents=True, exist_ok=True)
    return path


def head_grid(resolution_mm: int = 1) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Affine and shape of the MNI head grid at an integer resolution (1 or 2 mm...)."""
    step = int(resolution_mm)
    affine = np.diag([float(step)] * 3 + [1.0])
    affine[:3, 3] = HEAD_GRID_ORIGIN_MM
    shape = tuple(int(np.ceil(n / step)) for n in HEAD_GRID_SHAPE)
    return affine, shape  # type: ignore[return-value]


@functools.lru_cache(maxsize=8)
def _brain_mask_on_grid(grid: Grid) -> np.ndarray:
    mask = mni_brain_mask()
    resampler = LinearResampler(mask.affine, mask.shape, np.eye(4), grid, antialias=False)
    return resampler(np.asarray(mask.dataobj, dtype=np.float32)) >= 0.5


def brain_mask_on_grid(grid: Grid) -> np.ndarray:
    """The MNI brain mask in ``grid`` (linear interpolation, >= 0.5; cached per process).

    The outline of QC mosaics and the target of the registration check (brain Dice).
    """
    return _brain_mask_on_grid(grid)


def _squeeze(img: nib.Nifti1Image, dtype: type = np.float32) -> nib.Nifti1Image:
    data = np.asarray(img.dataobj, dtype=dtype)
    if data.ndim == 4:
        data = data[..., 0]
    return nib.Nifti1Image(data, img.affine)


@functools.lru_cache(maxsize=1)
def mni_brain() -> nib.Nifti1Image:
    """MNI152 2009a 1 mm brain template (nilearn, bundled; 197x233x189)."""
    from nilearn.datasets import load_mni152_template

    return _squeeze(load_mni152_template(resolution=1))


@functools.lru_cache(maxsize=1)
def mni_brain_mask() -> nib.Nifti1Image:
    """MNI152 2009a 1 mm brain mask (nilearn, bundled), uint8 on :func:`mni_brain`'s grid."""
    from nilearn.datasets import load_mni152_brain_mask

    img = load_mni152_brain_mask(resolution=1)
    out = nib.Nifti1Image((np.asarray(img.dataobj) > 0.5).astype(np.uint8), img.affine)
    out.set_data_dtype(np.uint8)
    return out


@functools.lru_cache(maxsize=1)
def pydeface_template() -> tuple[nib.Nifti1Image, nib.Nifti1Image]:
    """pydeface's template head and face mask (1 = keep, 0 = face), from the pydeface package.

    Loaded once per process (two 176x256x256 images); treat them as read-only.
    """
    root = resources.files("pydeface") / "data"
    with resources.as_file(root / "mean_reg2mean.nii.gz") as head_path, resources.as_file(root / "facemask.nii.gz") as mask_path:
        head = _squeeze(nib.load(str(head_path)))
        facemask = _squeeze(nib.load(str(mask_path)))
    return head, facemask


@functools.lru_cache(maxsize=1)
def average_face_outline() -> nib.Nifti1Image:
    """pydeface's mean head as a filled solid with partial volumes at the skin, on its own grid.

    The average face of the geometry control (``facemask-<m>``): placed on each subject by
    the subject's head registration, it shows where that subject's face sits, with the same
    shape and no intensities for everyone.
    """
    head, _ = pydeface_template()
    return nib.Nifti1Image(head_outline(np.asarray(head.dataobj, dtype=np.float32)), head.affine)


def _build_head(resolution_mm: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Register pydeface's mean head to MNI through its brain; resample onto the head grid."""
    head, _ = pydeface_template()
    brain = np.asarray(extract_brain(head).dataobj) > 0
    head_data = np.asarray(head.dataobj, dtype=np.float32)
    moving = nib.Nifti1Image(head_data * brain, head.affine)
    to_mni = register(mni_brain(), moving, kind="affine", metric="mattes", resolution_mm=2.0, iterations=(200, 100, 50))
    affine, shape = head_grid(resolution_mm)
    data = resample_to(head, to_mni, affine, shape, order=1)
    return data.astype(np.float32), to_mni, affine


def _cached(name: str) -> Path:
    return cache_dir() / f"{name}_v{HEAD_TEMPLATE_VERSION}.nii.gz"


@functools.lru_cache(maxsize=4)
def mni_head(resolution_mm: int = 1) -> nib.Nifti1Image:
    """An MNI152-space T1w head (face, ears, neck) on :func:`head_grid`, built once and cached.

    Parameters
    ----------
    resolution_mm : int
        1 (the built template) or a coarser integer step (block-averaged from 1 mm).
    """
    path = _cached("mni_head_res-1")
    if not path.is_file():
        data, to_mni, affine = _build_head(1)
        img = nib.Nifti1Image(data, affine)
        with atomic_path(path) as tmp:
            nib.save(img, str(tmp))
        save_transform(to_mni, cache_dir() / f"pydeface_to_mni_v{HEAD_TEMPLATE_VERSION}.txt")
    img = _squeeze(nib.load(str(path)))
    if int(resolution_mm) == 1:
        return img
    return _block_mean(img, int(resolution_mm))


def pydeface_to_mni() -> np.ndarray:
    """4x4 RAS matrix: pydeface's template world -> MNI world (found when :func:`mni_head` was built)."""
    path = cache_dir() / f"pydeface_to_mni_v{HEAD_TEMPLATE_VERSION}.txt"
    if not path.is_file():
        _cached("mni_head_res-1").unlink(missing_ok=True)
        mni_head.cache_clear()
        mni_head(1)
    return load_transform(path)


def _block_mean(img: nib.Nifti1Image, step: int) -> nib.Nifti1Image:
    """The 1 mm head grid image averaged over ``step``-cubed blocks (zero beyond the grid)."""
    return nib.Nifti1Image(block_mean(np.asarray(img.dataobj, dtype=np.float32), step, pad="zero"), block_affine(img.affine, step))


def on_head_grid(img: nib.Nifti1Image, resolution_mm: int = 1, order: int = 0) -> np.ndarray:
    """Resample an MNI-space image (e.g. the brain mask) onto the head grid (identity transform)."""
    target = mni_head(resolution_mm)
    return resample_to(img, np.eye(4), target.affine, target.shape, order=order)


#: nilearn's MNI brain mask ends at z = -72 mm (the template grid's edge) inside the
#: medulla; the brainstem carries on below it, and subjects' brain masks (deepbet, the
#: simulator) follow it to about z = -95 mm in MNI space. For the defacers' brain margins
#: the medulla's cross-section at z = -70 mm is extended straight down to this depth.
BRAINSTEM_BOTTOM_MM = -100.0
BRAINSTEM_SECTION_MM = -70.0


@functools.lru_cache(maxsize=8)
def mni_head_brain_mask(resolution_mm: int = 1, brainstem: bool = False) -> nib.Nifti1Image:
    """The MNI brain mask on the head grid (uint8).

    Parameters
    ----------
    resolution_mm : int
        Head grid step.
    brainstem : bool
        Also extend the medulla below the template's edge (z = -72 mm) down to
        :data:`BRAINSTEM_BOTTOM_MM` (its cross-section at :data:`BRAINSTEM_SECTION_MM`).
    """
    target = mni_head(resolution_mm)
    data = on_head_grid(mni_brain_mask(), resolution_mm, order=1) >= 0.5
    if brainstem:
        data |= _brainstem_extension(target.affine, target.shape)
    out = nib.Nifti1Image(data.astype(np.uint8), target.affine)
    out.set_data_dtype(np.uint8)
    return out


def _brainstem_extension(affine: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Voxels of a grid (axis-aligned, MNI mm) below the MNI mask in the medulla's column."""
    mask = mni_brain_mask()
    section_k = int(round((BRAINSTEM_SECTION_MM - mask.affine[2, 3]) / mask.affine[2, 2]))
    section = np.asarray(mask.dataobj)[:, :, section_k] > 0
    i, j = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    x = affine[0, 0] * i + affine[0, 3]
    y = affine[1, 1] * j + affine[1, 3]
    si = np.rint((x - mask.affine[0, 3]) / mask.affine[0, 0]).astype(int)
    sj = np.rint((y - mask.affine[1, 3]) / mask.affine[1, 1]).astype(int)
    inside = (si >= 0) & (si < section.shape[0]) & (sj >= 0) & (sj < section.shape[1])
    column = np.zeros(shape[:2], dtype=bool)
    column[inside] = section[si[inside], sj[inside]]
    z = affine[2, 2] * np.arange(shape[2]) + affine[2, 3]
    rows = (z >= BRAINSTEM_BOTTOM_MM) & (z < mask.affine[2, 3])
    out = np.zeros(tuple(shape[:3]), dtype=bool)
    out[:, :, rows] = column[:, :, None]
    return out


@functools.lru_cache(maxsize=2)
def mni_brain_distance_mm(resolution_mm: int = 1) -> nib.Nifti1Image:
    """Distance (mm) of every head-grid voxel to the MNI brain mask with its brainstem (0 inside)."""
    from scipy import ndimage

    ref = mni_head_brain_mask(resolution_mm, brainstem=True)
    mask = np.asarray(ref.dataobj) > 0
    step = float(resolution_mm)
    distance = ndimage.distance_transform_edt(~mask, sampling=(step, step, step)).astype(np.float32)
    return nib.Nifti1Image(distance, ref.affine)
