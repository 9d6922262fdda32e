"""The evaluate stage (``defacebench evaluate``, run by ``defacebench run`` after training and
before analyse): cross-condition evaluation and dBrainAGE (:mod:`.crosseval`), face
ablation and occlusion of the raw-head models (:mod:`.ablation`), the train x test MAE
heat map. Reads the trusted runs' ``model.pt`` and the condition stores of one grid; writes
:data:`defacebench.layout.EVALUATION_FILES` and ``figures/cross_condition.png``. Nothing is
recomputed when every output is newer than every model and store (``force`` recomputes).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from defacebench import layout
from defacebench.analysis import ablation, crosseval
from defacebench.analysis.inputs import resolve_grid
from defacebench.analysis.removed import removed_images
from defacebench.conditions import condition_kind
from defacebench.io.errors import InputError
from defacebench.io.store import ConditionStore, list_conditions, open_condition


class ModelCache:
    """Loads each run's model once (the last one used is kept) and predicts on stores or arrays."""

    def __init__(self, device: str = "cpu", batch_size: int = 16) -> None:
        from defacebench.model.inference import load_model, predict_ages, resolve_device

        self.device, self.batch_size = resolve_device(device), batch_size
        self._load, self._predict = load_model, predict_ages
        self._run: Path | None = None
        self._model = None

    def model(self, run_dir: Path):
        if self._run != run_dir:
            self._model, self._run = self._load(run_dir, device=self.device), run_dir
        return self._model

    def on_store(self, run_dir: Path, store: ConditionStore, rows: np.ndarray) -> np.ndarray:
        order = np.argsort(rows)
        ages = np.empty(len(rows))
        ages[order] = self._predict(self.model(run_dir), store.images, np.asarray(rows)[order], self.batch_size)
        return ages

    def on_arrays(self, run_dir: Path) -> ablation.Predictor:
        model = self.model(run_dir)
        return lambda images: self._predict(model, images, np.arange(len(images)), self.batch_size)


def _fresh(outputs: list[Path], inputs: list[Path]) -> bool:
    if not all(p.is_file() for p in outputs) or not inputs:
        return False
    return min(p.stat().st_mtime for p in outputs) >= max(p.stat().st_mtime for p in inputs)


def evaluate_study(study_dir: str | Path, grid: str | None = None, device: str = "auto", n_boot: int = 2000, seed: int = 0,
                   force: bool = False, brain_mask: np.ndarray | None = None, max_runs: int | None = None,
                   log: Callable[[str], None] | None = None) -> dict[str, pd.DataFrame]:
    """Run the evaluate stage of a study; returns its tables by role (empty when up to date and not ``force``).

    ``max_runs`` scores only the first ``max_runs`` runs of each condition (default all).
    On a CPU the models run on one thread (faster than two on the shared 2-core hosts,
    as for training: docs/training.md).

    Raises
    ------
    InputError
        No study, no stores on the grid, or no trusted run with a model.
    """
    say = log or (lambda _msg: None)
    study_dir = Path(study_dir)
    if not study_dir.is_dir():
        raise InputError("study directory not found", study_dir)
    grid = resolve_grid(study_dir, grid)
    if grid is None or not layout.store_index(study_dir, grid).is_file():
        raise InputError("no condition stores to evaluate on (run `defacebench preprocess` first)", layout.stores_root(study_dir))
    runs = crosseval.trusted_models(study_dir)
    if max_runs is not None:
        runs = [r for r in runs if int(layout.run_of(r)[1]) <= max_runs]
    if not runs:
        raise InputError("no trusted trained run with a model.pt (run `defacebench train` first)", layout.runs_root(study_dir))
    stored = list_conditions(study_dir, grid)
    outputs = [layout.evaluation_table(study_dir, role) for role in layout.EVALUATION_FILES]
    inputs = [layout.model_file(r) for r in runs] + [layout.store_array(study_dir, grid, c) for c in stored]
    if not force and _fresh(outputs, inputs):
        say("evaluate: results are newer than every model and store; nothing to do (--force recomputes)")
        return {}
    import torch

    cache = ModelCache(device)
    threads = torch.get_num_threads()
    if cache.device.type == "cpu":
        torch.set_num_threads(1)
    try:
        predictions = crosseval.cross_predictions(study_dir, grid, cache.on_store, stored, runs=runs, log=say)
        tables = crosseval.write_tables(study_dir, predictions, n_boot, seed)
        tables.update(face_tables(study_dir, grid, runs, cache, n_boot, seed, brain_mask, say))
    finally:
        torch.set_num_threads(threads)
    if len(tables["cross_condition"]):
        from defacebench.analysis.figures_eval import plot_cross_condition

        plot_cross_condition(crosseval.mae_matrix(tables["cross_condition"]), layout.figure_file(study_dir, "cross_condition"))
    return tables


