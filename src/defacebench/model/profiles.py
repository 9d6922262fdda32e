"""Training profiles: every hyper-parameter of a training run, named.

``paper`` is the seed study's set-up exactly where the paper is specific (architecture,
Adam, lr 1e-4, exponential decay rate 1e-4, MSE, batch 4, up to 100 epochs, random
rotation, early stopping) and explicit where it is not (head, patience, decay schedule:
see docs/training.md). ``cpu`` is the same architecture family on the 4 mm store, average-pooled to
8 mm at the input, with 1/8 of the widths and at most 30 epochs, sized so the demo trains a
condition in seconds on two CPU cores.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from dataclasses import dataclass

from defacebench.io.errors import InputError


#: ``torch.compile`` modes a profile may name ("reduce-overhead" adds CUDA graphs).
COMPILE_MODES: tuple[str, ...] = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


@dataclass(frozen=True)
class TrainProfile:
    """Hyper-parameters of one training run.

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
    fused_first_block: bool = True  # model/fast.py: the same function, faster (CPU and CUDA)
    compile: bool = True  # CUDA only: torch.compile the training forward pass
    compile_mode: str = "default"  # CUDA only: torch.compile mode (one of COMPILE_MODES)
    channels_last: bool | None = None  # NDHWC activations and weights; None: the device's measured default (uses_channels_last)
    cpu_threads: int | None = None  # CPU only: torch threads while training (None: torch's default)
    triton_block: bool | None = None  # CUDA only: first block's conv + pool as Triton kernels; None: the device's measured default
    triton_rotate: bool | None = None  # CUDA only: the random rotation as a Triton kernel; None: the device's measured default
    fused_adam: bool | None = None  # CUDA only: Adam's update in one kernel (torch.optim.Adam(fused=True)); None: the device's measured default

    def __post_init__(self) -> None:
        if self.compile_mode not in COMPILE_MODES:
            raise InputError(f"unknown compile_mode {self.compile_mode!r}; choose from {', '.join(COMPILE_MODES)}")

    def to_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)

    def describe(self) -> str:
        """One line with every setting."""
        return "profile " + ", ".join(f"{k}={v}" for k, v in self.to_dict().items())


PROFILES: dict[str, TrainProfile] = {
    # CUDA graphs: measured on two H200s, the compiled step without them was bound by Python
    # on one (500 samples/s) and not the other (866); with them 907 and 914 (docs/training.md)
    "paper": TrainProfile(name="paper", grid="mni2mm", compile_mode="reduce-overhead"),
    "cpu": TrainProfile(
        name="cpu",
        grid="mni4mm",
        width_multiplier=0.125,
        input_pool=2,
        # measured on a 100-scan simulated store: 6 epochs learn nothing (test MAE = null),
        # 40 epochs reach 2.96 y against a null of 4.74 y (best epoch 39) at ~25 s a condition
        max_epochs=30,
        patience=8,
        cpu_threads=1,
        learning_rate=3e-3,
    ),
}


def uses_channels_last(profile: TrainProfile, device_type: str) -> bool:
    """Whether a run of ``profile`` on ``device_type`` ("cpu", "cuda") keeps activations NDHWC.

    An explicit ``profile.channels_last`` wins. Otherwise NDHWC whenever the fused first
    block is used, on either device (docs/training.md, measured): on one H200 the compiled
    paper step ran 557-592 samples/s in NDHWC against 479 in NCDHW; on this project's 2-core
    CPU a ``cpu``-profile step was 1.78x faster (2.7x at the paper's widths). The plain
    module stays NCDHW: in NDHWC it was slower on CPU and is not measured on CUDA.
    ``device_type`` is kept for defaults that differ by device; none does now.
    """
    if profile.channels_last is not None:
        return bool(profile.channels_last)
    return profile.fused_first_block


