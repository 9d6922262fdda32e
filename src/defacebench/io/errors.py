"""The project's exception types.

Every failure a user can cause raises :class:`InputError` (exit code 2, one line on
stderr); anything else is an internal error (exit code 1).
"""

from __future__ import annotations

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
