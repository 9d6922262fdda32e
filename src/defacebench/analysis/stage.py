"""The analysis stage: read trained runs, write ``STUDY/results/*.csv`` and ``STUDY/figures/*.png``.

:func:`analyse_study` is what ``defacebench analyse`` (and so the study runner) calls. Every
file is written atomically and overwritten on each call, except the saliency maps, which are
recomputed only when a model is newer than them (or ``force_saliency``). Which files those
are is :data:`defacebench.layout.RESULT_FILES` and :data:`defacebench.layout.FIGURES`.
"""

from __future__ import annotations

import json
import platform
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from defacebench import __version__, layout
from defacebench.analysis import face_signal, figures, metrics, power, statistics
from defacebench.analysis.inputs import check_runs, load_histories, load_predictions, resolve_grid, training_mean_age
from defacebench.analysis.removed import removed_images
from defacebench.analysis.runs import write_left_out_runs
from defacebench.conditions import SCAN_KEY, order_conditions
from defacebench.io.atomic import write_table_atomic, write_text_atomic
from defacebench.io.errors import InputError
from defacebench.io.store import list_conditions, open_condition

def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"defacebench": __version__, "python": platform.python_version()}
    for name in ("numpy", "scipy", "pandas", "statsmodels", "matplotlib", "nilearn", "torch"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return out


def write_statistics(study_dir: str | Path, predictions: pd.DataFrame, training_age: float, n_boot: int = 2000, seed: int = 0) -> dict[str, pd.DataFrame]:
    """Compute and write every result table; return them by :data:`defacebench.layout.RESULT_FILES` role."""
    errors = metrics.subject_errors(predictions, "test")
    ages = metrics.scan_ages(predictions, "test")
    tables: dict[str, pd.DataFrame] = {
        "table1": metrics.table1(predictions, training_age),
        "metrics_per_run": metrics.run_metrics(predictions, "test"),
        "bias_corrected": metrics.bias_corrected_metrics(predictions),
    }
    long = errors.reset_index().melt(id_vars=list(SCAN_KEY), var_name="condition", value_name="abs_error")
    long["age"] = ages.reindex(pd.MultiIndex.from_frame(long[list(SCAN_KEY)])).to_numpy()
    long["null_abs_error"] = (long["age"] - training_age).abs()
    tables["subject_errors"] = long.dropna(subset=["abs_error"])
    if errors.shape[1] >= 2:
        tables["omnibus"] = statistics.omnibus_table(errors)
        tables["pairwise"] = statistics.pairwise_table(errors, n_boot=n_boot, seed=seed)
    null_abs = metrics.null_errors(ages, training_age)
    tables["null_baseline"] = statistics.null_baseline_tests(errors, null_abs, n_boot=n_boot, seed=seed)
    tables["face_signal"] = face_signal.face_signal_table(face_signal.ensemble_errors(predictions, "test"), null_abs, n_boot=n_boot, seed=seed)
    tables["power"] = power.power_table(errors, null_abs, face_signal.ensemble_errors(predictions, "test"), seed=seed)
    for key, table in tables.items():
        write_table_atomic(layout.result_table(study_dir, key), table, sep=",")
    return tables


def analyse_study(
    study_dir: str | Path,
    grid: str | None = None,
    n_boot: int = 2000,
    seed: int = 0,
    saliency: bool = True,
    force_saliency: bool = False,
    device: str = "auto",
    max_saliency_scans: int | None = None,
    log: Callable[[str], None] | None = None,
) -> Path:
    """Statistics, saliency and figures of a study; returns ``STUDY/results``.

    Parameters
    ----------
    study_dir : path
        The study directory (layout in :mod:`defacebench.layout`).
    grid : str, optional
        Store grid for Fig. 1 and saliency; default from ``run.json`` or the only grid.
    n_boot, seed : int
        Paired bootstrap resamples and their seed.
    saliency : bool
        Compute Grad-CAM (needs the stores and ``model.pt`` files); figures are drawn either way.
    """
    say = log or (lambda _msg: None)
    study_dir = Path(study_dir)
    if not study_dir.is_dir():
        raise InputError("study directory not found", study_dir)
    run_infos = check_runs(study_dir)
    for row in write_left_out_runs(study_dir).itertuples():
        say(f"analyse: left out {row.condition} run-{row.run}: {row.reason}")
    predictions = load_predictions(study_dir)
    grid = resolve_grid(study_dir, grid)
    training_age, age_source = training_mean_age(study_dir, predictions, grid)
    write_statistics(study_dir, predictions, training_age, n_boot=n_boot, seed=seed)
    say(f"analyse: {predictions['condition'].nunique()} conditions, {predictions['run'].nunique()} run label(s), {len(metrics.scan_ages(predictions))} test scans; tables in {layout.results_dir(study_dir)}")

    paths = figures.figure_paths(study_dir)
    errors = metrics.subject_errors(predictions, "test")
    null_mae = float(metrics.null_errors(metrics.scan_ages(predictions), training_age).mean())
    figures.plot_error_distributions(errors, paths["fig4_errors"], null_mae)
    figures.plot_predicted_vs_true(metrics.subject_predictions(predictions), paths["predicted_vs_true"])
    signal = pd.read_csv(layout.result_table(study_dir, "face_signal"))
    if len(signal):
        figures.plot_face_signal(signal, paths["face_signal"])
    else:
        paths["face_signal"].unlink(missing_ok=True)
    histories = load_histories(study_dir)
    if len(histories):
        figures.plot_training_curves(histories, paths["training_curves"])

    brain_notes: dict[str, object] = {}
    if grid is not None and layout.store_index(study_dir, grid).is_file():
        brain_notes = _image_figures(study_dir, grid, paths, saliency, force_saliency, device, max_saliency_scans, say)
    else:
        say("analyse: no condition stores found; skipping Fig. 1 and saliency")

    summary = {
        "grid": grid,
        "training_mean_age": training_age,
        "training_age_source": age_source,
        "n_boot": n_boot,
        "seed": seed,
        "n_test_scans": int(len(metrics.scan_ages(predictions))),
        "n_paired_scans": int(len(statistics.complete_cases(errors))),
        "conditions": order_conditions(predictions["condition"].unique()),
        "runs": [{k: info.get(k) for k in ("condition", "run", "device", "parameter_count", "best_epoch", "epochs_trained", "samples_per_s", "profile", "n_train", "n_val", "n_test")} for info in run_infos],
        "versions": _versions(),
        **brain_notes,
    }
    write_text_atomic(layout.result_table(study_dir, "summary"), json.dumps(summary, indent=2, default=str) + "\n")
    return layout.results_dir(study_dir)


def _image_figures(study_dir: Path, grid: str, paths: dict[str, Path], saliency: bool, force: bool, device: str, max_scans: int | None, say) -> dict[str, object]:
    """Fig. 1 (removal regions) and Fig. 3 (saliency) from the stores and models of ``grid``."""
    from defacebench.analysis import saliency as sal

    stored = list_conditions(study_dir, grid)
    if not stored:
        return {}
    first = open_condition(study_dir, grid, stored[0])
    shape, affine = first.images.shape[1:], first.affine
    template = sal.mni_template(affine, shape)
    brain = sal.mni_brain_mask(affine, shape)
    head = raw = None
    if "raw" in stored:
        raw = open_condition(study_dir, grid, "raw").images
        # head tissue in most scans: the raw image above the air level
        head = sal.removal_frequency(raw, max_scans=100, reference=raw) > 0.5
    frequencies: dict[str, np.ndarray] = {}
    n_scans = None
    for method in sal.face_methods(study_dir, grid):
        tissue = removed_images(study_dir, grid, method, raw)  # placed like raw, whatever the face-only placement
        frequencies[method] = sal.removal_frequency(tissue, reference=raw)
        n_scans = min(len(tissue), 200)
    notes: dict[str, object] = {}
    if frequencies:
        figures.plot_removal_regions(frequencies, template, affine, paths["fig1_removed_regions"], head=head, n_scans=n_scans)
        removed = {m: float((f > sal.REMOVAL_THRESHOLD).sum() * abs(np.linalg.det(affine[:3, :3])) / 1000) for m, f in frequencies.items()}
        near_brain = {m: float(((f > sal.REMOVAL_THRESHOLD) & brain).sum() * abs(np.linalg.det(affine[:3, :3])) / 1000) for m, f in frequencies.items()}
        notes["removed_volume_ml"] = removed
        notes["removed_inside_brain_mask_ml"] = near_brain
    if saliency:
        models = layout.trained_models(study_dir)
        if not models:
            say("analyse: no model.pt files; skipping saliency")
        else:
            maps_dir = layout.saliency_dir(study_dir, grid)
            newest_model = max(p.stat().st_mtime for p in models)
            csv = layout.result_table(study_dir, "saliency")
            fresh = csv.is_file() and csv.stat().st_mtime >= newest_model and any(maps_dir.glob("*.npy"))
            if force or not fresh:
                from defacebench.model.inference import resolve_device

                device = str(resolve_device(device))
                say(f"analyse: Grad-CAM on {device}")
                sal.compute_saliency(study_dir, grid, device=device, max_scans=max_scans, brain_mask=brain, frequencies=frequencies or None, log=say)
            else:
                say("analyse: saliency maps are up to date; skipping (use --force-saliency to recompute)")
    maps = sal.load_saliency(study_dir, grid)
    if maps:
        csv = layout.result_table(study_dir, "saliency")
        shares = pd.read_csv(csv) if csv.is_file() else None
        figures.plot_saliency(maps, template, affine, paths["fig3_saliency"], head=head, shares=shares)
        _tercile_figure(study_dir, grid, maps, template, affine, head)
    return notes


def _tercile_figure(study_dir: Path, grid: str, maps: dict, template: np.ndarray, affine: np.ndarray, head: np.ndarray | None) -> None:
    """Signed Grad-CAM per age tercile of the raw head and skull-stripped models (issue 20)."""
    from defacebench.analysis import saliency as sal
    from defacebench.analysis.figures_eval import plot_saliency_terciles

    terciles = {c: sal.load_tercile_maps(study_dir, grid, c) for c in ("raw", "skullstripped") if c in maps}
    terciles = {c: t for c, t in terciles.items() if t}
    path = layout.figure_file(study_dir, "saliency_terciles")
    if terciles:
        store = open_condition(study_dir, grid, next(iter(terciles)))
        ages = store.ages[store.rows("test")]
        groups = sal.age_terciles(ages)
        spans = {k: (ages[groups == k].min(), ages[groups == k].max()) for k in (1, 2, 3) if (groups == k).any()}
        ranges = {k: f"{lo:.0f} y" if round(lo) == round(hi) else f"{lo:.0f}-{hi:.0f} y" for k, (lo, hi) in spans.items()}
        plot_saliency_terciles(terciles, template, affine, path, head=head, age_ranges=ranges)
    else:
        path.unlink(missing_ok=True)


def draw_individual_example(study_dir: str | Path) -> Path | None:
    """Draw one test scan in every stored condition (``figures/individual_example.png``).

    Only on request (``defacebench report --individual-figures``): the image can identify a
    person. Uses the grid the analysis recorded in ``analysis.json``; returns None (and draws
    nothing) when there is no such grid, store or test scan.
    """
    study_dir = Path(study_dir)
    summary_path = layout.result_table(study_dir, "summary")
    grid = json.loads(summary_path.read_text()).get("grid") if summary_path.is_file() else None
    if not grid or not layout.store_index(study_dir, grid).is_file():
        return None
    conditions = list_conditions(study_dir, grid)
    if not conditions:
        return None
    stores = {c: open_condition(study_dir, grid, c) for c in conditions}
    first = next(iter(stores.values()))
    rows = first.rows("test")
    if not len(rows):
        return None
    row = int(rows[0])
    images = {c: np.asarray(s.images[row], np.float32) for c, s in stores.items()}
    who = first.index.iloc[row]
    path = layout.figure_file(study_dir, "individual_example")
    return figures.plot_individual(images, first.affine, path, f"{who['participant_id']} {who['session_id']}".strip())
