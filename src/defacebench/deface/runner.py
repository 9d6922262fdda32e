"""Deface one scan (or a cohort) with every method; write BIDS derivatives atomically.

Per scan, in ``OUT/derivatives/defacebench/sub-X[/ses-Y]/anat/`` with prefix = the scan key:
``<prefix>_desc-<method>defaced_T1w.nii.gz``, ``<prefix>_desc-<method>face_T1w.nii.gz``,
``<prefix>_desc-<method>_mask.nii.gz`` (fraction removed), ``<prefix>_desc-brain_mask.nii.gz``,
``<prefix>_from-T1w_to-MNI152NLin2009aSym_mode-image_xfm.txt``, ``<prefix>_desc-deface_qc.png``
and ``<prefix>_desc-deface_qc.tsv`` (written last: it marks the scan complete). Every
image is on the input's own grid and affine; defaced + face == input.
"""

from __future__ import annotations

import functools
import time
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from defacebench import layout
from defacebench.deface import native, qc, refacing
from defacebench.deface.context import SubjectContext
from defacebench.deface.provenance import write_scan_sidecars
from defacebench.deface.qc import BRAIN_REMOVED_WARN, QC_COLUMNS
from defacebench.deface.registry import BACKENDS, METHODS, get_method, parse_methods
from defacebench.engine import Failure, run_tasks, write_failures
from defacebench.imaging.registration import load_transform, mask_dice, save_transform
from defacebench.imaging.resample import resample_to
from defacebench.imaging.templates import mni_brain, mni_head_brain_mask, pydeface_template, pydeface_to_mni
from defacebench.io.atomic import write_table_atomic
from defacebench.io.bids import write_dataset_description
from defacebench.io.errors import InputError, StageError
from defacebench.io.forked import Forked, spare_cores
from defacebench.io.nifti import defaced_descrip, load_image, read_header, read_image, save_image
from defacebench.io.sidecars import ScrubPolicy

REGISTRATION_MIN_DICE = 0.8
#: Threads writing images (gzip releases the GIL) while the main thread draws the QC PNG.
WRITER_THREADS = 2


def _complete(paths: dict[str, Path], methods: Sequence[str], backend: str) -> pd.DataFrame | None:
    if not all(path.is_file() for path in paths.values()):
        return None
    try:
        table = pd.read_csv(paths["qc_tsv"], sep="\t", keep_default_na=False)
    except Exception:
        return None
    done = set(zip(table.get("method", []), table.get("backend", [])))
    return table if all((m, backend) in done for m in methods) else None


def _output_dtype(path: Path) -> np.dtype:
    header = read_header(path).header
    dtype = header.get_data_dtype()
    slope, inter = header.get_slope_inter()
    scaled = slope not in (None, 1.0) and not np.isnan(slope or np.nan) or inter not in (None, 0.0) and not np.isnan(inter or np.nan)
    return np.dtype(dtype) if np.issubdtype(dtype, np.integer) and not scaled else np.dtype(np.float32)


def is_binary(removal: np.ndarray) -> bool:
    """Whether a removal mask holds only 0 and 1 (written as uint8 then)."""
    return bool(np.all((removal == 0) | (removal == 1)))


