"""Export a trained run's model for use outside defacebench: TorchScript (and ONNX on request).

Every finished run is written as ``runs/<condition>/run-<k>/model.ts`` beside ``model.pt``
(:func:`export_run`, called by training): the plain module (:meth:`BrainAgeCNN.forward`,
the definition of the model's function, never a fused speed path) traced on CPU in float32
with one input of the store's grid, ``(B, 1, X, Y, Z) -> (B,)`` ages in years. That is the
file ``defacebench score`` takes, so a study's own model and a downloaded one go through
the same scoring path (``tests/test_score.py`` checks that scoring the export reproduces
the run's ``predictions.csv``). :func:`export_onnx` writes the same function as ONNX.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import torch
from torch import nn

from defacebench import layout
from defacebench.io.atomic import atomic_path


def _cpu_copy(model: nn.Module) -> nn.Module:
    """A float32 CPU copy of ``model`` in eval mode (the trainer's model is left as it is)."""
    clone = copy.deepcopy(model).to("cpu").float().eval()
    for p in clone.parameters():
        p.requires_grad_(False)
    return clone


def example_input(model: nn.Module) -> torch.Tensor:
    """A zero batch of one image of the model's input grid, ``(1, 1, X, Y, Z)``."""
    return torch.zeros(1, 1, *model.input_shape)


def export_torchscript(model: nn.Module, path: str | Path) -> Path:
    """Trace ``model`` (a :class:`~defacebench.model.cnn.BrainAgeCNN`) to TorchScript at ``path`` (atomic)."""
    clone = _cpu_copy(model)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(clone, example_input(clone))
    with atomic_path(Path(path)) as tmp:
        torch.jit.save(traced, str(tmp))
    return Path(path)


def export_onnx(model: nn.Module, path: str | Path) -> Path:
    """Write ``model`` as ONNX at ``path`` (atomic): input ``image`` ``(batch, 1, X, Y, Z)``,
    output ``age`` ``(batch,)``. Uses torch's dynamo exporter (needs ``onnxscript``),
    falling back to the TorchScript-based one."""
    clone = _cpu_copy(model)
    x = example_input(clone)
    with atomic_path(Path(path)) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(clone, (x,), str(tmp), input_names=["image"], output_names=["age"],
                              dynamic_shapes={"x": {0: torch.export.Dim("batch")}}, dynamo=True, verbose=False)
        except Exception:  # noqa: BLE001 - an exporter bug on some torch versions: the older exporter
            torch.onnx.export(clone, (x,), str(tmp), input_names=["image"], output_names=["age"],
                              dynamic_axes={"image": {0: "batch"}, "age": {0: "batch"}}, dynamo=False)
    return Path(path)


def export_run(run_dir: str | Path, model: nn.Module) -> Path:
    """Write a finished run's ``model.ts`` (:func:`export_torchscript`); returns its path."""
    return export_torchscript(model, layout.model_ts_file(run_dir))


def ensure_exported(run_dir: str | Path) -> Path | None:
    """Export a finished run's ``model.ts`` from its ``model.pt`` when it is missing (runs
    trained before the export existed); None when the run has no model."""
    target = layout.model_ts_file(run_dir)
    if target.is_file() or not layout.model_file(run_dir).is_file():
        return target if target.is_file() else None
    from defacebench.model.inference import load_model

    return export_run(run_dir, load_model(run_dir))


__all__ = ["ensure_exported", "example_input", "export_onnx", "export_run", "export_torchscript"]
