"""The load-and-predict API: one forward function, the plain module its definition, the
fused path the same function; a saved model loads with ``weights_only``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from defacebench import layout
from defacebench.io.errors import InputError
from defacebench.model.cnn import BrainAgeCNN
from defacebench.model.inference import PLAIN, ForwardPath, forward, gradcam_layer, load_model, predict_ages, resolve_device

SHAPE = (20, 22, 18)


def _model(input_pool: int = 1) -> BrainAgeCNN:
    torch.manual_seed(0)
    return BrainAgeCNN(SHAPE, widths=(4, 3, 2), input_pool=input_pool, output_bias=60.0).double().eval()


@pytest.mark.parametrize("input_pool", [1, 2])
@pytest.mark.parametrize("channels_last", [False, True])
def test_fused_path_is_the_plain_module_to_rounding(input_pool: int, channels_last: bool) -> None:
    model = _model(input_pool)
    x = torch.randn(3, 1, *SHAPE, dtype=torch.float64)
    with torch.no_grad():
        plain = forward(model, x)
        assert torch.equal(plain, model(x).float())  # the plain path is the module itself
        fused = forward(model, x, ForwardPath(fused=True, channels_last=channels_last))
    assert torch.allclose(fused.double(), plain.double(), atol=1e-5), float((fused - plain).abs().max())


def test_predict_ages_batches_the_module(tmp_path: Path) -> None:
    model = _model(2).float()
    images = np.random.default_rng(0).random((7, *SHAPE), dtype=np.float32)
    rows = np.array([5, 0, 3, 6, 1])
    ages = predict_ages(model, images, rows, batch_size=2)
    with torch.no_grad():
        expected = model(torch.from_numpy(images[rows])[:, None]).numpy()
    assert ages.dtype == np.float64 and np.allclose(ages, expected, atol=1e-6)
    assert predict_ages(model, images, np.array([], dtype=int)).shape == (0,)


def test_load_model_reads_a_run_directory_with_weights_only(tmp_path: Path) -> None:
    model = _model(2).float()
    run = layout.run_dir(tmp_path, "raw", 1)
    run.mkdir(parents=True)
    torch.save({"model_config": model.config(), "state_dict": model.state_dict(), "condition": "raw", "run": 1}, layout.model_file(run))
    loaded = load_model(run)
    assert not loaded.training and gradcam_layer(loaded) is loaded.features[-1]
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))
    assert torch.equal(load_model(layout.model_file(run)).output.bias, model.output.bias)
    with pytest.raises(InputError, match="no trained model"):
        load_model(tmp_path / "nothing")


def test_resolve_device() -> None:
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device(None).type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="no CUDA GPU"):
            resolve_device("cuda")
    assert PLAIN == ForwardPath()
