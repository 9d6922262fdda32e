from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import TINY_AFFINE, tiny_volume
from defacebench.io.errors import InputError
from defacebench.imaging.grids import GRIDS, Grid, get_grid, grid_from_bounds
from defacebench.imaging.grids import apply_affine
from defacebench.imaging.resample import LinearResampler, block_average

#: Points of a head in MNI mm that the paper's box misses: nose tip, chin, jaw angle.
FACE_POINTS = np.array([[0.0, 104.0, -30.0], [0.0, 85.0, -100.0], [50.0, 40.0, -95.0]])
EARS = np.array([[-84.0, -20.0, -30.0], [86.0, -25.0, -10.0]])


def test_paper_grid_is_exact() -> None:
    grid = GRIDS["mni2mm"]
    assert grid.shape == (91, 109, 91)
    np.testing.assert_array_equal(grid.affine, [[-2, 0, 0, 90], [0, 2, 0, -126], [0, 0, 2, -72], [0, 0, 0, 1]])
    np.testing.assert_array_equal(grid.bounds_mm, [[-90, 90], [-126, 90], [-72, 108]])


def test_head_grids_hold_the_face_the_paper_grid_cuts_off() -> None:
    assert not GRIDS["mni2mm"].contains(FACE_POINTS).any()
    for name in ("mni2mm-head", "mni4mm"):
        grid = GRIDS[name]
        assert grid.contains(FACE_POINTS).all() and grid.contains(EARS).all()
        assert grid.contains(np.array([[-90.0, -126.0, -72.0], [90.0, 90.0, 108.0]])).all(), "and the whole paper box"
    assert GRIDS["mni2mm-head"].voxel_mm == (2.0, 2.0, 2.0) and GRIDS["mni4mm"].voxel_mm == (4.0, 4.0, 4.0)
    assert GRIDS["mni4mm"].affine[0, 0] < 0  # stored like the paper's grid


def test_grid_from_json_and_unknown(tmp_path: Path) -> None:
    path = tmp_path / "g.json"
    path.write_text(json.dumps({"name": "mine", "shape": [7, 8, 9], "affine": TINY_AFFINE.tolist()}))
    grid = get_grid(path)
    assert grid.name == "mine" and grid.shape == (7, 8, 9) and grid == Grid("mine", (7, 8, 9), TINY_AFFINE.copy())
    assert hash(grid) == hash(Grid("mine", (7, 8, 9), TINY_AFFINE.copy()))
    with pytest.raises(InputError, match="unknown grid"):
        get_grid("mni3mm")
    path.write_text(json.dumps({"shape": [7, 8], "affine": TINY_AFFINE.tolist()}))
    with pytest.raises(InputError, match="bad grid file"):
        get_grid(path)


def test_identity_resampling_onto_the_same_grid_is_exact() -> None:
    data = tiny_volume((17, 18, 19))
    grid = Grid("same", (17, 18, 19), TINY_AFFINE)
    out = LinearResampler(TINY_AFFINE, data.shape, np.eye(4), grid)(data)
    np.testing.assert_allclose(out, data, atol=1e-4)


def test_resampler_matches_an_independent_implementation() -> None:
    from defacebench.imaging.resample import resample_to

    data = tiny_volume((17, 18, 19), seed=3)
    to_template = np.array([[0.9, 0.1, 0.0, 3.0], [-0.1, 1.1, 0.05, -2.0], [0.0, -0.05, 1.0, 5.0], [0, 0, 0, 1]])
    grid = grid_from_bounds("g", 1.3, ((20, 45), (-40, -5), (5, 30)))
    ours = LinearResampler(TINY_AFFINE, data.shape, to_template, grid)(data)
    theirs = resample_to(data, to_template, grid.affine, grid.shape, order=1, source_affine=TINY_AFFINE)
    assert np.abs(ours).max() > 10
    np.testing.assert_allclose(ours, theirs, atol=1e-3)


def test_resampling_is_linear_and_maps_world_points() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(2, 17, 18, 19)).astype(np.float32)
    shift = np.eye(4)
    shift[:3, 3] = [4.0, -3.0, 2.0]
    grid = grid_from_bounds("g", 2.0, ((15, 50), (-35, 0), (5, 30)))
    resample = LinearResampler(TINY_AFFINE, a.shape, shift, grid)
    np.testing.assert_allclose(resample(a) + resample(b), resample(a + b), atol=1e-5)
    # one bright voxel lands where the transform sends its world position
    spike = np.zeros((17, 18, 19), np.float32)
    spike[8, 9, 10] = 1
    out = resample(spike)
    world = apply_affine(shift @ TINY_AFFINE, np.array([[8.0, 9.0, 10.0]]))
    peak = np.array(np.unravel_index(np.argmax(out), out.shape), float)
    assert np.linalg.norm(apply_affine(grid.affine, peak[None]) - world) < 2.0


def test_antialiasing_block_average_keeps_the_mean() -> None:
    data = tiny_volume((16, 18, 20))
    small, affine = block_average(data, TINY_AFFINE, (2, 3, 2))
    assert small.shape == (8, 6, 10)
    np.testing.assert_allclose(small.mean(), data.mean(), rtol=1e-5)
    # block centre of block (0, 0, 0) is the mean position of its voxels
    np.testing.assert_allclose(apply_affine(affine, np.zeros((1, 3))), apply_affine(TINY_AFFINE, np.array([[0.5, 1.0, 0.5]])))
    one_mm = np.diag([1.0, 1.0, 1.0, 1.0])
    assert LinearResampler(one_mm, (40, 40, 40), np.eye(4), GRIDS["mni4mm"]).factors == (2, 2, 2)
    assert LinearResampler(one_mm, (40, 40, 40), np.eye(4), GRIDS["mni2mm"]).factors == (1, 1, 1)
