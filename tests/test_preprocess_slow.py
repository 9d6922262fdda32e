"""End to end on real heads: simulate -> deface (five methods) -> preprocess, via the command line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from defacebench.io.store import list_conditions, open_condition

pytestmark = pytest.mark.slow
PAPER_STORES = ["defaced-afni", "defaced-fsl", "defaced-pydeface", "defaced-spm", "face-afni", "face-fsl", "face-pydeface", "face-spm",
             "facemask-afni", "facemask-fsl", "facemask-pydeface", "facemask-spm", "raw", "skullstripped"]


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> tuple[Path, Path]:
    from defacebench.commands.cohort import main as cohort_main
    from defacebench.commands.deface import main as deface_main
    from defacebench.commands.preprocess import main
    from defacebench.simulate import simulate_cohort

    root = tmp_path_factory.mktemp("e2e")
    simulate_cohort(root / "bids", 6, seed=3, voxel_mm=1.5)
    bids, out = str(root / "bids"), str(root / "study")
    assert cohort_main([bids, "--out", out]) == 0
    assert deface_main([bids, out, "--methods", "afni,fsl,pydeface,spm", "--jobs", "2", "--no-progress"]) == 0
    assert main([bids, out, "--grid", "mni2mm", "--jobs", "2", "--no-progress"]) == 0
    return root / "bids", root / "study"


def test_the_paper_stores_with_the_paper_shape(study) -> None:
    _, out = study
    assert list_conditions(out, "mni2mm") == PAPER_STORES
    for condition in PAPER_STORES:
        store = open_condition(out, "mni2mm", condition, verify=True)
        assert store.images.shape == (6, 91, 109, 91)


def test_registration_dice_and_identity(study) -> None:
    _, out = study
    qc = pd.read_csv(out / "derivatives/defacebench/qc_preprocess.tsv", sep="\t", keep_default_na=False)
    dice = qc["brain_dice"].astype(float)
    assert (dice >= 0.9).mean() >= 0.95, dice.tolist()
    raw = open_condition(out, "mni2mm", "raw").images.astype(np.float32)
    for method in ("afni", "fsl", "pydeface", "spm"):
        d = open_condition(out, "mni2mm", f"defaced-{method}").images.astype(np.float32)
        f = open_condition(out, "mni2mm", f"face-{method}").images.astype(np.float32)
        assert np.all(np.abs(d + f - raw) <= 2.0**-11 * (np.abs(d) + np.abs(f) + np.abs(raw)) + 1e-6)
        assert (f > 0.1).sum() > 1000


def test_head_grid_holds_more_face_than_the_paper_grid(study) -> None:
    from defacebench.commands.preprocess import main

    bids, out = study
    assert main([str(bids), str(out), "--grid", "mni2mm-head", "--conditions", "face-fsl", "raw", "--jobs", "2", "--no-progress"]) == 0
    paper = open_condition(out, "mni2mm", "face-fsl").images.astype(np.float32).sum(axis=(1, 2, 3))
    head = open_condition(out, "mni2mm-head", "face-fsl").images.astype(np.float32).sum(axis=(1, 2, 3))
    assert np.all(head > 1.2 * paper)  # same 2 mm voxels: the paper's box loses the lower face
    assert (out / "derivatives/defacebench/qc/preprocess_mni2mm-head_face-fsl.png").is_file()