def split_image(data: np.ndarray, removal: np.ndarray, dtype: np.dtype, binary: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Defaced and face-only arrays with ``defaced + face == data`` exactly (in ``dtype``);
    ``binary``: :func:`is_binary` of ``removal`` when already known."""
    if np.issubdtype(dtype, np.integer):
        if is_binary(removal) if binary is None else binary:  # x * 1.0 and x * 0.0 are exact: the same integers without int64/float64 copies
            kept, rounded = removal == 0, np.rint(data)  # data hold integers of ``dtype``'s range (unscaled input)
            return np.where(kept, rounded, 0).astype(dtype), np.where(kept, 0, rounded).astype(dtype)
        original = np.rint(data).astype(np.int64)
        defaced = np.rint(original * (1.0 - removal)).astype(np.int64)
        return defaced.astype(dtype), (original - defaced).astype(dtype)
    # Dekker: with |x * m| <= |x|, d = fl(x - x*m) makes x - d exactly representable,
    # so face = fl(x - d) is exact and d + face == x in float32.
    original = data.astype(np.float32)
    defaced = (original - original * removal.astype(np.float32)).astype(np.float32)
    face = (original - defaced).astype(np.float32)
    return defaced, face


def _write_method_outputs(data: np.ndarray, removal: np.ndarray, dtype: np.dtype, affine: np.ndarray, paths: dict[str, Path], method: str,
                          fill: np.ndarray | None = None) -> None:
    """Write one method's defaced (a refacer's: refaced), face-only and removal-mask images (a writer-thread task)."""
    binary = is_binary(removal)  # once per method: a full pass over the grid
    defaced, face = split_image(data, removal, dtype, binary)
    if fill is not None:
        defaced = refacing.refaced_image(defaced, fill, dtype)
    save_image(defaced, paths[f"{method}_defaced"], affine=affine, dtype=dtype, descrip=defaced_descrip(method, refaced=fill is not None))
    save_image(face, paths[f"{method}_face"], affine=affine, dtype=dtype)
    mask_dtype = np.uint8 if binary else np.float32
    save_image(removal.astype(mask_dtype), paths[f"{method}_mask"], affine=affine, dtype=mask_dtype)


def _load_cached(ctx: SubjectContext, paths: dict[str, Path], transforms: dict[str, Path]) -> None:
    if paths["brain_mask"].is_file():
        mask = read_image(paths["brain_mask"])
        if mask.shape[:3] == ctx.shape and np.allclose(mask.affine, ctx.affine, atol=1e-4):
            ctx.brain_mask = np.asarray(mask.dataobj) > 0
    # AFNI's 9-DOF matrix is derived from to_mni, never read back (an older version's own fit may be on disk)
    for attr in ("to_mni", "template_to_subject"):
        path = transforms[attr]
        if path.is_file():
            try:
                setattr(ctx, attr, load_transform(path))
            except ValueError:
                pass


def registration_dice(ctx: SubjectContext) -> float:
    """Dice of the subject brain mask carried to MNI (2 mm) with the MNI brain mask."""
    target = mni_head_brain_mask(2)
    warped = resample_to(ctx.brain().astype(np.float32), ctx.subject_to_mni(), target.affine, target.shape, order=1, source_affine=ctx.affine)
    return mask_dice(warped >= 0.5, np.asarray(target.dataobj))


def _start_template_registration(ctx: SubjectContext, methods: Sequence[str], backend: str) -> Forked | None:
    """pydeface's template registration in a forked helper, when a method needs it, it is
    not known yet and this process has a spare core (:mod:`defacebench.io.forked`); else None
    (it then runs here, when the method asks)."""
    wanted = any("template_to_subject" in get_method(m).NEEDS and (backend != "native" or hasattr(get_method(m), "reface")) for m in methods)
    if not wanted or ctx.template_to_subject is not None or spare_cores() < 1:
        return None
    pydeface_template(), pydeface_to_mni()  # built once per process: here, not lost with the helper
    return Forked(ctx.pydeface_template_to_subject)


def _forked_step(ctx: SubjectContext, name: str, helper: Forked) -> object:
    """A forked helper's value; the step ``name`` gets the seconds it took where it ran, the
    wait for it here is the step ``"<name> (wait)"``."""
    with ctx.step(f"{name} (wait)"):
        value = helper.result()
    ctx.timings[name] = ctx.timings.get(name, 0.0) + helper.wall_s
    ctx.cpu_timings[name] = ctx.cpu_timings.get(name, 0.0) + helper.cpu_s
    return value


def _finish_template_registration(ctx: SubjectContext, template: Forked | None) -> None:
    """Take the forked template registration's matrix onto the context (once)."""
    if template is not None and ctx.template_to_subject is None:
        ctx.template_to_subject = _forked_step(ctx, "register_pydeface_template", template)  # type: ignore[assignment]


