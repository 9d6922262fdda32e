"""Atomic writes: a killed run never leaves a half-written file behind.

Everything is written to a temporary file in the destination's directory and then
renamed over the destination (``os.replace`` is atomic on POSIX file systems).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.

    The temporary name keeps the destination's suffixes (``.nii.gz``, ``.tsv``) so
    writers that choose a format by extension still work. On an exception the
    temporary file is removed and ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes) or ".tmp"
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name.split('.')[0]}.", suffix=".part" + suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (UTF-8) and return the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_table_atomic(path: str | Path, table, sep: str = "\t") -> Path:
    """Write a pandas DataFrame atomically as TSV (default) or CSV, without the index."""
    with atomic_path(path) as tmp:
        table.to_csv(tmp, sep=sep, index=False, na_rep="n/a" if sep == "\t" else "")
    return Path(path)
