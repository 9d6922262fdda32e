"""What image each study condition is made of.

A condition is one kind of model input, built from the same scan for every subject.
Five kinds exist:

``raw``
    The whole head: no defacing, no skull stripping.
``skullstripped``
    The brain only (head x brain mask), no defacing.
``defaced-<method>``
    The defaced head, skull kept: head x (1 - removal mask of the method). For a refacer
    (:data:`REFACERS`) the refaced head: head - face-only + the method's replacement.
``face-<method>``
    Only the tissue the method removed: head x removal mask.
``facemask-<method>``
    The geometry control: an average face (pydeface's mean head as a filled solid,
    :func:`defacebench.imaging.templates.average_face_outline`) placed on the subject by the
    subject's 12-DOF head registration, within the method's removal region (binarised at
    0.5), moved by the same transform as the face-only image. It carries where the subject's
    face sits after the brain registration and where the method cuts, and neither the
    subject's face shape nor its intensities: a face-only model that does no better than
    this one reads geometry, not the face (docs/analysis.md). A refacer's control is that of
    its ``face-<m>`` image (the replaced region), not of its refaced head.

A defaced image is the head minus the method's face-only image, so for every defacer
``defaced-<m> + face-<m> == raw`` voxel for voxel; for a refacer
``defaced-<m> + face-<m> - replacement-<m> == raw``, the replacement being zero outside
the replaced region. Every condition is built from the
same bias-corrected head, moved by the same transform and divided by the same number,
so this identity survives preprocessing (see :mod:`defacebench.preprocess.scan`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from defacebench.io.errors import InputError

__all__ = [
    "Condition", "DEFACERS", "FACE_KINDS", "FACE_PLACEMENTS", "KINDS", "METHODS", "REFACERS", "METHOD_NAMES", "PAPER_METHODS", "PREDICTION_COLUMNS",
    "SCAN_KEY",
    "build_all", "condition_kind", "condition_label", "condition_method", "condition_names", "condition_title",
    "COMMON_REGION_PLACEMENTS", "HEAD_REGISTERED_CUTS", "head_placed", "region_member", "region_methods", "removal_mask_methods", "is_refacer", "methods_of", "needs_head_registration", "order_conditions", "parse_condition", "parse_methods", "refacer_methods", "resolve_conditions",
]

#: The four defacers of the paper, in its Table 1 order.
PAPER_METHODS: tuple[str, ...] = ("afni", "fsl", "pydeface", "spm")
#: The methods that remove the face (the paper's four, then ours).
DEFACERS: tuple[str, ...] = (*PAPER_METHODS, "quickshear")
#: The methods that replace the face with an average one (issue 18): the refaced head takes
#: the ``defaced-<m>`` place, the person's own replaced tissue stays ``face-<m>``.
REFACERS: tuple[str, ...] = ("afnireface", "afnirefaceplus", "mrireface")
#: Every method defacebench implements, in display order (defacers, then refacers).
METHODS: tuple[str, ...] = (*DEFACERS, *REFACERS)
#: Display names of the methods.
METHOD_NAMES: dict[str, str] = {"afni": "AFNI", "fsl": "FSL", "pydeface": "pydeface", "spm": "SPM", "quickshear": "quickshear",
                                "afnireface": "AFNI reface", "afnirefaceplus": "AFNI reface+", "mrireface": "mri_reface"}

KINDS: tuple[str, ...] = ("raw", "skullstripped", "defaced", "face", "facemask")
_METHOD_KINDS = ("defaced", "face", "facemask")

#: Columns every ``predictions.csv`` has (``bids_run`` is the BIDS run entity of the scan,
#: ``run`` the training repetition).
PREDICTION_COLUMNS: tuple[str, ...] = ("participant_id", "session_id", "bids_run", "split", "age", "predicted_age", "condition", "run")
#: One scan (a row of the condition stores): the unit of the repeated measures.
SCAN_KEY: tuple[str, ...] = ("participant_id", "session_id", "bids_run")


def parse_methods(text: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """``"afni,fsl"`` -> ``("afni", "fsl")``; InputError on unknown or empty."""
    items = [m.strip().lower() for m in (text.split(",") if isinstance(text, str) else text) if m.strip()]
    if not items:
        raise InputError("no defacing method given")
    for item in items:
        if item not in METHODS:
            raise InputError(f"unknown defacing method {item!r}; choose from {', '.join(METHODS)}")
    return tuple(dict.fromkeys(items))


def condition_names(methods: Sequence[str]) -> tuple[str, ...]:
    """The study's conditions: raw, skullstripped, then defaced-<m>, face-<m> and facemask-<m> per method."""
    return ("raw", "skullstripped", *(f"{kind}-{m}" for kind in _METHOD_KINDS for m in methods))


