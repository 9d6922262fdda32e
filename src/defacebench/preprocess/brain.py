"""Brain extraction with deepbet (its weights ship in the wheel; runs offline on CPU).

deepbet's ``run_bet`` skips files it thinks are broken (small images); here the
model is called directly on an in-memory image, once per process loaded.
"""

from __future__ import annotations

import functools
import os

import nibabel as nib
import numpy as np

from defacebench.io.errors import StageError


@functools.lru_cache(maxsize=1)
def _brain_extraction():
    """One deepbet model per process (CPU unless CUDA is available and allowed)."""
    try:
        from deepbet import BrainExtraction
    except ImportError as exc:  # pragma: no cover - deepbet is a dependency
        raise StageError(f"brain extraction needs deepbet ({exc})") from None
    import torch

    no_gpu = os.environ.get("DEFACEBENCH_NO_GPU", "") not in {"", "0"} or not torch.cuda.is_available()
    return BrainExtraction(no_gpu=no_gpu)


def extract_brain(img: nib.Nifti1Image, threshold: float = 0.5, n_dilate: int = 0) -> nib.Nifti1Image:
    """Binary brain mask of a T1w head image, on the image's own grid.

    Parameters
    ----------
    img : nibabel.Nifti1Image
        3D T1w image, any orientation.
    threshold : float
        Probability threshold of deepbet.
    n_dilate : int
        Voxels to dilate (negative erodes), as in deepbet.

    Returns
    -------
    nibabel.Nifti1Image
        uint8 mask (1 = brain) with ``img``'s shape and affine.

    Raises
    ------
    StageError
        deepbet failed or found no brain.
    """
    data = np.asarray(img.dataobj, dtype=np.float32)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise StageError(f"brain extraction needs a 3D image, got shape {data.shape}")
    source = nib.Nifti1Image(data, img.affine)
    try:
        import torch

        with torch.inference_mode():
            _, mask_img, _ = _brain_extraction().run(source, threshold=threshold, n_dilate=n_dilate)
    except Exception as exc:
        raise StageError(f"brain extraction failed ({type(exc).__name__}: {exc})") from exc
    mask = np.asarray(mask_img.dataobj) > 0
    if mask.shape != data.shape:
        raise StageError(f"brain mask shape {mask.shape} differs from the image {data.shape}")
    if not mask.any():
        raise StageError("brain extraction found no brain")
    out = nib.Nifti1Image(mask.astype(np.uint8), img.affine)
    out.set_data_dtype(np.uint8)
    return out
