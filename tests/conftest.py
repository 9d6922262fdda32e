"""Shared fixtures: tiny images with distinct axis sizes and a non-identity affine."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

#: Oblique, anisotropic, translated: axis mix-ups and affine mistakes fail loudly.
TINY_AFFINE = np.array(
    [
        [0.0, 0.0, -1.5, 40.0],
        [1.2, 0.0, 0.0, -30.0],
        [0.0, 1.1, 0.1, 12.0],
        [0.0, 0.0, 0.0, 1.0],
    ]
)


def tiny_volume(shape: tuple[int, int, int] = (17, 18, 19), seed: int = 0) -> np.ndarray:
    """A smooth blob plus noise, distinct axis sizes."""
    rng = np.random.default_rng(seed)
    grid = np.indices(shape, dtype=np.float32)
    centre = (np.array(shape, dtype=np.float32) - 1) / 2
    r2 = sum(((g - c) / (s / 3)) ** 2 for g, c, s in zip(grid, centre, shape))
    return (100 * np.exp(-r2) + rng.normal(0, 1, shape)).astype(np.float32)


def write_nifti(path: Path, data: np.ndarray | None = None, affine: np.ndarray = TINY_AFFINE, **header) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(tiny_volume() if data is None else data, affine)
    for key, value in header.items():
        img.header[key] = value
    nib.save(img, str(path))
    return path


@pytest.fixture
def tiny_image(tmp_path: Path) -> Path:
    return write_nifti(tmp_path / "tiny_T1w.nii.gz")


def make_bids(root: Path, ages: dict[str, object], sessions: dict[str, dict[str, object]] | None = None) -> Path:
    """A tiny BIDS tree: one T1w per subject (per session when ``sessions`` names them)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset_description.json").write_text(json.dumps({"Name": "tiny", "BIDSVersion": "1.9.0"}))
    rows = ["participant_id\tage\tsex"]
    for i, (sub, age) in enumerate(ages.items()):
        rows.append(f"sub-{sub}\t{age}\t{'M' if i % 2 else 'F'}")
        subject_sessions = (sessions or {}).get(sub)
        if subject_sessions:
            lines = ["session_id\tage"] + [f"ses-{s}\t{a}" for s, a in subject_sessions.items()]
            (root / f"sub-{sub}" / f"sub-{sub}_sessions.tsv").parent.mkdir(parents=True, exist_ok=True)
            (root / f"sub-{sub}" / f"sub-{sub}_sessions.tsv").write_text("\n".join(lines) + "\n")
            for j, ses in enumerate(subject_sessions):
                write_nifti(root / f"sub-{sub}" / f"ses-{ses}" / "anat" / f"sub-{sub}_ses-{ses}_T1w.nii.gz", tiny_volume(seed=1000 + 100 * i + j))
        else:
            write_nifti(root / f"sub-{sub}" / "anat" / f"sub-{sub}_T1w.nii.gz", tiny_volume(seed=i))
    (root / "participants.tsv").write_text("\n".join(rows) + "\n")
    return root


@pytest.fixture
def tiny_bids(tmp_path: Path) -> Path:
    ages = {f"{i:02d}": 56 + i for i in range(1, 21)}
    return make_bids(tmp_path / "bids", ages)
