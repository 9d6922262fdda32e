"""Checks of one input T1w image's voxel data, read once: reject what no stage can use,
warn about scans that look already defaced or skull-stripped.

:func:`check_image` reads the header (:func:`defacebench.io.nifti.read_header`: readable,
3D or 4D with one volume, size, voxel sizes), then the whole voxel array, and rejects with
a one-line reason when the data cannot be decompressed or read in full, hold NaN or Inf,
are constant (or all zero), or when the voxel-to-world affine is degenerate. It never raises.

:func:`face_and_brain_warnings` looks at the head on a ~3 mm copy, in RAS+ voxel order:

skull-stripped
    the only tissue is a brain-sized blob (< :data:`BRAIN_MAX_ML`; a whole head, even cut at
    the chin, is larger) and nearly every voxel around it holds exactly the image's minimum.
defaced (cut face)
    the air beside the front of the head holds exactly the image's minimum over a large
    skin area while the rest of the air around the head holds noise: a defacer's cut.
face outside the field of view
    the head touches the image's front edge over a large area.

A scan whose air is exactly zero everywhere (a masked background) gives the second test
nothing to go on; such a scan is warned about only when it is brain-sized. The measured
behaviour on real and simulated heads, defaced and not, is in docs/cohort.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from defacebench.io.errors import ImageError
from defacebench.io.nifti import read_header

#: Working resolution of the defaced/skull-stripped look (mm): fast, and fine enough for cm-sized evidence
#: (at 2 mm the look costs 0.2 s on a 1 mm head, about as much as reading it).
LOOK_MM = 3.0
#: Tissue threshold: share of the robust intensity range (as :func:`defacebench.imaging.masks.head_mask`).
TISSUE_FRACTION = 0.12
#: Below this much tissue the image is not a head (nor a brain): no warning is attempted (mL).
MIN_TISSUE_ML = 300.0
#: A skull-stripped brain is smaller than this; a whole head, even cut at the chin, is larger (mL).
BRAIN_MAX_ML = 2200.0
#: Share of the voxels around the tissue that must hold exactly the minimum to call it stripped.
STRIPPED_AIR_SHARE = 0.90
#: Skin area bordering minimum-valued air, at the front of the head, that marks a defacing cut (cm²).
CUT_MIN_CM2 = 20.0
#: Smallest connected block of minimum-valued air that counts as cut away (mL); scattered zeros are smaller.
BLOCK_MIN_ML = 10.0
#: Most of the air around the head that a cut may border (a cut takes part of the head, not all around it).
CUT_MAX_SHELL_SHARE = 0.8
#: Share of that area that must lie in front of the head's centre (measured 0.64-1.00 after the five defacers).
CUT_FRONT_SHARE = 0.5
#: Area over which the head may touch the image's front edge before the face counts as cut off (cm²).
EDGE_MIN_CM2 = 4.0
#: Smallest singular value of the affine's 3x3 part (mm) and its largest condition number.
AFFINE_MIN_MM, AFFINE_MAX_CONDITION = 0.01, 100.0


@dataclass(frozen=True)
class ImageCheck:
    """What the voxel-data check found in one image.

    ``reason`` is None for a usable image, else why it is rejected (one line);
    ``warnings`` are reasons to look at a usable image (one line each, with the evidence).
    """

    reason: str | None = None
    warnings: tuple[str, ...] = field(default_factory=tuple)


def _one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".replace("\n", " ").replace("\t", " ")[:200]


def affine_problem(affine: np.ndarray) -> str | None:
    """Why a voxel-to-world affine cannot place an image in space, or None when it can."""
    affine = np.asarray(affine, dtype=float)
    if not np.all(np.isfinite(affine)):
        return "degenerate affine (non-finite entries)"
    singular = np.linalg.svd(affine[:3, :3], compute_uv=False)
    if singular.min() < AFFINE_MIN_MM:
        return f"degenerate affine (an axis spans {singular.min():.3g} mm per voxel)"
    if singular.max() / singular.min() > AFFINE_MAX_CONDITION:
        return f"degenerate affine (axes scaled {singular.max() / singular.min():.0f}:1)"
    return None


def read_voxels(img: nib.Nifti1Image) -> np.ndarray:
    """The full voxel array, unscaled (the on-disk values), a singleton 4th axis dropped."""
    proxy = img.dataobj
    data = proxy.get_unscaled() if hasattr(proxy, "get_unscaled") else np.asanyarray(proxy)
    return data[..., 0] if data.ndim == 4 else data


def voxel_problem(data: np.ndarray, slope: float = 1.0, inter: float = 0.0) -> str | None:
    """Why voxel values cannot be used (NaN/Inf, constant, all zero), or None when they can."""
    if not (np.isfinite(slope) and np.isfinite(inter)):
        return f"non-finite intensity scaling (slope {slope}, intercept {inter})"
    if np.issubdtype(data.dtype, np.floating) and not np.isfinite(data).all():
        nan = int(np.isnan(data).sum())
        inf = int(np.isinf(data).sum())
        return f"{nan} NaN and {inf} Inf voxel values"
    low, high = data.min(), data.max()
    if low == high:
        value = float(low) * (slope if slope else 1.0) + inter
        return "empty image (all voxels 0)" if value == 0 else f"constant image (every voxel {value:g})"
    return None


def _header(path: str | Path) -> tuple[nib.Nifti1Image | None, str | None]:
    """The lazily opened image and None, or None and why its header or affine cannot be used."""
    try:
        img = read_header(path)
    except ImageError as exc:
        return None, exc.reason
    except Exception as exc:  # read_header turns nibabel's own errors into ImageError; anything else lands here
        return None, f"unreadable image header ({_one_line(exc)})"
    problem = affine_problem(img.affine)
    return (None, problem) if problem else (img, None)


def check_header(path: str | Path) -> ImageCheck:
    """The header-only check (``defacebench cohort --quick``): header and affine, no voxel data."""
    return ImageCheck(_header(path)[1])


def check_image(path: str | Path) -> ImageCheck:
    """Read one image in full and check it; never raises (a failure is a rejection reason)."""
    img, problem = _header(path)
    if img is None:
        return ImageCheck(problem)
    try:
        data = read_voxels(img)
    except Exception as exc:  # truncated gzip (EOFError), bad CRC, short .nii (ValueError)...
        return ImageCheck(f"cannot read the voxel data in full ({_one_line(exc)})")
    slope, inter = (getattr(img.dataobj, name, default) for name, default in (("slope", 1.0), ("inter", 0.0)))
    problem = voxel_problem(data, float(slope), float(inter))
    if problem:
        return ImageCheck(problem)
    try:
        return ImageCheck(None, tuple(face_and_brain_warnings(data, img.affine)))
    except Exception as exc:  # the look is advisory: a failure of it never rejects a scan
        return ImageCheck(None, (f"defaced/skull-stripped look failed ({_one_line(exc)})",))


# --------------------------------------------------------------------------- defaced / skull-stripped
def _ras_small(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The data in RAS+ voxel order, strided to about :data:`LOOK_MM`, and its voxel sizes (mm)."""
    ornt = nib.orientations.io_orientation(affine)
    ras = nib.orientations.apply_orientation(data, ornt)
    zooms = np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0))[np.argsort(ornt[:, 0])]
    steps = [max(1, int(round(LOOK_MM / z))) for z in zooms]
    return ras[:: steps[0], :: steps[1], :: steps[2]], zooms * steps


