"""Sampling one subject: every random quantity drawn into a JSON-ready dict.

:func:`sample_subject` is the only place a simulated subject meets a random generator
(age, sex, base head, ageing rates, individual anatomy, acquisition); its deterministic twin
:func:`defacebench.simulate.subject.simulate_subject` turns the dict into images, so the
dict, stored beside each image, is enough to rebuild it (the TorchIO sample-then-apply
design).
"""

from __future__ import annotations

import copy

import numpy as np

from defacebench.simulate import acquisition
from defacebench.simulate.ageing import AGE_RANGE
from defacebench.simulate.identity import sample_identity

__all__ = ["AGE_DISTRIBUTIONS", "AGE_RANGE", "sample_age", "sample_session", "sample_subject"]

AGE_MEAN, AGE_SD = 74.0, 7.0
MALE_FRACTION = 0.46
ICV_LOG_SD = 0.07
MALE_ICV_LOG_OFFSET = 0.11
#: SD of the individual log-thickness offset of the facial fat pads (relative to the age norm).
FAT_OFFSET_SD = 0.015

#: Age distributions of :func:`sample_age`, both within the range the ageing rates are
#: calibrated on: ``adni`` normal(74, 7) truncated to 56-96 (the paper's kind of cohort);
#: ``uniform`` 56-96, an SD of 11.5 instead of ~7 years, so a small cohort spans the range.
AGE_DISTRIBUTIONS = ("adni", "uniform")


def sample_age(rng: np.random.Generator, distribution: str = "adni", max_age: float | None = None) -> float:
    """One age in years: ADNI-like normal(74, 7) truncated to 56-96, or uniform 56-96.

    ``max_age`` lowers the upper end (a person seen again years later must stay within the
    calibrated range at the last session).
    """
    hi = AGE_RANGE[1] if max_age is None else min(AGE_RANGE[1], float(max_age))
    if distribution == "uniform":
        return round(float(rng.uniform(AGE_RANGE[0], hi)), 1)
    if distribution != "adni":
        raise ValueError(f"unknown age distribution {distribution!r}; choose from {', '.join(AGE_DISTRIBUTIONS)}")
    while True:
        age = rng.normal(AGE_MEAN, AGE_SD)
        if AGE_RANGE[0] <= age <= hi:
            return round(float(age), 1)


def sample_subject(
    rng: np.random.Generator,
    base_heads: list[str],
    brain_ageing: float = 1.0,
    face_ageing: float = 1.0,
    age_years: float | None = None,
    ages: str = "adni",
    identity_scale: float = 1.0,
    max_age: float | None = None,
) -> dict:
    """Draw every random parameter of one subject.

    Parameters
    ----------
    rng : numpy Generator
        The subject's own generator (the draws are made in a fixed order).
    base_heads : list of str
        Heads to draw the subject's base head from.
    brain_ageing, face_ageing : float
        Multipliers of the published ageing rates (recorded, not drawn).
    age_years : float, optional
        A fixed age instead of a draw from ``ages``.
    ages : str
        One of :data:`AGE_DISTRIBUTIONS`.
    identity_scale : float
        Multiplier of the identity spreads (:mod:`~defacebench.simulate.identity`); 0 = every
        person has the base head's shape (the simulator before identity, to the byte).
    max_age : float, optional
        Upper end of the age draw (default the calibrated 96).

    Returns
    -------
    dict
        JSON-ready parameters: ``age_years``, ``sex``, ``base_head``, ``brain_ageing``,
        ``face_ageing``, ``anatomy``, ``pose``, ``fov``, ``bias``, ``intensity``,
        ``identity``. The identity is drawn last, so the other draws do not depend on it.
    """
    age = sample_age(rng, ages, max_age) if age_years is None else float(age_years)
    sex = "M" if rng.random() < MALE_FRACTION else "F"
    head = str(base_heads[int(rng.integers(len(base_heads)))])
    icv_log = rng.normal(0, ICV_LOG_SD) + (MALE_ICV_LOG_OFFSET / 2 if sex == "M" else -MALE_ICV_LOG_OFFSET / 2)
    axis_jitter = rng.normal(0, 0.015, 3)
    params = {
        "age_years": age,
        "sex": sex,
        "base_head": head,
        "brain_ageing": {
            "strength": float(brain_ageing),
            "rate_multiplier": float(np.exp(rng.normal(0, 0.3))),
            "reserve": float(rng.normal(0, 0.055)),
            "lesion_seed": int(rng.integers(2**31)),
        },
        "face_ageing": {
            "strength": float(face_ageing),
            "rate_multiplier": float(np.exp(rng.normal(0, 0.3))),
            "fat_offset": float(rng.normal(0, FAT_OFFSET_SD)),
        },
        "anatomy": {
            "head_scale": [float(np.exp(icv_log / 3 + j)) for j in axis_jitter],
            "deformation_mm": float(rng.uniform(0.5, 1.5)),
            "deformation_seed": int(rng.integers(2**31)),
        },
        "pose": acquisition.sample_pose(rng),
        "fov": acquisition.sample_fov(rng),
        "bias": acquisition.sample_bias(rng),
        "intensity": acquisition.sample_intensity(rng),
    }
    params["identity"] = sample_identity(rng, identity_scale)
    return params


def sample_session(params: dict, rng: np.random.Generator, age_years: float) -> dict:
    """The same person seen again at ``age_years``: a copy of ``params`` (identity, ageing
    rates, anatomy, lesion pattern kept) with new pose, field of view, bias and intensity draws."""
    out = copy.deepcopy(params)
    out["age_years"] = round(float(age_years), 1)
    out["pose"] = acquisition.sample_pose(rng)
    out["fov"] = acquisition.sample_fov(rng)
    out["bias"] = acquisition.sample_bias(rng)
    out["intensity"] = acquisition.sample_intensity(rng)
    return out
