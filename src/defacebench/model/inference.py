"""Load a trained run's model and run it on images: the model API that analysis may use.

One forward path owns the model's function: :func:`forward`. Its definition is the plain
module (:meth:`BrainAgeCNN.forward`: average pooling, three blocks, head), which is what
:func:`load_model` returns, what :func:`predict_ages` runs and what Grad-CAM explains
(it hooks the last block, ``model.features[-1]``: :func:`gradcam_layer`). A
:class:`ForwardPath` may ask :func:`forward` for the fused first block
(:func:`defacebench.model.accel.fast.fused_forward`): the same function computed faster,
equal to the module up to floating-point rounding (tests/test_model_cnn.py compares values
and gradients in float64, both layouts, with and without input pooling). Training uses
that path for its steps, its validation and its ``predictions.csv`` (a speed setting,
recorded in ``run.json``); everything after training uses the module.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from defacebench import layout
from defacebench.io.checksums import file_mismatch
from defacebench.io.errors import InputError
from defacebench.model.accel.fast import fused_forward
from defacebench.model.cnn import BrainAgeCNN


@dataclass(frozen=True)
class ForwardPath:
    """How :func:`forward` computes the model (never what): the plain module by default.

    Attributes
    ----------
    fused : bool
        The fused first block (:func:`~defacebench.model.accel.fast.fused_forward`).
    channels_last : bool
        NDHWC activations (fused path only; convert the model too, for speed).
    triton_block : bool
        The first block's convolution and pooling as Triton kernels (fused path only).
    """

    fused: bool = False
    channels_last: bool = False
    triton_block: bool = False


#: The plain module, the definition of the model's function.
PLAIN = ForwardPath()


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``None``/``"auto"`` -> CUDA when available, else CPU; refuses CUDA without a GPU."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda asked for, but no CUDA GPU is available")
    return dev


def load_model(path: str | Path, device: str | torch.device = "cpu") -> BrainAgeCNN:
    """The best model of a run (its run directory or its ``model.pt``), in eval mode.

    Given a run directory whose ``run.json`` records the model's sha256, the file is
    checked against it first.

    Raises
    ------
    InputError
        No model, a model that does not match its recorded sha256, or an unreadable one
        (naming the file; rerun ``defacebench train`` for that run).
    """
    path = Path(path)
    file = layout.model_file(path) if path.is_dir() else path
    if not file.is_file():
        raise InputError("no trained model here (run `defacebench train` first)", file)
    record = layout.run_record(file.parent)
    if record.is_file():
        try:
            expected = json.loads(record.read_text()).get("model_sha256")
        except (OSError, ValueError):
            expected = None
        problem = file_mismatch(file, expected)
        if problem:
            raise InputError(f"{problem}; delete the run directory and rerun `defacebench train`", file)
    try:
        saved = torch.load(file, map_location=device, weights_only=True)
    except Exception as exc:  # truncated or overwritten: torch raises RuntimeError, EOFError, UnpicklingError...
        raise InputError(f"unreadable model ({type(exc).__name__}); delete the run directory and rerun `defacebench train`", file) from None
    model = BrainAgeCNN(**saved["model_config"])
    model.load_state_dict(saved["state_dict"])
    return model.to(device).eval()


def gradcam_layer(model: BrainAgeCNN) -> nn.Module:
    """The layer Grad-CAM explains: the whole last block, ``model.features[-1]``.

    Not its convolution (:attr:`BrainAgeCNN.last_conv`): instance norm makes the channel
    weights of a pre-norm map exactly zero (docs/analysis.md).
    """
    return model.features[-1]


def forward_blocks(model: BrainAgeCNN, h: torch.Tensor, path: ForwardPath = PLAIN) -> torch.Tensor:
    """The blocks and head on an input already average-pooled by ``model.downsample``
    (``(B, 1, *model.block_input_shape)``); returns ``(B,)`` ages in float32."""
    if path.fused:
        return fused_forward(model, h, path.channels_last, path.triton_block)
    return model.forward_downsampled(h).float()


def forward(model: BrainAgeCNN, x: torch.Tensor, path: ForwardPath = PLAIN) -> torch.Tensor:
    """Predicted ages ``(B,)`` (float32) of images ``(B, 1, *model.input_shape)``."""
    return forward_blocks(model, model.downsample(x), path)


@torch.no_grad()
def predict_ages(model: BrainAgeCNN, images: np.ndarray, rows: np.ndarray, batch_size: int = 16, path: ForwardPath = PLAIN) -> np.ndarray:
    """Predicted ages (float64) of ``images[rows]`` (a store's array or memory map), in
    batches of ``batch_size`` on the model's device."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = []
    for start in range(0, len(rows), batch_size):
        x = torch.from_numpy(np.asarray(images[np.asarray(rows[start : start + batch_size])], dtype=np.float32)).to(device)
        out.append(forward(model, x.unsqueeze(1), path).cpu())
    model.train(was_training)
    return torch.cat(out).numpy().astype(np.float64) if out else np.zeros(0)
