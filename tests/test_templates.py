"""Templates: nilearn's MNI brain ships; the MNI head is built from pydeface's head and aligned."""

from __future__ import annotations

import numpy as np
import pytest

from defacebench.imaging import templates


def test_mni_brain_and_mask_bundled():
    brain, mask = templates.mni_brain(), templates.mni_brain_mask()
    assert brain.shape == mask.shape == (197, 233, 189)
    assert 1.7e6 < np.asarray(mask.dataobj).sum() < 2.1e6
    np.testing.assert_allclose(brain.affine[:3, 3], [-98, -134, -72])


def test_head_grid_on_mni_lattice():
    affine, shape = templates.head_grid(1)
    assert shape == templates.HEAD_GRID_SHAPE
    assert np.all((affine[:3, 3] - templates.mni_brain().affine[:3, 3]) % 1 == 0)


@pytest.mark.slow
def test_mni_head_brain_aligned_with_mni_mask():
    from defacebench.imaging.brain import extract_brain
    from defacebench.imaging.registration import mask_dice

    head = templates.mni_head(2)
    brain = np.asarray(extract_brain(head).dataobj) > 0
    assert mask_dice(brain, np.asarray(templates.mni_head_brain_mask(2).dataobj)) > 0.9
    # the head reaches the nose tip and below the chin
    z = templates.head_grid(2)[0][2, 3] + 2 * np.nonzero(np.asarray(head.dataobj).max(axis=(0, 1)) > 0.1 * np.asarray(head.dataobj).max())[0]
    assert z.min() < -100
