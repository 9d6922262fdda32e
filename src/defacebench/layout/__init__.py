"""Every path inside a study directory, and the simulated dataset's ground-truth files.

This package is the only place a study folder or file name is spelled; every stage asks
it where to read and write, so stages meet on disk without knowing each other. Everything is
imported from ``defacebench.layout``: the study directory's paths live here, the paths
outside a study (demo directory, simulated dataset, exported dataset) in :mod:`.datasets`,
what both share in :mod:`.base`::

    STUDY/
      study.json                                      the configuration the study was run with
      splits.tsv                                      train/val/test per scan (defacebench cohort)
      derivatives/defacebench/                        BIDS derivatives of the deface stage
        dataset_description.json
        sub-X[/ses-Y]/anat/<key>_desc-<method>defaced_T1w.nii.gz, ..._desc-<method>face_T1w.nii.gz,
                          ..._desc-<method>_mask.nii.gz, ..._desc-brain_mask.nii.gz, transforms,
                          ..._desc-deface_qc.png, ..._desc-deface_qc.tsv (written last)
        qc.tsv, qc_summary.tsv, qc_preprocess.tsv, failures.tsv, qc/preprocess_<grid>_<condition>.png
      work/<grid>/<key>.npz, stores.json              one preprocessed scan per file
      stores/<grid>/index.tsv, excluded.tsv, <condition>.npy, <condition>.json
      runs/<condition>/run-<k>/model.pt, checkpoint.pt, history.csv, predictions.csv, run.json
      results/*.csv, analysis.json, left_out_runs.tsv, saliency/<grid>/*.npy  figures/*.png
      report.html

A simulated dataset (``defacebench simulate``) keeps its ground truth beside the BIDS data::

    DATASET/participants.tsv, sub-X/anat/sub-X_T1w.nii.gz
    DATASET/derivatives/simulation/dataset_description.json, dseg.tsv, ground_truth.tsv, preview.png
      sub-X/anat/sub-X_dseg.nii.gz, sub-X_desc-brain_mask.nii.gz, sub-X_simulation.json
    (with ``--sessions``: sub-X/ses-Y/anat/sub-X_ses-Y_*, and sub-X/sub-X_sessions.tsv)

``run-<k>`` is a training repetition (the paper's "3 runs"), not a BIDS ``run-`` entity.
A scan is anything with ``subject``, ``session`` and ``key`` attributes
(:class:`defacebench.cohort.Subject`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from defacebench.layout.base import (HEAD_XFM_SUFFIX, PIPELINE, PYDEFACE_XFM_SUFFIX, SIMULATION_PIPELINE, XFM_SUFFIX, PathLike,
                                     Scan, anat_dir)
from defacebench.layout.datasets import (demo_dataset, demo_simulation_record, export_files, participants_table,
                                         sessions_table, simulated_t1w, simulation_dir, simulation_dseg_table,
                                         simulation_files, simulation_labels, simulation_preview, simulation_truth_table)
from defacebench.layout.privacy import (RAW_LABEL, privacy_features, privacy_figure, privacy_render, privacy_residual_table,
                                        privacy_scan_table, privacy_table)

#: Everything here and re-exported from :mod:`.base` and :mod:`.datasets`.
__all__ = [
    "EVALUATION_FILES", "FIGURES", "HEAD_XFM_SUFFIX", "PIPELINE", "PYDEFACE_XFM_SUFFIX", "PathLike", "RESULT_FILES",
    "SIMULATION_PIPELINE", "Scan", "XFM_SUFFIX", "anat_dir", "applied_files", "applyto_qc_table", "checkpoint_file",
    "cohort_checks_table", "condition_runs_dir", "deface_description", "deface_qc_summary", "deface_qc_table",
    "demo_dataset", "demo_simulation_record", "derivatives_dir", "evaluation_table", "export_files", "failures_table",
    "figure_file", "figures_dir", "history_file", "model_file", "model_ts_file", "mosaic_dir", "mosaic_file",
    "participants_table", "predictions_file", "preprocess_qc_table", "report_file", "result_file", "result_table",
    "results_dir", "run_dir", "run_dirs", "run_of", "run_record", "runs_root", "saliency_dir", "saliency_map",
    "saliency_maps", "saliency_summary_map", "scan_dir", "scan_files", "scan_transforms", "score_table",
    "sessions_table", "simulated_t1w", "simulation_dir", "simulation_dseg_table", "simulation_files",
    "simulation_labels", "simulation_preview", "simulation_truth_table", "splits_table", "store_array", "store_dir",
    "store_excluded", "store_grids", "store_index", "store_meta", "store_state", "stored_conditions", "stores_root",
    "study_config", "trained_models", "work_dir", "work_file",
    "RAW_LABEL", "privacy_features", "privacy_figure", "privacy_render", "privacy_residual_table", "privacy_scan_table", "privacy_table",
]

# --------------------------------------------------------------------------- study level
def study_config(study: PathLike) -> Path:
    """``STUDY/study.json``: the configuration a study was started with."""
    return Path(study) / "study.json"


def splits_table(study: PathLike) -> Path:
    """``STUDY/splits.tsv``: one row per scan with its split."""
    return Path(study) / "splits.tsv"


def report_file(study: PathLike) -> Path:
    """``STUDY/report.html``."""
    return Path(study) / "report.html"


# --------------------------------------------------------------------------- deface derivatives
def derivatives_dir(study: PathLike) -> Path:
    """``STUDY/derivatives/defacebench``."""
    return Path(study) / "derivatives" / PIPELINE


def deface_description(study: PathLike) -> Path:
    """The deface derivatives' ``dataset_description.json`` (``SourceDatasets`` names the raw dataset)."""
    return derivatives_dir(study) / "dataset_description.json"


