"""Identification and detection rates: the attacker's gallery, ranks, and their confidence intervals.

The attack model (Schwarz et al. 2021): an attacker holds one picture of each person of the
cohort (the gallery) and one de-identified scan (the probe), renders the probe's head, and
ranks the gallery by face-descriptor distance. The probe is identified at rank k when its
own person is among the k nearest. The gallery picture of a person is a render of the raw
head from ANOTHER session of that person where the cohort has one (an attacker holds a
different picture, not the same scan); otherwise it is the raw render of the same scan,
which makes the rates an upper bound (a raw probe then matches itself exactly).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

__all__ = ["Gallery", "gallery_for", "descriptor_distances", "true_rank", "wilson_interval", "rate_summary"]


@dataclass(frozen=True)
class Gallery:
    """The gallery one probe scan is ranked against.

    ``scans``: for each person of the cohort (sorted), the index of the scan whose raw render
    stands for them; ``own``: the probe's own person's position in it; ``same_scan``: True
    when that picture is the probe's own scan (the person has no other session).
    """

    scans: tuple[int, ...]
    own: int
    same_scan: bool


def gallery_for(persons: Sequence[str], probe: int, sessions: Sequence[str | None] | None = None) -> Gallery:
    """The gallery for the scan at index ``probe``: every person's first scan, except the probe's
    own person, who is shown by another of their scans where there is one (one of another
    session first: another run of the same session is nearly the same picture).

    Parameters
    ----------
    persons : sequence of str
        The person (``subject``) of every scan of the cohort.
    probe : int
        Index of the probe scan in ``persons``.
    sessions : sequence, optional
        The session of every scan (same order).
    """
    order = sorted(set(persons))
    first = {p: persons.index(p) for p in order}
    own_person = persons[probe]
    others = [i for i, p in enumerate(persons) if p == own_person and i != probe]
    if sessions is not None:
        others.sort(key=lambda i: sessions[i] == sessions[probe])  # stable: other sessions first
    own_scan = others[0] if others else probe
    scans = tuple(own_scan if p == own_person else first[p] for p in order)
    return Gallery(scans, order.index(own_person), not others)


def descriptor_distances(probe: np.ndarray, gallery: np.ndarray) -> np.ndarray:
    """Mean over views of the Euclidean distance between descriptors.

    ``probe``: (views, d); ``gallery``: (people, views, d). Returns (people,).
    """
    probe = np.asarray(probe, dtype=np.float64)
    gallery = np.asarray(gallery, dtype=np.float64)
    return np.linalg.norm(gallery - probe[None], axis=-1).mean(axis=-1)


def true_rank(distances: np.ndarray, own: int, seed: int = 0) -> int:
    """Rank of the own person (1 = nearest), ties broken at random (seeded).

    An attacker who cannot tell several people apart guesses among them: a descriptor that
    is the same for everyone (a head with no face left) then ranks at chance, not at the
    best or the worst place.
    """
    distances = np.asarray(distances, dtype=np.float64)
    others = np.delete(distances, own)
    tolerance = 1e-9 * max(1.0, float(np.abs(distances).max()))
    closer = int(np.sum(others < distances[own] - tolerance))
    tied = int(np.sum(np.abs(others - distances[own]) <= tolerance))
    return 1 + closer + (int(np.random.default_rng(seed).integers(0, tied + 1)) if tied else 0)


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion (sensible at 0 and at n)."""
    if n <= 0:
        return (float("nan"), float("nan"))
    z = float(stats.norm.ppf(0.5 + confidence / 2))
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, float(centre - half)), min(1.0, float(centre + half)))


def rate_summary(hits: Sequence[bool]) -> dict[str, float]:
    """Share of True in ``hits`` with its 95 % Wilson interval (keys ``rate``, ``ci_low``, ``ci_high``, ``n``)."""
    hits = np.asarray(hits, dtype=bool)
    low, high = wilson_interval(int(hits.sum()), hits.size)
    return {"rate": float(hits.mean()) if hits.size else float("nan"), "ci_low": low, "ci_high": high, "n": int(hits.size)}
