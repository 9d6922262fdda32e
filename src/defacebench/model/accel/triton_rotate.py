"""The training rotation (``affine_grid`` + trilinear ``grid_sample``) in one Triton kernel.

:func:`.augment.apply_theta` builds a ``(B, X, Y, Z, 3)`` float32 grid with
``F.affine_grid`` that ``F.grid_sample`` then reads back, a sizeable share of a training
step's GPU time (docs/training.md). Here each program takes a block of output voxels of one image channel, computes their
source coordinates from the image's ``3x4`` matrix on the fly and interpolates the 8
neighbours, so no grid exists and the image is read once.

Conventions reproduced (``align_corners=False``, ``padding_mode="zeros"``; array axes
X, Y, Z are ``grid_sample``'s D, H, W): output voxel ``(d, h, w)`` has normalised
coordinates ``(xn, yn, zn) = ((2w+1)/W - 1, (2h+1)/H - 1, (2d+1)/D - 1)`` (x along the
*last* axis), ``(gx, gy, gz) = theta @ (xn, yn, zn, 1)``, source index
``iw = ((gx+1) W - 1) / 2`` (likewise ``ih``, ``id``), trilinear weights from
``floor``, and each of the 8 neighbours outside the volume on any axis contributes 0
(no renormalisation of the remaining weights). Values equal ``apply_theta``'s
(tests/test_triton_rotate.py: on a GPU, and on CPU through Triton's interpreter,
``TRITON_INTERPRET=1``). No gradient: the rotation is data augmentation. The CUDA default
where ``triton`` is installed (:func:`.settings.uses_triton_rotate`; measured faster,
docs/training.md).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK_V = 1024  # output voxels per program


@triton.jit
def _source_index(t_ptr, xn, yn, zn, size):
    """Row ``t_ptr[0:4]`` of theta applied to ``(xn, yn, zn, 1)``, unnormalised to an index
    (``align_corners=False``), clamped to ``[-2, size + 1]`` (the same neighbours are out of
    range there, and the int32 conversion of ``floor`` cannot overflow)."""
    g = tl.load(t_ptr) * xn + tl.load(t_ptr + 1) * yn + tl.load(t_ptr + 2) * zn + tl.load(t_ptr + 3)
    i = ((g + 1) * size - 1) * 0.5
    return tl.minimum(tl.maximum(i, -2.0), size + 1.0)


@triton.jit
def _rotate_fwd(img_ptr, theta_ptr, out_ptr, C, D, H, W, BLOCK: tl.constexpr):
    pid = tl.program_id(0)  # image * C + channel
    v = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    vol = D * H * W
    mask = v < vol
    w = v % W
    h = (v // W) % H
    d = v // (W * H)
    t = theta_ptr + (pid // C) * 12
    ct = theta_ptr.dtype.element_ty  # compute dtype: float32, or float64 for float64 images
    xn = (2 * w + 1).to(ct) / W - 1
    yn = (2 * h + 1).to(ct) / H - 1
    zn = (2 * d + 1).to(ct) / D - 1
    ix = _source_index(t, xn, yn, zn, W)
    iy = _source_index(t + 4, xn, yn, zn, H)
    iz = _source_index(t + 8, xn, yn, zn, D)
    fx, fy, fz = tl.floor(ix), tl.floor(iy), tl.floor(iz)
    # weights as grid_sample computes them (e.g. tnw = (ix_bse - ix) * (iy_bse - iy) * (iz_bse - iz))
    wx0, wx1 = fx + 1 - ix, ix - fx
    wy0, wy1 = fy + 1 - iy, iy - fy
    wz0, wz1 = fz + 1 - iz, iz - fz
    x0, y0, z0 = fx.to(tl.int32), fy.to(tl.int32), fz.to(tl.int32)
    x1, y1, z1 = x0 + 1, y0 + 1, z0 + 1
    mx0, mx1 = (x0 >= 0) & (x0 < W), (x1 >= 0) & (x1 < W)
    my0, my1 = (y0 >= 0) & (y0 < H), (y1 >= 0) & (y1 < H)
    mz0, mz1 = (z0 >= 0) & (z0 < D), (z1 >= 0) & (z1 < D)
    base = img_ptr + pid.to(tl.int64) * vol
    r00, r01 = (z0 * H + y0) * W, (z0 * H + y1) * W  # row offsets (z, y)
    r10, r11 = (z1 * H + y0) * W, (z1 * H + y1) * W
    acc = tl.load(base + r00 + x0, mask=mask & mz0 & my0 & mx0, other=0.0).to(ct) * (wx0 * wy0 * wz0)
    acc += tl.load(base + r00 + x1, mask=mask & mz0 & my0 & mx1, other=0.0).to(ct) * (wx1 * wy0 * wz0)
    acc += tl.load(base + r01 + x0, mask=mask & mz0 & my1 & mx0, other=0.0).to(ct) * (wx0 * wy1 * wz0)
    acc += tl.load(base + r01 + x1, mask=mask & mz0 & my1 & mx1, other=0.0).to(ct) * (wx1 * wy1 * wz0)
    acc += tl.load(base + r10 + x0, mask=mask & mz1 & my0 & mx0, other=0.0).to(ct) * (wx0 * wy0 * wz1)
    acc += tl.load(base + r10 + x1, mask=mask & mz1 & my0 & mx1, other=0.0).to(ct) * (wx1 * wy0 * wz1)
    acc += tl.load(base + r11 + x0, mask=mask & mz1 & my1 & mx0, other=0.0).to(ct) * (wx0 * wy1 * wz1)
    acc += tl.load(base + r11 + x1, mask=mask & mz1 & my1 & mx1, other=0.0).to(ct) * (wx1 * wy1 * wz1)
    tl.store(out_ptr + pid.to(tl.int64) * vol + v, acc.to(out_ptr.dtype.element_ty), mask=mask)


def rotate_volumes(images: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Resample ``(B, C, X, Y, Z)`` images with ``affine_grid`` matrices ``(B, 3, 4)``.

    Same result as :func:`.augment.apply_theta` with ``mode="bilinear"``: the output has
    the images' shape and dtype; the arithmetic is float32 (float64 for float64 images,
    with ``theta`` converted to that dtype, as there). 16-bit float images are read and
    written as they are; other dtypes go through float32 like ``apply_theta``. ``theta``
    must be on the images' device. No gradient flows through the result.
    """
    if images.dim() != 5 or theta.shape != (images.shape[0], 3, 4):
        raise ValueError(f"need images (B, C, X, Y, Z) and theta (B, 3, 4), got {tuple(images.shape)} and {tuple(theta.shape)}")
    if not images.is_floating_point():
        return rotate_volumes(images.float(), theta).to(images.dtype)
    ct = torch.float64 if images.dtype == torch.float64 else torch.float32
    x = images.detach().contiguous()
    th = theta.detach().to(ct).contiguous()
    out = torch.empty_like(x)
    b, c, nx, ny, nz = x.shape
    vol = nx * ny * nz
    if out.numel() == 0:
        return out
    grid = (b * c, triton.cdiv(vol, BLOCK_V))
    _rotate_fwd[grid](x, th, out, c, nx, ny, nz, BLOCK=BLOCK_V, num_warps=4)
    return out