def deface_qc_table(study: PathLike) -> Path:
    return derivatives_dir(study) / "qc.tsv"


def deface_qc_summary(study: PathLike) -> Path:
    return derivatives_dir(study) / "qc_summary.tsv"


def preprocess_qc_table(study: PathLike) -> Path:
    return derivatives_dir(study) / "qc_preprocess.tsv"


def failures_table(study: PathLike) -> Path:
    """``failures.tsv``: per-scan failures of every stage (a ``stage`` column tells them apart)."""
    return derivatives_dir(study) / "failures.tsv"


def mosaic_dir(study: PathLike) -> Path:
    """QC mosaics of the condition stores (they show faces: never shared)."""
    return derivatives_dir(study) / "qc"


def mosaic_file(study: PathLike, grid: str, condition: str) -> Path:
    return mosaic_dir(study) / f"preprocess_{grid}_{condition}.png"


def scan_dir(study: PathLike, scan: Scan) -> Path:
    """The deface derivatives folder of one scan."""
    return anat_dir(derivatives_dir(study), scan.subject, scan.session)


def scan_files(study: PathLike, scan: Scan, methods: Sequence[str] = ()) -> dict[str, Path]:
    """Every deface-stage file of one scan, by role.

    Roles: ``brain_mask``, ``to_mni`` (12-DOF brain registration), ``qc_png``, ``qc_tsv``
    (written last: it marks the scan complete), and per method ``<m>_defaced``, ``<m>_face``,
    ``<m>_mask`` (the other transforms: :func:`scan_transforms`).
    """
    anat, p = scan_dir(study, scan), scan.key
    paths = {
        "brain_mask": anat / f"{p}_desc-brain_mask.nii.gz",
        "to_mni": anat / f"{p}_{XFM_SUFFIX}",
        "qc_png": anat / f"{p}_desc-deface_qc.png",
        "qc_tsv": anat / f"{p}_desc-deface_qc.tsv",
    }
    for m in methods:
        paths[f"{m}_defaced"] = anat / f"{p}_desc-{m}defaced_T1w.nii.gz"
        paths[f"{m}_face"] = anat / f"{p}_desc-{m}face_T1w.nii.gz"
        paths[f"{m}_mask"] = anat / f"{p}_desc-{m}_mask.nii.gz"
    return paths


def scan_transforms(study: PathLike, scan: Scan) -> dict[str, Path]:
    """The cached transforms of one scan by context attribute (``to_mni``, ``head_to_mni``,
    ``template_to_subject``)."""
    anat, p = scan_dir(study, scan), scan.key
    return {"to_mni": anat / f"{p}_{XFM_SUFFIX}", "head_to_mni": anat / f"{p}_{HEAD_XFM_SUFFIX}",
            "template_to_subject": anat / f"{p}_{PYDEFACE_XFM_SUFFIX}"}


# --------------------------------------------------------------------------- preprocessing
def work_dir(study: PathLike, grid: str) -> Path:
    """``STUDY/work/<grid>``: one ``<key>.npz`` per preprocessed scan."""
    return Path(study) / "work" / grid


def work_file(study: PathLike, grid: str, key: str) -> Path:
    return work_dir(study, grid) / f"{key}.npz"


def store_state(study: PathLike, grid: str) -> Path:
    """Which work files each store was assembled from (skips unchanged stores)."""
    return work_dir(study, grid) / "stores.json"


def stores_root(study: PathLike) -> Path:
    return Path(study) / "stores"