def face_tables(study_dir: Path, grid: str, runs: list[Path], cache: ModelCache, n_boot: int, seed: int,
                brain_mask: np.ndarray | None, say: Callable[[str], None]) -> dict[str, pd.DataFrame]:
    """Face ablation and occlusion of every raw-head run, and of their ensemble (``run = "mean"``)
    when there are several (empty tables without a raw store or run)."""
    from defacebench.analysis import saliency as sal

    stored = list_conditions(study_dir, grid)
    raw_runs = [r for r in runs if condition_kind(layout.run_of(r)[0]) == "raw"]
    empty = {"face_ablation": pd.DataFrame(), "occlusion": pd.DataFrame()}
    if "raw" not in stored or not raw_runs:
        ablation.write_tables(study_dir, empty["face_ablation"], empty["occlusion"])
        say("evaluate: no raw store or raw-head run; no face ablation")
        return empty
    raw = open_condition(study_dir, grid, "raw")
    faces = {m: removed_images(study_dir, grid, m, raw.images) for m in sal.face_methods(study_dir, grid)}
    rows = raw.rows("test")
    brain = sal.mni_brain_mask(raw.affine, raw.images.shape[1:]) if brain_mask is None else np.asarray(brain_mask, bool)
    frequencies = {m: sal.removal_frequency(images, reference=raw.images) for m, images in faces.items()}
    face_region, _how = sal.face_region(study_dir, grid, brain, frequencies)
    head = sal.removal_frequency(raw.images, max_scans=100, reference=raw.images) > 0.5
    regions = ablation.occlusion_regions(face_region, brain, head)
    average = ablation.mean_image(raw.images, raw.rows("train"))
    ablations, occlusions = [], []
    models = [(*layout.run_of(r), cache.on_arrays(r)) for r in raw_runs]
    if len(models) > 1:  # the ensemble: each scan's mean prediction over the runs
        models.append(("raw", "mean", lambda images: np.mean([p(images) for _c, _r, p in models[: len(raw_runs)]], axis=0)))
    for condition, run, predict in models:
        found = ablation.ablation_predictions(predict, raw.images, faces, rows, average)
        ablations.append(ablation.ablation_table(found, raw.ages[rows], n_boot, seed).assign(condition=condition, run=run))
        occlusions.append(ablation.occlusion_table(predict, raw.images, rows, regions, raw.ages, n_boot, seed).assign(condition=condition, run=run))
        last = ablations[-1]
        union = last[(last["region"] == ablation.UNION) & (last["fill"] == "zero")] if len(last) else last
        if len(union):
            say(f"evaluate: face ablation of {condition} run-{run}: union zeroed moves predictions {union['mean_abs_change'].iloc[0]:.2f} years, MAE {union['mae_change'].iloc[0]:+.2f} years")
    tables = {"face_ablation": _first(pd.concat(ablations, ignore_index=True)), "occlusion": _first(pd.concat(occlusions, ignore_index=True))}
    ablation.write_tables(study_dir, tables["face_ablation"], tables["occlusion"])
    return tables


def _first(table: pd.DataFrame) -> pd.DataFrame:
    """Put the ``condition`` and ``run`` columns first (an empty table stays empty)."""
    if table.empty:
        return pd.DataFrame()
    return table.loc[:, ["condition", "run", *[c for c in table.columns if c not in ("condition", "run")]]]
