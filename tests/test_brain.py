"""deepbet brain extraction on a real head: right size, same grid, orientation-proof."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from deface_helpers import reoriented, robex_head


@pytest.mark.slow
def test_extract_brain_matches_atlas_mask_and_orientation():
    from defacebench.imaging.brain import extract_brain
    from defacebench.imaging.registration import mask_dice

    head, truth = robex_head()
    mask = extract_brain(head)
    assert mask.shape == head.shape and np.allclose(mask.affine, head.affine)
    assert mask.get_data_dtype() == np.uint8
    data = np.asarray(mask.dataobj)
    assert mask_dice(data, truth) > 0.9
    pir, back = reoriented(head, "PIR")
    again = nib.orientations.apply_orientation(np.asarray(extract_brain(pir).dataobj), back)
    assert mask_dice(again, data) > 0.99
