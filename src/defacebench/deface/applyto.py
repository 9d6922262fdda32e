"""``--applyto``: the other images of a session defaced with the session T1w's removal region.

As pydeface ``--applyto`` and BIDSonym ``--deface_t2w`` do: each other anatomical image
of the T1w's session (T2w, FLAIR, PD, T2starw; further T1w runs in an export) is registered
rigidly (6 DOF, ANTs Mattes mutual information, which needs no shared contrast) onto the
T1w, and every method's removal mask of the T1w is carried into that image's own grid
through the transform (trilinear: a fraction removed per voxel). Its defaced and
face-only images, masks, sidecars and a QC PNG are written beside the T1w's.

The registration is checked, not trusted: the T1w's head mask carried into the image must
overlap the image's own head mask with Dice >= :data:`MIN_HEAD_DICE` (only where the image
has a field of view, so a slab with a smaller FOV is not penalised). Below it, or when ANTs
fails, the image is a recorded failure (``failures.tsv``, stage ``applyto``) and nothing
is written for it: no silent bad cut.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from defacebench import layout
from defacebench.deface import qc
from defacebench.deface.context import REGISTRATION_ITERATIONS, REGISTRATION_RESOLUTION_MM
from defacebench.deface.provenance import carried_sidecar, image_sidecar
from defacebench.deface.runner import _complete, _output_dtype, split_image
from defacebench.engine import Failure, run_tasks, write_failures
from defacebench.imaging.masks import head_mask
from defacebench.imaging.registration import load_transform, mask_dice, register, save_transform
from defacebench.imaging.resample import resample_to
from defacebench.io.atomic import write_table_atomic
from defacebench.io.bids import NIFTI_SUFFIXES, parse_entities, strip_nifti_suffix
from defacebench.io.errors import ImageError, StageError
from defacebench.io.nifti import defaced_descrip, load_image, save_image
from defacebench.io.sidecars import ScrubPolicy, source_uri, write_sidecar

#: Anatomical contrasts that ``--applyto`` defaces with the session T1w's removal region.
APPLYTO_SUFFIXES: tuple[str, ...] = ("T2w", "FLAIR", "PDw", "PD", "T2starw")
MIN_HEAD_DICE = 0.85
STAGE = "applyto"
QC_COLUMNS = ("key", "reference", "method", "backend", "head_dice", "removed_ml", "brain_removed_fraction", "warnings")


def session_targets(scan, suffixes: Sequence[str] = APPLYTO_SUFFIXES) -> list[Path]:
    """The other images of ``scan``'s session folder with a suffix in ``suffixes`` (sorted)."""
    source = Path(scan.path)
    own = parse_entities(source)
    found = []
    for path in sorted(source.parent.iterdir()):
        if not path.name.endswith(NIFTI_SUFFIXES) or path.resolve() == source.resolve():
            continue
        ent = parse_entities(path)
        if ent.get("suffix") in suffixes and ent.get("sub") == own.get("sub") and ent.get("ses") == own.get("ses"):
            found.append(path)
    return found


def register_to_t1w(target: nib.Nifti1Image, t1w: nib.Nifti1Image, t1w_head: np.ndarray) -> tuple[np.ndarray, float]:
    """Rigid transform (target world -> T1w world) and the head-mask Dice that checks it."""
    matrix = register(t1w, target, kind="rigid", metric="mattes", resolution_mm=REGISTRATION_RESOLUTION_MM, iterations=REGISTRATION_ITERATIONS)
    carried = resample_to(t1w_head.astype(np.float32), np.linalg.inv(matrix), target.affine, target.shape[:3], order=1, source_affine=t1w.affine)
    own = head_mask(np.asarray(target.dataobj, dtype=np.float32))
    return matrix, mask_dice(carried >= 0.5, own)


