"""Model-ready condition stores: one memory-mapped float16 array per condition.

Layout under a study directory (paths from :mod:`defacebench.layout`)::

    stores/<grid>/index.tsv            row -> participant_id, session_id, run, age, split
    stores/<grid>/<condition>.npy      float16, shape (N, X, Y, Z), row i = index row i
    stores/<grid>/<condition>.json     shape, dtype, grid affine, checksum, index checksum,
                                       row_crc32 (one CRC-32 per row)

Every condition of a grid shares one index, so row ``i`` is the same scan in every
condition (the errors are repeated measures). The checksum (sha256 of the whole array)
names a store's version: a run records it and a changed store starts the run over. The
per-row CRC-32s are what a reader verifies: :func:`open_condition` checks every row
before it hands the store out (zlib's CRC-32 runs at several GB/s, so a paper-size store
verifies in about a second; docs/preprocessing.md), and a store written before the
per-row CRCs existed is checked against its whole-array checksum instead. A process
verifies each store file once (same path, size, mtime and inode).
"""

from __future__ import annotations

import hashlib
import json
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from defacebench import layout
from defacebench.io.atomic import atomic_path, write_table_atomic, write_text_atomic
from defacebench.io.errors import InputError

INDEX_COLUMNS: tuple[str, ...] = ("participant_id", "session_id", "run", "age", "split")
STORE_DTYPE = np.float16


def index_checksum(index: pd.DataFrame) -> str:
    """Checksum of the index table (row order, ids, ages, splits)."""
    text = index.loc[:, list(INDEX_COLUMNS)].astype(str).to_csv(sep="\t", index=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _array_checksum(array: np.ndarray) -> str:
    h = hashlib.sha256()
    for row in array:
        h.update(np.ascontiguousarray(row).tobytes())
    return h.hexdigest()[:16]


def row_crc32(row: np.ndarray) -> int:
    """CRC-32 of one stored row's bytes (as written: float16, C order)."""
    return zlib.crc32(memoryview(np.ascontiguousarray(row)).cast("B"))


def bad_rows(images: np.ndarray, crcs: list[int]) -> list[int]:
    """Rows of ``images`` whose CRC-32 differs from ``crcs`` (all rows are read once)."""
    return [i for i in range(len(images)) if row_crc32(images[i]) != int(crcs[i])]


#: Store files this process has verified: ``(path, size, mtime_ns, inode)``.
_VERIFIED: set[tuple[str, int, int, int]] = set()


def _file_key(path: Path) -> tuple[str, int, int, int]:
    st = os.stat(path)
    return (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino)


def verify_store(images: np.ndarray, meta: dict, array_path: Path, condition: str) -> None:
    """Check a store's data against what was recorded when it was written.

    Raises
    ------
    InputError
        Naming the file, the first bad rows and what to rerun.
    """
    key = _file_key(array_path)
    if key in _VERIFIED:
        return
    crcs = meta.get("row_crc32")
    if crcs is not None and len(crcs) != len(images):
        bad = ["count"]
    elif crcs is not None:
        bad = bad_rows(images, crcs)
    else:  # written before per-row CRCs: the whole-array checksum
        bad = [] if _array_checksum(images) == meta["checksum"] else ["whole array"]
    if bad:
        where = f"row(s) {', '.join(map(str, bad[:5]))}{' ...' if len(bad) > 5 else ''}" if isinstance(bad[0], int) else bad[0]
        raise InputError(f"store {condition!r} is corrupt ({where} do not match the checksums written with it); rerun `defacebench preprocess`", array_path)
    _VERIFIED.add(key)


def write_index(study_dir: str | Path, grid: str, index: pd.DataFrame) -> Path:
    """Write the shared row index of a grid's stores (atomic)."""
    missing = set(INDEX_COLUMNS) - set(index.columns)
    if missing:
        raise ValueError(f"store index lacks columns {sorted(missing)}")
    return write_table_atomic(layout.store_index(study_dir, grid), index.reset_index(drop=True))


def read_index(study_dir: str | Path, grid: str) -> pd.DataFrame:
    """Read ``stores/<grid>/index.tsv``."""
    path = layout.store_index(study_dir, grid)
    if not path.is_file():
        raise InputError("no condition stores here (run `defacebench preprocess` first)", path)
    return pd.read_csv(path, sep="\t", dtype={"participant_id": str, "session_id": str, "run": str}, keep_default_na=False)


def write_condition(
    study_dir: str | Path,
    grid: str,
    condition: str,
    rows: "np.ndarray | list[np.ndarray]",
    index: pd.DataFrame,
    affine: np.ndarray,
) -> Path:
    """Write one condition's array (float16, rows in index order) and its metadata, atomically.

    ``rows`` is an ``(N, X, Y, Z)`` array or a sequence of N ``(X, Y, Z)`` arrays
    (written one at a time, so the whole store never needs to sit in memory).
    """
    if len(rows) != len(index):
        raise ValueError(f"{condition}: {len(rows)} images for {len(index)} index rows")
    shape = (len(rows), *np.shape(rows[0]))
    path = layout.store_array(study_dir, grid, condition)
    h = hashlib.sha256()
    crcs: list[int] = []
    with atomic_path(path) as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=STORE_DTYPE, shape=shape)
        for i, row in enumerate(rows):
            out[i] = np.asarray(row, dtype=np.float32).astype(STORE_DTYPE)
            h.update(np.ascontiguousarray(out[i]).tobytes())
            crcs.append(row_crc32(out[i]))
        out.flush()
        del out
    meta = {
        "condition": condition,
        "grid": grid,
        "shape": list(shape),
        "dtype": np.dtype(STORE_DTYPE).name,
        "affine": np.asarray(affine, dtype=float).tolist(),
        "checksum": h.hexdigest()[:16],
        "index_checksum": index_checksum(index),
        "row_crc32": crcs,
    }
    write_text_atomic(layout.store_meta(study_dir, grid, condition), json.dumps(meta, indent=2) + "\n")
    return path