def store_dir(study: PathLike, grid: str) -> Path:
    """``STUDY/stores/<grid>``."""
    return stores_root(study) / grid


def store_index(study: PathLike, grid: str) -> Path:
    """The shared row index of a grid's stores."""
    return store_dir(study, grid) / "index.tsv"


def store_excluded(study: PathLike, grid: str) -> Path:
    """Scans left out of a grid's stores, with their reason."""
    return store_dir(study, grid) / "excluded.tsv"


def store_array(study: PathLike, grid: str, condition: str) -> Path:
    return store_dir(study, grid) / f"{condition}.npy"


def store_meta(study: PathLike, grid: str, condition: str) -> Path:
    return store_dir(study, grid) / f"{condition}.json"


def store_common_region(study: PathLike, grid: str, method: str) -> Path:
    """Where every scan's removal mask of ``method`` covers, head-placed (issue 22, ``face_placement="common"``)."""
    return store_dir(study, grid) / f"common_region-{method}_mask.nii.gz"


def store_grids(study: PathLike) -> list[str]:
    """Grids that have a store index, sorted."""
    return sorted(p.parent.name for p in stores_root(study).glob("*/index.tsv"))


def stored_conditions(study: PathLike, grid: str) -> list[str]:
    """Conditions with a finished store (its metadata file) for ``grid``, sorted."""
    return sorted(p.stem for p in store_dir(study, grid).glob("*.json") if not p.name.startswith("."))


# --------------------------------------------------------------------------- training
def runs_root(study: PathLike) -> Path:
    return Path(study) / "runs"


def condition_runs_dir(study: PathLike, condition: str) -> Path:
    return runs_root(study) / condition


def run_dir(study: PathLike, condition: str, run: int | str) -> Path:
    """``STUDY/runs/<condition>/run-<k>``: one training repetition."""
    return condition_runs_dir(study, condition) / f"run-{run}"


def run_dirs(study: PathLike, condition: str | None = None) -> list[Path]:
    """Every run directory (of one condition, or of all), sorted."""
    root = condition_runs_dir(study, condition) if condition else runs_root(study)
    pattern = "run-*" if condition else "*/run-*"
    return sorted(p for p in root.glob(pattern) if p.is_dir())


def run_of(path: PathLike) -> tuple[str, str]:
    """``(condition, run)`` of a run directory: ``runs/face-afni/run-2`` -> ``("face-afni", "2")``."""
    path = Path(path)
    return path.parent.name, path.name.removeprefix("run-")


def model_file(run: PathLike) -> Path:
    """Best weights and architecture of a run (TorchScript-free state dict)."""
    return Path(run) / "model.pt"


def checkpoint_file(run: PathLike) -> Path:
    return Path(run) / "checkpoint.pt"


def history_file(run: PathLike) -> Path:
    return Path(run) / "history.csv"


def predictions_file(run: PathLike) -> Path:
    return Path(run) / "predictions.csv"


def run_record(run: PathLike) -> Path:
    """``run.json``: settings, versions, speed and outcome of a finished run."""
    return Path(run) / "run.json"


def trained_models(study: PathLike) -> list[Path]:
    """Every finished ``model.pt`` of the study, sorted."""
    return [model_file(r) for r in run_dirs(study) if model_file(r).is_file()]


# --------------------------------------------------------------------------- results
def results_dir(study: PathLike) -> Path:
    return Path(study) / "results"


def result_file(study: PathLike, name: str) -> Path:
    """``STUDY/results/<name>`` (e.g. ``table1.csv``)."""
    return results_dir(study) / name


#: The analysis stage's result files under ``STUDY/results/``, by role.
RESULT_FILES: dict[str, str] = {
    "table1": "table1.csv",
    "metrics_per_run": "metrics_per_run.csv",
    "bias_corrected": "bias_corrected_metrics.csv",
    "subject_errors": "subject_errors.csv",
    "omnibus": "omnibus_tests.csv",
    "pairwise": "pairwise_tests.csv",
    "null_baseline": "null_baseline.csv",
    "face_signal": "face_signal.csv",
    "saliency": "saliency.csv",
    "left_out_runs": "left_out_runs.tsv",
    "summary": "analysis.json",
}


def result_table(study: PathLike, role: str) -> Path:
    """The result file of a role of :data:`RESULT_FILES` (``"table1"`` -> ``results/table1.csv``)."""
    return result_file(study, RESULT_FILES[role])


def saliency_dir(study: PathLike, grid: str) -> Path:
    """Mean Grad-CAM maps per condition (``.npy``) on ``grid``."""
    return results_dir(study) / "saliency" / grid


