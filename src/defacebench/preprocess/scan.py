"""One scan into a target grid, for every condition (:func:`preprocess_subject`):

1. load the T1w image and reorient it to RAS;
2. estimate the N4 bias field once, at low resolution, fitted separately to the brain and
   to the rest of the head so neither leaks into the other's correction
   (:func:`.bias.compartment_bias_field`), and divide the head and every face-only image
   of the scan by it;
3. take the brain mask and the subject -> MNI transform (12 DOF, brain to brain) that
   defacing already computed (``defacebench deface``): no second brain extraction or
   registration;
4. divide every condition's image by ONE number, the median of the bias-corrected raw
   head inside the brain mask (so the brain's median is 1 in every condition; no
   condition gets its own statistics);
5. move every condition's image into the target grid with that one transform and
   trilinear interpolation (:class:`defacebench.imaging.resample.LinearResampler`). Interpolation and the
   steps before it are linear, so ``defaced-<m> + face-<m> == raw`` survives to
   float16 precision (``defaced-<m>`` is composed in the grid as raw - face-<m>,
   which is the same image as resampling it; a refacer's refaced head is composed as
   raw - face-<m> + its replacement, the replacement being the refaced image minus the
   defaced one in the native grid, zero outside the replaced region, corrected and moved
   like the rest). With ``face_placement="head"`` the
   face-only images and their geometry controls go instead through the whole-head
   registration of pydeface's template
   (:func:`defacebench.imaging.placement.head_placement_transform`), which does not follow
   brain atrophy; the sum rule then no longer holds between the two placements. With
   ``face_placement="cut"`` only the methods whose cut the head registration placed
   (:data:`defacebench.conditions.HEAD_REGISTERED_CUTS`: pydeface) go that way. With
   ``face_placement="common"`` every method's go by the head, and each method's removal
   mask, placed alike, is written too (``region-<m>``), with the scan's field of view
   (``field_of_view``): the stores keep a face-only image only where every scan's mask
   covers or the scan has no data (:mod:`.stores`);
6. write the grid images of every condition as one compressed ``.npz`` per scan,
   atomically, under ``STUDY/work/<grid>/`` (:mod:`.work`; with the brain Dice against the
   template mask, the normalisation scale and the seconds per step).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from defacebench import layout
from defacebench.conditions import (FACE_PLACEMENTS, build_all, control_methods, head_placed, is_refacer, methods_of,
                                    needs_head_registration, parse_condition, refacer_methods, region_member, region_methods, removal_mask_methods)
from defacebench.preprocess.work import FIELD_OF_VIEW_MEMBER
from defacebench.imaging.grids import Grid
from defacebench.imaging.placement import head_placement_transform
from defacebench.imaging.registration import load_transform, mask_dice
from defacebench.imaging.resample import LinearResampler, resample_to
from defacebench.imaging.templates import average_face_outline, brain_mask_on_grid
from defacebench.io.errors import StageError
from defacebench.io.nifti import load_image, read_image, reorient_ras
from defacebench.preprocess import work
from defacebench.preprocess.bias import BIAS_RESOLUTION_MM, compartment_bias_field

#: Registration brain Dice (subject brain mask in the grid vs the template mask) below
#: which a scan fails, and below which it is flagged in qc_preprocess.tsv.
MIN_BRAIN_DICE = 0.8
FLAG_BRAIN_DICE = 0.85


@dataclass(frozen=True)
class PreprocessTask:
    """Everything one worker needs to preprocess one scan (picklable).

    Attributes
    ----------
    subject : defacebench.cohort.Subject
        The scan (anything with ``path``, ``subject``, ``session``, ``run`` and ``key``).
    study_dir : str
        Study directory (deface derivatives are read from it, work files written to it).
    grid : Grid
        Target grid.
    conditions : tuple of str
        Condition names to produce.
    bias_resolution_mm : float
        Voxel size at which the N4 bias field is estimated.
    min_brain_dice : float
        Below this registration brain Dice the scan fails.
    face_placement : {"brain", "head"}
        The transform that takes face-only images and geometry controls to the grid
        (:data:`defacebench.conditions.FACE_PLACEMENTS`).
    """

    subject: object
    study_dir: str
    grid: Grid
    conditions: tuple[str, ...]
    bias_resolution_mm: float = BIAS_RESOLUTION_MM
    min_brain_dice: float = MIN_BRAIN_DICE
    face_placement: str = "brain"

    def __post_init__(self) -> None:
        if self.face_placement not in FACE_PLACEMENTS:
            raise ValueError(f"face_placement must be one of {', '.join(FACE_PLACEMENTS)}, not {self.face_placement!r}")

    @property
    def key(self) -> str:
        return self.subject.key  # type: ignore[attr-defined]


def input_paths(subject, study_dir: str | Path, methods: Sequence[str], mask_methods: Sequence[str] = (),
                head_registration: bool = False) -> dict[str, Path]:
    """The files a scan's preprocessing reads: T1w, brain mask, transform, face-only images,
    the refaced images of refacers, the removal masks of ``mask_methods`` (the geometry controls), and
    pydeface's head registration when a geometry control or ``head_registration`` (head placement) needs it."""
    deface = layout.scan_files(study_dir, subject, tuple(dict.fromkeys([*methods, *mask_methods])))
    paths = {"t1w": Path(subject.path), "brain_mask": deface["brain_mask"], "to_mni": deface["to_mni"]}
    for m in methods:
        paths[f"{m}_face"] = deface[f"{m}_face"]
        if is_refacer(m):
            paths[f"{m}_defaced"] = deface[f"{m}_defaced"]
    for m in mask_methods:
        paths[f"{m}_mask"] = deface[f"{m}_mask"]
    if mask_methods or head_registration:  # the average face / head placement use pydeface's head registration
        paths["template_to_subject"] = layout.scan_transforms(study_dir, subject)["template_to_subject"]
    return paths


