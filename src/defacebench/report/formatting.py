"""Numbers, p-values and tables as HTML, and the reading of the tables the report shows.

Every helper returns HTML-safe text: values are escaped, missing numbers are shown as '–'.
"""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np
import pandas as pd


def fmt(value: object, digits: int = 2) -> str:
    """A number with ``digits`` decimals; '–' for missing values."""
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "–"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    try:
        return f"{float(value):.{digits}f}"
    except (TypeError, ValueError):
        return html.escape(str(value))


def fmt_p(p: object) -> str:
    """p-values: three significant digits, ``< 0.001`` below that."""
    try:
        p = float(p)
    except (TypeError, ValueError):
        return "–"
    if not np.isfinite(p):
        return "–"
    return "&lt; 0.001" if p < 0.001 else f"{p:.3f}"


def html_table(table: pd.DataFrame, formats: dict[str, object] | None = None) -> str:
    """A DataFrame as an HTML table; ``formats`` maps a column to digits or a function."""
    formats = formats or {}
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in table.columns)
    rows = []
    for _, row in table.iterrows():
        cells = []
        for column in table.columns:
            spec = formats.get(column, 2)
            value = row[column]
            cells.append(f"<td>{spec(value) if callable(spec) else (fmt(value, spec) if not isinstance(value, str) else html.escape(value))}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def read_csv(path: Path) -> pd.DataFrame | None:
    """A result table (comma-separated, ``run`` as text); None when absent or unreadable."""
    if not path.is_file():
        return None
    try:
        return pd.read_csv(path, keep_default_na=True, dtype={"run": str})
    except (pd.errors.EmptyDataError, pd.errors.ParserError):
        return None


def read_tsv(path: Path) -> pd.DataFrame | None:
    """A BIDS-style TSV, every column as text; None when absent or unreadable."""
    if not path.is_file():
        return None
    try:
        return pd.read_csv(path, sep="\t", keep_default_na=False, dtype=str)
    except (pd.errors.EmptyDataError, pd.errors.ParserError):
        return None
