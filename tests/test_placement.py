"""Cavity placement: the cavity is closed and filled, a known placement is recovered, and what
changes inside the cavity (atrophy, growing ventricles) does not move it."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from defacebench.imaging.blocks import block_affine, block_mean
from defacebench.imaging.placement import face_placement_transform, intracranial_mask, smoothed_mask
from defacebench.imaging.templates import mni_brain_mask


def test_intracranial_mask_fills_holes_and_bridges_a_sulcus():
    ball = np.indices((21, 21, 21)) - 10
    radius = np.sqrt((ball**2).sum(0))
    shell = (radius <= 8) & (radius > 4)  # brain with a large ventricle
    sulcus = shell & ~((np.abs(ball[0]) <= 0) & (ball[1] > 0))  # a one-voxel slit from the surface inwards
    cavity = intracranial_mask(sulcus)
    assert cavity[10, 10, 10], "the ventricle is inside the cavity"
    assert cavity[10, 15, 10], "the slit is bridged"
    assert not cavity[10, 10, 19] and not cavity[0, 0, 0], "nothing outside the brain's outline is added"
    np.testing.assert_array_equal(intracranial_mask(sulcus, closing_iterations=0)[10, 15, 10], False)


def test_smoothed_mask_sigma_is_in_mm():
    mask = np.zeros((15, 15, 15), bool)
    mask[7, 7, 7] = True
    fine = smoothed_mask(mask, np.diag([1.0, 1.0, 1.0, 1.0]), sigma_mm=2.0)
    coarse = smoothed_mask(mask, np.diag([2.0, 2.0, 2.0, 1.0]), sigma_mm=2.0)
    # the same fall-off 2 mm from the point: one voxel of the coarse grid, two of the fine one
    np.testing.assert_allclose(coarse[7, 7, 8] / coarse[7, 7, 7], fine[7, 7, 9] / fine[7, 7, 7], rtol=0.05)
    np.testing.assert_allclose(coarse[7, 7, 8] / coarse[7, 7, 7], np.exp(-0.5), rtol=0.05)
    np.testing.assert_allclose(fine.sum(), 1.0, rtol=1e-4)


@pytest.fixture(scope="module")
def subject():
    """The MNI brain mask at 4 mm as a subject's cavity, placed by a known affine."""
    ref = mni_brain_mask()
    data = block_mean(np.asarray(ref.dataobj, dtype=np.float32), 4) >= 0.5
    affine = block_affine(ref.affine, 4)
    known = np.eye(4)
    known[:3, :3] = Rotation.from_euler("xyz", [6, -4, 5], degrees=True).as_matrix() @ np.diag([1.06, 0.96, 1.02])
    known[:3, 3] = [4, -6, 3]
    # subject world = known @ MNI world, so subject -> MNI is inv(known)
    return nib.Nifti1Image(data.astype(np.float32), known @ affine), data, known


def test_recovers_a_known_placement(subject):
    img, cavity, known = subject
    matrix = face_placement_transform(img, cavity)
    corners = np.array([[-70, -100, -70, 1], [70, 70, 80, 1], [0, 60, -40, 1]], float).T  # subject-side MNI points
    moved = matrix @ known @ corners
    assert np.abs(moved - corners).max() < 2.5, (moved - corners).round(2)


def test_atrophy_inside_the_cavity_does_not_move_the_placement(subject):
    img, cavity, _ = subject
    atrophied = cavity.copy()
    core = np.indices(cavity.shape) - (np.array(cavity.shape) // 2)[:, None, None, None]
    atrophied[(np.abs(core) <= np.array([4, 6, 3])[:, None, None, None]).all(0)] = False  # ventricles grow
    base = face_placement_transform(img, cavity)
    np.testing.assert_array_equal(face_placement_transform(img, atrophied), base)
    with pytest.raises(ValueError, match="empty"):
        face_placement_transform(img, np.zeros_like(cavity))
