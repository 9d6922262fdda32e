"""``defacebench score``: a run exported to TorchScript and ONNX reproduces its own
predictions; a model on another grid (an SFCN-style 1 mm 160x192x160 soft classifier) runs
through its spec; bad models and specs fail with one line and exit status 2."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from defacebench import layout
from defacebench.analysis.model_spec import ModelSpec, prepare
from defacebench.commands.score import main as score_main
from defacebench.io.store import open_condition, write_condition

from model_stores import make_blob_store

CONDITIONS = ("raw", "defaced-afni", "defaced-fsl")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    from defacebench.model.profiles import get_profile
    from defacebench.model.train import train_condition

    study = make_blob_store(tmp_path_factory.mktemp("score"), n=30, shape=(12, 14, 13), conditions=CONDITIONS)
    raw = open_condition(study, "tiny", "raw")
    brain = np.zeros(raw.images.shape[1:], bool)
    brain[3:9, 3:11, 3:10] = True
    write_condition(study, "tiny", "skullstripped", np.asarray(raw.images, np.float32) * brain, raw.index, raw.affine)
    profile = get_profile("cpu", grid="tiny", input_pool=1, width_multiplier=0.125, max_epochs=2, patience=10, learning_rate=1e-2)
    return study, train_condition(study, "tiny", "raw", 1, profile, device="cpu", progress=False, log=None)


def _own_predictions(run: Path) -> pd.DataFrame:
    return pd.read_csv(layout.predictions_file(run), dtype={"participant_id": str, "session_id": str}, keep_default_na=False)


@pytest.mark.parametrize("fmt", ["ts", "onnx"])
def test_exported_run_reproduces_its_predictions(trained, fmt: str) -> None:
    study, run = trained
    model = layout.model_ts_file(run)
    if fmt == "onnx":
        from defacebench.model.export import export_onnx
        from defacebench.model.inference import load_model

        model = export_onnx(load_model(run), study / "raw-run-1.onnx")
    assert score_main([str(study), "--model", str(model), "--name", fmt, "--bootstrap", "100"]) == 0
    scored = pd.read_csv(layout.score_table(study, fmt, "predictions"), dtype={"participant_id": str, "session_id": str}, keep_default_na=False)
    raw = scored[scored["condition"] == "raw"].set_index(["participant_id", "session_id"])
    own = _own_predictions(run).set_index(["participant_id", "session_id"])
    joined = own.join(raw["predicted_age"].rename("scored"), how="inner")
    assert len(joined) == len(own) > 0
    worst = float((joined["predicted_age"] - joined["scored"]).abs().max())
    print(f"{fmt}: largest difference from predictions.csv {worst:.2e} years over {len(joined)} scans")
    assert worst < 1e-4
    dbrainage = pd.read_csv(layout.score_table(study, fmt, "dbrainage"))
    assert set(dbrainage["method"]) == {"afni", "fsl"}
    assert set(pd.read_csv(layout.score_table(study, fmt, "metrics"))["condition"]) == set(CONDITIONS)


class TinySFCN(nn.Module):
    """A random SFCN-style soft classifier: 1 mm 160x192x160 in, log-probabilities of 40 one-year bins out."""

    def __init__(self) -> None:
        super().__init__()
        self.pool = nn.AvgPool3d(8)
        self.conv = nn.Conv3d(1, 4, 3, padding=1)
        self.out = nn.Linear(4, 40)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv(self.pool(x))).mean(dim=(2, 3, 4))
        return torch.log_softmax(self.out(h), dim=1)[:, :, None, None, None]


SFCN_SPEC = """
[input]
shape = [160, 192, 160]
voxel_mm = 1
orientation = "RAS"
skull_stripped = false
normalisation = "mean"
batch_size = 2

