"""Where the face lands in MNI space against brain age, for several subject -> MNI placements.

Run: python bench/face_placement.py [--n 40] [--jobs 2] [--bids DIR] [--tsv OUT.tsv] [--candidates ...]

Simulates a cohort with brain ageing and NO face ageing (``--voxel-mm 3 --face-ageing 0
--brain-ageing 3 --ages uniform --base-heads robex``, the demo's settings with face ageing off)
unless ``--bids`` names one, then fits each candidate placement (subject world -> MNI world)
per subject and measures, through it:

- the face front: mean MNI y and z of the most anterior 2 % (by MNI y) of the non-brain head
  voxels of the simulation's labels (skull, face, nose, ears, neck, scalp: every label that is
  not intracranial), the definition behind the number in docs/design-notes.md;
- the centroid of those non-brain voxels;
- brain alignment: Dice of the subject's ground-truth brain (intracranial) mask carried to the
  2 mm MNI head grid against ``mni_head_brain_mask(2)``, and the correlation of the subject's
  brain image with the MNI brain template inside the MNI brain mask;
- seconds per registration (wall, one ITK thread).

Then per candidate: slope of face-front y and z against age (mm per 40 years), Pearson r and p.
The brain mask is the simulation's ground truth (derivatives/simulation: an intracranial mask)
except in the ``*_deepbet`` candidates, which run deepbet as preprocessing does on real data. A benchmark: it prints what it measured, it passes nothing.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

#: ``*_deepbet``: the brain mask from deepbet (as preprocessing has it on real data) instead of
#: the simulation's; ``*_lib``: :func:`defacebench.imaging.placement.face_placement_transform`.
CANDIDATES = ("a_brain12", "a_brain12_deepbet", "b_cavity12", "b_cavity12_lib", "b_cavity9", "b_cavity12_deepbet_lib",
              "b_cranium12_deepbet_lib", "c_head12", "c_head9", "d_cavity_head12", "d_cranium12_deepbet",
              "d_cavity_head9", "d_cavity12_brain_rigid")
#: cranium from deepbet's mask: grown through dark voxels (CSF, bone: below this fraction of the
#: brain's 99th intensity percentile) up to this far beyond the mask.
CRANIUM_DARK_FRACTION = 0.55
CRANIUM_GROW_MM = 12.0
#: d_cranium: grown further (to the scalp on the whole vault) and fitted to the MNI head's own cranium.
CRANIUM_FAR_MM = 20.0


def cranium(img, brain: np.ndarray, grow_mm: float = CRANIUM_GROW_MM) -> np.ndarray:
    """Brain mask grown through dark voxels (CSF, skull) towards the bright scalp, at most CRANIUM_GROW_MM."""
    from scipy import ndimage

    data = np.asarray(img.dataobj, dtype=np.float32)
    dark = data < CRANIUM_DARK_FRACTION * float(np.percentile(data[brain], 99))
    zooms = np.linalg.norm(img.affine[:3, :3], axis=0)
    near = ndimage.distance_transform_edt(~brain, sampling=tuple(zooms)) <= grow_mm
    return ndimage.binary_propagation(brain, mask=brain | (dark & near))


FRONT_FRACTION = 0.02
SMOOTH_MM = 3.0


def simulate(out: Path, n: int, seed: int) -> None:
    cmd = [sys.executable, "-c", "import sys; from defacebench.cli import main; sys.exit(main())", "simulate", str(out),
           "--n", str(n), "--seed", str(seed), "--voxel-mm", "3", "--face-ageing", "0", "--brain-ageing", "3",
           "--ages", "uniform", "--base-heads", "robex"]
    subprocess.run(cmd, check=True, capture_output=True)


def smoothed(mask: np.ndarray, affine: np.ndarray, sigma_mm: float = SMOOTH_MM) -> np.ndarray:
    from defacebench.imaging.placement import smoothed_mask

    return smoothed_mask(mask, affine, sigma_mm)


_TARGETS: dict = {}


def targets() -> dict:
    """MNI-side images of every candidate (built once per process)."""
    if _TARGETS:
        return _TARGETS
    import nibabel as nib

    from defacebench.imaging.masks import head_mask
    from defacebench.imaging.templates import mni_brain, mni_brain_mask, mni_head, mni_head_brain_mask

    head = mni_head(2)
    head_data = np.asarray(head.dataobj, dtype=np.float32)
    brain_on_head = np.asarray(mni_head_brain_mask(2).dataobj) > 0
    head_outline = head_mask(head_data) | brain_on_head
    cavity = np.asarray(mni_brain_mask().dataobj) > 0
    _TARGETS.update(
        brain=mni_brain(),
        cavity=nib.Nifti1Image(smoothed(cavity, mni_brain_mask().affine), mni_brain_mask().affine),
        head=nib.Nifti1Image(smoothed(head_outline, head.affine), head.affine),
        cavity_head=nib.Nifti1Image(smoothed(head_outline, head.affine) + smoothed(brain_on_head, head.affine), head.affine),
        cranium=nib.Nifti1Image(smoothed(cranium(head, np.asarray(mni_head_brain_mask(2, brainstem=True).dataobj) > 0,
                                                 CRANIUM_FAR_MM), head.affine), head.affine),
        dice_ref=brain_on_head,
        dice_affine=head.affine,
        brain_on_grid=_template_on_head_grid(),
    )
    return _TARGETS


def _template_on_head_grid() -> np.ndarray:
    from defacebench.imaging.templates import mni_brain, on_head_grid

    return on_head_grid(mni_brain(), 2, order=1)


def fit(name: str, img, brain: np.ndarray, head: np.ndarray, deepbet: np.ndarray | None = None) -> np.ndarray:
    """One candidate's subject world -> MNI world matrix."""
    import nibabel as nib

    from defacebench.imaging.placement import face_placement_transform
    from defacebench.imaging.registration import register

    t = targets()
    if name == "b_cranium12_deepbet_lib":
        return face_placement_transform(img, cranium(img, deepbet))
    if name == "d_cranium12_deepbet":
        moving = smoothed(cranium(img, deepbet, CRANIUM_FAR_MM), img.affine)
        return register(t["cranium"], nib.Nifti1Image(moving, img.affine), kind="affine", metric="meansquares",
                        resolution_mm=4.0, iterations=(100, 50))
    if name.endswith("_deepbet_lib"):
        return face_placement_transform(img, deepbet, kind="affine9" if "9" in name else "affine")
    if name.endswith("_lib"):
        return face_placement_transform(img, brain, kind="affine9" if "9" in name else "affine")
    if name.endswith("_deepbet"):
        return fit(name.removesuffix("_deepbet"), img, deepbet, head)
    data = np.asarray(img.dataobj, dtype=np.float32)
    common = dict(resolution_mm=4.0, iterations=(100, 50))
    kind = "affine9" if name.endswith("9") else "affine"
    if name == "a_brain12":  # deface/context.py subject_to_mni, with the ground-truth mask
        return register(t["brain"], nib.Nifti1Image(data * brain, img.affine), kind="affine", metric="mattes", **common)
    if name.startswith("b_cavity"):
        return register(t["cavity"], nib.Nifti1Image(smoothed(brain, img.affine), img.affine), kind=kind, metric="meansquares", **common)
    if name.startswith("c_head"):
        return register(t["head"], nib.Nifti1Image(smoothed(head, img.affine), img.affine), kind=kind, metric="meansquares", **common)
    if name.startswith("d_cavity_head"):
        moving = smoothed(head, img.affine) + smoothed(brain, img.affine)
        return register(t["cavity_head"], nib.Nifti1Image(moving, img.affine), kind=kind, metric="meansquares", **common)
    if name == "d_cavity12_brain_rigid":  # cavity's scale and shear, then a rigid brain-intensity refinement
        initial = fit("b_cavity12", img, brain, head)
        return register(t["brain"], nib.Nifti1Image(data * brain, img.affine), kind="rigid", metric="mattes", initial=initial, **common)
    raise ValueError(name)


