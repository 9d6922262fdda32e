"""Does the geometry control's head registration follow the face's own ageing?

The control ``facemask-<m>`` places pydeface's average face on each scan with pydeface's
head registration (template -> subject, 12 DOF, Mattes MI), then moves it to MNI space with
the brain registration. Give two finished studies of the SAME simulated people (same seed,
identities and brain ageing), one with face ageing and one without
(``defacebench demo A`` and ``defacebench demo B --face-ageing 0``): the brain is the same in
both, so any age trend of the difference A - B in where the average face lands comes from the
face's ageing pulling the head registration. Without ``--refit`` no registration is run: the
fits on disk and placements derived from them (their rigid, similarity and shear-free parts,
about the average face's centre). ``--refit noface|shell[-brain]`` fits pydeface's template
again with the face (its mask's removed region) left out of the metric, or with only the
cranial shell (skull and scalp outside the MNI brain + 5 mm, above MNI z = -40 mm, no ears),
initialised from the fit on disk or, with ``-brain``, from the brain registration.

    PYTHONPATH=src python bench/control_face_ageing.py A B [--refit shell --n 40 --jobs 2]

Prints, per placement, the slope (mm per 40 years) and r against age of the average face's
MNI front (mean of its most anterior 2 %) in A, in B and of A - B; the true face's front
(simulation labels) the same way. Measured numbers: docs/face-placement.md.
"""

from __future__ import annotations

import argparse
import functools
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import linalg, ndimage, stats

from defacebench import layout
from defacebench.cohort import read_cohort
from defacebench.deface.context import REGISTRATION_ITERATIONS, REGISTRATION_RESOLUTION_MM
from defacebench.imaging.masks import head_mask
from defacebench.imaging.registration import load_transform, register, remove_shear
from defacebench.imaging.resample import resample_to, world_coordinates
from defacebench.imaging.templates import average_face_outline, mni_head_brain_mask, pydeface_template, pydeface_to_mni
from defacebench.io.nifti import load_image
from defacebench.simulate.labels import INTRACRANIAL, LABELS

FRONT_FRACTION = 0.02


@functools.lru_cache(maxsize=1)
def _face_points() -> tuple[np.ndarray, np.ndarray]:
    """Template world mm (4, n) of the average face inside pydeface's removed region, and its centre."""
    template, facemask = pydeface_template()
    outline = np.asarray(average_face_outline().dataobj) > 0.5
    face = np.argwhere(outline & (np.asarray(facemask.dataobj) < 0.5))
    centre = template.affine @ np.r_[np.argwhere(outline).mean(axis=0), 1.0]
    return template.affine @ np.c_[face, np.ones(len(face))].T, centre


def _about_centre(matrix: np.ndarray, linear: np.ndarray) -> np.ndarray:
    """``linear`` in place of ``matrix``'s linear part, mapping the face's centre where ``matrix`` does."""
    centre = _face_points()[1]
    out = np.eye(4)
    out[:3, :3] = linear
    out[:3, 3] = matrix[:3] @ centre - linear @ centre[:3]
    return out


DERIVED = {
    "whole head, 12 DOF (today's)": lambda m: m,
    "its rigid part": lambda m: _about_centre(m, linalg.polar(m[:3, :3])[0]),
    "its similarity part": lambda m: _about_centre(m, linalg.polar(m[:3, :3])[0] * abs(np.linalg.det(m[:3, :3])) ** (1 / 3)),
    "its shear-free part": remove_shear,
}


@functools.lru_cache(maxsize=2)
def refit_mask(kind: str) -> np.ndarray:
    """The template voxels the refit's metric sees (pydeface template grid)."""
    template, facemask = pydeface_template()
    keep = np.asarray(facemask.dataobj) >= 1
    if kind == "noface":
        return keep
    voxel_mm = float(abs(np.linalg.det(template.affine[:3, :3]))) ** (1 / 3)
    to_mni = pydeface_to_mni()
    brain = resample_to(mni_head_brain_mask(2, brainstem=True), np.linalg.inv(to_mni), template.affine, keep.shape, order=1) >= 0.5
    brain = ndimage.binary_dilation(brain, iterations=int(round(5 / voxel_mm)))
    x, _, z = world_coordinates(template.affine, keep.shape, to_mni)
    head = head_mask(np.asarray(template.dataobj, dtype=np.float32))
    return head & keep & ~brain & (z > -40) & ~((np.abs(x) > 60) & (z < 15))