def missing_inputs(subject, study_dir: str | Path, methods: Sequence[str], mask_methods: Sequence[str] = (),
                   head_registration: bool = False) -> list[str]:
    """Names of the deface derivatives of a scan that do not exist yet."""
    paths = input_paths(subject, study_dir, methods, mask_methods, head_registration)
    return [name for name, path in paths.items() if name != "t1w" and not path.is_file()]



def _load_on(path: Path, like, what: str, dtype=np.float32) -> np.ndarray:
    """Load a derivative image reoriented like the T1w; it must lie on the same grid."""
    try:
        img = reorient_ras(read_image(path))
        data = np.asarray(img.dataobj, dtype=dtype)
    except Exception as exc:
        raise StageError(f"unreadable {what} {path.name} ({type(exc).__name__}: {exc})") from None
    if data.ndim == 4:
        data = data[..., 0]
    if data.shape != like.shape[:3] or not np.allclose(img.affine, like.affine, atol=1e-3):
        raise StageError(f"{what} {path.name} is not on the T1w's grid (stale deface outputs? rerun defacebench deface)")
    return data


def preprocess_subject(task: PreprocessTask) -> dict:
    """Preprocess one scan into the task's grid for every condition; skip it when done.

    Returns
    -------
    dict
        The work file's metadata: key, grid, brain_dice, dice_flag, norm_scale,
        bias_min/max, seconds per step, ``skipped``.

    Raises
    ------
    StageError
        Missing deface outputs, empty brain mask, failed registration (brain Dice below
        ``min_brain_dice``), no positive intensity in the brain.
    defacebench.io.errors.ImageError
        Unreadable or unusable T1w image.
    """
    conditions = [parse_condition(c) for c in task.conditions]
    methods = methods_of(conditions)
    subject = task.subject
    out = layout.work_file(task.study_dir, task.grid.name, task.key)
    mask_methods = control_methods(conditions)
    regions = region_methods(conditions, task.face_placement)
    head_registered = needs_head_registration(task.conditions, task.face_placement)
    masked = removal_mask_methods(conditions, task.face_placement)  # the controls' and the common regions'
    paths = input_paths(subject, task.study_dir, methods, masked, head_registered)
    missing = [n for n, p in paths.items() if not p.is_file()]
    if missing:
        raise StageError(f"missing deface output(s) {', '.join(missing)} (run defacebench deface; see failures.tsv)")
    settings = {"face_placement": task.face_placement} if head_registered else None
    fingerprint = work.fingerprint(task.grid, task.bias_resolution_mm, paths, settings)
    done = work.read_work_meta(out)
    if done is not None and done.get("fingerprint") == fingerprint and set(task.conditions) <= set(done.get("conditions", [])):
        return {**done, "skipped": True}

    seconds: dict[str, float] = {}
    cpu_seconds: dict[str, float] = {}  # the process's CPU seconds, all threads
    t0, c0 = time.perf_counter(), time.process_time()

    def lap(step: str) -> None:
        nonlocal t0, c0
        now, cpu = time.perf_counter(), time.process_time()
        seconds[step] = round(seconds.get(step, 0.0) + now - t0, 4)
        cpu_seconds[step] = round(cpu_seconds.get(step, 0.0) + cpu - c0, 4)
        t0, c0 = now, cpu

    img = load_image(subject.path, reorient=True)
    data = np.asarray(img.dataobj, dtype=np.float32)
    brain = _load_on(paths["brain_mask"], img, "brain mask") > 0.5
    if not brain.any():
        raise StageError("brain extraction is empty (no brain voxel in the brain mask)")
    try:
        to_mni = load_transform(paths["to_mni"])
    except (OSError, ValueError) as exc:
        raise StageError(f"unreadable MNI transform ({exc})") from None
    faces = {m: _load_on(paths[f"{m}_face"], img, f"{m} face-only image") for m in methods}
    # a refacer's replacement: refaced - (raw - face), exactly 0 outside its replaced region
    fills = {m: _load_on(paths[f"{m}_defaced"], img, f"{m} refaced image") - (data - faces[m]) for m in refacer_methods(conditions)}
    removed = {}
    if mask_methods or head_registered:
        try:
            template_to_subject = load_transform(paths["template_to_subject"])
            face_to_mni = head_placement_transform(template_to_subject) if head_registered else to_mni
        except (OSError, ValueError) as exc:
            raise StageError(f"unreadable head registration of pydeface's template ({exc})") from None
    if mask_methods:
        face_outline = resample_to(average_face_outline(), template_to_subject, img.affine, data.shape, order=1)
    removal_masks = {m: _load_on(paths[f"{m}_mask"], img, f"{m} removal mask") > 0.5 for m in masked}
    if mask_methods:
        removed = {m: removal_masks[m] * face_outline for m in mask_methods}
    lap("load")

    voxel_mm = tuple(float(v) for v in img.header.get_zooms()[:3])
    bias = compartment_bias_field(data, voxel_mm, brain, resolution_mm=task.bias_resolution_mm)
    lap("bias_n4")

    head = data / bias
    scale = float(np.median(head[brain]))
    if not np.isfinite(scale) or scale <= 0:
        raise StageError(f"median intensity inside the brain mask is {scale:g}: cannot normalise")
    inv = np.float32(1.0 / scale)
    head *= inv
    for m in methods:
        faces[m] = faces[m] / bias * inv
    for m in fills:
        fills[m] = fills[m] / bias * inv
    lap("normalise")

    resampler = LinearResampler(img.affine, data.shape, to_mni, task.grid)
    brain_grid = resampler(brain.astype(np.float32)) >= 0.5
    dice = mask_dice(brain_grid, brain_mask_on_grid(task.grid))
    lap("resample")
    if not dice >= task.min_brain_dice:
        raise StageError(f"registration to MNI failed: brain Dice {dice:.3f} < {task.min_brain_dice} in grid {task.grid.name}")
    # Resampling is linear, so defaced-<m> = raw - face-<m> is composed in the grid:
    # the same image as resampling head - face, one resampling fewer per method.
    head_grid = resampler(head)
    faces_grid = {m: resampler(faces[m]) for m in methods}
    removed_grid = {m: resampler(removed[m]) for m in mask_methods}
    fills_grid = {m: resampler(fill) for m, fill in fills.items()}
    brain_only = next((c for c in conditions if c.kind == "skullstripped"), None)
    stripped = {brain_only.name: resampler(brain_only.build(head, brain))} if brain_only else {}
    grid_images = build_all([c for c in conditions if c.kind != "skullstripped"], head_grid, None, faces_grid, removed_grid, fills_grid)
    if head_registered:  # face-only images and geometry controls through the head registration
        placed = LinearResampler(img.affine, data.shape, face_to_mni, task.grid)
        face_conditions = [c for c in conditions if head_placed(c, task.face_placement)]
        grid_images.update(build_all(face_conditions, head_grid, None, {m: placed(faces[m]) for m in methods_of(face_conditions)},
                                     {m: placed(removed[m]) for m in mask_methods}))
    images = {c.name: (stripped.get(c.name, grid_images.get(c.name))).astype(np.float16) for c in conditions}
    if regions:  # where each method cut, and where the scan was imaged at all, head-placed (the stores' common regions)
        images[FIELD_OF_VIEW_MEMBER] = placed(np.ones(data.shape, np.float32)).astype(np.float16)
        for m in regions:
            images[region_member(m)] = placed(removal_masks[m].astype(np.float32)).astype(np.float16)
    lap("resample")

    meta = {
        "key": task.key,
        "grid": task.grid.name,
        "conditions": list(task.conditions),
        "fingerprint": fingerprint,
        "brain_dice": round(dice, 4),
        "dice_flag": bool(dice < FLAG_BRAIN_DICE),
        "norm_scale": scale,
        "bias_min": float(bias[brain].min()),
        "bias_max": float(bias[brain].max()),
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "regions": list(regions),
    }
    work.write_work(out, images, meta)
    lap("write")
    meta["seconds"], meta["cpu_seconds"] = seconds, cpu_seconds
    return {**meta, "skipped": False}