def _largest_filled(mask: np.ndarray) -> np.ndarray:
    """The largest connected component of ``mask``, holes filled slice by slice and in 3D."""
    mask = _largest_component(mask)
    mask = np.stack([ndimage.binary_fill_holes(s) for s in np.moveaxis(mask, 2, 0)], axis=2)
    return ndimage.binary_fill_holes(mask)


def _largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest connected component of ``mask`` (no hole filling)."""
    labels, n = ndimage.label(mask)
    if n <= 1:
        return mask
    return labels == 1 + int(np.argmax(np.bincount(labels.ravel())[1:]))


def _large_components(mask: np.ndarray, min_voxels: float) -> np.ndarray:
    """The connected components of ``mask`` with at least ``min_voxels`` voxels."""
    labels, n = ndimage.label(mask)
    sizes = np.bincount(labels.ravel())
    keep = sizes >= min_voxels
    keep[0] = False
    return keep[labels]


def face_and_brain_warnings(data: np.ndarray, affine: np.ndarray) -> list[str]:
    """Evidence that a scan is already defaced, skull-stripped or has its face outside the image.

    Parameters
    ----------
    data : ndarray
        The image's 3D voxel values (unscaled is fine: the look uses only order and equality).
    affine : ndarray (4, 4)
        Voxel to world; gives the anterior direction and the voxel size.

    Returns
    -------
    list of str
        One line per finding, each with the measured evidence; empty for a whole head.
    """
    small, zooms = _ras_small(np.asarray(data), affine)
    voxel_ml = float(np.prod(zooms)) / 1000.0
    floor = small.min()
    at_floor = small == floor
    above = small[~at_floor]
    if above.size == 0:
        return []
    high = float(np.percentile(above, 99))
    tissue = _largest_filled(small > floor + TISSUE_FRACTION * (high - float(floor)))
    tissue_ml = float(tissue.sum()) * voxel_ml
    if tissue_ml < MIN_TISSUE_ML:
        return []
    near = ndimage.binary_dilation(tissue, iterations=2)
    air = ~near
    air_floor = float(at_floor[air].mean()) if air.any() else 0.0
    if air_floor >= STRIPPED_AIR_SHARE and tissue_ml < BRAIN_MAX_ML:
        return [f"looks skull-stripped: the only tissue is a {tissue_ml:.0f} mL brain-sized blob (a whole head is over "
                f"{BRAIN_MAX_ML:.0f} mL) and {100 * air_floor:.0f} % of the voxels around it are exactly {float(floor):g}"]
    found = []
    shell = near & ~tissue
    # blocks of minimum-valued air (a cut), not zeros scattered through the noise
    cut = shell & _large_components(at_floor & ~tissue, BLOCK_MIN_ML / voxel_ml)
    shell_floor = float(cut.sum()) / max(int(shell.sum()), 1)
    area_cm2 = float(cut.sum()) / 2 * float(np.prod(zooms)) ** (2 / 3) / 100.0
    centre_y = float(np.nonzero(tissue)[1].mean())
    front = float((np.nonzero(cut)[1] > centre_y).mean()) if cut.any() else 0.0
    if air_floor < STRIPPED_AIR_SHARE and shell_floor < CUT_MAX_SHELL_SHARE and area_cm2 >= CUT_MIN_CM2 and front >= CUT_FRONT_SHARE:
        found.append(f"looks defaced: {area_cm2:.0f} cm² of skin at the front of the head ({100 * front:.0f} % of it in front "
                     f"of the head's centre) borders voxels that are exactly {float(floor):g}, while {100 * (1 - air_floor):.0f} % "
                     "of the air elsewhere holds noise")
    edge_cm2 = float(tissue[:, -1, :].sum()) * float(zooms[0] * zooms[2]) / 100.0
    if edge_cm2 >= EDGE_MIN_CM2:
        found.append(f"face outside the field of view: the head touches the image's front edge over {edge_cm2:.0f} cm²")
    return found
