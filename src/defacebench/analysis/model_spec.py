"""What an external brain-age model expects, read from a small TOML file, and the images
prepared to match it from a study's condition stores.

Example (an SFCN-style model on a 1 mm 160x192x160 MNI crop, skull-stripped, soft
classification over 40 one-year bins)::

    [input]
    shape = [160, 192, 160]        # voxels of the model's input, (B, 1, X, Y, Z)
    voxel_mm = 1.0                 # one number or three
    orientation = "LAS"            # where each array axis points (FSL's MNI: x towards the left)
    centre_mm = [0, -18, 18]       # MNI mm at the centre of the box (default: the study grid's)
    skull_stripped = true          # multiply by each scan's brain mask (the skullstripped store)
    normalisation = "mean"         # none | mean | zscore | minmax, over the non-zero voxels
    batch_size = 2

    [output]
    kind = "log_probabilities"     # age | logits | probabilities | log_probabilities
    bin_range = [42.5, 82.5, 1.0]  # bin centres start, stop (exclusive), step; or bin_centres = [...]

``kind = "age"`` takes ``scale`` and ``offset`` (age = output x scale + offset). Without a
spec, or with ``grid = "study"`` (the default when ``shape`` is missing), the input is the
study's store grid as it is: what the study's own exported ``model.ts`` takes. Store images
are in MNI space already (divided by the raw image's brain median); another grid is
reached by trilinear resampling from the store's affine.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from defacebench.io.errors import InputError

NORMALISATIONS: tuple[str, ...] = ("none", "mean", "zscore", "minmax")
OUTPUT_KINDS: tuple[str, ...] = ("age", "logits", "probabilities", "log_probabilities")
_INPUT_KEYS = {"grid", "shape", "voxel_mm", "orientation", "centre_mm", "skull_stripped", "normalisation", "batch_size"}
_OUTPUT_KEYS = {"kind", "scale", "offset", "bin_centres", "bin_range"}
_AXES = {"R": (0, 1.0), "L": (0, -1.0), "A": (1, 1.0), "P": (1, -1.0), "S": (2, 1.0), "I": (2, -1.0)}


@dataclass(frozen=True)
class ModelSpec:
    """An external model's input grid, preprocessing and output (see the module docstring)."""

    shape: tuple[int, int, int] | None = None
    voxel_mm: tuple[float, float, float] = (1.0, 1.0, 1.0)
    orientation: str = "LAS"
    centre_mm: tuple[float, float, float] | None = None
    skull_stripped: bool = False
    normalisation: str = "none"
    batch_size: int = 4
    kind: str = "age"
    scale: float = 1.0
    offset: float = 0.0
    bin_centres: tuple[float, ...] = ()

    def affine(self, study_affine: np.ndarray, study_shape: tuple[int, ...]) -> tuple[np.ndarray, tuple[int, int, int]]:
        """The model's input grid (4x4 affine to MNI mm, shape); the study grid when ``shape`` is None."""
        if self.shape is None:
            return np.asarray(study_affine, float), tuple(int(s) for s in study_shape)  # type: ignore[return-value]
        affine = np.zeros((4, 4))
        affine[3, 3] = 1.0
        for k, letter in enumerate(self.orientation):
            axis, sign = _AXES[letter]
            affine[axis, k] = sign * self.voxel_mm[k]
        centre = self.centre_mm
        if centre is None:
            middle = (np.asarray(study_shape, float) - 1) / 2
            centre = tuple(np.asarray(study_affine, float)[:3, :3] @ middle + np.asarray(study_affine, float)[:3, 3])
        half = (np.asarray(self.shape, float) - 1) / 2
        affine[:3, 3] = np.asarray(centre, float) - affine[:3, :3] @ half
        return affine, self.shape

    def ages(self, output: np.ndarray, n_images: int) -> np.ndarray:
        """Ages (years) from a raw model output of ``n_images`` images; InputError when it is not one age per image."""
        out = np.asarray(output, np.float64)
        while out.ndim > 2 and out.shape[-1] == 1:
            out = out[..., 0]
        if self.kind == "age":
            if out.shape not in ((n_images,), (n_images, 1)):
                raise InputError(f"model output has shape {tuple(np.shape(output))}, not one age per image ({n_images} images); "
                                 "for a soft-classification model set [output] kind and bin_centres in the spec")
            return out.reshape(n_images) * self.scale + self.offset
        if out.shape != (n_images, len(self.bin_centres)):
            raise InputError(f"model output has shape {tuple(np.shape(output))}, not {len(self.bin_centres)} bin values per image ({n_images} images)")
        if self.kind == "logits":
            out = np.exp(out - out.max(axis=1, keepdims=True))
            out /= out.sum(axis=1, keepdims=True)
        elif self.kind == "log_probabilities":
            out = np.exp(out)
        return out @ np.asarray(self.bin_centres, np.float64)


