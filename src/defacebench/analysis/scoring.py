"""Score an external brain-age model (TorchScript or ONNX) on a study's raw and defaced conditions.

The question a consortium asks when it starts defacing: a brain-age model trained on full
heads elsewhere (or downloaded) is given our defaced images; how far do its predictions
move? :func:`score_study` runs the model, prepared as its spec says
(:mod:`defacebench.analysis.model_spec`), on every scan of the ``raw`` and each
``defaced-<method>`` store of a grid, and writes under ``results/scores/<name>/``:
``predictions.csv`` (one row per condition and scan), ``metrics.csv`` (MAE and mean signed
error per condition: the store's ages are known) and ``dbrainage.csv`` (per method: mean
``|pred(defaced) - pred(raw)|`` with a bootstrap CI and the paired tests of
:func:`defacebench.analysis.crosseval.dbrainage_table`).

A model whose input shape does not match its spec, an unreadable file, and an output that
is not one age per image are :class:`~defacebench.io.errors.InputError` (one line, exit 2).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from defacebench import layout
from defacebench.analysis import crosseval
from defacebench.analysis.inputs import resolve_grid
from defacebench.analysis.model_spec import ModelSpec, prepare
from defacebench.conditions import condition_kind
from defacebench.io.atomic import write_table_atomic
from defacebench.io.errors import InputError
from defacebench.io.store import list_conditions, open_condition

#: Model file suffixes and their runtime.
FORMATS: dict[str, str] = {".pt": "torchscript", ".ts": "torchscript", ".onnx": "onnx"}

Runner = Callable[[np.ndarray], np.ndarray]


def load_external(path: str | Path, device: str = "cpu") -> tuple[Runner, tuple | None]:
    """``(run, input_shape)``: a function from a float32 batch ``(B, 1, X, Y, Z)`` to the raw
    output array, and the input shape the file declares (ONNX; None for TorchScript)."""
    path = Path(path)
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        raise InputError(f"unknown model format {path.suffix!r}: use TorchScript (.pt, .ts) or ONNX (.onnx)", path)
    if not path.is_file():
        raise InputError("model file not found", path)
    if kind == "onnx":
        try:
            import onnxruntime as ort
        except ImportError:
            raise InputError("scoring an ONNX model needs onnxruntime (pip install onnxruntime)", path) from None
        try:
            session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise InputError(f"unreadable ONNX model ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})", path) from None
        name = session.get_inputs()[0].name
        return (lambda x: session.run(None, {name: x})[0]), tuple(session.get_inputs()[0].shape)
    import torch

    try:
        module = torch.jit.load(str(path), map_location=device).eval()
    except Exception as exc:  # noqa: BLE001 - torch raises RuntimeError, ValueError...
        raise InputError(f"unreadable TorchScript model ({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''})", path) from None

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(x).to(device)).float().cpu().numpy()

    return run, None


def check_declared_shape(declared: tuple | None, shape: tuple[int, ...], path: Path) -> None:
    """InputError when an ONNX input's fixed dimensions disagree with ``(B, 1, *shape)``."""
    if declared is None:
        return
    wanted = (None, 1, *shape)
    if len(declared) != len(wanted) or any(isinstance(d, int) and w is not None and d != w for d, w in zip(declared, wanted)):
        raise InputError(f"model input shape {list(declared)} does not match the spec's (batch, 1, {', '.join(map(str, shape))})", path)


def predict_condition(run: Runner, spec: ModelSpec, images: np.ndarray, brain: np.ndarray | None, rows: np.ndarray, affine: np.ndarray, path: Path) -> np.ndarray:
    """Ages of ``images[rows]`` (rows in order, ``brain`` the skullstripped store or None)."""
    ages = []
    for start in range(0, len(rows), spec.batch_size):
        batch = np.asarray(rows[start : start + spec.batch_size])
        x = prepare(images[batch], None if brain is None else brain[batch], spec, affine)
        try:
            output = run(x)
        except Exception as exc:  # noqa: BLE001 - shape errors come as RuntimeError (torch) or onnxruntime's own types
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise InputError(f"model rejected input of shape {list(x.shape)} made by its spec ({first})", path) from None
        ages.append(spec.ages(output, len(batch)))
    return np.concatenate(ages) if ages else np.zeros(0)


def score_study(study_dir: str | Path, model_path: str | Path, spec: ModelSpec, grid: str | None = None, split: str | None = None,
                name: str | None = None, device: str = "cpu", n_boot: int = 2000, seed: int = 0,
                log: Callable[[str], None] | None = None) -> dict[str, pd.DataFrame]:
    """Score ``model_path`` on the raw and every defaced store of ``grid``; write and return the tables.

    ``split`` limits the scans to one split (default: every scan; an external model was
    trained on none of them). ``name`` names ``results/scores/<name>/`` (default the file's stem).
    """
    study_dir, model_path = Path(study_dir), Path(model_path)
    grid = resolve_grid(study_dir, grid)
    if grid is None or not layout.store_index(study_dir, grid).is_file():
        raise InputError("no condition stores to score on (run `defacebench preprocess` first)", layout.stores_root(study_dir))
    stored = list_conditions(study_dir, grid)
    conditions = [c for c in stored if c == "raw" or condition_kind(c) == "defaced"]
    if "raw" not in conditions:
        raise InputError(f"no raw store on grid {grid!r}: dBrainAGE needs the raw images", layout.store_dir(study_dir, grid))
    if spec.skull_stripped and "skullstripped" not in stored:
        raise InputError(f"the spec asks for skull-stripped input but grid {grid!r} has no skullstripped store (its brain masks)", layout.store_dir(study_dir, grid))
    run, declared = load_external(model_path, device)
    raw = open_condition(study_dir, grid, "raw")
    check_declared_shape(declared, spec.affine(raw.affine, raw.images.shape[1:])[1], model_path)
    brain = open_condition(study_dir, grid, "skullstripped").images if spec.skull_stripped else None
    rows = np.arange(len(raw.index)) if split is None else raw.rows(split)
    index = raw.index.iloc[rows]
    tables = []
    for condition in conditions:
        store = open_condition(study_dir, grid, condition)
        predicted = predict_condition(run, spec, store.images, brain, rows, store.affine, model_path)
        tables.append(pd.DataFrame({"train_condition": "external", "run": "1", "test_condition": condition, "participant_id": index["participant_id"].to_numpy(),
                                    "session_id": index["session_id"].to_numpy(), "bids_run": index["run"].to_numpy(), "split": index["split"].to_numpy(),
                                    "age": index["age"].to_numpy(float), "predicted_age": predicted}))
        if log:
            log(f"score: {condition}: {len(rows)} scans, MAE {np.mean(np.abs(predicted - tables[-1]['age'].to_numpy())):.2f} years")
    predictions = pd.concat(tables, ignore_index=True)
    metrics = crosseval.cross_condition_table(predictions).drop(columns=["train_condition", "run", "matched"]).rename(columns={"test_condition": "condition"})
    dbrainage = crosseval.dbrainage_table(predictions.drop(columns=["split"]), n_boot, seed, head_kinds=None)
    dbrainage = dbrainage.drop(columns=["train_condition", "run"]) if len(dbrainage) else dbrainage
    shown = predictions.drop(columns=["train_condition", "run"]).rename(columns={"test_condition": "condition"})
    out = {"predictions": shown, "metrics": metrics, "dbrainage": dbrainage}
    label = name or model_path.stem
    for role, table in out.items():
        write_table_atomic(layout.score_table(study_dir, label, role), table, sep=",")
    return out
