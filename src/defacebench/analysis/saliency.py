"""Grad-CAM saliency of the brain-age CNN: where in the head does the model look?

Grad-CAM (Selvaraju et al. 2017) on the last conv block (``model.features[-1]``: conv ->
instance norm -> ReLU -> max pool): channel weights are the spatial mean of d(predicted age)/d(activation); the map is the
weighted sum of the activation channels. For a regression target we keep the map **signed
and unnormalised** (no ReLU, no per-subject min-max scaling): positive values are where
the features push the predicted age up, and maps of different subjects stay on one scale
(years per unit feature) so they can be averaged. Each map is upsampled trilinearly to the
input grid, then averaged over the test scans of every run of a condition.

A small hook-based implementation rather than captum or MONAI: captum's ``LayerGradCam``
computes the same quantity but pins ``numpy<2`` in its recent releases, and MONAI's
``GradCAM`` min-max normalises each map by default (which also inverts maps whose values
are mostly negative), so per-subject maps could not be averaged.

Why the block and not the convolution inside it (:attr:`BrainAgeCNN.last_conv`): instance
norm makes the output invariant to adding a constant to a channel, so the gradient with
respect to the pre-norm activation sums to zero over space in every channel; Grad-CAM's
channel weights (the spatial mean of that gradient) are then exactly zero and the map is
numerical noise (tests/test_saliency.py shows it).

Summary per condition (``results/saliency.csv``): the shares of the **mean absolute map**
(each scan's map made absolute, then averaged: opposite signs in different people cannot
cancel; ``abs_*_share``, nan only when the map is zero everywhere) and, kept for
comparison, of the mean signed map's positive saliency, inside the **removal region** (voxels any defacer removes in more than half of the
cohort, the union over methods, outside the brain; see :func:`face_region`) and inside the
**MNI brain mask** (nilearn's bundled MNI152 brain mask resampled to the grid).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from defacebench import layout
from defacebench.conditions import condition_kind, order_conditions
from defacebench.io.atomic import atomic_path, write_table_atomic
from defacebench.analysis.runs import screen_runs
from defacebench.io.errors import InputError
from defacebench.io.store import list_conditions, open_condition

#: Removal-region fallback when no face-only stores exist: anterior-inferior box in MNI mm.
FACE_BOX_MM: dict[str, tuple[float, float]] = {"y": (30.0, np.inf), "z": (-np.inf, 0.0)}
#: A voxel belongs to a method's removal region when removed in more than this share of scans.
REMOVAL_THRESHOLD = 0.5


def default_target_layer(model):
    """The last conv block (``model.features[-1]``), else ``model.last_conv``."""
    features = getattr(model, "features", None)
    return features[-1] if features is not None and len(features) else model.last_conv


def grad_cam(model, images, target_layer=None, upsample: bool = True):
    """Signed, unnormalised Grad-CAM maps of a batch.

    Parameters
    ----------
    model : torch.nn.Module
        Regressor ``(B, 1, X, Y, Z) -> (B,)``; its per-sample outputs must depend on that
        sample only (true for instance norm, not for batch norm in training mode).
    images : torch.Tensor
        ``(B, 1, X, Y, Z)`` input batch.
    target_layer : torch.nn.Module, optional
        Layer whose output is explained; default :func:`default_target_layer`.
    upsample : bool
        Resize the maps trilinearly to the input grid (``X, Y, Z``).

    Returns
    -------
    torch.Tensor
        ``(B, X, Y, Z)`` maps (or the layer's grid without ``upsample``), detached, float32.
    """
    import torch
    import torch.nn.functional as F

    layer = target_layer if target_layer is not None else default_target_layer(model)
    captured: list[torch.Tensor] = []

    def cut(_module, _inputs, output):
        # a fresh leaf: backward stops here (no gradient through the earlier, costly blocks)
        leaf = output.detach().requires_grad_(True)
        captured.append(leaf)
        return leaf

    handle = layer.register_forward_hook(cut)
    try:
        with torch.enable_grad():
            output = model(images)
            activation = captured[-1]
            gradient = torch.autograd.grad(output.sum(), activation)[0]
    finally:
        handle.remove()
    weights = gradient.float().mean(dim=tuple(range(2, gradient.ndim)), keepdim=True)
    cam = (weights * activation.detach().float()).sum(dim=1)
    if upsample:
        cam = F.interpolate(cam.unsqueeze(1), size=tuple(images.shape[2:]), mode="trilinear", align_corners=False).squeeze(1)
    return cam.detach()


# --------------------------------------------------------------------------- masks
def voxel_mm(affine: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """``(3, X, Y, Z)`` world coordinates (mm) of every voxel centre."""
    ijk = np.indices(tuple(shape), dtype=np.float64).reshape(3, -1)
    return (np.asarray(affine)[:3, :3] @ ijk + np.asarray(affine)[:3, 3:4]).reshape(3, *shape)


def mni_brain_mask(affine: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """nilearn's bundled MNI152 brain mask resampled (nearest) to a grid, as bool."""
    from nilearn.datasets import load_mni152_brain_mask
    from nilearn.image import resample_img

    zooms = np.linalg.norm(np.asarray(affine)[:3, :3], axis=0)
    mask = load_mni152_brain_mask(resolution=1 if zooms.min() < 2 else 2)
    out = resample_img(mask, target_affine=np.asarray(affine, float), target_shape=tuple(int(s) for s in shape), interpolation="nearest", force_resample=True, copy_header=True)
    return np.asarray(out.get_fdata()) > 0.5


def mni_template(affine: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """nilearn's bundled MNI152 T1 template resampled (continuous) to a grid."""
    from nilearn.datasets import load_mni152_template
    from nilearn.image import resample_img

    zooms = np.linalg.norm(np.asarray(affine)[:3, :3], axis=0)
    template = load_mni152_template(resolution=1 if zooms.min() < 2 else 2)
    out = resample_img(template, target_affine=np.asarray(affine, float), target_shape=tuple(int(s) for s in shape), interpolation="continuous", force_resample=True, copy_header=True)
    return np.nan_to_num(np.asarray(out.get_fdata(), dtype=np.float32))


#: Stores are divided by the raw image's brain median (brain ~ 1): below this a voxel is air.
HEAD_INTENSITY = 0.15


def removal_frequency(
    images: np.ndarray,
    rows: np.ndarray | None = None,
    max_scans: int = 200,
    chunk: int = 16,
    reference: np.ndarray | None = None,
) -> np.ndarray:
    """Share of scans in which each voxel is removed.

    Without ``reference``: a voxel counts where the image is non-zero (for a face-only
    store: removed). With ``reference`` (the raw store, same rows): a voxel counts where it
    is head tissue (raw > :data:`HEAD_INTENSITY`) and the face-only image holds at least
    half of its raw intensity, so air and the tiny tails of pydeface's interpolated soft
    mask do not count as removed tissue. Uses at most ``max_scans`` rows, evenly spaced,
    read ``chunk`` at a time from the memmap.
    """
    rows = np.arange(len(images)) if rows is None else np.asarray(rows)
    if len(rows) == 0:
        raise InputError("no scans to compute a removal frequency from")
    if len(rows) > max_scans:
        rows = rows[np.linspace(0, len(rows) - 1, max_scans).round().astype(int)]
    count = np.zeros(images.shape[1:], dtype=np.int32)
    for start in range(0, len(rows), chunk):
        block = np.sort(rows[start : start + chunk])
        face = np.abs(np.asarray(images[block], dtype=np.float32))
        if reference is None:
            removed = face > 0
        else:
            raw = np.abs(np.asarray(reference[block], dtype=np.float32))
            removed = (raw > HEAD_INTENSITY) & (face >= 0.5 * raw)
        count += removed.sum(axis=0, dtype=np.int32)
    return (count / len(rows)).astype(np.float32)


def face_methods(study_dir: str | Path, grid: str) -> list[str]:
    """Methods with a face-only store on ``grid``."""
    return [c.removeprefix("face-") for c in list_conditions(study_dir, grid) if c.startswith("face-")]


def face_region(study_dir: str | Path, grid: str, brain_mask: np.ndarray, frequencies: dict[str, np.ndarray] | None = None) -> tuple[np.ndarray, str]:
    """The removal region on a grid, outside the brain mask, and how it was defined.

    Union over methods of the voxels removed in more than :data:`REMOVAL_THRESHOLD` of the
    scans (from the face-only stores); without face-only stores, the box
    :data:`FACE_BOX_MM` (anterior ``y >= 30`` mm, inferior ``z <= 0`` mm).
    """
    if frequencies is None:
        from defacebench.analysis.removed import removed_images

        frequencies = {}
        raw = open_condition(study_dir, grid, "raw").images if "raw" in list_conditions(study_dir, grid) else None
        for method in face_methods(study_dir, grid):
            frequencies[method] = removal_frequency(removed_images(study_dir, grid, method, raw), reference=raw)
    if frequencies:
        region = np.zeros(brain_mask.shape, dtype=bool)
        for freq in frequencies.values():
            region |= freq > REMOVAL_THRESHOLD
        how = f"union of the voxels removed in > {REMOVAL_THRESHOLD:.0%} of scans by {', '.join(sorted(frequencies))}, outside the MNI brain mask"
    else:
        mm = voxel_mm(_grid_affine(study_dir, grid), brain_mask.shape)
        region = (mm[1] >= FACE_BOX_MM["y"][0]) & (mm[2] <= FACE_BOX_MM["z"][1])
        how = "box y >= 30 mm and z <= 0 mm in MNI space (no face-only stores), outside the MNI brain mask"
    return region & ~brain_mask, how


def _grid_affine(study_dir: str | Path, grid: str) -> np.ndarray:
    """The affine of a grid's stores (they share it), from the first store's metadata."""
    conditions = layout.stored_conditions(study_dir, grid)
    if not conditions:
        raise InputError(f"no condition stores on grid {grid!r}", layout.store_dir(study_dir, grid))
    return np.asarray(json.loads(layout.store_meta(study_dir, grid, conditions[0]).read_text())["affine"], float)


def saliency_shares(mean_map: np.ndarray, face_mask: np.ndarray, brain_mask: np.ndarray) -> dict[str, float]:
    """Shares of the map's positive saliency inside the removal region, the brain, and elsewhere.

    ``positive_fraction`` is the positive part's share of the map's absolute saliency, so a
    reader can tell shares of most of the map from shares of a sliver of it.
    """
    values = np.asarray(mean_map, np.float64)
    positive = np.clip(values, 0, None)
    total, absolute = positive.sum(), np.abs(values).sum()
    fraction = float(total / absolute) if absolute > 0 else float("nan")
    if total <= 0:
        return {"positive_total": 0.0, "positive_fraction": fraction, "face_share": float("nan"), "brain_share": float("nan"), "other_share": float("nan")}
    face, brain = positive[face_mask].sum() / total, positive[brain_mask].sum() / total
    return {"positive_total": float(total), "positive_fraction": fraction, "face_share": float(face), "brain_share": float(brain),
            "other_share": float(max(0.0, 1.0 - face - brain))}


# --------------------------------------------------------------------------- study stage
def mean_saliency(model, images: np.ndarray, rows: np.ndarray, batch_size: int = 4, device: str = "cpu") -> np.ndarray:
    """Grad-CAM maps of ``rows`` averaged (float64 sum / count) into one map on the grid."""
    import torch

    total = np.zeros(images.shape[1:], dtype=np.float64)
    for start in range(0, len(rows), batch_size):
        batch = np.sort(rows[start : start + batch_size])
        x = torch.from_numpy(np.asarray(images[batch], dtype=np.float32)).unsqueeze(1).to(device)
        total += grad_cam(model, x).sum(dim=0).cpu().numpy().astype(np.float64)
    return (total / max(1, len(rows))).astype(np.float32)


def compute_saliency(
    study_dir: str | Path,
    grid: str,
    conditions: Sequence[str] | None = None,
    device: str = "cpu",
    batch_size: int = 4,
    max_scans: int | None = None,
    brain_mask: np.ndarray | None = None,
    model_loader: Callable | None = None,
    frequencies: dict[str, np.ndarray] | None = None,
    log: Callable[[str], None] | None = None,
) -> pd.DataFrame:
    """Mean Grad-CAM map per condition over test scans and runs, and its face/brain shares.

    Writes ``results/saliency/<grid>/<condition>.npy`` (float32, the grid's shape), the mean
    absolute map and the signed maps per age tercile (:func:`defacebench.layout.saliency_summary_map`),
    and ``results/saliency.csv`` (condition, n_runs, n_scans, positive_total, positive_fraction,
    face_share, brain_share, other_share, face_region, abs_total, abs_face_share,
    abs_brain_share, abs_other_share), atomically, and returns the table.

    Parameters
    ----------
    conditions : sequence of str, optional
        Default: raw, skullstripped and every face-only condition that has runs and a store.
    max_scans : int, optional
        Use at most this many test scans per run (evenly spaced); default all.
    brain_mask : ndarray, optional
        Boolean brain mask on the grid; default the MNI152 brain mask (:func:`mni_brain_mask`).
    model_loader : callable, optional
        ``run_dir -> model`` (default :func:`defacebench.model.inference.load_model`).
    """
    study_dir = Path(study_dir)
    if model_loader is None:
        from defacebench.model.inference import load_model  # torch: imported only when maps are computed

        model_loader = lambda path: load_model(path, device=device)  # noqa: E731
    stored = set(list_conditions(study_dir, grid))
    trained = {layout.run_of(run)[0] for run in screen_runs(study_dir)[0] if layout.model_file(run).is_file()}  # trusted runs only
    if conditions is None:
        conditions = [c for c in order_conditions(stored & trained) if condition_kind(c) in ("raw", "skullstripped", "face")]
    if not conditions:
        raise InputError(f"no condition has both a store on grid {grid!r} and a trained model", study_dir)
    rows = []
    masks: tuple[np.ndarray, np.ndarray, str] | None = None
    for condition in conditions:
        store = open_condition(study_dir, grid, condition)
        if masks is None:
            brain = mni_brain_mask(store.affine, store.images.shape[1:]) if brain_mask is None else np.asarray(brain_mask, bool)
            face, how = face_region(study_dir, grid, brain, frequencies)
            masks = (face, brain, how)
        run_dirs = [run for run in screen_runs(study_dir, condition)[0] if layout.model_file(run).is_file()]
        if not run_dirs:
            raise InputError(f"condition {condition!r} has no trained model", layout.condition_runs_dir(study_dir, condition))
        test_rows = store.rows("test")
        if max_scans is not None and len(test_rows) > max_scans:
            test_rows = test_rows[np.linspace(0, len(test_rows) - 1, max_scans).round().astype(int)]
        if len(test_rows) == 0:
            raise InputError(f"store {condition!r} has no test scans", layout.store_dir(study_dir, grid))
        groups = age_terciles(store.ages[test_rows])
        sums = [saliency_sums(model_loader(run_dir), store.images, test_rows, groups, batch_size=batch_size, device=device) for run_dir in run_dirs]
        mean_map, abs_map, terciles = summed_maps(sums, groups)
        _save_maps(study_dir, grid, condition, mean_map, abs_map, terciles)
        rows.append({"condition": condition, "n_runs": len(run_dirs), "n_scans": len(test_rows), **saliency_shares(mean_map, masks[0], masks[1]), "face_region": masks[2],
                     **abs_shares(abs_map, masks[0], masks[1])})
        if log:
            log(f"saliency {condition}: {len(run_dirs)} run(s) x {len(test_rows)} test scans, |map| share face {rows[-1]['abs_face_share']:.2f}, brain {rows[-1]['abs_brain_share']:.2f}")
    table = pd.DataFrame(rows)
    write_table_atomic(layout.result_table(study_dir, "saliency"), table, sep=",")
    return table


# --------------------------------------------------------------------------- issue 20: summaries that survive averaging
def age_terciles(ages: np.ndarray) -> np.ndarray:
    """Age tercile (1 youngest .. 3 oldest) of each scan, cut at the 1/3 and 2/3 quantiles of ``ages``."""
    ages = np.asarray(ages, float)
    cuts = np.quantile(ages, [1 / 3, 2 / 3]) if len(ages) else np.zeros(2)
    return 1 + (ages > cuts[0]).astype(int) + (ages > cuts[1]).astype(int)


def saliency_sums(model, images: np.ndarray, rows: np.ndarray, groups: np.ndarray, batch_size: int = 4, device: str = "cpu") -> dict[str, object]:
    """Sums over ``rows`` of the signed and the absolute Grad-CAM maps, and of the signed maps
    per group (``groups[i]`` of ``rows[i]``, e.g. :func:`age_terciles`), in float64."""
    import torch

    rows, groups = np.asarray(rows), np.asarray(groups)
    shape = images.shape[1:]
    signed, absolute = np.zeros(shape, np.float64), np.zeros(shape, np.float64)
    per_group = {int(g): np.zeros(shape, np.float64) for g in np.unique(groups)}
    order = np.argsort(rows)
    rows, groups = rows[order], groups[order]
    for start in range(0, len(rows), batch_size):
        batch = rows[start : start + batch_size]
        x = torch.from_numpy(np.asarray(images[batch], dtype=np.float32)).unsqueeze(1).to(device)
        cams = grad_cam(model, x).cpu().numpy().astype(np.float64)
        signed += cams.sum(axis=0)
        absolute += np.abs(cams).sum(axis=0)
        for cam, g in zip(cams, groups[start : start + batch_size]):
            per_group[int(g)] += cam
    return {"signed": signed, "abs": absolute, "groups": per_group, "n": len(rows), "counts": {int(g): int((groups == g).sum()) for g in per_group}}


def summed_maps(sums: Sequence[dict], groups: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict[int, np.ndarray]]:
    """Mean signed map, mean absolute map and mean signed map per group over runs and scans (float32)."""
    n = sum(s["n"] for s in sums) or 1
    signed = sum(s["signed"] for s in sums) / n
    absolute = sum(s["abs"] for s in sums) / n
    per_group = {g: sum(s["groups"][g] for s in sums) / max(1, sum(s["counts"][g] for s in sums)) for g in sums[0]["groups"]}
    return signed.astype(np.float32), absolute.astype(np.float32), {g: m.astype(np.float32) for g, m in per_group.items()}


def _save_maps(study_dir: Path, grid: str, condition: str, mean_map: np.ndarray, abs_map: np.ndarray, terciles: dict[int, np.ndarray]) -> None:
    targets = [(layout.saliency_map(study_dir, grid, condition), mean_map), (layout.saliency_summary_map(study_dir, grid, condition, "abs"), abs_map)]
    targets += [(layout.saliency_summary_map(study_dir, grid, condition, f"tercile-{k}"), m) for k, m in terciles.items()]
    for path, values in targets:
        with atomic_path(path) as tmp:
            np.save(tmp, values)


def abs_shares(abs_map: np.ndarray, face_mask: np.ndarray, brain_mask: np.ndarray) -> dict[str, float]:
    """Shares of the mean **absolute** Grad-CAM (over scans, so signs cannot cancel) in the
    removal region, the brain and elsewhere; nan shares when the map is zero everywhere
    (the model carries no signal there: say so, never print the shares)."""
    values = np.abs(np.asarray(abs_map, np.float64))
    total = float(values.sum())
    if not total > 0:
        return {"abs_total": total, "abs_face_share": float("nan"), "abs_brain_share": float("nan"), "abs_other_share": float("nan")}
    face, brain = values[face_mask].sum() / total, values[brain_mask & ~face_mask].sum() / total
    return {"abs_total": total, "abs_face_share": float(face), "abs_brain_share": float(brain), "abs_other_share": float(max(0.0, 1.0 - face - brain))}


def load_tercile_maps(study_dir: str | Path, grid: str, condition: str) -> dict[int, np.ndarray]:
    """The per-tercile signed maps of one condition written by :func:`compute_saliency`."""
    paths = {k: layout.saliency_summary_map(study_dir, grid, condition, f"tercile-{k}") for k in (1, 2, 3)}
    return {k: np.load(p) for k, p in paths.items() if p.is_file()}


def load_saliency(study_dir: str | Path, grid: str) -> dict[str, np.ndarray]:
    """Mean saliency maps written by :func:`compute_saliency`, by condition."""
    return {condition: np.load(path) for condition, path in layout.saliency_maps(study_dir, grid).items()}
