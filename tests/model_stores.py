"""Tiny synthetic condition stores for the model and training tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from defacebench.io.store import write_condition, write_index

#: A 4 mm-like affine (distinct axis sizes below, so axis mix-ups fail loudly).
STORE_AFFINE = np.array([[-4.0, 0, 0, 90], [0, 4.0, 0, -126], [0, 0, 4.0, -72], [0, 0, 0, 1]])


def blob_images(ages: np.ndarray, shape: tuple[int, int, int], planted: bool, seed: int) -> np.ndarray:
    """One soft ball per scan; its radius grows with age when ``planted``, else is random."""
    rng = np.random.default_rng(seed)
    lo, hi = 2.0, min(shape) / 2 - 2.0
    frac = (ages - 50.0) / 40.0 if planted else rng.uniform(0, 1, len(ages))
    radius = lo + (hi - lo) * np.clip(frac, 0, 1)
    grid = np.indices(shape, dtype=np.float32)
    out = np.empty((len(ages), *shape), dtype=np.float32)
    for i, r in enumerate(radius):
        centre = (np.array(shape) - 1) / 2 + rng.uniform(-1.5, 1.5, 3)
        dist = np.sqrt(sum((g - c) ** 2 for g, c in zip(grid, centre)))
        out[i] = 1.0 / (1.0 + np.exp((dist - r) / 0.7)) + rng.normal(0, 0.05, shape)
    return out


def make_blob_store(
    study: Path,
    n: int = 120,
    shape: tuple[int, int, int] = (20, 24, 22),
    planted: bool = True,
    grid: str = "tiny",
    conditions: tuple[str, ...] = ("raw",),
    seed: int = 0,
) -> Path:
    """A store with ``n`` scans (60/20/20 % train/val/test), ages uniform in 50..90."""
    rng = np.random.default_rng(seed)
    ages = np.round(rng.uniform(50, 90, n), 1)
    split = np.array(["train"] * int(0.6 * n) + ["val"] * int(0.2 * n) + ["test"] * (n - int(0.6 * n) - int(0.2 * n)))
    index = pd.DataFrame(
        {
            "participant_id": [f"sub-{i:03d}" for i in range(n)],
            "session_id": ["ses-1" if i % 2 else "" for i in range(n)],
            "run": ["" for _ in range(n)],
            "age": ages,
            "split": split,
        }
    )
    write_index(study, grid, index)
    for k, condition in enumerate(conditions):
        write_condition(study, grid, condition, blob_images(ages, shape, planted, seed + 1 + k), index, STORE_AFFINE)
    return study