def measure(matrix: np.ndarray, img, brain: np.ndarray, nonbrain: np.ndarray) -> dict:
    from defacebench.imaging.registration import mask_dice
    from defacebench.imaging.resample import resample_to, world_coordinates

    t = targets()
    coords = world_coordinates(img.affine, img.shape[:3], matrix, dtype=np.float64)[:, nonbrain]
    y = coords[1]
    front = coords[:, y >= np.quantile(y, 1.0 - FRONT_FRACTION)].mean(axis=1)
    centroid = coords.mean(axis=1)
    shape = t["dice_ref"].shape
    carried = resample_to(brain.astype(np.float32), matrix, t["dice_affine"], shape, order=1, source_affine=img.affine) >= 0.5
    data = np.asarray(img.dataobj, dtype=np.float32)
    moved = resample_to(data * brain, matrix, t["dice_affine"], shape, order=1, source_affine=img.affine)
    inside = t["dice_ref"]
    corr = float(np.corrcoef(moved[inside], t["brain_on_grid"][inside])[0, 1])
    scale = float(abs(np.linalg.det(matrix[:3, :3]))) ** (1 / 3)
    return {"front_y": front[1], "front_z": front[2], "centroid_y": centroid[1], "centroid_z": centroid[2],
            "brain_dice": mask_dice(carried, inside), "brain_corr": corr, "scale": scale}


