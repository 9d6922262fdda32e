"""Figures: every PNG is written, readable, and brain images land in the right place."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from test_metrics import make_study

from defacebench.analysis import figures
from defacebench.cli import main as cli_main

MNI4 = np.array([[-4.0, 0, 0, 90], [0, 4, 0, -126], [0, 0, 4, -72], [0, 0, 0, 1]])


def _is_png(path: Path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000


def test_plane_orientation() -> None:
    vol = np.zeros((46, 55, 46))
    vol[40, 50, 5] = 1  # index x=40 -> world x = 90 - 160 = -70 (left), y = 74 (front), z = -52 (low)
    image, extent = figures.plane(vol, MNI4, "sagittal", reduce="max")
    row, col = np.unravel_index(np.argmax(image), image.shape)
    y = extent[0] + (col + 0.5) * (extent[1] - extent[0]) / image.shape[1]
    z = extent[2] + (row + 0.5) * (extent[3] - extent[2]) / image.shape[0]
    assert abs(y - 74) <= 2 and abs(z + 52) <= 2
    image, extent = figures.plane(vol, MNI4, "axial", reduce="max")
    row, col = np.unravel_index(np.argmax(image), image.shape)
    x = extent[0] + (col + 0.5) * (extent[1] - extent[0]) / image.shape[1]
    assert abs(x + 70) <= 2  # neurological: subject's left on the image's left


def test_study_figures_written(tmp_path: Path) -> None:
    study = make_study(tmp_path, runs=2)
    assert cli_main(["analyse", str(study), "--bootstrap", "200"]) == 0
    paths = figures.figure_paths(study)
    for name in ("fig4_errors", "predicted_vs_true", "training_curves"):
        assert _is_png(paths[name]), name


def test_brain_figures(tmp_path: Path) -> None:
    shape = (46, 55, 46)
    template = np.zeros(shape, np.float32)
    template[10:36, 10:45, 10:40] = 1
    freq = np.zeros(shape, np.float32)
    freq[10:36, 48:55, 0:12] = 0.8
    p = figures.plot_removal_regions({"fsl": freq, "spm": freq * 0.5}, template, MNI4, tmp_path / "fig1.png", n_scans=10)
    assert _is_png(p)
    maps = {"raw": np.random.default_rng(0).normal(size=shape).astype(np.float32), "face-fsl": freq - 0.1}
    shares = pd.DataFrame({"condition": ["raw", "face-fsl"], "face_share": [0.1, 0.9], "brain_share": [0.8, 0.05]})
    assert _is_png(figures.plot_saliency(maps, template, MNI4, tmp_path / "fig3.png", shares=shares))
    assert figures.saliency_label("face-fsl", shares).endswith("face 90% / brain 5%")
    empty = pd.DataFrame({"condition": ["face-spm"], "face_share": [float("nan")], "brain_share": [float("nan")]})
    assert figures.saliency_label("face-spm", empty).endswith("no positive saliency")  # not "face nan%"
    assert figures.saliency_label("raw", None) == "raw head"
