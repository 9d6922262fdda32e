"""What every method of one scan shares: the image, its brain mask, head mask and MNI transforms.

One brain extraction and one subject -> MNI registration (brain to brain, 12 DOF) per
scan serve every method that can use them (AFNI takes its 9-parameter part); pydeface's
template -> subject registration runs only when a method asks.
Transforms are cached on the context and on disk by the runner.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import nibabel as nib
import numpy as np

from defacebench.imaging.brain import extract_brain
from defacebench.imaging.masks import head_mask
from defacebench.imaging.registration import register, remove_shear
from defacebench.imaging.resample import world_coordinates
from defacebench.imaging.templates import mni_brain, pydeface_template, pydeface_to_mni

#: Registration settings shared by the defacers (low resolution is ample for an affine).
REGISTRATION_RESOLUTION_MM = 4.0
REGISTRATION_ITERATIONS = (100, 50)


@dataclass
class SubjectContext:
    """One scan on its own voxel grid plus lazily computed shared results.

    Parameters
    ----------
    img : nibabel.Nifti1Image
        The input T1w image on its own grid (never reoriented or resampled).
    brain_mask : ndarray of bool, optional
        Brain mask on the same grid (deepbet when not given).
    to_mni, head_to_mni, template_to_subject : ndarray, optional
        Cached 4x4 RAS matrices (subject world -> MNI world; pydeface template world ->
        subject world).
    """

    img: nib.Nifti1Image
    brain_mask: np.ndarray | None = None
    to_mni: np.ndarray | None = None
    head_to_mni: np.ndarray | None = None
    template_to_subject: np.ndarray | None = None
    timings: dict[str, float] = field(default_factory=dict)
    cpu_timings: dict[str, float] = field(default_factory=dict)
    _head: np.ndarray | None = None
    _data: np.ndarray | None = None
    _coordinates: dict[bytes, np.ndarray] = field(default_factory=dict)

    @property
    def data(self) -> np.ndarray:
        if self._data is None:
            self._data = np.asarray(self.img.dataobj, dtype=np.float32)
        return self._data

    @property
    def affine(self) -> np.ndarray:
        return self.img.affine

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.data.shape[:3])  # type: ignore[return-value]

    @property
    def voxel_ml(self) -> float:
        return float(abs(np.linalg.det(self.affine[:3, :3]))) / 1000.0

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        """Add the wall seconds (``timings``) and the process's CPU seconds, all threads
        (``cpu_timings``), of the block to step ``name``."""
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - wall
            self.cpu_timings[name] = self.cpu_timings.get(name, 0.0) + time.process_time() - cpu

    def registration_seconds(self) -> tuple[float, float]:
        """Wall and CPU seconds spent in registrations so far (to keep them out of a method's own time)."""
        return (sum(v for k, v in self.timings.items() if k.startswith("register")),
                sum(v for k, v in self.cpu_timings.items() if k.startswith("register")))

    def _timed(self, name: str, func: Callable[[], object]) -> object:
        with self.step(name):
            return func()

    def brain(self) -> np.ndarray:
        """Brain mask (bool), deepbet on first use."""
        if self.brain_mask is None:
            mask_img = self._timed("brain_extraction", lambda: extract_brain(self.img))
            self.brain_mask = np.asarray(mask_img.dataobj) > 0  # type: ignore[union-attr]
        return self.brain_mask

    def head(self) -> np.ndarray:
        """Head tissue mask (bool)."""
        if self._head is None:
            self._head = self._timed("head_mask", lambda: head_mask(self.data) | self.brain())  # type: ignore[assignment]
        return self._head  # type: ignore[return-value]

    def subject_to_mni(self) -> np.ndarray:
        """Subject brain -> MNI152 brain, 12 DOF, Mattes MI (FSL, SPM and QC use it)."""
        if self.to_mni is None:
            brain = self.brain()
            moving = nib.Nifti1Image(self.data * brain, self.affine)
            self.to_mni = self._timed(
                "register_brain_to_mni",
                lambda: register(mni_brain(), moving, kind="affine", metric="mattes", fixed_mask=None, moving_mask=None,
                                 resolution_mm=REGISTRATION_RESOLUTION_MM, iterations=REGISTRATION_ITERATIONS),
            )
        return self.to_mni  # type: ignore[return-value]

    def subject_head_to_mni(self) -> np.ndarray:
        """Subject -> MNI, 9 DOF (rotation, translation, per-axis scale) for AFNI: the brain
        registration with its shear removed.

        AFNI fits the head to an MNI head. Fitted over the whole head, faces and necks pulled
        the brain up to ~15 mm out of line at the skull base; over the cranium (brain + 20 mm)
        brain atrophy moved the fit 3.7 mm in z per 40 years of 3x simulated ageing relative
        to the brain registration (r = 0.74), so AFNI's cut and its face-only image followed
        brain age; over the skull-and-scalp shell alone the brain was poorly aligned (AFNI
        removed > 0.1 % of the brain in 98 % of 80 simulated people). The brain
        registration's own 9-parameter part has none of these faults: 0.1 % of the brain is
        exceeded in 22 % of them (max 0.23 %), and no extra registration is run.
        """
        if self.head_to_mni is None:
            self.head_to_mni = remove_shear(self.subject_to_mni())
        return self.head_to_mni  # type: ignore[return-value]

    def pydeface_template_to_subject(self) -> np.ndarray:
        """pydeface's template head registered ONTO the subject, 12 DOF, Mattes MI.

        Initialised from the brain registration (template -> MNI -> subject) instead of
        FLIRT's own search from the centres of mass: same optimum, fewer iterations.
        """
        if self.template_to_subject is None:
            template, _ = pydeface_template()
            # start from what is known: template -> MNI (built once) then MNI -> subject
            initial = np.linalg.inv(self.subject_to_mni()) @ pydeface_to_mni()
            self.template_to_subject = self._timed(
                "register_pydeface_template",
                lambda: register(self.img, template, kind="affine", metric="mattes", initial=initial,
                                 resolution_mm=REGISTRATION_RESOLUTION_MM, iterations=REGISTRATION_ITERATIONS),
            )
        return self.template_to_subject  # type: ignore[return-value]

    def mni_coordinates(self, matrix: np.ndarray | None = None) -> np.ndarray:
        """MNI mm of every voxel, shape (3, *shape), through ``matrix`` (default brain to_mni).

        Read-only and kept for the last two matrices (the brain's and AFNI's 9-DOF one: FSL,
        SPM and the QC regions share the first, AFNI and its refacers the second) until
        :meth:`forget_coordinates`; 190 MB each on a 1 mm head.
        """
        matrix = self.subject_to_mni() if matrix is None else np.asarray(matrix, dtype=float)
        key = matrix.tobytes()
        if key not in self._coordinates:
            coords = world_coordinates(self.affine, self.shape, matrix)
            coords.setflags(write=False)
            self._coordinates = {**dict(list(self._coordinates.items())[-1:]), key: coords}
        return self._coordinates[key]

    def forget_coordinates(self) -> None:
        """Free the cached voxel coordinates (once every method has run)."""
        self._coordinates = {}
