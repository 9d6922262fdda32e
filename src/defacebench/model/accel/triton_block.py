"""The first block's convolution and max pooling in one Triton kernel (the CUDA default).

The fused first block (:mod:`.fast`) still writes its one full-resolution tensor, the
1 -> C channel 3x3x3 convolution ``y`` (924 MB a batch of 4 on the paper grid in bf16),
reads it back to pool it, and in the backward pass scatters the pooled gradient into a
zeroed tensor of the same size before a matrix product reads it again. Here no
full-resolution tensor exists:

* forward: each program takes a block of pooled voxels, gathers the 27 taps of each of
  the 8 voxels of their 2x2x2 windows from the padded image, multiplies them by the
  weights on the tensor cores (``tl.dot``), keeps the running maximum and a one-byte
  window code (first maximum wins, as in ``max_pool3d``);
* backward: ``dW[c, k] = sum_u g[u, c] * x[2u + code(u, c) + k]``, again by gathering the
  taps of each window offset and a ``tl.dot`` with the gradient masked to that offset;
  each program writes a partial sum, summed afterwards (deterministic, no atomics).

The input gets no gradient (the image), like :class:`.fast._PatchConv`. Values and the
weight gradient equal ``max_pool3d(conv3d(x, w))``'s (tests/test_triton_block.py: on a
GPU, and on CPU through Triton's interpreter, ``TRITON_INTERPRET=1``). Both kernels are
``torch.library`` custom operators, so ``torch.compile`` keeps the training step in one
graph. Measured faster on CUDA (docs/training.md), so training on CUDA uses them wherever
``triton`` is installed (:func:`.settings.uses_triton_block`; bench variant ``+tb``).
``triton`` comes with PyTorch's CUDA wheels; ``make test`` installs it on CPU for the tests.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

BLOCK_U = 64  # pooled voxels per program
TAPS = 32  # 27 taps, padded to a power of two for tl.dot


@triton.jit
def _unravel(u, NY, NZ):
    """Flat C-order voxel index -> ``(x, y, z)`` on a grid of ``(., NY, NZ)``."""
    return u // (NZ * NY), (u // NZ) % NY, u % NZ


@triton.jit
def _window_taps(base, ux, uy, uz, umask, ki, kj, kl, kmask, sxx, sxy, i: tl.constexpr):
    """``(BLOCK_U, TAPS)`` taps of window offset ``i`` of each pooled voxel (zero past 27)."""
    vx = 2 * ux + i // 4
    vy = 2 * uy + (i // 2) % 2
    vz = 2 * uz + i % 2
    offs = (vx[:, None] + ki[None, :]) * sxx + (vy[:, None] + kj[None, :]) * sxy + (vz[:, None] + kl[None, :])
    return tl.load(base + offs, mask=umask[:, None] & kmask[None, :], other=0.0)


@triton.jit
def _conv_pool_fwd(xp_ptr, w_ptr, out_ptr, code_ptr, U, NY, NZ, sxb, sxx, sxy, C,
                   BLOCK: tl.constexpr, BLOCK_C: tl.constexpr, NTAP: tl.constexpr, IEEE: tl.constexpr):
    b = tl.program_id(0)
    u = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    umask = u < U
    ux, uy, uz = _unravel(u, NY, NZ)
    k = tl.arange(0, NTAP)
    kmask = k < 27
    ki, kj, kl = k // 9, (k // 3) % 3, k % 3
    cc = tl.arange(0, BLOCK_C)
    cmask = cc < C
    wt = tl.load(w_ptr + cc[None, :] * 27 + k[:, None], mask=kmask[:, None] & cmask[None, :], other=0.0)  # (NTAP, BLOCK_C)
    base = xp_ptr + b * sxb
    best = tl.full((BLOCK, BLOCK_C), float("-inf"), tl.float32)
    code = tl.zeros((BLOCK, BLOCK_C), tl.int32)
    for i in tl.static_range(8):
        p = _window_taps(base, ux, uy, uz, umask, ki, kj, kl, kmask, sxx, sxy, i)
        if IEEE:
            y = tl.dot(p, wt, input_precision="ieee")
        else:
            y = tl.dot(p, wt)
        better = y > best
        best = tl.where(better, y, best)
        code = tl.where(better, i, code)
    offs = (b * U + u)[:, None] * C + cc[None, :]
    m = umask[:, None] & cmask[None, :]
    tl.store(out_ptr + offs, best.to(out_ptr.dtype.element_ty), mask=m)
    tl.store(code_ptr + offs, code.to(tl.uint8), mask=m)


@triton.jit
def _conv_pool_bwd_w(xp_ptr, g_ptr, code_ptr, part_ptr, U, NY, NZ, sxb, sxx, sxy, C, ITERS,
                     BLOCK: tl.constexpr, BLOCK_C: tl.constexpr, NTAP: tl.constexpr, IEEE: tl.constexpr):
    b = tl.program_id(0)
    pid = tl.program_id(1)
    k = tl.arange(0, NTAP)
    kmask = k < 27
    ki, kj, kl = k // 9, (k // 3) % 3, k % 3
    cc = tl.arange(0, BLOCK_C)
    cmask = cc < C
    base = xp_ptr + b * sxb
    acc = tl.zeros((BLOCK_C, NTAP), tl.float32)
    for it in range(ITERS):
        u = (pid * ITERS + it) * BLOCK + tl.arange(0, BLOCK)
        umask = u < U
        ux, uy, uz = _unravel(u, NY, NZ)
        offs = (b * U + u)[:, None] * C + cc[None, :]
        m = umask[:, None] & cmask[None, :]
        g = tl.load(g_ptr + offs, mask=m, other=0.0)
        code = tl.load(code_ptr + offs, mask=m, other=255).to(tl.int32)
        for i in tl.static_range(8):
            p = _window_taps(base, ux, uy, uz, umask, ki, kj, kl, kmask, sxx, sxy, i)
            gi = tl.where(code == i, g, 0.0).to(p.dtype)
            if IEEE:
                acc += tl.dot(tl.trans(gi), p, input_precision="ieee")
            else:
                acc += tl.dot(tl.trans(gi), p)
    nprog = tl.num_programs(1)
    tl.store(part_ptr + ((b * nprog + pid) * BLOCK_C + cc[:, None]) * NTAP + k[None, :], acc)


def _padded(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``(B, 1, X, Y, Z)`` -> zero-padded ``(B, X+2, Y+2, Z+2)``, contiguous, in ``dtype``."""
    return F.pad(x[:, 0].to(dtype), (1, 1, 1, 1, 1, 1)).contiguous()


