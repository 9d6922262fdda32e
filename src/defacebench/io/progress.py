"""Progress bars on stderr that suit both a terminal and a log file."""

from __future__ import annotations

import sys
from typing import Any

#: Seconds between redraws when stderr is a file (a SLURM log, ``make demo > log``).
LOG_INTERVAL_S = 30.0


def progress_bar(total: int, desc: str, unit: str, initial: int = 0, enabled: bool = True) -> Any:
    """A tqdm bar on stderr.

    In a terminal it redraws as usual; when stderr is a file it redraws at most every
    :data:`LOG_INTERVAL_S` seconds (and at the end), so long cohorts leave a readable log
    instead of one line per subject or epoch.
    """
    from tqdm.auto import tqdm

    interactive = sys.stderr.isatty()
    return tqdm(total=total, initial=initial, desc=desc, unit=unit, disable=not enabled, dynamic_ncols=interactive,
                file=sys.stderr, leave=True, mininterval=0.1 if interactive else LOG_INTERVAL_S)
