"""Native backend: run the real tool when it is installed; the mask is what it removed.

``pydeface`` (needs FSL ``flirt``), ``fsl_deface``, ``@afni_refacer_run``, and SPM's
``spm_deface`` through MATLAB or Octave (``spm`` on the path). quickshear's native tool
is the ``quickshear`` package's command. Each tool writes a defaced image; the removal
fraction per voxel is ``1 - defaced / input`` where the input is non-zero.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np

from defacebench.io.errors import InputError, StageError

TOOLS: dict[str, tuple[str, ...]] = {
    "pydeface": ("pydeface", "flirt"),
    "fsl": ("fsl_deface",),
    "afni": ("@afni_refacer_run",),
    "spm": ("matlab",),
    "quickshear": ("quickshear",),
}


def available(method: str) -> bool:
    """Whether the real tool of ``method`` is on the PATH (refacers have no native backend: False)."""
    if method not in TOOLS:
        return False
    if method == "spm":
        return shutil.which("matlab") is not None or shutil.which("octave") is not None
    return all(shutil.which(tool) for tool in TOOLS[method])


def _command(method: str, source: Path, defaced: Path, workdir: Path, brain_mask: Path | None) -> list[str]:
    if method == "pydeface":
        return ["pydeface", str(source), "--outfile", str(defaced), "--force"]
    if method == "fsl":
        return ["fsl_deface", str(source), str(defaced)]
    if method == "afni":
        return ["@afni_refacer_run", "-input", str(source), "-mode_deface", "-prefix", str(defaced), "-overwrite"]
    if method == "quickshear":
        if brain_mask is None:
            raise StageError("native quickshear needs a brain mask")
        return ["quickshear", str(source), str(brain_mask), str(defaced), "10"]
    if method == "spm":
        script = f"spm('defaults','fmri'); out = spm_deface({{'{source}'}}); movefile(out{{1}}, '{defaced}');"
        exe = "matlab" if shutil.which("matlab") else "octave"
        return [exe, "-batch", script] if exe == "matlab" else [exe, "--eval", script]
    raise InputError(f"no native tool for {method!r}")


def removal_mask(method: str, img: nib.Nifti1Image, brain_mask: np.ndarray | None = None, timeout_s: float = 3600) -> np.ndarray:
    """Run the real tool on ``img`` and return the fraction removed per voxel on its grid."""
    if not available(method):
        raise InputError(f"--backend native: the real tool for {method!r} ({', '.join(TOOLS[method])}) is not installed")
    with tempfile.TemporaryDirectory(prefix="defacebench-native-") as tmp:
        workdir = Path(tmp)
        source, defaced = workdir / "input.nii", workdir / "defaced.nii"
        nib.save(nib.Nifti1Image(np.asarray(img.dataobj, dtype=np.float32), img.affine), str(source))
        mask_path = None
        if brain_mask is not None:
            mask_path = workdir / "brain_mask.nii"
            nib.save(nib.Nifti1Image(brain_mask.astype(np.uint8), img.affine), str(mask_path))
        command = _command(method, source, defaced, workdir, mask_path)
        proc = subprocess.run(command, cwd=workdir, capture_output=True, text=True, timeout=timeout_s)
        outputs = sorted(workdir.glob("defaced*.nii*"))
        if proc.returncode != 0 or not outputs:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            raise StageError(f"native {method} failed (exit {proc.returncode}): {tail[0]}")
        out = nib.load(str(outputs[0]))
        result = np.nan_to_num(np.asarray(out.dataobj, dtype=np.float32))
    original = np.asarray(img.dataobj, dtype=np.float32)
    if result.shape != original.shape:
        raise StageError(f"native {method} changed the grid ({result.shape} vs {original.shape})")
    removal = np.zeros(original.shape, dtype=np.float32)
    nonzero = original != 0
    removal[nonzero] = np.clip(1.0 - result[nonzero] / original[nonzero], 0.0, 1.0)
    return removal