def apply_to_image(scan, target: Path, study: str | Path, methods: Sequence[str], backend: str = "builtin",
                   bids_root: str | Path | None = None, policy: ScrubPolicy | None = None, qc_png: bool = True) -> list[dict]:
    """Deface one other image of ``scan``'s session with the T1w's removal masks; return its QC rows.

    Raises
    ------
    StageError
        The rigid registration failed or does not pass the head-mask check.
    ImageError
        The image cannot be read.
    """
    policy = policy or ScrubPolicy()
    paths = layout.applied_files(study, scan, target.name, methods)
    done = _complete(paths, methods, backend)
    if done is not None:
        return done.to_dict("records")
    name = strip_nifti_suffix(target.name)
    suffix = parse_entities(target).get("suffix", "image")
    t1w = load_image(scan.path, reorient=False)
    img = load_image(target, reorient=False)
    t1w_files = layout.scan_files(study, scan, methods)
    brain_t1w = np.asarray(nib.load(str(t1w_files["brain_mask"])).dataobj) > 0
    t1w_head = head_mask(np.asarray(t1w.dataobj, dtype=np.float32)) | brain_t1w
    matrix, dice = register_to_t1w(img, t1w, t1w_head)
    if dice < MIN_HEAD_DICE:
        raise StageError(f"rigid registration of {name} to {scan.key} failed (head Dice {dice:.2f} < {MIN_HEAD_DICE})")
    save_transform(matrix, paths["to_t1w"])
    to_target = np.linalg.inv(matrix)
    data = np.asarray(img.dataobj, dtype=np.float32)
    dtype = _output_dtype(target)
    head = head_mask(data)
    brain = resample_to(brain_t1w.astype(np.float32), to_target, img.affine, img.shape[:3], order=1, source_affine=t1w.affine) >= 0.5
    voxel_ml = float(abs(np.linalg.det(img.affine[:3, :3]))) / 1000.0
    via = f"rigid, 6 DOF, ANTs Mattes MI at {REGISTRATION_RESOLUTION_MM:g} mm to {scan.key}; head-mask Dice {dice:.3f}"
    carried, removed = carried_sidecar(target, bids_root, policy)
    sources = [source_uri(target, bids_root), source_uri(scan.path, bids_root)]
    rows, removals = [], {}
    for method in methods:
        t1w_removal = np.asarray(nib.load(str(t1w_files[f"{method}_mask"])).dataobj, dtype=np.float32)
        removal = np.clip(resample_to(t1w_removal, to_target, img.affine, img.shape[:3], order=1, source_affine=t1w.affine), 0.0, 1.0)
        removal[removal < 1e-3] = 0.0
        defaced, face = split_image(data, removal, dtype)
        save_image(defaced, paths[f"{method}_defaced"], affine=img.affine, dtype=dtype, descrip=defaced_descrip(method))
        save_image(face, paths[f"{method}_face"], affine=img.affine, dtype=dtype)
        save_image(removal.astype(np.float32), paths[f"{method}_mask"], affine=img.affine, dtype=np.float32)
        for role in ("defaced", "face", "mask"):
            write_sidecar(paths[f"{method}_{role}"], image_sidecar(role, method, sources, carried, removed, policy, backend, contrast=suffix, via=via))
        brain_removed = float(removal[brain].sum() / max(1, int(brain.sum())))
        note = f"removed {100 * brain_removed:.2f}% of the brain" if brain_removed > qc.BRAIN_REMOVED_WARN else ""
        rows.append({"key": name, "reference": scan.key, "method": method, "backend": backend, "head_dice": round(dice, 4),
                     "removed_ml": round(float(removal[head].sum() * voxel_ml), 2), "brain_removed_fraction": brain_removed, "warnings": note})
        removals[method] = removal
    if qc_png:
        qc.write_qc_png(paths["qc_png"], img, removals, head, brain, title=f"{name} (with {scan.key}'s removal)")
    write_table_atomic(paths["qc_tsv"], pd.DataFrame(rows, columns=list(QC_COLUMNS)))
    return rows


def _applyto_task(scan, study: str, methods: tuple[str, ...], suffixes: tuple[str, ...], backend: str,
                  bids_root: str | None, policy: ScrubPolicy | None) -> dict:
    """Every other image of one scan's session; failures are returned, not raised (the T1w is fine)."""
    rows, failed, done = [], [], []
    for target in session_targets(scan, suffixes):
        try:
            rows.extend(apply_to_image(scan, target, study, methods, backend, bids_root, policy))
            done.append(target.name)
        except (StageError, ImageError) as exc:
            failed.append((strip_nifti_suffix(target.name), str(exc)))
    return {"rows": rows, "failed": failed, "done": done}


def applyto_cohort(cohort, out_dir: str | Path, methods: Sequence[str], suffixes: Sequence[str] = APPLYTO_SUFFIXES,
                   jobs: int | None = 1, scheduler: str | None = None, backend: str = "builtin", bids_root: str | Path | None = None,
                   policy: ScrubPolicy | None = None, progress: bool = True):
    """Run :func:`apply_to_image` for every other image of every defaced scan's session.

    Scans the deface stage has not finished are skipped (their failure is already
    recorded). Writes ``qc_applyto.tsv`` and the ``applyto`` rows of ``failures.tsv``;
    returns the engine's results (values: per scan ``{"rows", "failed", "done"}``).
    """
    methods = tuple(methods)
    ready = [s for s in cohort.subjects if layout.scan_files(out_dir, s)["qc_tsv"].is_file()]
    task = functools.partial(_applyto_task, study=str(out_dir), methods=methods, suffixes=tuple(suffixes), backend=backend,
                             bids_root=None if bids_root is None else str(bids_root), policy=policy)
    results = run_tasks(task, ready, keys=[s.key for s in ready], jobs=jobs, scheduler=scheduler, stage=STAGE, progress=progress)
    rows = [row for value in results.values.values() for row in value["rows"]]
    write_table_atomic(layout.applyto_qc_table(out_dir), pd.DataFrame(rows, columns=list(QC_COLUMNS)))
    failures = list(results.failures) + [Failure(name, STAGE, reason) for value in results.values.values() for name, reason in value["failed"]]
    results.failures = failures
    write_failures(layout.failures_table(out_dir), failures, stage=STAGE)
    return results


def applied_transform(study: str | Path, scan, target: str) -> np.ndarray:
    """The saved rigid transform (target world -> T1w world) of an applied image."""
    return load_transform(layout.applied_files(study, scan, target)["to_t1w"])
