"""Cost of the cohort data checks per 1 mm scan (issue 16: at most 0.5 s per scan on 2 cores).

Writes N copies of a 1 mm head (pydeface's mean head, 176x256x256 voxels of 1 x 0.98 x 0.98 mm,
int16 .nii.gz, each with different noise so the files differ), then times
``read_cohort`` with ``--jobs 1`` and ``--jobs 2``, and the header-only ``--quick``, and
prints the wall time per scan. The shared machine is loaded by other users: the figures are
an upper bound of the check's own cost.

    PYTHONPATH=src python bench/bench_cohort_checks.py [N]
"""

from __future__ import annotations

import resource
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np


def write_heads(root: Path, n: int) -> Path:
    from defacebench.imaging.templates import pydeface_template

    head, _ = pydeface_template()
    data, affine = np.asarray(head.dataobj, dtype=np.float32), head.affine
    rng = np.random.default_rng(0)
    rows = ["participant_id\tage"]
    for i in range(n):
        noisy = np.clip(data + np.abs(rng.normal(0, 3, data.shape)), 0, 32767).astype(np.int16)
        path = root / f"sub-{i:02d}" / "anat" / f"sub-{i:02d}_T1w.nii.gz"
        path.parent.mkdir(parents=True)
        nib.save(nib.Nifti1Image(noisy, affine), str(path))
        rows.append(f"sub-{i:02d}\t{60 + i}")
    (root / "participants.tsv").write_text("\n".join(rows) + "\n")
    return root


def _cpu_seconds() -> float:
    """CPU time of this process and its finished worker processes (user + system)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main() -> None:
    from defacebench.cohort import read_cohort

    n = int(sys.argv[1]) if len(sys.argv) > 1 else 8
    with tempfile.TemporaryDirectory() as tmp:
        root = write_heads(Path(tmp) / "bids", n)
        size_mb = sum(p.stat().st_size for p in root.rglob("*.nii.gz")) / n / 1e6
        print(f"{n} scans, 176x256x256 1 mm int16 .nii.gz, {size_mb:.1f} MB each")
        for label, options in (("quick (headers only)", dict(quick=True)), ("full, --jobs 1", dict(jobs=1)), ("full, --jobs 2", dict(jobs=2))):
            start, cpu = time.perf_counter(), _cpu_seconds()
            cohort = read_cohort(root, progress=False, **options)
            seconds, cpu = time.perf_counter() - start, _cpu_seconds() - cpu
            for warning in cohort.warnings[:1]:
                print(f"  first warning: {warning.name}: {warning.reason}")
            print(f"{label:22s} {seconds / n:6.3f} s per scan  ({seconds:5.1f} s for {len(cohort)} kept, "
                  f"{len(cohort.rejected)} rejected, {len(cohort.warnings)} warned); CPU {cpu / n:.3f} s per scan")
        from defacebench.imaging.input_checks import check_image, face_and_brain_warnings, read_voxels

        path = next(root.rglob("*.nii.gz"))
        start = time.perf_counter()
        data = read_voxels(nib.load(str(path)))
        read_s = time.perf_counter() - start
        start = time.perf_counter()
        face_and_brain_warnings(data, nib.load(str(path)).affine)
        look_s = time.perf_counter() - start
        start = time.perf_counter()
        check_image(path)
        print(f"one scan in this process: read + decompress {read_s:.3f} s, defaced/skull-stripped look {look_s:.3f} s, "
              f"whole check {time.perf_counter() - start:.3f} s")
    print("(the machine is shared with other users: wall times are under their load; CPU seconds per scan / 2 is the\n"
          " cost per scan on 2 idle cores, worker start-up included)")


if __name__ == "__main__":
    main()
