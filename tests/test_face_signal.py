"""Face-only against its geometry control: planted geometry is geometry, planted tissue is tissue.

Tiny stores stand in for a face-only condition and its face mask. In the first study age
moves the "face" (a bright slab) and nothing else: both conditions learn age equally and the
claim must not be made. In the second the slab stays put (its place jitters at random) and
its intensity pattern ages: only face-only learns age, and the claim must be made. Both go
through the real chain: training (cpu profile), the analysis stage and the report's sentence.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from defacebench import layout
from defacebench.analysis.face_signal import ensemble_errors, face_signal_table, geometry_share
from defacebench.analysis.stage import analyse_study
from defacebench.io.store import write_condition, write_index
from defacebench.model.profiles import get_profile
from defacebench.model.train import train_condition
from defacebench.report.findings import conclusions

SHAPE = (12, 14, 13)
AFFINE = np.array([[-4.0, 0, 0, 90], [0, 4.0, 0, -126], [0, 0, 4.0, -72], [0, 0, 0, 1]])


def face_and_mask(ages: np.ndarray, geometry: bool, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A slab in front of the head: its y position follows age (``geometry``), or its texture does.

    The mask is the slab's binary outline drawn 4x finer and block-averaged, as a native-space
    binary mask reaches a coarse grid through the linear resampling: partial volumes at its edge.
    """
    from defacebench.imaging.blocks import block_mean

    rng = np.random.default_rng(seed)
    frac = np.clip((ages - 50.0) / 40.0, 0, 1)
    fine = 4
    yf = (np.arange(SHAPE[1] * fine, dtype=np.float32) + 0.5) / fine - 0.5
    zf = (np.arange(SHAPE[2] * fine, dtype=np.float32) + 0.5) / fine - 0.5
    z = np.arange(SHAPE[2], dtype=np.float32)[None, None, :]
    faces, masks = [], []
    for f in frac:
        front = 3.0 + 6.0 * (f if geometry else rng.uniform(0, 1))
        outline = (yf[:, None] < front) & (np.abs(zf[None, :] - 6) < 4)
        mask = np.repeat(block_mean(np.repeat(outline[None], fine, axis=0), (fine, fine, fine)), SHAPE[0], axis=0)
        pattern = 1.0 + (0.0 if geometry else 0.8 * f) * np.cos(z / 2.0)
        faces.append(mask * pattern + rng.normal(0, 0.03, SHAPE))
        masks.append(mask)
    return np.array(faces, dtype=np.float32), np.array(masks, dtype=np.float32)


def planted_study(root: Path, geometry: bool, n: int = 100) -> Path:
    rng = np.random.default_rng(1)
    ages = np.round(rng.uniform(50, 90, n), 1)
    split = np.array(["train"] * 60 + ["val"] * 20 + ["test"] * (n - 80))
    index = pd.DataFrame({"participant_id": [f"sub-{i:03d}" for i in range(n)], "session_id": "", "run": "", "age": ages, "split": split})
    write_index(root, "tiny", index)
    faces, masks = face_and_mask(ages, geometry, seed=2)
    write_condition(root, "tiny", "face-afni", faces, index, AFFINE)
    write_condition(root, "tiny", "facemask-afni", masks, index, AFFINE)
    profile = get_profile("cpu", grid="tiny", input_pool=1, width_multiplier=0.125, max_epochs=12, patience=12, learning_rate=1e-2, rotation_deg=0.0)
    for condition in ("face-afni", "facemask-afni"):
        train_condition(root, "tiny", condition, 1, profile, device="cpu", progress=False, log=None)
    analyse_study(root, "tiny", n_boot=500, saliency=False)
    return root


@pytest.fixture(scope="module")
def geometry_study(tmp_path_factory) -> Path:
    return planted_study(tmp_path_factory.mktemp("geometry"), geometry=True)


@pytest.fixture(scope="module")
def tissue_study(tmp_path_factory) -> Path:
    return planted_study(tmp_path_factory.mktemp("tissue"), geometry=False)


def _sentence(study: Path) -> str:
    read = lambda role: pd.read_csv(layout.result_table(study, role))  # noqa: E731
    return " ".join(conclusions(read("table1"), None, read("null_baseline"), face_signal=read("face_signal")))


def test_planted_geometry_is_attributed_to_geometry(geometry_study: Path) -> None:
    row = pd.read_csv(layout.result_table(geometry_study, "face_signal")).iloc[0]
    print(row.to_dict())
    assert row["method"] == "afni" and bool(row["beats_null"])  # the face-only model reads where the slab sits
    assert row["mask_vs_null_p_holm"] < 0.05  # so does the mask alone
    assert not bool(row["beats_geometry"]) and not bool(row["tissue_signal"])
    assert row["geometry_explained_pct"] > 50
    text = _sentence(geometry_study)
    assert "carries age information" not in text and "none beats its own geometry control" in text
    assert layout.figure_file(geometry_study, "face_signal").is_file()


def test_planted_tissue_is_found_as_tissue(tissue_study: Path) -> None:
    row = pd.read_csv(layout.result_table(tissue_study, "face_signal")).iloc[0]
    print(row.to_dict())
    assert bool(row["beats_null"]) and bool(row["beats_geometry"]) and bool(row["tissue_signal"])
    assert not row["mask_vs_null_p_holm"] < 0.05  # the mask's position carries no age
    text = _sentence(tissue_study)
    assert "The removed face carries age information beyond where it sits: for AFNI" in text


def test_no_control_means_no_claim() -> None:
    rng = np.random.default_rng(0)
    index = pd.MultiIndex.from_tuples([(f"sub-{i}", "", "") for i in range(30)])
    null = pd.Series(rng.uniform(5, 15, 30), index=index)
    errors = pd.DataFrame({"face-spm": null.to_numpy() * 0.3}, index=index)
    table = face_signal_table(errors, null, n_boot=200)
    assert bool(table["beats_null"].iloc[0]) and not bool(table["tissue_signal"].iloc[0]) and np.isnan(table["facemask_mae"].iloc[0])
    t1 = pd.DataFrame({"condition": ["face-spm"], "mae_mean": [errors["face-spm"].mean()], "null_mae": [null.mean()], "n_test": [30]})
    n = pd.DataFrame({"condition": ["face-spm"], "beats_null": [True], "improvement_pct": [70.0], "wilcoxon_p_holm": [1e-5]})
    text = " ".join(conclusions(t1, None, n, face_signal=table))
    assert "no geometry control" in text and "carries age" not in text
    assert "no geometry control" in " ".join(conclusions(t1, None, n))  # an old study without face_signal.csv: no claim either


def test_ensemble_errors_and_geometry_share() -> None:
    predictions = pd.DataFrame({"participant_id": ["sub-1", "sub-1", "sub-2", "sub-2"], "session_id": "", "bids_run": "", "split": "test",
                                "age": [60.0, 60.0, 70.0, 70.0], "predicted_age": [58.0, 64.0, 71.0, 73.0], "condition": "face-fsl", "run": [1, 2, 1, 2]})
    errors = ensemble_errors(predictions)
    assert errors["face-fsl"].tolist() == [1.0, 2.0]  # |mean prediction - age|, not the mean of |errors| (3.0, 2.0)
    assert geometry_share(face_mae=4.0, facemask_mae=6.0, null_mae=10.0) == pytest.approx(66.666, rel=1e-3)
    assert np.isnan(geometry_share(11.0, 6.0, 10.0))  # face-only does not beat the null: nothing to explain
