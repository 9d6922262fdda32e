"""Training profiles: every science setting of a training run, named.

``paper`` is the seed study's set-up exactly where the paper is specific (architecture,
Adam, lr 1e-4, exponential decay rate 1e-4, MSE, batch 4, up to 100 epochs, random
rotation, early stopping) and explicit where it is not (head, patience, decay schedule:
see docs/training.md). ``cpu`` is the same architecture family on the 4 mm store, average-pooled to
8 mm at the input, with 1/8 of the widths and at most 30 epochs, sized so the demo trains a
condition in seconds on two CPU cores.

A profile holds only what decides a run's numbers; how fast they are computed is
:class:`defacebench.model.accel.settings.SpeedSettings`. A saved run (``run.json``,
``checkpoint.pt``) is the same run when its science settings are (:func:`same_profile`),
so a speed setting added, removed or changed never makes a finished run stale.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from defacebench.io.errors import InputError


@dataclass(frozen=True)
class TrainProfile:
    """Science settings of one training run.

    The learning rate at optimiser step ``t`` (0-based, counted over all epochs) is
    ``learning_rate * exp(-lr_decay_rate * t)``: exponential decay applied after every
    batch (``ExponentialLR`` with ``gamma = exp(-lr_decay_rate)`` stepped per batch).
    Run ``k`` (1-based) uses seed ``seed + k``.
    """

    name: str
    grid: str
    widths: tuple[int, int, int] = (128, 64, 64)
    width_multiplier: float = 1.0
    head: str = "flatten"
    input_pool: int = 1  # average-pool the store's grid by this factor first (1: none, the paper's)
    batch_size: int = 4
    max_epochs: int = 100
    patience: int = 10
    learning_rate: float = 1e-4
    lr_decay_rate: float = 1e-4
    rotation_deg: float = 10.0
    eval_batch_size: int = 16
    seed: int = 0

    def to_dict(self) -> dict[str, object]:
        """Plain values only (``widths`` as a list), for ``run.json`` and ``checkpoint.pt``."""
        data = dataclasses.asdict(self)
        data["widths"] = list(self.widths)
        return data

    def describe(self) -> str:
        """One line with every setting."""
        return "profile " + ", ".join(f"{k}={v}" for k, v in dataclasses.asdict(self).items())


#: Names of the science settings.
PROFILE_FIELDS: frozenset[str] = frozenset(f.name for f in dataclasses.fields(TrainProfile))

PROFILES: dict[str, TrainProfile] = {
    "paper": TrainProfile(name="paper", grid="mni2mm"),
    "cpu": TrainProfile(
        name="cpu",
        grid="mni4mm",
        width_multiplier=0.125,
        input_pool=2,
        # on a 100-scan simulated store 6 epochs learned nothing and 40 nearly converged
        # (docs/training.md): 30 keeps a demo condition to seconds
        max_epochs=30,
        patience=8,
        learning_rate=3e-3,
    ),
}


def get_profile(name: str, **overrides: object) -> TrainProfile:
    """A named profile with some fields replaced (``None`` values are ignored)."""
    if name not in PROFILES:
        raise InputError(f"unknown training profile {name!r}; choose from {', '.join(PROFILES)}")
    changes = {k: v for k, v in overrides.items() if v is not None}
    unknown = set(changes) - PROFILE_FIELDS
    if unknown:
        raise InputError(f"unknown training setting(s): {', '.join(sorted(unknown))}")
    return dataclasses.replace(PROFILES[name], **changes)


def profile_from_dict(data: dict[str, object]) -> TrainProfile:
    """Rebuild a profile from a saved dict (:meth:`TrainProfile.to_dict`, or the flat
    profile of earlier versions that also held the speed settings).

    Keys that are not science settings are ignored (speed settings, and settings since
    removed); science settings added since the dict was written take their defaults, so
    runs of an older version still count as the same profile.
    """
    values = {k: v for k, v in data.items() if k in PROFILE_FIELDS}
    values["widths"] = tuple(values.get("widths", TrainProfile.widths))  # type: ignore[arg-type]
    return TrainProfile(**values)  # type: ignore[arg-type]


def same_profile(saved: object, profile: TrainProfile) -> bool:
    """Whether a saved profile dict (``run.json`` ``config``, a checkpoint's ``profile``)
    has the science settings of ``profile``."""
    if not isinstance(saved, dict):
        return False
    try:
        return profile_from_dict(saved) == profile
    except (TypeError, KeyError, ValueError):
        return False
