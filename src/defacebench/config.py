"""Study presets as plain dataclasses, loadable from TOML.

A preset names everything a study run needs so the same command reproduces the same
study: which defacers, which conditions, which grid, the split, the training profile.
Later stages read their own section; unknown keys are an error so typos surface.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from defacebench.conditions import DEFACERS, FACE_PLACEMENTS, PAPER_METHODS, REFACERS, condition_names
from defacebench.io.errors import InputError


#: Values of ``StudyConfig.privacy_scans``.
PRIVACY_SCANS = ("all", "test", "none")


@dataclass
class StudyConfig:
    """Everything that defines one study run."""

    name: str = "paper"
    #: the paper's four defacers, then the refacers (issue 18) for their refaced heads alone
    methods: tuple[str, ...] = (*PAPER_METHODS, *REFACERS)
    conditions: tuple[str, ...] = field(default_factory=lambda: (*condition_names(PAPER_METHODS), *(f"defaced-{m}" for m in REFACERS)))
    grid: str = "mni2mm"
    split_fractions: tuple[float, float, float] = (0.70, 0.20, 0.10)
    seed: int = 0
    runs: int = 3
    #: Training runs of the face-only conditions and their geometry controls (None: ``runs``).
    #: Their claim rests on the ensemble of runs, and one CPU run reorders the face-only
    #: methods from run to run (docs/analysis.md), so the demo trains them more often.
    face_runs: int | None = None
    profile: str = "paper"
    #: How face-only images and their geometry controls go to the grid: ``brain`` (the scan's
    #: brain registration, as the paper), ``head`` (pydeface's whole-head registration,
    #: which does not follow atrophy), ``cut`` (each method's by the registration that
    #: placed its cut: pydeface's by the head, the others' by the brain) or ``common`` (by the
    #: head, each kept inside the region every scan's cut covers; the demo's);
    #: docs/face-placement.md.
    face_placement: str = "brain"
    #: Which scans the privacy stage measures (issue 19): ``all``, ``test`` (the test split: its
    #: gallery is the test people) or ``none`` (no privacy stage).
    privacy_scans: str = "all"

    def to_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)


PRESETS: dict[str, StudyConfig] = {
    "paper": StudyConfig(),
    "demo": StudyConfig(
        name="demo",
        # the five defacers and AFNI's refacer (its refaced head alone: its face-only image is
        # AFNI's). A refacer adds 0.1 s (AFNI's two) to ~3 s (mrireface's SyN) of defacing per
        # 3 mm scan plus its trained conditions: add more in a TOML file
        # (docs/defacing.md, "Conditions and the geometry control")
        methods=(*DEFACERS, "afnireface"),
        conditions=(*condition_names(DEFACERS), "defaced-afnireface"),
        grid="mni4mm",
        # more test scans than the paper's 10 % so a small demo cohort gives clear statistics
        split_fractions=(0.60, 0.15, 0.25),
        runs=1,
        face_runs=3,
        profile="cpu",
        # the 20 test people: the privacy stage in about 2 minutes of the 20 on 2 cores
        privacy_scans="test",
        # issue 22: with "brain" no face-age claim where the face aged, with "head" a false
        # one where it did not, with "cut" face-only images up to 15 % below the null where it
        # did not; "common" keeps every face-only image at the null without face ageing and
        # finds the face's age with it (docs/face-placement.md)
        face_placement="common",
    ),
}


def get_preset(name: str) -> StudyConfig:
    """A fresh copy of a named preset."""
    if name not in PRESETS:
        raise InputError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    return dataclasses.replace(PRESETS[name])


def load_config(path: str | Path, preset: str = "paper") -> StudyConfig:
    """Read a TOML file whose keys override a preset (``preset = "demo"`` inside picks one)."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError("config file not found", path) from None
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"invalid TOML ({exc})", path) from None
    config = get_preset(str(data.pop("preset", preset)))
    known = {f.name for f in dataclasses.fields(StudyConfig)}
    unknown = set(data) - known
    if unknown:
        raise InputError(f"unknown config key(s): {', '.join(sorted(unknown))}", path)
    for key, value in data.items():
        current = getattr(config, key)
        setattr(config, key, tuple(value) if isinstance(current, tuple) else value)
    if "methods" in data and "conditions" not in data:
        config.conditions = condition_names(tuple(config.methods))
    if config.face_placement not in FACE_PLACEMENTS:
        raise InputError(f"face_placement must be one of {', '.join(FACE_PLACEMENTS)}, not {config.face_placement!r}", path)
    if config.privacy_scans not in PRIVACY_SCANS:
        raise InputError(f"privacy_scans must be one of {', '.join(PRIVACY_SCANS)}, not {config.privacy_scans!r}", path)
    return config
