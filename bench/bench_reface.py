"""Seconds per refacing method on top of the shared registration (issue 18), median of repeats.

Run: python bench/bench_reface.py [--repeats 3] [--voxel-mm 1 3]
``--voxel-mm 1`` uses pydeface's 1 mm mean head (176x256x256); other sizes a head simulated by
``defacebench simulate --voxel-mm X`` (ROBEX base head; the demo uses 3 mm). The shared work
(brain extraction, brain -> MNI registration, pydeface's head registration) runs once per head
and is handed to every repeat, as the runner shares it between methods; each repeat then
times one method's own work (``reface``) on a fresh context, and writing its three images.
mrireface's own work includes its SyN registration, printed apart. The shell is built and
loaded before timing. Prints the load average: the machine is shared (2 cores), so the CPU
seconds of the process (all threads) are printed too; they depend less on the load.
"""

from __future__ import annotations

import argparse
import importlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_deface import head_path  # noqa: E402


def main() -> None:
    import numpy as np

    from defacebench.conditions import REFACERS
    from defacebench.deface.context import SubjectContext
    from defacebench.deface.runner import _write_method_outputs
    from defacebench.imaging.shell import reface_shell
    from defacebench.imaging.templates import mni_head, pydeface_to_mni
    from defacebench.io.nifti import load_image

    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--voxel-mm", type=float, nargs="+", default=[1.0, 3.0])
    parser.add_argument("--methods", default=",".join(REFACERS))
    args = parser.parse_args()
    reface_shell(), mni_head(2), pydeface_to_mni()  # build/cache the templates outside the timing
    with tempfile.TemporaryDirectory() as work:
        for voxel_mm in args.voxel_mm:
            path = head_path(voxel_mm, Path(work))
            img = load_image(path, reorient=False)
            shared = SubjectContext(img)
            t0 = time.perf_counter()
            shared.brain(), shared.head(), shared.subject_to_mni(), shared.pydeface_template_to_subject()
            shared_s = time.perf_counter() - t0
            print(f"voxel {voxel_mm:g} mm, grid {img.shape}, {args.repeats} runs, load average {os.getloadavg()[0]:.1f} (2 cores, shared machine)")
            print(f"  shared (brain, head mask, brain->MNI, pydeface head registration) {shared_s:7.2f} s, once")
            for method in args.methods.split(","):
                module = importlib.import_module(f"defacebench.deface.{method}")
                own, syn, write, cpu = [], [], [], []
                for i in range(args.repeats):
                    ctx = SubjectContext(img, brain_mask=shared.brain_mask, to_mni=shared.to_mni, template_to_subject=shared.template_to_subject)
                    ctx._head = shared._head
                    t0, c0 = time.perf_counter(), time.process_time()
                    result = module.reface(ctx)
                    own.append(time.perf_counter() - t0)
                    cpu.append(time.process_time() - c0)
                    syn.append(ctx.timings.get("register_syn_head", 0.0))
                    paths = {f"{method}_{k}": Path(work) / f"{method}-{i}-{k}.nii.gz" for k in ("defaced", "face", "mask")}
                    t0 = time.perf_counter()
                    _write_method_outputs(ctx.data, result.removal, np.dtype(np.float32), img.affine, paths, method, result.fill)
                    write.append(time.perf_counter() - t0)
                line = f"  {method:15s} own work {statistics.median(own):6.2f} s wall (min {min(own):.2f}), {statistics.median(cpu):6.2f} s CPU"
                if max(syn) > 0:
                    line += f", of which SyN {statistics.median(syn):.2f} s, rest {statistics.median(np.subtract(own, syn)):.2f} s"
                print(line + f"; writing its 3 images {statistics.median(write):.2f} s")


if __name__ == "__main__":
    main()