@dataclass
class ConditionStore:
    """A memory-mapped condition array with its index and metadata."""

    condition: str
    grid: str
    images: np.ndarray  # (N, X, Y, Z) float16, memory-mapped read-only
    index: pd.DataFrame
    affine: np.ndarray
    checksum: str

    def rows(self, split: str) -> np.ndarray:
        """Row numbers of one split (``train``, ``val`` or ``test``)."""
        return np.flatnonzero(self.index["split"].to_numpy() == split)

    @property
    def ages(self) -> np.ndarray:
        return self.index["age"].to_numpy(dtype=np.float32)


def list_conditions(study_dir: str | Path, grid: str) -> list[str]:
    """Conditions that have a finished store for ``grid``."""
    return layout.stored_conditions(study_dir, grid)


def open_condition(study_dir: str | Path, grid: str, condition: str, verify: bool = True) -> ConditionStore:
    """Open a condition store without loading it into memory.

    With ``verify`` (the default) every row is checked against the CRC-32 recorded when
    it was written (:func:`verify_store`), once per process and file; pass
    ``verify=False`` only right after writing the store.

    Raises
    ------
    InputError
        When the store is missing, truncated, its index changed since it was written
        (stale), or (with ``verify``) its content does not match its checksums.
    """
    meta_path = layout.store_meta(study_dir, grid, condition)
    if not meta_path.is_file():
        raise InputError(f"no store for condition {condition!r} on grid {grid!r}", meta_path)
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"unreadable store metadata ({exc}); rerun `defacebench preprocess`", meta_path) from None
    index = read_index(study_dir, grid)
    if index_checksum(index) != meta["index_checksum"]:
        raise InputError(f"store {condition!r} is stale: index.tsv changed since it was written; rerun preprocess", meta_path)
    array_path = layout.store_array(study_dir, grid, condition)
    try:
        images = np.load(array_path, mmap_mode="r")
    except (OSError, ValueError) as exc:  # missing, truncated below its header's size, bad header
        raise InputError(f"store {condition!r} is unreadable or truncated ({exc}); rerun `defacebench preprocess`", array_path) from None
    if list(images.shape) != meta["shape"]:
        raise InputError(f"store {condition!r} has shape {images.shape}, metadata says {meta['shape']}", meta_path)
    if verify:
        verify_store(images, meta, array_path, condition)
    return ConditionStore(condition, grid, images, index, np.array(meta["affine"]), meta["checksum"])
