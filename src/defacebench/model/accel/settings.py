"""Speed settings of a training run: how fast it goes, never what it computes.

Every switch here selects an implementation of the same training step (the fused first
block, ``torch.compile`` and its mode, NDHWC activations, Triton kernels, fused Adam, the
CPU thread count). They change results only by floating-point rounding, so they live apart
from the science settings (:class:`defacebench.model.profiles.TrainProfile`): a finished
run or checkpoint counts when its science settings match, whatever speed it ran at, and
``run.json`` records the speed settings asked for (``speed``) and the ones used (the
``fused_first_block``, ``compiled``, ``channels_last``, ``triton_*``, ``fused_adam`` keys).

``None`` means "the measured default for the device" (:func:`uses_channels_last`,
:func:`uses_triton_block`, :func:`uses_triton_rotate`, :func:`uses_fused_adam`; the
measurements are in docs/training.md).
"""

from __future__ import annotations

import dataclasses
import importlib.util
from dataclasses import dataclass

from defacebench.io.errors import InputError

#: ``torch.compile`` modes one may name ("reduce-overhead" adds CUDA graphs).
COMPILE_MODES: tuple[str, ...] = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


@dataclass(frozen=True)
class SpeedSettings:
    """How a training run is computed (never what it computes).

    Attributes
    ----------
    fused_first_block : bool
        The first block as :func:`defacebench.model.accel.fast.fused_forward` computes it
        (the same function, faster on CPU and CUDA).
    compile : bool
        CUDA only: ``torch.compile`` the training forward pass.
    compile_mode : str
        CUDA only: the ``torch.compile`` mode, one of :data:`COMPILE_MODES`.
    channels_last : bool or None
        NDHWC activations and weights; ``None``: :func:`uses_channels_last`.
    cpu_threads : int or None
        CPU only: torch threads while training; ``None``: torch's default.
    triton_block : bool or None
        CUDA only: the first block's convolution and pooling as Triton kernels.
    triton_rotate : bool or None
        CUDA only: the random rotation as one Triton kernel.
    fused_adam : bool or None
        CUDA only: Adam's update in one kernel (``torch.optim.Adam(fused=True)``).
    """

    fused_first_block: bool = True
    compile: bool = True
    compile_mode: str = "default"
    channels_last: bool | None = None
    cpu_threads: int | None = None
    triton_block: bool | None = None
    triton_rotate: bool | None = None
    fused_adam: bool | None = None

    def __post_init__(self) -> None:
        if self.compile_mode not in COMPILE_MODES:
            raise InputError(f"unknown compile_mode {self.compile_mode!r}; choose from {', '.join(COMPILE_MODES)}")

    def to_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)

    def describe(self) -> str:
        """One line with every speed setting."""
        return "speed " + ", ".join(f"{k}={v}" for k, v in self.to_dict().items())


#: Names of the speed settings.
SPEED_FIELDS: frozenset[str] = frozenset(f.name for f in dataclasses.fields(SpeedSettings))

#: The speed settings each named profile starts from (``cpu``: one thread, see docs/training.md;
#: ``paper``: CUDA graphs, which keep the compiled step from waiting on Python).
PROFILE_SPEED: dict[str, SpeedSettings] = {
    "paper": SpeedSettings(compile_mode="reduce-overhead"),
    "cpu": SpeedSettings(cpu_threads=1),
}


def get_speed(profile_name: str, **overrides: object) -> SpeedSettings:
    """The speed settings of a named profile with some replaced (``None`` values are ignored)."""
    changes = {k: v for k, v in overrides.items() if v is not None}
    unknown = set(changes) - SPEED_FIELDS
    if unknown:
        raise InputError(f"unknown speed setting(s): {', '.join(sorted(unknown))}")
    return dataclasses.replace(PROFILE_SPEED.get(profile_name, SpeedSettings()), **changes)


def uses_channels_last(speed: SpeedSettings, device_type: str) -> bool:
    """Whether a run on ``device_type`` ("cpu", "cuda") keeps activations NDHWC.

    An explicit ``speed.channels_last`` wins. Otherwise NDHWC whenever the fused first
    block is used, on either device, where it was measured faster; the plain module stays
    NCDHW, where NDHWC was slower on CPU. ``device_type`` is kept for defaults that differ
    by device; none does now.
    """
    if speed.channels_last is not None:
        return bool(speed.channels_last)
    return speed.fused_first_block


def _cuda_only(speed: SpeedSettings, device_type: str, setting: str, default: bool, needs_triton: bool = True) -> bool:
    """A CUDA-only setting on ``device_type``: explicit values win on CUDA, asking for one
    elsewhere is an :class:`InputError`, ``None`` means ``default`` (for a Triton kernel,
    ``needs_triton``: where ``triton`` is installed; on CPU Triton runs only in its slow
    interpreter, so never there)."""
    value = getattr(speed, setting)
    if value and device_type != "cuda":
        raise InputError(f"{setting} needs a CUDA device, not {device_type}")
    if device_type != "cuda":
        return False
    if value is not None:
        return bool(value)
    return default and (not needs_triton or importlib.util.find_spec("triton") is not None)


def uses_triton_block(speed: SpeedSettings, device_type: str) -> bool:
    """Whether a run computes the first block's convolution and pooling with Triton
    (:mod:`.triton_block`): by default with the fused first block on CUDA wherever
    ``triton`` is installed (it comes with PyTorch's CUDA wheels)."""
    return _cuda_only(speed, device_type, "triton_block", default=True) and speed.fused_first_block


def uses_triton_rotate(speed: SpeedSettings, device_type: str) -> bool:
    """Whether a run rotates its batches with the Triton kernel (:mod:`.triton_rotate`):
    by default on CUDA wherever ``triton`` is installed."""
    return _cuda_only(speed, device_type, "triton_rotate", default=True)


def uses_fused_adam(speed: SpeedSettings, device_type: str) -> bool:
    """Whether a run updates its weights with ``Adam(fused=True)``: the CUDA default."""
    return _cuda_only(speed, device_type, "fused_adam", default=True, needs_triton=False)
