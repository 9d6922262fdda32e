"""The two attacks of a face-recognition adversary on head renders, with dlib's own networks.

Both networks ship inside the ``face_recognition_models`` package (CC0 weights, no download
at run time) and run with the ``dlib-bin`` wheel:

- detection: dlib's CNN (MMOD) face detector, ``mmod_human_face_detector.dat``;
- identification: dlib's 128-D ResNet face descriptor, ``dlib_face_recognition_resnet_model_v1.dat``,
  on the face aligned by the 5-point landmark model (``shape_predictor_5_face_landmarks.dat``).

The models' folder is found without importing ``face_recognition_models`` (its ``__init__``
needs ``pkg_resources``, which new setuptools no longer has).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

__all__ = ["Detection", "FaceModels", "models_dir", "face_models"]

#: The detector's confidence (its SVM score) at or above which a face counts as found.
DETECTION_THRESHOLD = 0.0
#: Length of dlib's face descriptor.
DESCRIPTOR_SIZE = 128


@dataclass(frozen=True)
class Detection:
    """The best face the detector found in one render (``found`` False: none; box is then the fallback)."""

    found: bool
    confidence: float
    left: int
    top: int
    width: int
    height: int


def models_dir() -> Path:
    """The folder of ``face_recognition_models``' weight files."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("face_recognition_models is not installed (it is a dependency: `make install`)")
    folder = Path(list(spec.submodule_search_locations)[0]) / "models"
    if not (folder / "mmod_human_face_detector.dat").exists():
        raise ImportError(f"face_recognition_models has no weights in {folder}")
    return folder


class FaceModels:
    """dlib's detector, landmark model and descriptor network, loaded once per process."""

    def __init__(self, folder: Path | None = None) -> None:
        import dlib  # lazy: only the privacy stage needs it

        folder = models_dir() if folder is None else Path(folder)
        self._dlib = dlib
        self.detector = dlib.cnn_face_detection_model_v1(str(folder / "mmod_human_face_detector.dat"))
        self.landmarks = dlib.shape_predictor(str(folder / "shape_predictor_5_face_landmarks.dat"))
        self.descriptor_net = dlib.face_recognition_model_v1(str(folder / "dlib_face_recognition_resnet_model_v1.dat"))

    @staticmethod
    def _rgb(image: np.ndarray) -> np.ndarray:
        image = np.asarray(image, dtype=np.uint8)
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=2)
        return np.ascontiguousarray(image)

    def detect(self, image: np.ndarray, fallback: tuple[int, int, int, int]) -> Detection:
        """The most confident face in ``image`` (no upsampling), or ``fallback`` (left, top, width, height) marked not found."""
        found = [d for d in self.detector(self._rgb(image), 0) if d.confidence >= DETECTION_THRESHOLD]
        if not found:
            return Detection(False, float("nan"), *map(int, fallback))
        best = max(found, key=lambda d: d.confidence)
        r = best.rect
        return Detection(True, float(best.confidence), int(r.left()), int(r.top()), int(r.width()), int(r.height()))

    def descriptor(self, image: np.ndarray, box: Detection) -> np.ndarray:
        """The 128-D descriptor of the face in ``box``, aligned by the 5-point landmarks first."""
        rgb = self._rgb(image)
        rect = self._dlib.rectangle(box.left, box.top, box.left + box.width, box.top + box.height)
        shape = self.landmarks(rgb, rect)
        return np.asarray(self.descriptor_net.compute_face_descriptor(rgb, shape), dtype=np.float32)


@lru_cache(maxsize=1)
def face_models() -> FaceModels:
    """The process's one :class:`FaceModels` (loading takes about a second)."""
    return FaceModels()