def _cuda_only(profile: TrainProfile, device_type: str, setting: str, default: bool, needs_triton: bool = True) -> bool:
    """A CUDA-only setting of ``profile`` on ``device_type``: explicit values win on CUDA,
    asking for one elsewhere is an :class:`InputError`, ``None`` means ``default`` (for a
    Triton kernel, ``needs_triton``: where ``triton`` is installed; on CPU Triton runs only in
    its slow interpreter, so never there)."""
    value = getattr(profile, setting)
    if value and device_type != "cuda":
        raise InputError(f"{setting} needs a CUDA device, not {device_type}")
    if device_type != "cuda":
        return False
    if value is not None:
        return bool(value)
    return default and (not needs_triton or importlib.util.find_spec("triton") is not None)


def uses_triton_block(profile: TrainProfile, device_type: str) -> bool:
    """Whether a run computes the first block's convolution and pooling with Triton.

    On by default with the fused first block on CUDA wherever ``triton`` is installed (it
    comes with PyTorch's CUDA wheels): measured on one H200, the compiled paper step ran
    866 samples/s with it against 591 without, in the same run (docs/training.md).
    """
    return _cuda_only(profile, device_type, "triton_block", default=True) and profile.fused_first_block


def uses_triton_rotate(profile: TrainProfile, device_type: str) -> bool:
    """Whether a run rotates its batches with the Triton kernel (:mod:`.triton_rotate`).

    On by default on CUDA wherever ``triton`` is installed: measured on one H200, the paper
    step ran 975-982 samples/s with it against 904-910 without (docs/training.md).
    """
    return _cuda_only(profile, device_type, "triton_rotate", default=True)


def uses_fused_adam(profile: TrainProfile, device_type: str) -> bool:
    """Whether a run updates its weights with ``Adam(fused=True)``: the CUDA default (+1-2 %
    measured with CUDA graphs on one H200, 992 against 975 samples/s; docs/training.md)."""
    return _cuda_only(profile, device_type, "fused_adam", default=True, needs_triton=False)


def get_profile(name: str, **overrides: object) -> TrainProfile:
    """A named profile with some fields replaced (``None`` values are ignored)."""
    if name not in PROFILES:
        raise InputError(f"unknown training profile {name!r}; choose from {', '.join(PROFILES)}")
    changes = {k: v for k, v in overrides.items() if v is not None}
    unknown = set(changes) - {f.name for f in dataclasses.fields(TrainProfile)}
    if unknown:
        raise InputError(f"unknown training setting(s): {', '.join(sorted(unknown))}")
    return dataclasses.replace(PROFILES[name], **changes)


#: Settings of earlier versions, never on by default: ``triton_moments`` (the patch statistics
#: as a Triton kernel, slower than the tensor-core products that replaced it; docs/training.md).
REMOVED_SETTINGS: tuple[str, ...] = ("triton_moments",)


def profile_from_dict(data: dict[str, object]) -> TrainProfile:
    """Rebuild a profile from :meth:`TrainProfile.to_dict` output (e.g. a checkpoint).

    Settings added since the dict was written take their defaults, so runs of an older
    version still count as the same profile, as do runs that left a since removed setting
    off (:data:`REMOVED_SETTINGS`); unknown keys raise ``TypeError``.
    """
    data = {k: v for k, v in data.items() if k not in REMOVED_SETTINGS or v}
    data["widths"] = tuple(data["widths"])  # type: ignore[arg-type]
    return TrainProfile(**data)  # type: ignore[arg-type]


#: Settings that change only how fast a run goes, never its numbers: a finished run or a
#: checkpoint still counts when they differ (CUDA graphs replay the kernels the compiled
#: step launches; on the H200 both modes gave the same validation and test MAE; fused Adam
#: is the same update in one kernel, and a run saved before it became the CUDA default
#: says ``False`` where the profile now says ``None``).
SPEED_ONLY_SETTINGS: tuple[str, ...] = ("compile_mode", "fused_adam")


def same_profile(saved: object, profile: TrainProfile) -> bool:
    """Whether a saved :meth:`TrainProfile.to_dict` (run.json, checkpoint) is ``profile``
    (settings in :data:`SPEED_ONLY_SETTINGS` aside)."""
    if not isinstance(saved, dict):
        return False
    try:
        speed = {k: getattr(profile, k) for k in SPEED_ONLY_SETTINGS}
        return dataclasses.replace(profile_from_dict(saved), **speed) == profile
    except (TypeError, KeyError, InputError):
        return False
