"""Refacing end to end (slow): mrireface on a real head, and the own-face measurement on simulated people."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from defacebench.cohort import read_cohort
from defacebench.deface import deface_cohort, deface_subject
from defacebench.deface.reface_check import own_face_control, own_face_correlations
from deface_helpers import robex_scan

pytestmark = pytest.mark.slow


def test_mrireface_keeps_the_brain_and_everything_outside_its_region(tmp_path) -> None:
    subject, saved, brain = robex_scan(tmp_path / "out", ["mrireface"])
    result = deface_subject(subject, tmp_path / "out", ["mrireface"])
    original = np.asarray(saved.dataobj)
    refaced, face, mask = (np.asarray(nib.load(str(result["paths"][f"mrireface_{k}"])).dataobj) for k in ("defaced", "face", "mask"))
    np.testing.assert_array_equal(refaced[mask == 0], original[mask == 0])
    np.testing.assert_array_equal(refaced[brain], original[brain])
    np.testing.assert_array_equal(face, np.where(mask > 0, original, 0))
    # the tolerance band: nothing replaced within 5 mm of the brain
    from scipy import ndimage

    distance = ndimage.distance_transform_edt(~brain, sampling=np.linalg.norm(saved.affine[:3, :3], axis=0))
    assert distance[mask > 0].min() > 5.0
    assert mask.sum() * 1.5**3 / 1000 > 200  # ml: the face and ears


def test_refaced_regions_are_no_more_like_their_own_face_than_the_same_face_re_noised(tmp_path) -> None:
    """Simulated people with identities: the own head re-noised stands ~0.12 above other
    people; a refaced region at most a twentieth of that (the AFNI refacers' shell through the
    brain registration, mrireface's warp faded inside the face: docs/defacing.md)."""
    from defacebench.simulate import simulate_cohort

    simulate_cohort(tmp_path / "bids", 6, seed=5, voxel_mm=3.0)
    cohort = read_cohort(tmp_path / "bids")
    methods = ["afnireface", "mrireface"]
    deface_cohort(cohort, tmp_path / "out", methods, jobs=1, progress=False)
    control = own_face_control(tmp_path / "out", cohort.subjects, "afnireface")
    assert control["rank1"] == 1.0
    for method in methods:
        result = own_face_correlations(tmp_path / "out", cohort.subjects, method)
        print(method, {k: round(v, 3) for k, v in result.items() if k != "correlations"}, "control", round(control["excess"], 3))
        assert result["excess"] < 0.05 * control["excess"]
        assert result["rank1"] <= 2 * result["chance"]
