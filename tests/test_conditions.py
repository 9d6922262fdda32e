from __future__ import annotations

import numpy as np
import pytest

from defacebench.conditions import Condition, build_all, methods_of, parse_condition, resolve_conditions
from defacebench.io.errors import InputError


def test_paper_preset_is_the_ten_conditions_of_table_1_and_four_geometry_controls() -> None:
    names = [c.name for c in resolve_conditions()]
    assert names == ["raw", "skullstripped", "defaced-afni", "defaced-fsl", "defaced-pydeface", "defaced-spm",
                     "face-afni", "face-fsl", "face-pydeface", "face-spm",
                     "facemask-afni", "facemask-fsl", "facemask-pydeface", "facemask-spm"]


def test_subset_extra_methods_and_duplicates() -> None:
    assert [c.name for c in resolve_conditions(["face-afni", "raw", "face-afni"])] == ["face-afni", "raw"]
    extra = resolve_conditions(methods=["quickshear"], known_methods=["afni", "quickshear"])
    assert [c.name for c in extra] == ["raw", "skullstripped", "defaced-quickshear", "face-quickshear", "facemask-quickshear"]
    assert methods_of(resolve_conditions(["face-spm", "defaced-afni", "defaced-spm", "raw"])) == ("spm", "afni")


def test_unknown_conditions_and_methods_are_input_errors() -> None:
    with pytest.raises(InputError, match="unknown condition"):
        parse_condition("blurred-afni")
    with pytest.raises(InputError, match="unknown condition"):
        parse_condition("face-")
    with pytest.raises(InputError, match="unknown defacing method"):
        resolve_conditions(["face-magic"], known_methods=["afni"])


def test_parse_and_identifying() -> None:
    assert parse_condition("defaced-afni") == Condition("defaced-afni", "defaced", "afni")
    assert parse_condition("face-afni").identifying and parse_condition("raw").identifying
    assert parse_condition("facemask-fsl") == Condition("facemask-fsl", "facemask", "fsl") and not parse_condition("facemask-fsl").identifying
    assert not parse_condition("defaced-afni").identifying and not parse_condition("skullstripped").identifying


def test_build_defaced_plus_face_is_raw_and_skullstripped_is_brain_only() -> None:
    rng = np.random.default_rng(0)
    head = rng.uniform(0, 100, (7, 8, 9)).astype(np.float32)
    brain = np.zeros(head.shape, bool)
    brain[2:5, 3:6, 3:7] = True
    face = head * (rng.uniform(size=head.shape) > 0.7)
    images = build_all(resolve_conditions(["raw", "skullstripped", "defaced-spm", "face-spm"]), head, brain, {"spm": face})
    np.testing.assert_array_equal(images["raw"], head)
    np.testing.assert_array_equal(images["face-spm"], face)
    np.testing.assert_allclose(images["defaced-spm"] + images["face-spm"], head, rtol=1e-6)
    assert np.all(images["skullstripped"][~brain] == 0) and np.array_equal(images["skullstripped"][brain], head[brain])
    with pytest.raises(ValueError, match="face-only"):
        parse_condition("face-afni").build(head, brain, None)
    removed = (face > 0).astype(np.float32)
    mask = build_all(resolve_conditions(["facemask-spm"]), head, brain, {"spm": face}, {"spm": removed})["facemask-spm"]
    np.testing.assert_array_equal(mask, removed)  # the control's own image: no head intensities
    with pytest.raises(ValueError, match="geometry-control image"):
        parse_condition("facemask-afni").build(head, brain, face)
