"""The analysis stage: read trained runs, write ``STUDY/results/*.csv`` and ``STUDY/figures/*.png``.

``analyse_study(study_dir, grid)`` is what ``defacebench analyse`` and the study runner call.
Every file is written atomically and overwritten on each call, except the saliency maps,
which are recomputed only when a model is newer than them (or ``force_saliency``).
"""

from __future__ import annotations

import json
import platform
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from defacebench import __version__
from defacebench.analysis import figures, metrics, statistics
from defacebench.io.atomic import write_table_atomic, write_text_atomic
from defacebench.io.errors import InputError

#: Result tables under ``STUDY/results/``.
RESULT_FILES: dict[str, str] = {
    "table1": "table1.csv",
    "metrics_per_run": "metrics_per_run.csv",
    "bias_corrected": "bias_corrected_metrics.csv",
    "subject_errors": "subject_errors.csv",
    "omnibus": "omnibus_tests.csv",
    "pairwise": "pairwise_tests.csv",
    "null_baseline": "null_baseline.csv",
    "saliency": "saliency.csv",
    "summary": "analysis.json",
}


def results_dir(study_dir: str | Path) -> Path:
    """``STUDY/results``."""
    return Path(study_dir) / "results"


def training_mean_age(study_dir: str | Path, predictions: pd.DataFrame, grid: str | None = None) -> tuple[float, str]:
    """Mean age of the training scans and where it was read.

    Read from ``STUDY/splits.tsv``, else a store index (``stores/<grid>/index.tsv``); when
    neither exists, the validation scans' mean age from the predictions (said so in the source).
    """
    study_dir = Path(study_dir)
    candidates = [study_dir / "splits.tsv"]
    if grid is not None:
        candidates.append(study_dir / "stores" / grid / "index.tsv")
    candidates += sorted((study_dir / "stores").glob("*/index.tsv"))
    for path in candidates:
        if path.is_file():
            table = pd.read_csv(path, sep="\t", keep_default_na=False, dtype={"split": str})
            if {"age", "split"} <= set(table.columns):
                ages = pd.to_numeric(table.loc[table["split"] == "train", "age"], errors="coerce").dropna()
                if len(ages):
                    return float(ages.mean()), f"{path.relative_to(study_dir)} ({len(ages)} training scans)"
    val = predictions[predictions["split"] == "val"].drop_duplicates(list(metrics.SCAN_KEY))
    if val.empty:
        raise InputError("cannot find training ages for the null baseline (no splits.tsv, store index or validation predictions)", study_dir)
    return float(val["age"].mean()), f"validation predictions ({len(val)} scans; no splits.tsv or store index with training ages)"


def resolve_grid(study_dir: str | Path, grid: str | None = None) -> str | None:
    """The grid to analyse: ``grid``, else the runs' ``run.json`` grid, else the only store grid."""
    study_dir = Path(study_dir)
    if grid:
        return grid
    for path in sorted(study_dir.glob("runs/*/run-*/run.json")):
        try:
            found = json.loads(path.read_text()).get("grid")
        except (OSError, ValueError):
            continue
        if found:
            return str(found)
    grids = sorted(p.parent.name for p in study_dir.glob("stores/*/index.tsv"))
    return grids[0] if len(grids) == 1 else None


def check_runs(study_dir: str | Path) -> list[dict]:
    """Read every ``run.json``; a run marked incomplete is an error (its predictions may be stale)."""
    infos = []
    for path in sorted(Path(study_dir).glob("runs/*/run-*/run.json")):
        try:
            info = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise InputError(f"unreadable run.json ({exc})", path) from None
        if not info.get("complete", False):
            raise InputError("run is not complete; rerun `defacebench train`", path)
        info.setdefault("condition", path.parent.parent.name)
        info.setdefault("run", path.parent.name.removeprefix("run-"))
        infos.append(info)
    return infos