def refit(scan, study: str, kind: str) -> np.ndarray:
    """pydeface's template fitted onto ``scan`` again with only ``refit_mask(kind)`` in the metric."""
    template, _ = pydeface_template()
    xfm = layout.scan_transforms(study, scan)
    base = kind.removesuffix("-brain")
    initial = (np.linalg.inv(load_transform(xfm["to_mni"])) @ pydeface_to_mni() if kind.endswith("-brain")
               else load_transform(xfm["template_to_subject"]))
    return register(load_image(scan.path, reorient=True), template, kind="affine", metric="mattes",
                    moving_mask=refit_mask(base).astype(np.float32), initial=initial,
                    resolution_mm=REGISTRATION_RESOLUTION_MM, iterations=REGISTRATION_ITERATIONS)


def front(points: np.ndarray) -> np.ndarray:
    """Mean (y, z) of the most anterior points."""
    return points[1:3, points[1] >= np.quantile(points[1], 1.0 - FRONT_FRACTION)].mean(axis=1)


def measure(study: Path, scans: list, refit_kind: str | None, jobs: int) -> pd.DataFrame:
    """Per scan: age, the average face's MNI front under every placement, the true face's front."""
    points = _face_points()[0]
    refits = {}
    if refit_kind:
        with ProcessPoolExecutor(jobs) as pool:
            refits = dict(zip([s.key for s in scans], pool.map(functools.partial(refit, study=str(study), kind=refit_kind), scans)))
    dataset = layout.demo_dataset(study)
    rows = []
    for scan in scans:
        xfm = layout.scan_transforms(study, scan)
        to_mni, t2s = load_transform(xfm["to_mni"]), load_transform(xfm["template_to_subject"])
        row = {"key": scan.key, "age": scan.age_years}
        placements = {name: f(t2s) for name, f in DERIVED.items()}
        if scan.key in refits:
            placements[f"refit {refit_kind}"] = refits[scan.key]
        for name, matrix in placements.items():
            row[f"{name} y"], row[f"{name} z"] = front(to_mni @ matrix @ points)
        img = nib.load(str(scan.path))
        labels = np.asarray(nib.load(str(next(p for p in layout.simulation_labels(dataset, scan) if p.is_file()))).dataobj).astype(np.int32)
        nonbrain = (labels > 0) & ~np.isin(labels, [LABELS[k] for k in INTRACRANIAL])
        row["true face y"], row["true face z"] = front(world_coordinates(img.affine, img.shape[:3], to_mni, dtype=np.float64)[:, nonbrain])
        rows.append(row)
    return pd.DataFrame(rows).set_index("key")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("aged", type=Path, help="finished study with face ageing")
    parser.add_argument("unaged", type=Path, help="finished study of the same people without face ageing")
    parser.add_argument("--n", type=int, default=None, help="first N scans (default all)")
    parser.add_argument("--refit", choices=("noface", "shell", "noface-brain", "shell-brain"), default=None)
    parser.add_argument("--jobs", type=int, default=1)
    args = parser.parse_args()
    scans = {str(s): read_cohort(layout.demo_dataset(s)).subjects[: args.n] for s in (args.aged, args.unaged)}
    if [(s.key, s.age_years) for s in scans[str(args.aged)]] != [(s.key, s.age_years) for s in scans[str(args.unaged)]]:
        raise SystemExit("the two studies do not hold the same people")
    a, b = (measure(s, scans[str(s)], args.refit, args.jobs) for s in (args.aged, args.unaged))
    print(f"{len(a)} people; slope in mm per 40 years, r against age")
    for column in [c for c in a.columns if c != "age"]:
        fits = [stats.linregress(a["age"], v) for v in (a[column], b[column], a[column] - b[column])]
        print(f"  {column:36s} " + " | ".join(f"{label} {f.slope * 40:+6.2f} r {f.rvalue:+.2f}" for label, f in zip(("aged", "unaged", "aged - unaged"), fits)))


if __name__ == "__main__":
    main()
