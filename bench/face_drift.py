"""How far the face moves in MNI space with age under each placement a finished study already has.

No new registration: reads a study's deface derivatives (the brain registration ``to_mni``,
its shear-free ``head_to_mni``, pydeface's head registration ``template_to_subject``) and the
simulator's ground-truth labels, and regresses the MNI position of the face's front (mean of
the most anterior 2 % of the non-brain head voxels) on age. Run it on a study of a cohort
simulated with ``--face-ageing 0``: any trend then comes from the placement.

    PYTHONPATH=src python bench/face_drift.py STUDY [--n 80]

Prints one line per placement: slope (mm per 40 years), r, p and SD over people of the
front's y and z, and of the placement's scale. Measured numbers: docs/face-placement.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import stats

from defacebench import layout
from defacebench.cohort import read_cohort
from defacebench.imaging.placement import head_placement_transform
from defacebench.imaging.registration import load_transform
from defacebench.imaging.resample import world_coordinates
from defacebench.simulate.labels import INTRACRANIAL, LABELS

FRONT_FRACTION = 0.02


def placements(study: Path, scan) -> dict[str, np.ndarray]:
    """Subject world -> MNI world of each placement on disk for ``scan``."""
    xfm = layout.scan_transforms(study, scan)
    return {"brain (default)": load_transform(xfm["to_mni"]), "brain, no shear": load_transform(xfm["head_to_mni"]),
            "head (pydeface registration)": head_placement_transform(load_transform(xfm["template_to_subject"]))}


def face_front(img: nib.Nifti1Image, nonbrain: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """MNI mm of the front of the non-brain head tissue under ``matrix``."""
    coords = world_coordinates(img.affine, img.shape[:3], matrix, dtype=np.float64)[:, nonbrain]
    return coords[:, coords[1] >= np.quantile(coords[1], 1.0 - FRONT_FRACTION)].mean(axis=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("study", type=Path)
    parser.add_argument("--n", type=int, default=None, help="first N scans (default all)")
    args = parser.parse_args()
    dataset = layout.demo_dataset(args.study)
    cohort = read_cohort(dataset)
    rows = []
    for scan in cohort.subjects[: args.n]:
        img = nib.load(str(scan.path))
        labels_path = next(p for p in layout.simulation_labels(dataset, scan) if p.is_file())
        labels = np.asarray(nib.load(str(labels_path)).dataobj).astype(np.int32)
        nonbrain = (labels > 0) & ~np.isin(labels, [LABELS[k] for k in INTRACRANIAL])
        for name, matrix in placements(args.study, scan).items():
            y, z = face_front(img, nonbrain, matrix)[1:]
            scale = float(abs(np.linalg.det(matrix[:3, :3]))) ** (1 / 3)
            rows.append({"placement": name, "age": scan.age_years, "front_y": y, "front_z": z, "scale": scale})
    frame = pd.DataFrame(rows)
    print(f"{args.study}: {frame['age'].count() // frame['placement'].nunique()} scans")
    for name, group in frame.groupby("placement", sort=False):
        parts = []
        for column in ("front_y", "front_z", "scale"):
            fit = stats.linregress(group["age"], group[column])
            parts.append(f"{column} {fit.slope * 40:+.2f}/40y r={fit.rvalue:+.2f} p={fit.pvalue:.2g} sd={group[column].std():.2f}")
        print(f"  {name:30s} " + " | ".join(parts))


if __name__ == "__main__":
    main()