@dataclass(frozen=True)
class Condition:
    """One study condition.

    Attributes
    ----------
    name : str
        ``raw``, ``skullstripped``, ``defaced-<method>``, ``face-<method>`` or ``facemask-<method>``.
    kind : str
        One of :data:`KINDS`.
    method : str or None
        The defacing method of ``defaced``/``face`` conditions.
    """

    name: str
    kind: str
    method: str | None = None

    @property
    def identifying(self) -> bool:
        """Whether images of this condition can identify a person (they show a face)."""
        return self.kind in ("raw", "face")

    def build(self, head: np.ndarray, brain_mask: np.ndarray | None = None, face: np.ndarray | None = None,
              removed: np.ndarray | None = None, fill: np.ndarray | None = None) -> np.ndarray:
        """The condition's image from the head, the brain mask and the method's face-only image.

        Parameters
        ----------
        head : ndarray
            The (bias-corrected) head image, float32.
        brain_mask : ndarray, optional
            Binary brain mask on the head's grid (``skullstripped``).
        face : ndarray, optional
            The method's face-only image (the removed tissue), in the head's units
            (``face-<m>``; ``defaced-<m>`` is ``head - face``).
        removed : ndarray, optional
            The geometry control's image, 0..1: the average face within the method's
            removal region (``facemask-<m>``).
        fill : ndarray, optional
            A refacer's replacement, in the head's units, zero outside its region: added to
            ``defaced-<m>`` (``head - face + fill``).
        """
        if self.kind == "raw":
            return head
        if self.kind == "skullstripped":
            if brain_mask is None:
                raise ValueError("skullstripped needs a brain mask")
            return head * (brain_mask > 0)
        if self.kind == "facemask":
            if removed is None:
                raise ValueError(f"{self.name} needs the geometry-control image of {self.method}")
            return removed
        if face is None:
            raise ValueError(f"{self.name} needs the face-only image of {self.method}")
        if self.kind == "face":
            return face
        return head - face if fill is None else head - face + fill


def parse_condition(name: str) -> Condition:
    """``"defaced-afni"`` -> ``Condition("defaced-afni", "defaced", "afni")``.

    Raises
    ------
    InputError
        For a name that is none of the five kinds.
    """
    name = str(name).strip()
    if name in ("raw", "skullstripped"):
        return Condition(name, name)
    kind, _, method = name.partition("-")
    if kind in _METHOD_KINDS and method:
        return Condition(name, kind, method)
    raise InputError(f"unknown condition {name!r}: use raw, skullstripped, defaced-<method>, face-<method> or facemask-<method>")


def condition_kind(condition: str) -> str:
    """``raw``, ``skullstripped``, ``defaced``, ``face`` or ``facemask`` (``other`` for anything else)."""
    try:
        return parse_condition(condition).kind
    except InputError:
        return "other"


def condition_method(condition: str) -> str | None:
    """The defacing method of ``defaced-<m>`` / ``face-<m>`` / ``facemask-<m>``, else None."""
    try:
        return parse_condition(condition).method
    except InputError:
        return None


def order_conditions(conditions: Iterable[str]) -> list[str]:
    """Paper order: raw, skull-stripped, defaced per method, face-only per method, then the geometry controls."""
    kinds = {"raw": 0, "skullstripped": 1, "defaced": 2, "face": 3, "facemask": 4, "other": 5}

    def key(c: str) -> tuple[int, int, str]:
        m = condition_method(c)
        return kinds[condition_kind(c)], METHODS.index(m) if m in METHODS else len(METHODS), c

    return sorted(set(conditions), key=key)