def deface_subject(subject, out_dir: str | Path, methods: Sequence[str] = METHODS, backend: str = "builtin", bids_root: str | Path | None = None, qc_png: bool = True,
                   sidecar_policy: ScrubPolicy | None = None) -> dict:
    """Deface one scan with ``methods``; skip it when its outputs are complete.

    Parameters
    ----------
    subject : defacebench.cohort.Subject
        The scan (``path``, ``subject``, ``session``, ``key``).
    out_dir : str or Path
        Study directory; outputs go to ``OUT/derivatives/defacebench``.
    methods : sequence of str
        Method names (:data:`METHODS`).
    backend : {"builtin", "native"}
        Built-in reimplementations, or the real tools when installed.
    bids_root : str or Path, optional
        Source dataset, searched for simulator ground-truth labels and the input's sidecars.
    sidecar_policy : ScrubPolicy, optional
        Which fields of the input's sidecar are carried into the outputs' sidecars
        (default: the deny list of :mod:`defacebench.io.sidecars`).

    Returns
    -------
    dict
        ``{"key", "skipped", "qc": list of row dicts, "timings": {step: wall seconds},
        "cpu_timings": {step: CPU seconds of the process, all threads}, "paths"}``.

    Raises
    ------
    StageError
        Brain extraction or registration failed (brain Dice to the MNI brain < 0.8);
        methods that do not need the registration are still written.
    """
    methods = parse_methods(list(methods))
    if backend not in BACKENDS:
        raise InputError(f"unknown backend {backend!r}; choose {' or '.join(BACKENDS)}")
    paths = layout.scan_files(out_dir, subject, methods)
    transforms = layout.scan_transforms(out_dir, subject)
    done = _complete(paths, methods, backend)
    if done is not None:
        write_scan_sidecars(subject, paths, methods, backend, bids_root, sidecar_policy, only_missing=True)
        return {"key": subject.key, "skipped": True, "qc": done.to_dict("records"), "timings": {}, "cpu_timings": {}, "paths": paths}
    start, start_cpu = time.perf_counter(), time.process_time()
    img = load_image(subject.path, reorient=False)
    dtype = _output_dtype(Path(subject.path))
    ctx = SubjectContext(img)
    ctx.timings["load"], ctx.cpu_timings["load"] = time.perf_counter() - start, time.process_time() - start_cpu
    _load_cached(ctx, paths, transforms)
    brain = ctx.brain()
    # with a spare core the registrations run in forked helpers (ANTs holds the GIL), each
    # beside the steps that do not need it: the brain's beside the head mask, pydeface's
    # template's (it needs to_mni) beside every other method
    brain_registration = None
    if ctx.to_mni is None and spare_cores() > 0:
        import ants  # noqa: F401  imported and built once per process: here, not lost with the helper

        mni_brain()
        brain_registration = Forked(ctx.subject_to_mni)
    with ctx.step("write_brain_mask"):
        save_image(brain.astype(np.uint8), paths["brain_mask"], affine=img.affine, dtype=np.uint8)
    head = ctx.head()
    failure: str | None = None
    dice = float("nan")
    try:
        if brain_registration is not None:
            ctx.to_mni = _forked_step(ctx, "register_brain_to_mni", brain_registration)  # type: ignore[assignment]
        to_mni = ctx.subject_to_mni()
    except StageError as exc:
        failure = str(exc)
    template = _start_template_registration(ctx, methods, backend) if failure is None else None
    if failure is None:
        try:
            save_transform(to_mni, paths["to_mni"])
            with ctx.step("registration_dice"):
                dice = registration_dice(ctx)
            if dice < REGISTRATION_MIN_DICE:
                failure = f"registration to MNI failed (brain Dice {dice:.2f} < {REGISTRATION_MIN_DICE})"
        except StageError as exc:
            failure = str(exc)

    with ctx.step("qc_regions"):
        truth = qc.find_ground_truth(bids_root, subject, ctx.shape, ctx.affine)
        if truth is not None:
            regions, source = truth, "ground_truth"
        elif failure is None:
            regions, source = qc.standard_regions(ctx.mni_coordinates(), head), "mni_boxes"
        else:
            empty = np.zeros(ctx.shape, dtype=bool)
            regions, source = {"face": empty, "nose": empty, "ears": empty}, "none"
        input_notes = qc.input_warnings(head, brain, regions, ctx.voxel_ml) if source != "none" else []
    for note in input_notes:
        warnings.warn(f"{subject.key}: {note}", stacklevel=2)

    rows, removals, fills = [], {}, {}
    with ctx.step("qc_metrics"):
        flat = qc.flat_regions({"brain": brain, "head": head, **regions})  # once for every method
    for method in sorted(methods, key=lambda m: "template_to_subject" in get_method(m).NEEDS):  # the forked registration last
        module = get_method(method)
        if failure is not None and "to_mni" in module.NEEDS:
            continue
        if "template_to_subject" in module.NEEDS:
            _finish_template_registration(ctx, template)
        registered = ctx.registration_seconds()
        with ctx.step(f"method_{method}"):
            if hasattr(module, "reface"):  # refacers (issue 18): built-in only, the mask is the replaced region
                result = module.reface(ctx)
                removal, fills[method] = result.removal, result.fill
            elif backend == "native":
                removal = native.removal_mask(method, img, brain if method == "quickshear" else None)
            else:
                removal = module.removal_mask(ctx)
        # a registration the method triggered is its own step, not the method's time
        for times, before, now in zip((ctx.timings, ctx.cpu_timings), registered, ctx.registration_seconds()):
            times[f"method_{method}"] -= now - before
        with ctx.step("qc_metrics"):
            metrics = qc.removal_metrics(removal, flat["brain"], flat["head"], flat, ctx.voxel_ml)
        notes = list(input_notes)
        if metrics["brain_removed_fraction"] > BRAIN_REMOVED_WARN:
            notes.append(f"removed {100 * metrics['brain_removed_fraction']:.2f}% of the brain")
            warnings.warn(f"{subject.key} {method}: {notes[-1]}", stacklevel=2)
        rows.append({"key": subject.key, "method": method, "backend": backend, **metrics, "region_source": source,
                     "registration_dice": round(dice, 4), "warnings": "; ".join(notes)})
        removals[method] = removal
    if template is not None:  # not asked for (the brain registration failed its check)
        template.cancel()
    rows.sort(key=lambda row: methods.index(row["method"]))
    removals = {m: removals[m] for m in methods if m in removals}
    ctx.forget_coordinates()
    for attr in ("head_to_mni", "template_to_subject"):
        if getattr(ctx, attr) is not None:
            save_transform(getattr(ctx, attr), transforms[attr])
    # gzip releases the GIL: two threads write the images while the QC PNG is drawn, in a
    # forked helper on the other core when there is one (matplotlib holds the GIL), else here
    with ctx.step("write_and_qc_png"):
        picture = None
        if qc_png and removals:
            picture = Forked(qc.write_qc_png, paths["qc_png"], img, removals, head, brain, subject.key,
                             {m: ctx.data * (1 - removals[m]) + fill for m, fill in fills.items()})
        with ThreadPoolExecutor(max_workers=WRITER_THREADS) as pool:
            writes = [pool.submit(_write_method_outputs, ctx.data, removal, dtype, img.affine, paths, method, fills.get(method))
                      for method, removal in removals.items()]
            if picture is not None and not picture.forked:
                with ctx.step("qc_png"):  # its CPU seconds include the writer threads'
                    picture.result()
            for future in writes:
                future.result()
        if picture is not None and picture.forked:
            _forked_step(ctx, "qc_png", picture)
    with ctx.step("sidecars"):
        write_scan_sidecars(subject, paths, list(removals), backend, bids_root, sidecar_policy)
    if failure is not None:
        raise StageError(f"{failure}; wrote {', '.join(removals) or 'no method'}")
    table = pd.DataFrame(rows, columns=list(QC_COLUMNS))
    write_table_atomic(paths["qc_tsv"], table)
    ctx.timings["total"], ctx.cpu_timings["total"] = time.perf_counter() - start, time.process_time() - start_cpu
    return {"key": subject.key, "skipped": False, "qc": rows, "timings": dict(ctx.timings), "cpu_timings": dict(ctx.cpu_timings), "paths": paths}


