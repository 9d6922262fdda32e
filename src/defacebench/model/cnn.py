"""The paper's brain-age 3D CNN (Cali et al.): three conv blocks and a regression head.

Each block is ``Conv3d(k=3, p=1) -> InstanceNorm3d -> ReLU -> MaxPool3d(2)`` with widths
128, 64, 64. The paper reports 821,377 trainable parameters, which no standard head
reproduces: the three convolutions hold 335,488 parameters, the affine instance norms
512, and the rest depends on a head the paper does not describe. The head is therefore a
named option (:data:`HEADS`) and the real count is logged with every run
(docs/training.md).

Grad-CAM explains the whole last block, ``model.features[-1]``
(:func:`defacebench.model.inference.gradcam_layer`); :attr:`BrainAgeCNN.last_conv` is the
convolution inside it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

#: The paper's conv widths.
PAPER_WIDTHS: tuple[int, int, int] = (128, 64, 64)
#: The paper's input grid (MNI 2 mm).
PAPER_INPUT_SHAPE: tuple[int, int, int] = (91, 109, 91)
#: Trainable parameters reported by the paper (not reproducible, see module docstring).
PAPER_REPORTED_PARAMETERS = 821_377

#: Regression heads: name -> description.
HEADS: dict[str, str] = {
    "flatten": "flatten the last block's feature map -> Linear(features, 1)",
    "gap": "global average pool over space -> Linear(channels, 1)",
}


class ConvBlock(nn.Module):
    """``Conv3d(k=3, p=1) -> InstanceNorm3d(affine) -> ReLU -> MaxPool3d(2)``."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(in_channels, out_channels, kernel_size=3, padding=1)
        self.norm = nn.InstanceNorm3d(out_channels, affine=True)
        self.relu = nn.ReLU(inplace=False)
        self.pool = nn.MaxPool3d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.relu(self.norm(self.conv(x))))


def scaled_widths(widths: Sequence[int] = PAPER_WIDTHS, width_multiplier: float = 1.0) -> tuple[int, ...]:
    """Conv widths times ``width_multiplier``, rounded, at least 1 channel each."""
    return tuple(max(1, int(round(w * width_multiplier))) for w in widths)


def pooled_shape(input_shape: Sequence[int], n_blocks: int = 3) -> tuple[int, ...]:
    """Spatial shape after ``n_blocks`` MaxPool3d(2) (floor division each time)."""
    shape = tuple(int(s) for s in input_shape)
    for _ in range(n_blocks):
        shape = tuple(s // 2 for s in shape)
    return shape


class BrainAgeCNN(nn.Module):
    """Brain-age regressor: ``(B, 1, X, Y, Z)`` image -> ``(B,)`` age in years.

    Parameters
    ----------
    input_shape : tuple of int
        Spatial grid of the input (``(91, 109, 91)`` for MNI 2 mm).
    widths : tuple of int
        Channels of the three blocks before ``width_multiplier``.
    width_multiplier : float
        Scales every width (CPU profiles use < 1; the architecture's shape is unchanged).
    head : str
        One of :data:`HEADS`.
    output_bias : float
        Initial bias of the output unit; training sets it to the mean training age.
    input_pool : int
        Average-pool the input by this factor before the first block (1, the paper's,
        means none). The ``cpu`` profile uses 2 (4 mm store -> 8 mm) so a demo condition
        trains in seconds; :meth:`forward` takes the store's grid either way.
    """

    def __init__(
        self,
        input_shape: Sequence[int] = PAPER_INPUT_SHAPE,
        widths: Sequence[int] = PAPER_WIDTHS,
        width_multiplier: float = 1.0,
        head: str = "flatten",
        output_bias: float = 0.0,
        input_pool: int = 1,
    ) -> None:
        super().__init__()
        if head not in HEADS:
            raise ValueError(f"unknown head {head!r}; choose from {', '.join(HEADS)}")
        self.input_shape = tuple(int(s) for s in input_shape)
        self.input_pool = int(input_pool)
        if self.input_pool < 1 or len(self.input_shape) != 3:
            raise ValueError(f"bad input_shape {self.input_shape} or input_pool {input_pool}")
        self.downsample = nn.AvgPool3d(self.input_pool) if self.input_pool > 1 else nn.Identity()
        self.block_input_shape = tuple(s // self.input_pool for s in self.input_shape)
        if min(pooled_shape(self.block_input_shape)) < 1:
            raise ValueError(f"input_shape {self.input_shape} is too small for three 2x poolings")
        self.widths = scaled_widths(widths, width_multiplier)
        self.head_name = head
        channels = (1, *self.widths)
        self.features = nn.Sequential(*(ConvBlock(c_in, c_out) for c_in, c_out in zip(channels[:-1], channels[1:])))
        if head == "flatten":
            n_in = self.widths[-1] * math.prod(pooled_shape(self.block_input_shape, len(self.widths)))
            self.head = nn.Sequential(nn.Flatten(), nn.Linear(n_in, 1))
        else:  # gap
            self.head = nn.Sequential(nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(self.widths[-1], 1))
        self.set_output_bias(output_bias)

    @property
    def output(self) -> nn.Linear:
        """The final linear unit (its bias starts at the mean training age)."""
        return self.head[-1]

    @property
    def last_conv(self) -> nn.Conv3d:
        """The last convolution, ``features[-1].conv`` (Grad-CAM targets the whole block around it, ``features[-1]``)."""
        return self.features[-1].conv

    def set_output_bias(self, age_years: float) -> None:
        """Set the output bias (e.g. to the mean training age)."""
        with torch.no_grad():
            self.output.bias.fill_(float(age_years))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 1, *input_shape)`` -> ``(B,)`` ages."""
        return self.forward_downsampled(self.downsample(x))

    def forward_downsampled(self, h: torch.Tensor) -> torch.Tensor:
        """The blocks and head on an already downsampled input (``(B, 1, *block_input_shape)``)."""
        return self.head(self.features(h)).squeeze(-1)

    def config(self) -> dict[str, object]:
        """Constructor arguments that rebuild this architecture (``output_bias`` aside)."""
        return {
            "input_shape": list(self.input_shape),
            "widths": list(self.widths),
            "width_multiplier": 1.0,
            "head": self.head_name,
            "input_pool": self.input_pool,
        }


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def parameter_breakdown(model: BrainAgeCNN) -> dict[str, int]:
    """Trainable parameters of the convolutions, instance norms and head, and the total."""
    conv = sum(p.numel() for b in model.features for p in b.conv.parameters())
    norm = sum(p.numel() for b in model.features for p in b.norm.parameters())
    head = sum(p.numel() for p in model.head.parameters())
    return {"conv": conv, "norm": norm, "head": head, "total": conv + norm + head}


def describe(model: BrainAgeCNN) -> str:
    """One line: widths, head, real parameter count and the paper's reported count."""
    b = parameter_breakdown(model)
    return (
        f"BrainAgeCNN widths={model.widths} input={model.input_shape}"
        + (f" avg-pooled x{model.input_pool}" if model.input_pool > 1 else "")
        + f" head={model.head_name}: "
        f"{b['total']:,} trainable parameters (conv {b['conv']:,}, norm {b['norm']:,}, head {b['head']:,}; "
        f"the paper reports {PAPER_REPORTED_PARAMETERS:,}, see docs/training.md)"
    )
