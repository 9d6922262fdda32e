"""A faster, mathematically identical forward pass of :class:`~.cnn.BrainAgeCNN`.

Written for GPUs; training uses it on CPU too, where (with NDHWC activations) a step is
faster than the plain module (measurements in docs/training.md).

The first block (1 -> 128 channels at full 91x109x91 resolution) dominates memory
traffic. It is rewritten with the same parameters, no new ones:

1. **Convolution as a GEMM.** With one input channel the 3x3x3 convolution is
   ``W (C, 27) @ P (27, V)``, where ``P`` holds the 27 shifted copies of the zero-padded
   image (im2col). cuBLAS writes the output at memory speed; cuDNN's direct kernel
   for this shape is several times slower.
2. **Instance norm from patch statistics.** The per-image mean and variance of
   channel ``c`` are ``w_c . m + b_c`` and ``w_c^T Cov(P) w_c``, with ``m`` and
   ``Cov(P)`` (27 x 27) computed once from the input (which needs no gradient; under
   bf16 autocast from the input rounded to bf16, as the convolution reads it, with exact
   products on the tensor cores). The normalisation becomes a per-image, per-channel
   affine map ``a * y + d``.
3. **Pool before the affine map and ReLU.** ``max(a*y + d) = |a| * max(s*y) + d`` with
   ``s = sign(a) = sign(gamma)`` (``sigma > 0``), and ReLU commutes with max pooling.
   So the full-resolution tensor is written once (the GEMM) and read once (the pool);
   normalisation, ReLU and their backward passes run at 1/8 resolution.

Blocks 2 and 3 keep the reference layers, with ReLU moved after the pooling (same
values). Autograd differentiates through the statistics, so gradients equal the
reference ones up to rounding. :func:`fused_forward` is checked against ``model(x)``
in tests/test_model_cnn.py.

With ``channels_last=True`` the activations are laid out NDHWC (``torch.channels_last_3d``),
the layout cuDNN's tensor-core convolutions work in (in NCDHW it transposes every
activation in and out of each convolution). The first block's GEMM is then written
``P^T (V, 27) @ W^T (27, C)``, whose ``(V, C)`` output already is NDHWC; for one input
channel the two layouts of the input are the same memory. It is the default for
training on both devices (:func:`.settings.uses_channels_last`).

``triton_block=True`` (the CUDA default where ``triton`` is installed) computes the first
block's convolution and max pooling in one Triton kernel and its weight gradient in
another (:mod:`.triton_block`), so its full-resolution tensor is never written.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from defacebench.model.cnn import BrainAgeCNN


def patches(x: torch.Tensor, crop: tuple[int, int, int] | None = None, dtype: torch.dtype | None = None) -> torch.Tensor:
    """im2col of a one-channel volume: ``(B, 1, X, Y, Z)`` -> ``(B, 27, X'*Y'*Z')``.

    Row ``k = 9*i + 3*j + l`` is the zero-padded image shifted by ``(i-1, j-1, l-1)``,
    matching ``Conv3d.weight.view(C, 27)``. ``crop`` keeps only the first ``X', Y', Z'``
    output positions (those that max pooling reads).
    """
    b, _, nx, ny, nz = x.shape
    cx, cy, cz = crop or (nx, ny, nz)
    xp = F.pad(x[:, 0] if dtype is None else x[:, 0].to(dtype), (1, 1, 1, 1, 1, 1))
    cols = [xp[:, i : i + cx, j : j + cy, l : l + cz] for i in range(3) for j in range(3) for l in range(3)]
    return torch.stack(cols, dim=1).reshape(b, 27, cx * cy * cz)


MOMENT_CHUNK = 2048  # voxels per partial product of the patch covariance (~440 per 91x109x91 image)
#: 16-bit matrix products with a float32 output (``torch.bmm(..., out_dtype=)``, CUDA only; in PyTorch 2.11 and 2.13)
MM_OUT_DTYPE = hasattr(torch.ops.aten.bmm, "dtype") and hasattr(torch.ops.aten.mm, "dtype")


def _chunked_gram(a: torch.Tensor, b_t: torch.Tensor, chunk: int, out_dtype: torch.dtype | None = None) -> torch.Tensor:
    """``sum_batch a @ b_t`` for ``a (B, M, V)`` and ``b_t (B, V, N)``, split along ``V``.

    A product with tiny ``M, N`` and a huge ``V`` runs on a handful of GPU blocks; cutting
    ``V`` into ``chunk``-long pieces (strided views, no copy: either operand may be a
    transposed view) and summing the partial products in float32 keeps the whole GPU busy.
    ``out_dtype=torch.float32`` (CUDA only): 16-bit operands, products accumulated and
    returned in float32 (cuBLAS, tensor cores).
    """
    kw = {} if out_dtype is None else {"out_dtype": out_dtype}
    parts = []
    v = a.shape[2]
    n = v // chunk
    for i in range(a.shape[0]):
        if n:
            ac = a[i, :, : n * chunk].unflatten(1, (n, chunk)).transpose(0, 1)  # (n, M, chunk)
            bc = b_t[i, : n * chunk].unflatten(0, (n, chunk))  # (n, chunk, N)
            parts.append(torch.bmm(ac, bc, **kw).float().sum(0))
        if n * chunk < v:
            parts.append(torch.mm(a[i, :, n * chunk :], b_t[i, n * chunk :], **kw).float())
    return torch.stack(parts).sum(0)


class _PatchConv(torch.autograd.Function):
    """``W (C, 27) @ P (B, 27, V)`` -> ``(B, C, V)`` with a chunked weight gradient; ``P`` gets none.

    With ``channels_last`` the same product is returned as ``(B, V, C)`` (NDHWC).
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(weight: torch.Tensor, p: torch.Tensor, chunk: int, channels_last: bool) -> torch.Tensor:  # type: ignore[override]
        if channels_last:
            return torch.matmul(p.transpose(1, 2), weight.t())
        return torch.matmul(weight, p)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:  # type: ignore[override]
        ctx.save_for_backward(inputs[1])
        ctx.chunk = inputs[2]
        ctx.channels_last = bool(inputs[3])

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        (p,) = ctx.saved_tensors
        grad = grad.to(p.dtype)
        if ctx.channels_last:  # dW = (P @ G)^T with G (V, C) read in place
            gw = _chunked_gram(p, grad, ctx.chunk).t()
        else:
            gw = _chunked_gram(grad, p.transpose(1, 2), ctx.chunk)
        return gw.to(grad.dtype), None, None, None


@torch.no_grad()
def patch_moments(x: torch.Tensor, dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean ``(B, 27)`` and biased covariance ``(B, 27, 27)`` of the 3x3x3 patches of ``x``.

    Summed in float32 over every voxel (as InstanceNorm3d sees the conv output).
    ``dtype``: the precision the convolution reads ``x`` in (bfloat16 under autocast);
    the statistics are then those of ``x`` rounded to it, the image the convolution
    really sees. A product of two bfloat16 or float16 numbers is exact in float32, so on
    CUDA the covariance runs on the tensor cores in 16 bits with float32 accumulation: as
    accurate as float32 arithmetic on the rounded image (tests/test_model_cuda.py) and
    faster (docs/training.md). Elsewhere (CPU, older PyTorch) the rounded image is summed
    in float32: the same statistics.
    """
    b = x.shape[0]
    low = x.is_cuda and dtype in (torch.bfloat16, torch.float16) and MM_OUT_DTYPE
    with torch.autocast(device_type=x.device.type, enabled=False):
        rounded = x if dtype is None else x.to(dtype)
        p = patches(rounded if low else rounded.float())
        n = p.shape[2]
        mean = p.sum(dim=2, dtype=torch.float32 if low else None) / n
        gram = [_chunked_gram(p[i : i + 1], p[i : i + 1].transpose(1, 2), MOMENT_CHUNK, torch.float32 if low else None) for i in range(b)]
        second = torch.stack(gram) / n
    return mean, second - mean[:, :, None] * mean[:, None, :]


def fused_first_block(model: BrainAgeCNN, x: torch.Tensor, channels_last: bool = False, triton_block: bool = False) -> torch.Tensor:
    """First block of ``model`` (conv -> instance norm -> ReLU -> max pool) on ``x``.

    With ``channels_last`` the output is NDHWC in memory (``torch.channels_last_3d``);
    ``triton_block``: convolution and pooling in one Triton kernel (:mod:`.triton_block`,
    CUDA or Triton's interpreter).
    """
    block = model.features[0]
    conv, norm = block.conv, block.norm
    c = conv.out_channels
    b, _, nx, ny, nz = x.shape
    dtype = torch.get_autocast_dtype(x.device.type) if torch.is_autocast_enabled(x.device.type) else x.dtype
    mean_p, cov_p = patch_moments(x, dtype)
    w = conv.weight.reshape(c, 27).float()
    bias = conv.bias.float() if conv.bias is not None else torch.zeros(c, device=x.device)
    mu = mean_p @ w.t() + bias  # (B, C)
    var = torch.einsum("ck,bkl,cl->bc", w, cov_p, w).clamp_min(0)
    inv_sigma = torch.rsqrt(var + norm.eps)
    gamma = norm.weight.float() if norm.affine else torch.ones(c, device=x.device)
    beta = norm.bias.float() if norm.affine else torch.zeros(c, device=x.device)
    sign = torch.where(gamma.detach() < 0, -1.0, 1.0)
    scale = gamma[None, :] * inv_sigma  # a = gamma / sigma, (B, C)
    shift = beta[None, :] - scale * mu  # d = beta - a * mu
    ws, bs = w * sign[:, None], bias * sign
    crop = (2 * (nx // 2), 2 * (ny // 2), 2 * (nz // 2))  # voxels max pooling reads
    if triton_block:  # max(s*y) without ever writing y
        from defacebench.model.accel.triton_block import conv_pool

        pooled = conv_pool(ws.to(dtype), x).view(b, *(s // 2 for s in crop), c).permute(0, 4, 1, 2, 3)
        if not channels_last:
            pooled = pooled.contiguous()
    else:
        p = patches(x, crop, dtype)
        y = _PatchConv.apply(ws.to(dtype), p, crop[1] * crop[2], channels_last)  # the only full-resolution tensor
        y = y.view(b, *crop, c).permute(0, 4, 1, 2, 3) if channels_last else y.view(b, c, *crop)
        pooled = F.max_pool3d(y, 2)  # max(s*y) without the bias s*b (added below)
    abs_scale = scale * sign[None, :]  # |a|
    out = pooled * abs_scale[:, :, None, None, None] + (abs_scale * bs[None, :] + shift)[:, :, None, None, None]
    return F.relu(out)


def fused_forward(model: BrainAgeCNN, x: torch.Tensor, channels_last: bool = False, triton_block: bool = False) -> torch.Tensor:
    """Same function as ``model(x)`` for ``(B, 1, X, Y, Z)`` input; returns ``(B,)`` ages.

    ``channels_last``: NDHWC activations (see the module docstring); for speed convert
    the model too (``model.to(memory_format=torch.channels_last_3d)``), else each
    convolution converts its weight on every call. ``triton_block``: the first block's
    convolution and pooling in one Triton kernel (see the module docstring).
    """
    h = fused_first_block(model, x, channels_last, triton_block)
    if channels_last:
        h = h.contiguous(memory_format=torch.channels_last_3d)  # no-op unless pooling changed the layout
    for block in model.features[1:]:
        h = F.relu(block.pool(block.norm(block.conv(h))))
    return model.head(h).squeeze(-1).float()


class FusedBrainAgeCNN(nn.Module):
    """:func:`fused_forward` of a wrapped model as a module (for ``torch.compile``).

    Holds no parameters of its own: ``self.model``'s are trained.
    """

    def __init__(self, model: BrainAgeCNN, channels_last: bool = False, triton_block: bool = False) -> None:
        super().__init__()
        self.model = model
        self.channels_last = channels_last
        self.triton_block = triton_block

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fused_forward(self.model, x, self.channels_last, self.triton_block)