def _block_c(c: int) -> int:
    return max(16, triton.next_power_of_2(c))


def _pooled_voxels(xp: torch.Tensor) -> tuple[int, int, int]:
    return tuple((s - 2) // 2 for s in xp.shape[1:])  # type: ignore[return-value]


# Custom operators (torch.library), not an autograd.Function behind torch.compiler.disable:
# torch.compile then keeps the whole step in one graph and calls the kernels from it (with a
# graph break the compiled step waited on Python: docs/training.md).
@torch.library.custom_op("defacebench::conv_pool", mutates_args=())
def conv_pool_padded(weight: torch.Tensor, xp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``max_pool3d(conv3d(x, w, padding=1), 2)`` of the padded image ``xp (B, X+2, Y+2, Z+2)``.

    ``weight (C, 27)`` in ``xp``'s dtype. Returns the pooled values ``(B, U, C)`` (NDHWC
    order, ``U = X//2 * Y//2 * Z//2``) and the one-byte window code of each maximum.
    """
    c, b = weight.shape[0], xp.shape[0]
    xp = xp.contiguous()  # the kernels index the last axis with stride 1 (compiled graphs may pick other strides)
    nx, ny, nz = _pooled_voxels(xp)
    u = nx * ny * nz
    out = torch.empty(b, u, c, dtype=weight.dtype, device=xp.device)
    code = torch.empty(b, u, c, dtype=torch.uint8, device=xp.device)
    grid = (b, triton.cdiv(u, BLOCK_U))
    _conv_pool_fwd[grid](xp, weight.contiguous(), out, code, u, ny, nz, xp.stride(0), xp.stride(1), xp.stride(2), c,
                         BLOCK=BLOCK_U, BLOCK_C=_block_c(c), NTAP=TAPS, IEEE=weight.dtype == torch.float32, num_warps=8)
    return out, code


@conv_pool_padded.register_fake
def _conv_pool_fake(weight: torch.Tensor, xp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    nx, ny, nz = _pooled_voxels(xp)
    shape = (xp.shape[0], nx * ny * nz, weight.shape[0])
    return weight.new_empty(shape), weight.new_empty(shape, dtype=torch.uint8)


@torch.library.custom_op("defacebench::conv_pool_weight_grad", mutates_args=())
def conv_pool_weight_grad(xp: torch.Tensor, grad: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
    """Gradient ``(C, 27)`` of :func:`conv_pool_padded`'s weight, in ``xp``'s dtype."""
    b, u, c = code.shape
    xp, code, grad = xp.contiguous(), code.contiguous(), grad.to(xp.dtype).contiguous()
    blocks = triton.cdiv(u, BLOCK_U)
    nprog = min(blocks, 64)  # per image; each program sums ITERS blocks
    iters = triton.cdiv(blocks, nprog)
    nprog = triton.cdiv(blocks, iters)
    _, ny, nz = _pooled_voxels(xp)
    bc = _block_c(c)
    part = torch.empty(b, nprog, bc, TAPS, dtype=torch.float32, device=xp.device)
    _conv_pool_bwd_w[(b, nprog)](xp, grad, code, part, u, ny, nz, xp.stride(0), xp.stride(1), xp.stride(2), c, iters,
                                 BLOCK=BLOCK_U, BLOCK_C=bc, NTAP=TAPS, IEEE=xp.dtype == torch.float32, num_warps=8)
    return part.sum((0, 1))[:c, :27].to(xp.dtype).contiguous()


@conv_pool_weight_grad.register_fake
def _conv_pool_weight_grad_fake(xp: torch.Tensor, grad: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
    return xp.new_empty((code.shape[2], 27))


def _setup_context(ctx, inputs, output) -> None:  # type: ignore[no-untyped-def]
    ctx.save_for_backward(inputs[1], output[1])  # padded image, window codes


def _backward(ctx, grad: torch.Tensor, _grad_code: torch.Tensor | None):  # type: ignore[no-untyped-def]
    xp, code = ctx.saved_tensors
    return conv_pool_weight_grad(xp, grad, code), None  # the image gets no gradient


conv_pool_padded.register_autograd(_backward, setup_context=_setup_context)


def conv_pool(weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``max_pool3d(conv3d(x, w, padding=1), 2)`` for one input channel, no bias.

    ``weight (C, 27)``, ``x (B, 1, X, Y, Z)`` -> ``(B, X//2 * Y//2 * Z//2, C)`` (NDHWC order),
    in the weight's dtype; only the weight gets a gradient.
    """
    return conv_pool_padded(weight, _padded(x, weight.dtype))[0]