def saliency_map(study: PathLike, grid: str, condition: str) -> Path:
    """The mean Grad-CAM map of one condition on ``grid`` (``.npy``, the grid's shape)."""
    return saliency_dir(study, grid) / f"{condition}.npy"


def saliency_maps(study: PathLike, grid: str) -> dict[str, Path]:
    """Every saved mean Grad-CAM map on ``grid``, by condition (sorted; no hidden files)."""
    return {p.stem: p for p in sorted(saliency_dir(study, grid).glob("*.npy")) if not p.name.startswith(".")}


def figures_dir(study: PathLike) -> Path:
    return Path(study) / "figures"


#: The study's figures (``STUDY/figures/<name>.png``), in report order. ``individual_example``
#: shows one person and is drawn only on request.
FIGURES: tuple[str, ...] = ("fig1_removed_regions", "fig4_errors", "face_signal", "predicted_vs_true", "fig3_saliency", "training_curves",
                            "individual_example")


def figure_file(study: PathLike, stem: str) -> Path:
    """``STUDY/figures/<stem>.png`` (``stem`` one of :data:`FIGURES`)."""
    return figures_dir(study) / f"{stem}.png"


# --------------------------------------------------------------------------- issue 16/23: cohort data checks
def cohort_checks_table(study: PathLike) -> Path:
    """``STUDY/cohort_checks.tsv``: every rejection, warning (already defaced or skull-stripped
    input, a test split too small) and note of ``defacebench cohort``, and each checked image."""
    return Path(study) / "cohort_checks.tsv"


# --------------------------------------------------------------------------- issue 16: other contrasts, export
def applied_files(study: PathLike, scan: Scan, target: str, methods: Sequence[str] = ()) -> dict[str, Path]:
    """Files of another image ``target`` (a file name) of ``scan``'s session defaced with its removal (``--applyto``):
    ``to_t1w`` (rigid, target world -> T1w world), ``qc_png``, ``qc_tsv`` (written last), ``<m>_defaced|face|mask``."""
    prefix, _, suffix = target.removesuffix(".gz").removesuffix(".nii").rpartition("_")
    anat = scan_dir(study, scan)
    paths = {"to_t1w": anat / f"{prefix}_from-{suffix}_to-T1w_mode-image_xfm.txt",
             "qc_png": anat / f"{prefix}_desc-{suffix}deface_qc.png", "qc_tsv": anat / f"{prefix}_desc-{suffix}deface_qc.tsv"}
    for m in methods:
        paths.update({f"{m}_defaced": anat / f"{prefix}_desc-{m}defaced_{suffix}.nii.gz", f"{m}_face": anat / f"{prefix}_desc-{m}face_{suffix}.nii.gz",
                      f"{m}_mask": anat / f"{prefix}_space-{suffix}_desc-{m}_mask.nii.gz"})
    return paths


def applyto_qc_table(study: PathLike) -> Path:
    """``qc_applyto.tsv``: one row per image defaced with its session T1w's removal region."""
    return derivatives_dir(study) / "qc_applyto.tsv"


# -- issue 23: what this cohort can show -------------------------------------------------
#: Detectable MAE difference and scans needed per reported test (:mod:`defacebench.analysis.power`).
RESULT_FILES["power"] = "power.csv"

# --------------------------------------------------------------------------- issue 20: does the model use the face?
def model_ts_file(run: PathLike) -> Path:
    """A finished run's model exported as TorchScript (``model.ts``: the plain module, traced)."""
    return Path(run) / "model.ts"


EVALUATION_FILES: dict[str, str] = {"cross_condition": "cross_condition.csv", "cross_predictions": "cross_predictions.csv", "dbrainage": "dbrainage.csv",
                                    "face_ablation": "face_ablation.csv", "occlusion": "occlusion.csv"}


def evaluation_table(study: PathLike, role: str) -> Path:
    """``defacebench evaluate``'s result file of a role of :data:`EVALUATION_FILES` (figure: ``cross_condition``)."""
    return result_file(study, EVALUATION_FILES[role])


def saliency_summary_map(study: PathLike, grid: str, condition: str, which: str) -> Path:
    """``which`` = ``abs``: mean over scans of the absolute Grad-CAM map (cannot cancel); ``tercile-<k>``:
    the signed mean over the test scans of age tercile k (1 youngest .. 3)."""
    return saliency_dir(study, grid) / which / f"{condition}.npy"


def score_table(study: PathLike, name: str, role: str) -> Path:
    """``results/scores/<name>/<role>.csv``: what ``defacebench score`` wrote for model ``name`` (predictions, metrics, dbrainage)."""
    return results_dir(study) / "scores" / name / f"{role}.csv"
