"""Registration: a known affine is recovered, deterministically, with no ANTs files left behind."""

from __future__ import annotations

import glob
import tempfile

import nibabel as nib
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from defacebench.imaging.registration import block_downsample, load_transform, register, remove_shear, save_transform
from defacebench.imaging.resample import resample_to, world_coordinates
from deface_helpers import robex_head


@pytest.fixture(scope="module")
def pair():
    head, _ = robex_head()
    small = block_downsample(head, 3.0)
    known = np.eye(4)
    known[:3, :3] = Rotation.from_euler("xyz", [8, -5, 6], degrees=True).as_matrix() @ np.diag([1.05, 0.95, 1.0])
    known[:3, 3] = [5, -8, 4]
    # moving world = known @ fixed world: moving -> fixed is inv(known)
    moving = nib.Nifti1Image(np.asarray(small.dataobj), known @ small.affine)
    return small, moving, known


def test_recovers_known_affine_in_ras(pair, tmp_path, monkeypatch):
    fixed, moving, known = pair
    # a private temp dir: other processes on the machine use /tmp too
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    matrix = register(fixed, moving, kind="affine", resolution_mm=4.0)
    np.testing.assert_allclose(matrix, np.linalg.inv(known), atol=0.08)
    assert not glob.glob(str(tmp_path / "*")), "ANTs left files behind"


_DETERMINISM_SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
import numpy as np, nibabel as nib
from scipy.spatial.transform import Rotation
from deface_helpers import robex_head
from defacebench.imaging.registration import block_downsample, register
head, _ = robex_head()
small = block_downsample(head, 4.0)
known = np.eye(4)
known[:3, :3] = Rotation.from_euler("xyz", [8, -5, 6], degrees=True).as_matrix()
known[:3, 3] = [5, -8, 4]
moving = nib.Nifti1Image(np.asarray(small.dataobj), known @ small.affine)
for seed in (0, 0, 3):
    m = register(small, moving, kind="affine", resolution_mm=4.0, iterations=(40, 20), seed=seed)
    print(" ".join(repr(float(v)) for v in m.ravel()))
"""


def test_deterministic_bit_identical():
    """Same inputs, same seed: bit-identical matrices, within a process and across processes.

    Run in fresh interpreters: ITK latches its thread count on first use, and other tests
    in this process may have started it multi-threaded.
    """
    import subprocess
    import sys
    from pathlib import Path

    script = _DETERMINISM_SCRIPT.format(tests=str(Path(__file__).parent))
    runs = []
    for _ in range(2):
        proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        runs.append([np.array([float(v) for v in line.split()]) for line in proc.stdout.strip().splitlines()])
    (a, b, other), (c, d, _) = runs
    np.testing.assert_array_equal(a, b)  # within a process
    np.testing.assert_array_equal(a, c)  # across processes
    np.testing.assert_array_equal(c, d)
    assert np.abs(a - other).max() > 0  # the seed is used: another seed, another (close) answer
    assert np.abs(a - other).max() < 0.05


def test_resample_matches_world_mapping(pair):
    fixed, moving, known = pair
    back = resample_to(moving, np.linalg.inv(known), fixed.affine, fixed.shape, order=1)
    np.testing.assert_allclose(back, np.asarray(fixed.dataobj), atol=1e-3 * float(np.max(fixed.dataobj)))


def test_remove_shear_keeps_rotation_and_scale():
    rot = Rotation.from_euler("z", 10, degrees=True).as_matrix()
    m = np.eye(4)
    m[:3, :3] = rot @ np.diag([1.1, 0.9, 1.0])
    m[:3, 3] = [1, 2, 3]
    np.testing.assert_allclose(remove_shear(m), m, atol=1e-9)
    sheared = m.copy()
    sheared[:3, :3] = m[:3, :3] @ np.array([[1, 0.1, 0], [0, 1, 0], [0, 0, 1]])
    out = remove_shear(sheared)
    np.testing.assert_allclose(out[:3, :3], m[:3, :3], atol=1e-9)


def test_transform_roundtrip(tmp_path):
    m = np.arange(16, dtype=float).reshape(4, 4)
    m[3] = [0, 0, 0, 1]
    path = save_transform(m, tmp_path / "x_xfm.txt")
    np.testing.assert_array_equal(load_transform(path), m)
    (tmp_path / "bad.txt").write_text("1 2 3\n")
    with pytest.raises(ValueError):
        load_transform(tmp_path / "bad.txt")


def test_world_coordinates_oblique():
    affine = np.array([[0.0, 0, -1.5, 40], [1.2, 0, 0, -30], [0, 1.1, 0.1, 12], [0, 0, 0, 1]])
    coords = world_coordinates(affine, (7, 8, 9))
    np.testing.assert_allclose(coords[:, 3, 4, 5], (affine @ [3, 4, 5, 1])[:3], atol=1e-5)


@pytest.mark.parametrize("slab_values", [1 << 22, 100])  # one slab; one x-row per slab
def test_world_coordinates_equal_the_index_array_formula(slab_values, monkeypatch):
    """Bit for bit the numbers of evaluating every term on full index arrays (as before the speed-up)."""
    from defacebench.imaging import resample

    monkeypatch.setattr(resample, "SLAB_VALUES", slab_values)
    affine = np.array([[0.93, 0.02, -0.1, 95.3], [0.05, -1.07, 0.01, 130.7], [0.0, 0.03, 1.21, -70.2], [0, 0, 0, 1]])
    matrix = np.array([[1.04, 0.03, -0.02, 3.1], [-0.01, 0.97, 0.05, -8.6], [0.02, -0.04, 1.1, 5.3], [0, 0, 0, 1]])
    for grid_matrix, dtype in ((None, np.float32), (matrix, np.float32), (matrix, np.float64)):
        full = affine if grid_matrix is None else grid_matrix @ affine
        ijk = np.indices((7, 8, 9), dtype=dtype)
        expected = np.empty((3, 7, 8, 9), dtype=dtype)
        for row in range(3):
            expected[row] = full[row, 0] * ijk[0] + full[row, 1] * ijk[1] + full[row, 2] * ijk[2] + full[row, 3]
        got = world_coordinates(affine, (7, 8, 9), grid_matrix, dtype=dtype)
        assert got.dtype == expected.dtype
        np.testing.assert_array_equal(got, expected)
