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


def test_quantile_equals_torch_quantile():
    """deepbet's intensity window uses brain.quantile (selection) instead of torch.quantile (a full sort): same bits."""
    import torch

    from defacebench.imaging.brain import quantile

    generator = torch.Generator().manual_seed(5)
    for n in (2, 3, 7 * 8 * 9, 12_345):
        for x in ((torch.rand(n, generator=generator) * 900).round(), torch.randn(n, generator=generator) * 300):
            for q in (0.0, 0.005, 0.5, 0.995, 1.0):
                assert torch.equal(quantile(x, q), x.quantile(q)), (n, q)
    cube = torch.rand(7, 8, 9, generator=generator)
    assert torch.equal(quantile(cube, 0.995), cube.quantile(0.995))