def _deface_task(subject, out_dir: str, methods: tuple[str, ...], backend: str, bids_root: str | None, sidecar_policy: ScrubPolicy | None = None) -> dict:
    """Picklable per-scan task for the engine."""
    return deface_subject(subject, out_dir, methods, backend=backend, bids_root=bids_root, sidecar_policy=sidecar_policy)


def collect_qc(out_dir: str | Path, subjects: Sequence) -> pd.DataFrame:
    """Concatenate the per-scan QC tables of ``subjects`` into one table."""
    tables = []
    for subject in subjects:
        path = layout.scan_files(out_dir, subject)["qc_tsv"]
        if path.is_file():
            tables.append(pd.read_csv(path, sep="\t", keep_default_na=False))
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=list(QC_COLUMNS))


def summarize_qc(table: pd.DataFrame) -> pd.DataFrame:
    """Per method over scans: the issue's acceptance figures (nose, brain < 0.1 %, ears).

    Columns: method, scans, nose_removed_median, nose_removed_min, face_removed_median,
    brain_removed_max, brain_spared_fraction (share of scans with < 0.1 % of the brain
    removed), ears_removed_fraction (share of scans whose ears were removed).
    """
    columns = ["method", "scans", "nose_removed_median", "nose_removed_min", "face_removed_median",
               "brain_removed_max", "brain_spared_fraction", "ears_removed_fraction"]
    if table.empty:
        return pd.DataFrame(columns=columns)
    rows = []
    for method, group in table.groupby("method", sort=False):
        nose = pd.to_numeric(group["nose_removed_fraction"], errors="coerce")
        face = pd.to_numeric(group["face_removed_fraction"], errors="coerce")
        brain = pd.to_numeric(group["brain_removed_fraction"], errors="coerce")
        ears = group["ears_removed"].astype(str)
        known = ears.isin(["yes", "no"])
        rows.append({
            "method": method, "scans": len(group),
            "nose_removed_median": round(float(nose.median()), 4), "nose_removed_min": round(float(nose.min()), 4),
            "face_removed_median": round(float(face.median()), 4), "brain_removed_max": float(brain.max()),
            "brain_spared_fraction": round(float((brain < BRAIN_REMOVED_WARN).mean()), 4),
            "ears_removed_fraction": round(float((ears[known] == "yes").mean()), 4) if known.any() else float("nan"),
        })
    return pd.DataFrame(rows, columns=columns)


