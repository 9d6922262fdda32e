"""``defacebench score``: an external brain-age model scored on a study's raw and defaced images."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from defacebench.cli import make_parser, run_command

DESCRIPTION = """\
Run a brain-age model made elsewhere (TorchScript .pt/.ts or ONNX .onnx) on every scan of
the raw and each defaced-<method> store of STUDY, prepared as its spec says (grid and field
of view, orientation, skull-stripped or not, intensity normalisation, output scale or the
bin centres of a soft-classification model such as SFCN; see README), and write
  STUDY/results/scores/<name>/predictions.csv  one row per condition and scan
  STUDY/results/scores/<name>/metrics.csv      MAE and mean signed error per condition
  STUDY/results/scores/<name>/dbrainage.csv    per method: mean |pred(defaced) - pred(raw)|
                                               (years, bootstrap CI) and paired Wilcoxon tests
Without --input-spec the model takes the study's store grid as it is: what the study's own
runs/<condition>/run-<k>/model.ts takes.

examples:
  defacebench score study/ --model study/runs/raw/run-1/model.ts
  defacebench score study/ --model sfcn.onnx --input-spec sfcn.toml
"""


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser("score", DESCRIPTION)
    parser.add_argument("study", type=Path, help="study directory (with stores/)")
    parser.add_argument("--model", type=Path, required=True, help="TorchScript (.pt, .ts) or ONNX (.onnx) model file")
    parser.add_argument("--input-spec", type=Path, default=None, help="TOML file: what the model expects (default: the study grid, ages out)")
    parser.add_argument("--name", default=None, help="results/scores/<name>/ (default: the file's stem; <condition>-run-<k> for a run's model.ts)")
    parser.add_argument("--grid", default=None, help="store grid (default: the runs' grid, or the only one)")
    parser.add_argument("--split", default=None, choices=("train", "val", "test"), help="score only this split (default every scan)")
    parser.add_argument("--bootstrap", type=int, default=2000, metavar="N", help="bootstrap resamples (default 2000)")
    parser.add_argument("--device", default="cpu", help="torch device for TorchScript models (default cpu)")
    return parser


def _run(args: argparse.Namespace) -> int:
    from defacebench import layout
    from defacebench.analysis.model_spec import read_spec
    from defacebench.analysis.scoring import score_study
    from defacebench.io.errors import InputError

    if args.bootstrap < 100:
        raise InputError(f"--bootstrap must be at least 100, got {args.bootstrap}")
    if not args.study.is_dir():
        raise InputError("study directory not found", args.study)
    spec = read_spec(args.input_spec)
    name = args.name or default_name(args.model)
    tables = score_study(args.study, args.model, spec, grid=args.grid, split=args.split, name=name, device=args.device,
                         n_boot=args.bootstrap, log=lambda msg: print(msg, flush=True))
    for row in tables["dbrainage"].itertuples():
        print(f"dBrainAGE {row.method}: {row.mean_abs_change:.2f} years (95 % CI {row.mean_abs_change_ci_low:.2f}-{row.mean_abs_change_ci_high:.2f})")
    folder = layout.score_table(args.study, name, "predictions").parent
    print(f"wrote       {folder}", flush=True)
    return 0


def default_name(model: Path) -> str:
    """The file's stem; ``<condition>-run-<k>`` for a study's own ``runs/<condition>/run-<k>/model.ts``."""
    if model.stem == "model" and model.parent.name.startswith("run-"):
        return f"{model.parent.parent.name}-{model.parent.name}"
    return model.stem


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``defacebench score``."""
    return run_command(build_parser(), _run, argv)