def _triple(value, what: str, cast) -> tuple:
    values = [value] * 3 if np.isscalar(value) else list(value)
    if len(values) != 3:
        raise InputError(f"input spec: {what} needs one or three numbers, got {value!r}")
    return tuple(cast(v) for v in values)


def read_spec(path: str | Path | None) -> ModelSpec:
    """Read a spec TOML (None: the study grid as it is, ages out)."""
    if path is None:
        return ModelSpec()
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError("input spec not found", path) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"input spec is not valid TOML ({exc})", path) from None
    inp, out = data.pop("input", {}), data.pop("output", {})
    unknown = sorted(set(data) | (set(inp) - _INPUT_KEYS) | (set(out) - _OUTPUT_KEYS))
    if unknown:
        raise InputError(f"input spec: unknown key(s) {', '.join(unknown)}", path)
    try:
        return _build(inp, out)
    except (TypeError, ValueError) as exc:
        raise InputError(f"input spec: {exc}", path) from None


def _build(inp: dict, out: dict) -> ModelSpec:
    study_grid = inp.get("grid", "study" if "shape" not in inp else None) == "study"
    orientation = str(inp.get("orientation", "LAS")).upper()
    if sorted(_AXES[c][0] for c in orientation if c in _AXES) != [0, 1, 2] or len(orientation) != 3:
        raise InputError(f"input spec: orientation {orientation!r} must name each of R/L, A/P, S/I once (e.g. LAS, RAS)")
    normalisation, kind = str(inp.get("normalisation", "none")), str(out.get("kind", "age"))
    if normalisation not in NORMALISATIONS:
        raise InputError(f"input spec: normalisation {normalisation!r} is not one of {', '.join(NORMALISATIONS)}")
    if kind not in OUTPUT_KINDS:
        raise InputError(f"input spec: output kind {kind!r} is not one of {', '.join(OUTPUT_KINDS)}")
    centres: tuple[float, ...] = ()
    if "bin_centres" in out:
        centres = tuple(float(c) for c in out["bin_centres"])
    elif "bin_range" in out:
        start, stop, step = (float(v) for v in out["bin_range"])
        centres = tuple(np.arange(start, stop, step).tolist())
    if kind != "age" and not centres:
        raise InputError(f"input spec: output kind {kind!r} needs bin_centres or bin_range")
    shape = None if study_grid else _triple(inp["shape"], "shape", int)
    if shape is not None and min(shape) < 1:
        raise InputError(f"input spec: shape {shape} has an empty axis")
    batch = int(inp.get("batch_size", 4))
    if batch < 1:
        raise InputError("input spec: batch_size must be at least 1")
    return ModelSpec(shape=shape, voxel_mm=_triple(inp.get("voxel_mm", 1.0), "voxel_mm", float), orientation=orientation,
                     centre_mm=_triple(inp["centre_mm"], "centre_mm", float) if "centre_mm" in inp else None,
                     skull_stripped=bool(inp.get("skull_stripped", False)), normalisation=normalisation, batch_size=batch,
                     kind=kind, scale=float(out.get("scale", 1.0)), offset=float(out.get("offset", 0.0)), bin_centres=centres)


def normalise(image: np.ndarray, how: str) -> np.ndarray:
    """Intensity normalisation over the image's non-zero voxels (``none`` leaves it as stored)."""
    if how == "none":
        return image
    values = image[image != 0]
    if values.size == 0:
        return image
    if how == "mean":
        return image / values.mean()
    if how == "zscore":
        return np.where(image != 0, (image - values.mean()) / (values.std() or 1.0), 0.0).astype(np.float32)
    low, high = values.min(), values.max()
    return ((image - low) / ((high - low) or 1.0)).astype(np.float32)


def prepare(images: np.ndarray, brain: np.ndarray | None, spec: ModelSpec, source_affine: np.ndarray) -> np.ndarray:
    """Store images ``(B, X, Y, Z)`` -> the model's input ``(B, 1, *shape)`` (float32):
    brain-masked when the spec asks, resampled to its grid, normalised."""
    from scipy.ndimage import affine_transform

    target, shape = spec.affine(source_affine, images.shape[1:])
    matrix = np.linalg.inv(np.asarray(source_affine, float)) @ target
    same = spec.shape is None or (tuple(shape) == tuple(images.shape[1:]) and np.allclose(matrix, np.eye(4)))
    out = np.empty((len(images), 1, *shape), np.float32)
    for i, image in enumerate(np.asarray(images, np.float32)):
        if brain is not None:
            image = image * (np.asarray(brain[i]) != 0)
        if not same:
            image = affine_transform(image, matrix[:3, :3], offset=matrix[:3, 3], output_shape=tuple(shape), order=1, cval=0.0)
        out[i, 0] = normalise(image.astype(np.float32), spec.normalisation)
    return out