def deface_cohort(cohort, out_dir: str | Path, methods: Sequence[str] = METHODS, jobs: int | None = 1, scheduler: str | None = None, backend: str = "builtin", bids_root: str | Path | None = None, progress: bool = True,
                  sidecar_policy: ScrubPolicy | None = None, estimate=None):
    """Deface every scan of a cohort; write qc.tsv and failures.tsv; return the engine's results.

    ``sidecar_policy`` says which input sidecar fields the outputs' sidecars carry
    (:mod:`defacebench.io.sidecars`; default its deny list). ``estimate``: called with the
    time estimate after a warm-up scan (:func:`defacebench.engine.run_tasks`).
    """
    methods = parse_methods(list(methods))
    root = layout.derivatives_dir(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    write_dataset_description(root, "defacebench defaced images", source=str(bids_root or cohort.source or ""),
                              description="defaced and face-only T1w images, removal masks, brain masks, MNI transforms, QC")
    task = functools.partial(_deface_task, out_dir=str(out_dir), methods=methods, backend=backend, bids_root=None if bids_root is None else str(bids_root),
                             sidecar_policy=sidecar_policy)
    results = run_tasks(task, cohort.subjects, keys=[s.key for s in cohort.subjects], jobs=jobs, scheduler=scheduler, stage="deface", progress=progress,
                        estimate=estimate)
    table = collect_qc(out_dir, cohort.subjects)
    write_table_atomic(layout.deface_qc_table(out_dir), table)
    write_table_atomic(layout.deface_qc_summary(out_dir), summarize_qc(table))
    # scans rejected when the cohort was read (unreadable header, ...) are failures too
    rejected = [Failure(key=r.name, stage="deface", reason=f"input rejected: {r.reason}") for r in getattr(cohort, "rejected", [])]
    results.failures.extend(rejected)
    write_failures(layout.failures_table(out_dir), results.failures, stage="deface")
    return results
