"""The project's exception types.

Every failure a user can cause raises :class:`InputError` (exit code 2, one line on
stderr); anything else is an internal error (exit code 1).
"""

from __future__ import annotations

import warnings
from pathlib import Path


class DefacebenchError(Exception):
    """Base class of every error defacebench raises on purpose."""


class InputError(DefacebenchError):
    """Bad input from the user: a path, an option, a file's content.

    Parameters
    ----------
    reason : str
        What is wrong, in one line.
    path : str or Path, optional
        The offending file or directory, printed before the reason.
    """

    def __init__(self, reason: str, path: str | Path | None = None) -> None:
        self.reason = reason
        self.path = None if path is None else Path(path)
        super().__init__(reason if path is None else f"{path}: {reason}")


class ImageError(InputError):
    """An image that cannot be used: unreadable, wrong shape, non-finite, empty..."""


class StageError(DefacebenchError):
    """A processing step failed for one subject (registration, brain extraction...).

    Recorded per subject in ``failures.tsv``; the rest of the cohort goes on.
    """


def warning_line(message: Warning | str, category: type[Warning], filename: str, lineno: int) -> str:
    """``warning: <message>`` for our notes (UserWarning); category and place for the rest."""
    if category is UserWarning:
        return f"warning: {message}"
    return f"{category.__name__}: {message} ({Path(filename).name}:{lineno})"


def _one_line(message: Warning | str, category: type[Warning], filename: str, lineno: int, line: str | None = None) -> str:
    return warning_line(message, category, filename, lineno) + "\n"


def one_line_warnings() -> None:
    """Print warnings as one line each (``warning: sub-01 afni: ...``), without source code.

    A subject's QC notes are warnings; a user needs the note, not the line of our code
    that raised it. Installed by the CLI and in every worker process.
    """
    warnings.formatwarning = _one_line