def method_name(method: str | None) -> str:
    """Display name of a method (the method itself when unknown)."""
    return METHOD_NAMES.get(method, method) if method else ""


_SHORT = {"defaced": "df", "face": "f", "facemask": "fm"}
_TITLE = {"defaced": "defaced", "face": "face-only", "facemask": "face mask"}


def condition_label(condition: str) -> str:
    """Short figure label as in the paper's Fig. 4: ``raw``, ``ss``, ``AFNI df``, ``AFNI f``."""
    kind, method = condition_kind(condition), condition_method(condition)
    if kind == "skullstripped":
        return "ss"
    if kind in _METHOD_KINDS:
        return f"{method_name(method)} {'rf' if kind == 'defaced' and is_refacer(method) else _SHORT[kind]}"
    return condition


def condition_title(condition: str) -> str:
    """Readable name: ``raw head``, ``skull-stripped``, ``defaced (AFNI)``, ``face-only (AFNI)``."""
    kind, method = condition_kind(condition), condition_method(condition)
    if kind == "raw":
        return "raw head"
    if kind == "skullstripped":
        return "skull-stripped"
    if kind in _METHOD_KINDS:
        return f"{'refaced' if kind == 'defaced' and is_refacer(method) else _TITLE[kind]} ({method_name(method)})"
    return condition


def resolve_conditions(names: Sequence[str] | None = None, methods: Sequence[str] | None = None, known_methods: Sequence[str] | None = None) -> list[Condition]:
    """The conditions to build, in a stable order, without duplicates.

    Parameters
    ----------
    names : sequence of str, optional
        Explicit condition names (a subset, or conditions of extra methods).
        Default: every condition of ``methods``.
    methods : sequence of str, optional
        Defacing methods (default: the paper's four).
    known_methods : sequence of str, optional
        Methods that exist; a condition naming another one is an :class:`InputError`.
    """
    methods = tuple(methods) if methods else PAPER_METHODS
    conditions = [parse_condition(n) for n in (names if names else condition_names(methods))]
    if known_methods is not None:
        unknown = sorted({c.method for c in conditions if c.method and c.method not in known_methods})
        if unknown:
            raise InputError(f"unknown defacing method(s) {', '.join(unknown)}; choose from {', '.join(known_methods)}")
    seen: dict[str, Condition] = {}
    for condition in conditions:
        seen.setdefault(condition.name, condition)
    return list(seen.values())


def methods_of(conditions: Iterable[Condition]) -> tuple[str, ...]:
    """The defacing methods a set of conditions needs, in first-seen order."""
    return tuple(dict.fromkeys(c.method for c in conditions if c.method))


def control_methods(conditions: Iterable[Condition]) -> tuple[str, ...]:
    """The methods whose geometry control (``facemask-<m>``) is among ``conditions``."""
    return tuple(dict.fromkeys(c.method for c in conditions if c.kind == "facemask"))


#: How face-only images (and their geometry controls) go to MNI space: ``brain`` with the
#: scan's brain registration (as every other image, and as the paper), ``head`` with the
#: whole-head registration of pydeface's template
#: (:func:`defacebench.imaging.placement.head_placement_transform`), ``cut`` (issue 22)
#: each method's with the registration that placed its cut: the head registration for the
#: methods of :data:`HEAD_REGISTERED_CUTS`, the brain registration for the others; ``common``
#: as ``head``, each face-only image and control then kept only inside its method's common
#: region (:data:`COMMON_REGION_PLACEMENTS`).
FACE_PLACEMENTS = ("brain", "head", "cut", "common")
#: Placements that keep a face-only image only where the method removed tissue in EVERY scan
#: of the study, once placed by the head: inside that region no scan's cut edge lies, so the
#: image shows the face's tissue and shape but not where the cut fell (which follows brain
#: atrophy for cuts placed through the brain registration: docs/face-placement.md).
COMMON_REGION_PLACEMENTS = ("common",)
#: Methods whose removal region is placed on the scan by pydeface's head registration
#: (template -> subject) rather than through the brain registration to MNI.
HEAD_REGISTERED_CUTS = ("pydeface",)
#: The condition kinds that ``face_placement`` places: face-only images and their geometry controls.
FACE_KINDS = ("face", "facemask")