def load_histories(study_dir: str | Path) -> pd.DataFrame:
    """Every run's ``history.csv`` with condition and run columns (empty when none)."""
    tables = []
    for path in sorted(Path(study_dir).glob("runs/*/run-*/history.csv")):
        try:
            table = pd.read_csv(path)
        except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError):
            continue
        if {"epoch", "train_loss", "val_mae"} <= set(table.columns) and len(table):
            table["condition"], table["run"] = path.parent.parent.name, path.parent.name.removeprefix("run-")
            tables.append(table)
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=["epoch", "train_loss", "val_mae", "condition", "run"])


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
    """Compute and write every result table; return them by :data:`RESULT_FILES` key."""
    out = results_dir(study_dir)
    errors = metrics.subject_errors(predictions, "test")
    ages = metrics.scan_ages(predictions, "test")
    tables: dict[str, pd.DataFrame] = {
        "table1": metrics.table1(predictions, training_age),
        "metrics_per_run": metrics.run_metrics(predictions, "test"),
        "bias_corrected": metrics.bias_corrected_metrics(predictions),
    }
    long = errors.reset_index().melt(id_vars=list(metrics.SCAN_KEY), var_name="condition", value_name="abs_error")
    long["age"] = ages.reindex(pd.MultiIndex.from_frame(long[list(metrics.SCAN_KEY)])).to_numpy()
    long["null_abs_error"] = (long["age"] - training_age).abs()
    tables["subject_errors"] = long.dropna(subset=["abs_error"])
    if errors.shape[1] >= 2:
        tables["omnibus"] = statistics.omnibus_table(errors)
        tables["pairwise"] = statistics.pairwise_table(errors, n_boot=n_boot, seed=seed)
    tables["null_baseline"] = statistics.null_baseline_tests(errors, metrics.null_errors(ages, training_age), n_boot=n_boot, seed=seed)
    for key, table in tables.items():
        write_table_atomic(out / RESULT_FILES[key], table, sep=",")
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
        The study directory (DESIGN.md section 3).
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
    predictions = metrics.load_predictions(study_dir)
    grid = resolve_grid(study_dir, grid)
    training_age, age_source = training_mean_age(study_dir, predictions, grid)
    tables = write_statistics(study_dir, predictions, training_age, n_boot=n_boot, seed=seed)
    say(f"analyse: {predictions['condition'].nunique()} conditions, {predictions['run'].nunique()} run label(s), {len(metrics.scan_ages(predictions))} test scans; tables in {results_dir(study_dir)}")

    paths = figures.figure_paths(study_dir)
    errors = metrics.subject_errors(predictions, "test")
    null_mae = float(metrics.null_errors(metrics.scan_ages(predictions), training_age).mean())
    figures.plot_error_distributions(errors, paths["fig4_errors"], null_mae)
    figures.plot_predicted_vs_true(metrics.subject_predictions(predictions), paths["predicted_vs_true"])
    histories = load_histories(study_dir)
    if len(histories):
        figures.plot_training_curves(histories, paths["training_curves"])

    brain_notes: dict[str, object] = {}
    if grid is not None and (study_dir / "stores" / grid / "index.tsv").is_file():
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
        "conditions": metrics.order_conditions(predictions["condition"].unique()),
        "runs": [{k: info.get(k) for k in ("condition", "run", "device", "parameter_count", "best_epoch", "epochs_trained", "samples_per_s", "profile", "n_train", "n_val", "n_test")} for info in run_infos],
        "versions": _versions(),
        **brain_notes,
    }
    write_text_atomic(results_dir(study_dir) / RESULT_FILES["summary"], json.dumps(summary, indent=2, default=str) + "\n")
    del tables
    return results_dir(study_dir)


def _image_figures(study_dir: Path, grid: str, paths: dict[str, Path], saliency: bool, force: bool, device: str, max_scans: int | None, say) -> dict[str, object]:
    """Fig. 1 (removal regions) and Fig. 3 (saliency) from the stores and models of ``grid``."""
    from defacebench.analysis import saliency as sal
    from defacebench.io.store import list_conditions, open_condition

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
        store = open_condition(study_dir, grid, f"face-{method}")
        frequencies[method] = sal.removal_frequency(store.images, reference=raw)
        n_scans = min(len(store.images), 200)
    notes: dict[str, object] = {}
    if frequencies:
        figures.plot_removal_regions(frequencies, template, affine, paths["fig1_removed_regions"], head=head, n_scans=n_scans)
        removed = {m: float((f > sal.REMOVAL_THRESHOLD).sum() * abs(np.linalg.det(affine[:3, :3])) / 1000) for m, f in frequencies.items()}
        near_brain = {m: float(((f > sal.REMOVAL_THRESHOLD) & brain).sum() * abs(np.linalg.det(affine[:3, :3])) / 1000) for m, f in frequencies.items()}
        notes["removed_volume_ml"] = removed
        notes["removed_inside_brain_mask_ml"] = near_brain
    if saliency:
        has_models = any((study_dir / "runs").glob("*/run-*/model.pt"))
        if not has_models:
            say("analyse: no model.pt files; skipping saliency")
        else:
            maps_dir = sal.saliency_dir(study_dir, grid)
            newest_model = max(p.stat().st_mtime for p in (study_dir / "runs").glob("*/run-*/model.pt"))
            csv = results_dir(study_dir) / RESULT_FILES["saliency"]
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
        csv = results_dir(study_dir) / RESULT_FILES["saliency"]
        shares = pd.read_csv(csv) if csv.is_file() else None
        figures.plot_saliency(maps, template, affine, paths["fig3_saliency"], head=head, shares=shares)
    return notes