[output]
kind = "log_probabilities"
bin_range = [42.5, 82.5, 1.0]
"""


@pytest.mark.slow
def test_a_model_on_another_grid_runs_through_its_spec(trained, tmp_path: Path) -> None:
    study, _ = trained
    torch.manual_seed(0)
    path = tmp_path / "sfcn.pt"
    torch.jit.trace(TinySFCN().eval(), torch.zeros(1, 1, 160, 192, 160)).save(str(path))
    spec_path = tmp_path / "sfcn.toml"
    spec_path.write_text(SFCN_SPEC)
    assert score_main([str(study), "--model", str(path), "--input-spec", str(spec_path), "--split", "test", "--bootstrap", "100"]) == 0
    scored = pd.read_csv(layout.score_table(study, "sfcn", "predictions"))
    assert len(scored) == 3 * 6 and scored["predicted_age"].between(42.5, 81.5).all()


@pytest.mark.parametrize("orientation, shape", [("RAS", (48, 60, 56)), ("LPI", (50, 58, 54)), ("SLA", (54, 50, 58))])
def test_spec_resampling_keeps_world_positions(orientation: str, shape: tuple[int, int, int]) -> None:
    """A bright voxel of a store lands at the same MNI mm on a 1 mm grid of any orientation."""
    study_affine = np.array([[-4.0, 0, 0, 30], [0, 4.0, 0, -40], [0, 0, 4.0, -20], [0, 0, 0, 1]])
    image = np.zeros((1, 12, 14, 13), np.float32)
    image[0, 3, 9, 5] = 1.0
    spec = ModelSpec(shape=shape, voxel_mm=(1.0, 1.0, 1.0), orientation=orientation)
    out = prepare(image, None, spec, study_affine)[0, 0]
    target, _ = spec.affine(study_affine, image.shape[1:])
    import nibabel as nib

    assert "".join(nib.orientations.aff2axcodes(target)) == orientation  # an independent reading of the grid's axes
    peak = np.array(np.unravel_index(np.argmax(out), out.shape), float)
    assert np.allclose(target[:3, :3] @ peak + target[:3, 3], study_affine[:3, :3] @ [3, 9, 5] + study_affine[:3, 3], atol=1.0)


def test_soft_classification_output_to_ages() -> None:
    spec = ModelSpec(kind="logits", bin_centres=(50.0, 60.0, 70.0))
    assert spec.ages(np.array([[0.0, 0.0, 0.0], [-100.0, -100.0, 0.0]]), 2) == pytest.approx([60.0, 70.0])
    assert ModelSpec(scale=10.0, offset=50.0).ages(np.array([[1.0], [2.0]]), 2) == pytest.approx([60.0, 70.0])


def test_skull_stripped_spec_masks_every_condition_with_the_brain(trained, tmp_path: Path) -> None:
    study, run = trained
    spec = tmp_path / "stripped.toml"
    spec.write_text('[input]\nskull_stripped = true\nnormalisation = "zscore"\n')
    assert score_main([str(study), "--model", str(layout.model_ts_file(run)), "--input-spec", str(spec), "--name", "stripped", "--split", "test", "--bootstrap", "100"]) == 0
    scored = pd.read_csv(layout.score_table(study, "stripped", "predictions"))
    module = torch.jit.load(str(layout.model_ts_file(run)))
    brain = np.asarray(open_condition(study, "tiny", "skullstripped").images[open_condition(study, "tiny", "raw").rows("test")], np.float32) != 0
    for condition in ("raw", "defaced-fsl"):
        store = open_condition(study, "tiny", condition)
        images = np.asarray(store.images[store.rows("test")], np.float32) * brain
        inside = [im[m] for im, m in zip(images, images != 0)]
        x = np.stack([np.where(im != 0, (im - v.mean()) / v.std(), 0) for im, v in zip(images, inside)]).astype(np.float32)
        expected = module(torch.from_numpy(x[:, None])).detach().numpy()
        assert np.allclose(scored[scored["condition"] == condition]["predicted_age"], expected, atol=1e-4)


class ThreeOutputs(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(1, 2, 3, 4))[:, None].repeat(1, 3)


def test_bad_models_and_specs_fail_with_one_line(trained, tmp_path: Path, capsys) -> None:
    study, run = trained
    garbage = tmp_path / "broken.pt"
    garbage.write_bytes(b"not a model")
    wrong_grid = tmp_path / "wrong.toml"
    wrong_grid.write_text("[input]\nshape = [20, 20, 20]\n")
    three = tmp_path / "three.pt"
    torch.jit.trace(ThreeOutputs(), torch.zeros(2, 1, 12, 14, 13)).save(str(three))
    stripped = tmp_path / "stripped.toml"
    stripped.write_text("[input]\nskull_stripped = true\n")
    unknown = tmp_path / "typo.toml"
    unknown.write_text("[input]\nshap = [1, 2, 3]\n")
    from defacebench.model.export import export_onnx
    from defacebench.model.inference import load_model

    onnx = export_onnx(load_model(run), tmp_path / "raw.onnx")
    cases = [
        (["--model", str(garbage)], "unreadable TorchScript model"),
        (["--model", str(layout.model_ts_file(run)), "--input-spec", str(wrong_grid)], "model rejected input of shape [4, 1, 20, 20, 20]"),
        (["--model", str(onnx), "--input-spec", str(wrong_grid)], "does not match the spec"),
        (["--model", str(three)], "not one age per image"),
        (["--model", str(tmp_path / "model.h5")], "unknown model format"),
        (["--model", str(three), "--input-spec", str(unknown)], "unknown key(s) shap"),
    ]
    bare = make_blob_store(tmp_path / "bare", n=10, shape=(12, 14, 13))  # raw only
    cases.append(([str(bare), "--model", str(three), "--input-spec", str(stripped)], "no skullstripped store"))
    for argv, message in cases:
        argv = argv if argv[0] == str(bare) else [str(study), *argv]
        assert score_main([*argv, "--bootstrap", "100"]) == 2, argv
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
