"""The rotation kernel (``affine_grid`` + ``grid_sample`` in one Triton kernel), on CPU
through Triton's interpreter; on a GPU machine the same tests run the compiled kernel."""

from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # read when the kernels are defined
pytest.importorskip("triton")

from defacebench.model.augment import apply_theta, rotation_theta, sample_rotation_angles  # noqa: E402
from defacebench.model.accel.triton_rotate import rotate_volumes  # noqa: E402
from full_float32 import full_float32  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
SHAPES = [(7, 8, 9), (12, 10, 11)]


@pytest.fixture(autouse=True)
def _no_tf32():
    """Full float32 references on a GPU (``affine_grid``'s matrix product would run in TF32)."""
    with full_float32():
        yield


def _images(shape: tuple[int, int, int], seed: int, batch: int = 3, channels: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, channels, *shape, generator=g).to(DEVICE)


def _translation(batch: int, shift: tuple[float, float, float]) -> torch.Tensor:
    """Identity ``theta`` translated by ``shift`` in normalised (W, H, D) coordinates."""
    theta = torch.eye(3, 4).repeat(batch, 1, 1)
    theta[:, :, 3] = torch.tensor(shift)
    return theta.to(DEVICE)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (1.0, 1.3, 2.5)])
def test_equals_apply_theta_for_the_training_rotations(shape: tuple[int, int, int], spacing: tuple[float, float, float]) -> None:
    """30 degrees (the paper trains with 10) so the corners leave the field of view."""
    x = _images(shape, sum(shape))
    angles = sample_rotation_angles(3, 30.0, torch.Generator().manual_seed(sum(shape) + int(10 * spacing[2])))
    theta = rotation_theta(angles, shape, spacing).to(DEVICE, torch.float32)
    out, ref = rotate_volumes(x, theta), apply_theta(x, theta)
    assert out.shape == ref.shape and out.dtype == ref.dtype
    assert torch.allclose(out, ref, atol=1e-5)
    assert (ref == 0).any()  # zero padding was exercised


@pytest.mark.parametrize("shape", SHAPES)
def test_equals_apply_theta_for_general_affine_matrices(shape: tuple[int, int, int]) -> None:
    """Shear, scale and translation: every entry of ``theta`` in its place."""
    x = _images(shape, 1)
    g = torch.Generator().manual_seed(2)
    theta = (torch.eye(3, 4) + 0.3 * torch.randn(3, 3, 4, generator=g)).to(DEVICE)
    assert torch.allclose(rotate_volumes(x, theta), apply_theta(x, theta), atol=1e-5)


def test_identity_returns_the_input() -> None:
    x = _images((7, 8, 9), 3)
    out = rotate_volumes(x, _translation(3, (0.0, 0.0, 0.0)))
    assert torch.allclose(out, x, atol=1e-6)  # not bit-exact: (2w+1)/W - 1 round-trips with ~1 ulp of error


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_an_integer_translation_shifts_and_fills_with_zeros(axis: int) -> None:
    """The conventions themselves, without ``apply_theta``: theta's x (first row) moves the
    *last* array axis; a shift of 2k/N normalised is k voxels; what leaves the grid is 0."""
    shape, k = (7, 8, 9), 3
    x = _images(shape, 4)
    shift = [0.0, 0.0, 0.0]
    shift[2 - axis] = 2.0 * k / shape[axis]  # (W, H, D) order
    theta = _translation(3, tuple(shift))
    out = rotate_volumes(x, theta)
    n = shape[axis]
    expected = torch.zeros_like(x)
    expected.narrow(2 + axis, 0, n - k).copy_(x.narrow(2 + axis, k, n - k))
    assert torch.allclose(out, expected, atol=1e-5)
    assert torch.allclose(out, apply_theta(x, theta), atol=1e-5)


def test_zero_padding_is_not_renormalised_at_the_border() -> None:
    """Half a voxel along the first array axis (grid_sample's D): each voxel is the mean of
    two neighbours, and the last one is half the border voxel (the outside counts as 0)."""
    shape = (7, 8, 9)
    x = _images(shape, 5)
    theta = _translation(3, (0.0, 0.0, 1.0 / shape[0]))
    out = rotate_volumes(x, theta)
    expected = torch.cat([(x[:, :, :-1] + x[:, :, 1:]) / 2, x[:, :, -1:] / 2], dim=2)
    assert torch.allclose(out, expected, atol=1e-5)
    assert torch.allclose(out, apply_theta(x, theta), atol=1e-5)


def test_a_volume_moved_out_of_view_is_zero() -> None:
    x = _images((7, 8, 9), 6) + 1.0
    theta = _translation(3, (0.0, -2.5, 0.0))
    assert torch.equal(rotate_volumes(x, theta), torch.zeros_like(x))
    assert torch.equal(apply_theta(x, theta), torch.zeros_like(x))


def test_each_channel_is_resampled_with_its_image_matrix() -> None:
    shape = (12, 10, 11)
    x = _images(shape, 7, channels=2)
    theta = rotation_theta(sample_rotation_angles(3, 20.0, torch.Generator().manual_seed(8)), shape).to(DEVICE, torch.float32)
    out = rotate_volumes(x, theta)
    assert torch.allclose(out, apply_theta(x, theta), atol=1e-5)
    assert torch.allclose(out[:, 1:], rotate_volumes(x[:, 1:].contiguous(), theta), atol=1e-6)


@pytest.mark.parametrize(("dtype", "rtol"), [(torch.float64, 1e-12), (torch.float16, 2**-10), (torch.bfloat16, 2**-7), (torch.uint8, None)])
def test_output_dtype_and_values_follow_apply_theta(dtype: torch.dtype, rtol: float | None) -> None:
    """16-bit values may differ by one unit in the last place: the float32 sums' order
    differs, and Triton's interpreter truncates float32 -> bfloat16 instead of rounding."""
    shape = (7, 8, 9)
    x = _images(shape, 9)
    x = (x * 200).to(dtype) if rtol is None else x.to(dtype)
    theta = rotation_theta(sample_rotation_angles(3, 20.0, torch.Generator().manual_seed(10)), shape).to(DEVICE, torch.float32)
    out, ref = rotate_volumes(x, theta), apply_theta(x, theta)
    assert out.dtype == dtype and out.shape == ref.shape
    if rtol is None:  # float32 truncated to integers: an ulp below an integer drops by 1
        assert (out.int() - ref.int()).abs().max() <= 1
    else:
        assert torch.allclose(out.double(), ref.double(), rtol=rtol, atol=1e-12)


def test_rejects_mismatched_shapes() -> None:
    x = _images((7, 8, 9), 0)
    with pytest.raises(ValueError):
        rotate_volumes(x, _translation(2, (0.0, 0.0, 0.0)))
    with pytest.raises(ValueError):
        rotate_volumes(x[:, 0], _translation(3, (0.0, 0.0, 0.0)))
