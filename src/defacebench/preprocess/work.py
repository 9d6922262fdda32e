"""Per-scan work files: every condition of one preprocessed scan on one grid, in one ``.npz``.

A work file holds the scan's grid images (float16) and a JSON metadata record with a
fingerprint of its inputs (file names, sizes, mtimes, grid, settings): a rerun skips a scan
whose fingerprint still matches, and redoes it when an input changed. Files are written
atomically, so a killed run leaves either the old file or none.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import numpy as np

from defacebench.imaging.grids import Grid
from defacebench.io.atomic import atomic_path

#: Bump when per-scan outputs change meaning (invalidates ``work/`` files).
WORK_VERSION = 1


def fingerprint(grid: Grid, bias_resolution_mm: float, paths: dict[str, Path]) -> str:
    """Hash of the inputs (name, size, mtime), grid and settings: a changed input redoes the scan."""
    h = hashlib.sha256()
    items = {
        "version": WORK_VERSION,
        "grid": grid.to_dict(),
        "bias_resolution_mm": bias_resolution_mm,
        "files": {name: [p.name, p.stat().st_size, p.stat().st_mtime_ns] for name, p in sorted(paths.items())},
    }
    h.update(json.dumps(items, sort_keys=True).encode())
    return h.hexdigest()[:16]


def read_work_meta(path: str | Path) -> dict | None:
    """The metadata of a finished work file, or None when absent or unreadable."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            return json.loads(str(npz["meta"]))
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError):
        return None


def read_work_image(path: str | Path, condition: str) -> np.ndarray:
    """One condition's grid image (float16) from a work file."""
    with np.load(path, allow_pickle=False) as npz:
        return npz[condition]


def write_work(path: Path, images: dict[str, np.ndarray], meta: dict) -> None:
    """Write images + metadata as one compressed .npz, atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, meta=np.array(json.dumps(meta)), **images)
