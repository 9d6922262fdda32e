"""File fingerprints recorded when a file is written and checked when it is read back.

A run records the sha256 of its ``model.pt`` and ``predictions.csv`` in ``run.json``;
analysis and saliency check them before they trust the files (a truncated or
overwritten model, or predictions edited after training, are refused with the reason).
"""

from __future__ import annotations

import hashlib
from pathlib import Path


def file_sha256(path: str | Path, chunk_bytes: int = 1 << 22) -> str:
    """Hex sha256 of a file's bytes (read in 4 MiB chunks)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(chunk_bytes):
            h.update(chunk)
    return h.hexdigest()


def file_mismatch(path: str | Path, expected: str | None) -> str | None:
    """Why ``path`` does not match the recorded ``expected`` sha256, or None when it does.

    ``expected`` None (a record written before fingerprints existed) is not checked.
    """
    path = Path(path)
    if expected is None:
        return None
    if not path.is_file():
        return f"{path.name} is missing"
    if file_sha256(path) != expected:
        return f"{path.name} does not match the sha256 recorded in run.json (changed or corrupt since training)"
    return None
