"""``defacebench privacy``'s work: every scan in parallel, then the cohort's tables.

Writes ``results/privacy.csv`` (per method: detection, rank-1 and rank-5 identification with
95 % CIs, chance, the residual face), ``results/privacy_scans.csv`` (per scan and method) and
``results/privacy_residual.csv`` (per method and facial region). A failed scan is recorded in
``failures.tsv`` (stage ``privacy``) and left out; the rest goes on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd

from defacebench import layout
from defacebench.engine import run_tasks, write_failures
from defacebench.io.atomic import write_table_atomic
from defacebench.privacy.scan import PrivacyScan, PrivacyTask, load_features, privacy_scan
from defacebench.privacy.summary import method_table, residual_table, scan_rows

__all__ = ["run_privacy", "summarise_privacy"]


def run_privacy(study: str | Path, scans: Sequence[PrivacyScan], methods: Sequence[str], *, labels: dict[str, Path] | None = None,
                jobs: int | None = 1, scheduler: str | None = None, progress: bool = True, write_renders: bool = True,
                estimate: Callable | None = None) -> pd.DataFrame:
    """Run the privacy measurement of ``scans`` for ``methods``; write and return the per-method table.

    Parameters
    ----------
    study : path
        The study directory (the deface stage's outputs are read from it).
    scans : sequence of PrivacyScan
    methods : sequence of str
        De-identification methods whose outputs are rendered (besides the raw and the skull-stripped head).
    labels : dict, optional
        Scan key -> ground-truth label image of a simulated scan (refines the residual face's regions).
    jobs, scheduler, progress, estimate
        As :func:`defacebench.engine.run_tasks`.
    write_renders : bool
        Also write each head's renders as PNG under the derivatives (they show faces).
    """
    study = Path(study)
    labels = labels or {}
    tasks = [PrivacyTask(study, s, tuple(methods), labels.get(s.key), write_renders) for s in scans]
    results = run_tasks(privacy_scan, tasks, keys=[t.scan.key for t in tasks], jobs=jobs, scheduler=scheduler, stage="privacy",
                        progress=progress, unit="scan", estimate=estimate)
    write_failures(layout.failures_table(study), results.failures, stage="privacy")
    failed = {f.key for f in results.failures}
    return summarise_privacy(study, [s for s in scans if s.key not in failed], methods)


def summarise_privacy(study: str | Path, scans: Sequence[PrivacyScan], methods: Sequence[str]) -> pd.DataFrame:
    """Build the three privacy tables from the scans' features files."""
    features = {}
    for scan in scans:
        f = load_features(layout.privacy_features(study, scan))
        if f is not None and set(methods) <= set(f["methods"].tolist()):
            features[scan.key] = f
    persons = {s.key: s.subject for s in scans}
    rows = scan_rows(features, persons, {s.key: s.session for s in scans})
    heads = [layout.RAW_LABEL, *methods, "skullstripped"]
    table = method_table(rows, heads)
    residual = residual_table(features)
    if not residual.empty:
        share = residual.groupby("method").apply(lambda g: g["left_mm2"].sum() / g["skin_mm2"].sum() if g["skin_mm2"].sum() else float("nan"),
                                                 include_groups=False)
        table["face_left_share"] = table["method"].map(share)
        for region, sub in residual.groupby("region"):
            table[f"left_{region}"] = table["method"].map(sub.set_index("method")["left_share"])
    write_table_atomic(layout.privacy_table(study), table, sep=",")
    write_table_atomic(layout.privacy_scan_table(study), rows, sep=",")
    write_table_atomic(layout.privacy_residual_table(study), residual, sep=",")
    return table