def one_subject(args: tuple[str, Path, Path, Path, tuple[str, ...]]) -> list[dict]:
    import nibabel as nib

    from defacebench.imaging.masks import head_mask
    from defacebench.simulate.labels import INTRACRANIAL, LABELS

    subject, t1w, mask_path, dseg_path, names = args
    img = nib.load(str(t1w))
    brain = np.asarray(nib.load(str(mask_path)).dataobj) > 0
    labels = np.asarray(nib.load(str(dseg_path)).dataobj).astype(np.int32)
    nonbrain = (labels > 0) & ~np.isin(labels, [LABELS[k] for k in INTRACRANIAL])
    head = head_mask(np.asarray(img.dataobj, dtype=np.float32)) | brain
    deepbet, deepbet_seconds = None, float("nan")
    if any("deepbet" in name for name in names):
        from defacebench.imaging.brain import extract_brain

        start = time.perf_counter()
        deepbet = np.asarray(extract_brain(img).dataobj) > 0
        deepbet_seconds = time.perf_counter() - start
    rows = []
    for name in names:
        start = time.perf_counter()
        matrix = fit(name, img, brain, head, deepbet)
        seconds = time.perf_counter() - start
        rows.append({"participant_id": subject, "candidate": name, "seconds": seconds,
                     "deepbet_seconds": deepbet_seconds if "deepbet" in name else float("nan"),
                     **measure(matrix, img, brain, nonbrain)})
    return rows


def summarise(frame) -> str:
    from scipy import stats

    lines = ["| candidate | face front y: mm / 40 y | r | p | face front z: mm / 40 y | r | p | non-brain centroid y r | "
             "brain Dice mean (min) | brain corr mean | s / registration |", "|" + "---|" * 11]
    for name, part in frame.groupby("candidate", sort=False):
        cells = [name]
        for column in ("front_y", "front_z"):
            fit_ = stats.linregress(part["age"], part[column])
            cells += [f"{40 * fit_.slope:+.2f}", f"{fit_.rvalue:+.2f}", f"{fit_.pvalue:.2g}"]
        cells.append(f"{stats.pearsonr(part['age'], part['centroid_y'])[0]:+.2f}")
        cells.append(f"{part['brain_dice'].mean():.3f} ({part['brain_dice'].min():.3f})")
        cells.append(f"{part['brain_corr'].mean():.3f}")
        cells.append(f"{part['seconds'].mean():.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    import pandas as pd

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bids", type=Path, help="an existing simulated dataset (default: simulate one in a temporary folder)")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--candidates", nargs="+", default=list(CANDIDATES), choices=CANDIDATES)
    parser.add_argument("--tsv", type=Path, help="write the per-subject table here")
    args = parser.parse_args()
    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = "1"

    import tempfile

    with tempfile.TemporaryDirectory() as work:
        bids = args.bids
        if bids is None:
            bids = Path(work) / "sim"
            simulate(bids, args.n, args.seed)
        participants = pd.read_csv(bids / "participants.tsv", sep="\t").head(args.n)
        truth = bids / "derivatives" / "simulation"
        jobs = [(s, bids / s / "anat" / f"{s}_T1w.nii.gz", truth / s / "anat" / f"{s}_desc-brain_mask.nii.gz",
                 truth / s / "anat" / f"{s}_dseg.nii.gz", tuple(args.candidates)) for s in participants["participant_id"]]
        start = time.perf_counter()
        targets()
        if args.jobs > 1:
            from multiprocessing import get_context

            with get_context("fork").Pool(args.jobs) as pool:
                results = pool.map(one_subject, jobs, chunksize=1)
        else:
            results = [one_subject(job) for job in jobs]
        elapsed = time.perf_counter() - start
    frame = pd.DataFrame([row for rows in results for row in rows])
    frame = frame.merge(participants[["participant_id", "age"]], on="participant_id")
    frame["candidate"] = pd.Categorical(frame["candidate"], categories=args.candidates, ordered=True)
    frame = frame.sort_values(["candidate", "participant_id"])
    if args.tsv:
        args.tsv.parent.mkdir(parents=True, exist_ok=True)
        frame.to_csv(args.tsv, sep="\t", index=False, float_format="%.4f")
    print(f"{len(participants)} simulated people (seed {args.seed}, ages {participants['age'].min():.0f}-{participants['age'].max():.0f}), "
          f"{elapsed:.0f} s with {args.jobs} job(s), load average {os.getloadavg()[0]:.1f}")
    print(summarise(frame))


if __name__ == "__main__":
    main()