def head_placed(condition: Condition | str, face_placement: str) -> bool:
    """Whether ``face_placement`` takes this condition (a :class:`Condition` or a name) to the
    grid by the head registration: a face-only image or geometry control, under ``head``, or
    under ``cut`` when its method's cut is placed by the head registration."""
    condition = condition if isinstance(condition, Condition) else parse_condition(condition)
    if condition.kind not in FACE_KINDS:
        return False
    return face_placement in ("head", *COMMON_REGION_PLACEMENTS) or (face_placement == "cut" and condition.method in HEAD_REGISTERED_CUTS)


def region_methods(conditions: Iterable[Condition | str], face_placement: str) -> tuple[str, ...]:
    """The methods whose face-only images and controls ``face_placement`` restricts to the
    common region (none unless it is one of :data:`COMMON_REGION_PLACEMENTS`)."""
    if face_placement not in COMMON_REGION_PLACEMENTS:
        return ()
    parsed = [c if isinstance(c, Condition) else parse_condition(c) for c in conditions]
    return tuple(dict.fromkeys(c.method for c in parsed if c.kind in FACE_KINDS))


def removal_mask_methods(conditions: Iterable[Condition | str], face_placement: str) -> tuple[str, ...]:
    """The methods whose removal masks preprocessing reads: those of the geometry controls
    (:func:`control_methods`) and of :func:`region_methods`."""
    parsed = [c if isinstance(c, Condition) else parse_condition(c) for c in conditions]
    return tuple(dict.fromkeys([*control_methods(parsed), *region_methods(parsed, face_placement)]))


def region_member(method: str) -> str:
    """Name of the work-file member that holds a scan's removal region of ``method`` on the grid."""
    return f"region-{method}"


def needs_head_registration(conditions: Iterable[Condition | str], face_placement: str) -> bool:
    """Whether head placement applies to any of ``conditions`` (:func:`head_placed`)."""
    return any(head_placed(c, face_placement) for c in conditions)


def deface_methods(conditions: Iterable[Condition], methods: Sequence[str] = (), face_placement: str = "brain") -> tuple[str, ...]:
    """What the deface stage must run for ``conditions``: ``methods`` (default: the conditions'
    own, else SPM for the brain mask and transform alone), plus pydeface when a geometry
    control is asked for (its head registration places the control's average face) or when
    face-only images are placed by the head (``face_placement="head"``, the same registration)."""
    conditions = list(conditions)
    base = tuple(methods) or methods_of(conditions) or ("spm",)
    head_placed = needs_head_registration(conditions, face_placement)
    return tuple(dict.fromkeys([*base, *(["pydeface"] if control_methods(conditions) or head_placed else [])]))


def build_all(
    conditions: Iterable[Condition],
    head: np.ndarray,
    brain_mask: np.ndarray | None,
    faces: Mapping[str, np.ndarray],
    removed: Mapping[str, np.ndarray] | None = None,
    fills: Mapping[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Every condition's image by name; ``faces`` maps method -> face-only image, ``removed``
    method -> geometry-control image, ``fills`` refacer -> replacement."""
    removed, fills = removed or {}, fills or {}
    return {c.name: c.build(head, brain_mask, faces.get(c.method) if c.method else None, removed.get(c.method) if c.method else None,
                            fills.get(c.method) if c.method else None)
            for c in conditions}


# --------------------------------------------------------------------------- issue 18: refacers
def is_refacer(method: str | None) -> bool:
    """Whether ``method`` replaces the face (its ``defaced-<m>`` image is a refaced head)."""
    return method in REFACERS


def refacer_methods(conditions: Iterable[Condition]) -> tuple[str, ...]:
    """The refacers whose refaced head (``defaced-<m>``) is among ``conditions``: their
    preprocessing reads the refaced image, not only the face-only one."""
    return tuple(dict.fromkeys(c.method for c in conditions if c.kind == "defaced" and is_refacer(c.method)))
