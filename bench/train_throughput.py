"""Training throughput of the paper profile (91x109x91, widths 128/64/64, batch 4).

Prints training samples/s for each variant and its ratio to naive eager PyTorch measured
in the same run, on whatever device is available (``--device``). Every variant runs the
full training step: random rotation on the device, forward, MSE, backward, Adam, with
the images resident on the device. Variants:

``naive``           eager ``model(x)``, bf16 autocast on CUDA (fp32 on CPU)
``fused``           eager :func:`defacebench.model.accel.fast.fused_forward` (same function)
``fused+compile``   the same, ``torch.compile``-d (CUDA only)
``...+cl``          the same with NDHWC activations and weights (``channels_last_3d``)
``...+ro``          ``torch.compile(mode="reduce-overhead")``: CUDA graphs
``...+fa``          ``Adam(fused=True)`` (one kernel for the optimiser step)
``fused+compile+mix`` first block NCDHW, blocks 2-3 NDHWC
``...+tb``          the first block's conv + pool in one Triton kernel (``model/accel/triton_block.py``)
``...+tr``          the random rotation in one Triton kernel (``model/accel/triton_rotate.py``)
``...+m32``         the first block's patch statistics in float32 from the unrounded image
                    (before 2026-11-26's sixth session; now exact bf16 products on the tensor cores)
``vmapG-fused``     G independent runs trained at once (``torch.func.vmap`` over stacked
                    weights; each run still sees its own batches of 4)
``parK:KIND``        K processes train variant KIND on one device at once (several runs
                    sharing a GPU); their samples over the union of their timed windows
``profile:KIND``    a torch.profiler table of variant KIND (where the time goes)
``trainer``         end to end: ``train_condition`` with the paper profile's defaults on a
                    synthetic store; rate of its last epoch, validation included
                    (``trainer+cl[+tb][+tr][+ro][+fa]``: exactly those speed settings, the rest off)

Usage: ``python bench/train_throughput.py [--device cuda] [--steps 30] [--budget-s 300]
[--variants naive,fused+compile+cl,...]``; variants run in the order given.
Not a test: it prints figures, it does not pass or fail.
"""

from __future__ import annotations

import argparse
import copy
import functools
import math
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from defacebench.model.augment import apply_theta, rotation_theta, sample_rotation_angles  # noqa: E402
from defacebench.model.cnn import BrainAgeCNN, describe  # noqa: E402
from defacebench.model.accel import fast  # noqa: E402
from defacebench.model.accel.fast import FusedBrainAgeCNN as Fused, fused_first_block  # noqa: E402

SHAPE = (91, 109, 91)


def _data(n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    images = (torch.rand(n, *SHAPE, generator=g) * 2).to(torch.float16).to(device)
    ages = (50 + 40 * torch.rand(n, generator=g)).to(device)
    return images, ages


def _single_step(forward: Callable, model: nn.Module, images, ages, device, batch: int = 4, fused_adam: bool = False,
                 rotate: Callable = apply_theta) -> Callable[[], None]:
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, **({"fused": True} if fused_adam else {}))
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=math.exp(-1e-4))
    gen = torch.Generator().manual_seed(1)
    state = {"i": 0}
    amp = device.type == "cuda"

    thetas = rotation_theta(sample_rotation_angles(512, 10.0, gen), SHAPE).to(device, torch.float32)

    def step() -> None:
        i = state["i"]
        state["i"] = i + batch
        idx = (torch.arange(batch, device=device) + i) % images.shape[0]
        x = rotate(images.index_select(0, idx).float().unsqueeze(1), thetas[i % 512 : i % 512 + batch])
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            pred = forward(x)
        loss = F.mse_loss(pred.float(), ages[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()

    return step


def _mixed_layout_forward(model: BrainAgeCNN, x: torch.Tensor) -> torch.Tensor:
    """Fused first block in NCDHW, blocks 2-3 in NDHWC (the ``+mix`` variant)."""
    h = fused_first_block(model, x, False).contiguous(memory_format=torch.channels_last_3d)
    for block in model.features[1:]:
        h = F.relu(block.pool(block.norm(block.conv(h))))
    return model.head(h).squeeze(-1).float()


def _vmap_step(n_models: int, images, ages, device, batch: int = 4, compiled: bool = False, fused: bool = True) -> tuple[Callable[[], None], int]:
    from torch.func import functional_call, stack_module_state, vmap

    models = []
    for k in range(n_models):
        torch.manual_seed(k)
        net = BrainAgeCNN(SHAPE, output_bias=70.0)
        models.append((Fused(net) if fused else net).to(device))
    params, buffers = stack_module_state(models)
    base = copy.deepcopy(models[0]).to("meta")

    def one(p, b, x):
        return functional_call(base, (p, b), (x,))

    fwd = vmap(one)
    if compiled:
        fwd = torch.compile(fwd)
    opt = torch.optim.Adam(list(params.values()), lr=1e-4)
    gen = torch.Generator().manual_seed(1)
    state = {"i": 0}
    amp = device.type == "cuda"

    per = batch * n_models
    thetas = rotation_theta(sample_rotation_angles(per, 10.0, gen), SHAPE).to(device, torch.float32)

    def step() -> None:
        i = state["i"]
        state["i"] = i + per
        idx = (torch.arange(per, device=device) + i) % images.shape[0]
        x = apply_theta(images.index_select(0, idx).float().unsqueeze(1), thetas)
        x = x.view(n_models, batch, 1, *SHAPE)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            pred = fwd(params, buffers, x)
        # sum of per-run mean losses: each run's gradient is its own batch-4 MSE gradient
        loss = F.mse_loss(pred.float(), ages[idx].view(n_models, batch), reduction="none").mean(1).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step, batch * n_models


def _time(step: Callable[[], None], samples_per_step: int, steps: int, warmup: int, device: torch.device,
          barrier: Callable[[], None] | None = None) -> float:
    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    if barrier is not None:  # concurrent processes start timing together
        barrier()
    t0 = time.perf_counter()
    wall0 = time.time()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    if barrier is not None:
        print(f"CHILD {steps * samples_per_step} {wall0:.6f} {time.time():.6f}", flush=True)
    return steps * samples_per_step / (time.perf_counter() - t0)


def _file_barrier(folder: Path, index: int, count: int, timeout_s: float = 600.0) -> Callable[[], None]:
    """Wait until all ``count`` processes have touched their file in ``folder``."""

    def wait() -> None:
        (folder / f"ready-{index}").touch()
        deadline = time.time() + timeout_s
        while len(list(folder.glob("ready-*"))) < count:
            if time.time() > deadline:
                raise TimeoutError("the other processes never got ready")
            time.sleep(0.01)

    return wait


def _concurrent(kind: str, count: int, steps: int, shape: tuple[int, ...], device: torch.device) -> float:
    """``count`` processes train variant ``kind`` on one GPU at once; samples of all of them over
    the union of their timed windows (which start together after each one's warm-up)."""
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, __file__, "--device", str(device), "--shape", ",".join(map(str, shape)), "--variants", kind,
               "--steps", str(steps), "--barrier-dir", tmp, "--barrier-count", str(count)]
        procs = [subprocess.Popen([*cmd, "--barrier-index", str(i)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                 for i in range(count)]
        outputs = [p.communicate()[0] for p in procs]
    rows = [line.split()[1:] for out in outputs for line in out.splitlines() if line.startswith("CHILD ")]
    if len(rows) != count:
        raise RuntimeError(f"{count - len(rows)} of {count} processes failed: " + " | ".join(o.strip().splitlines()[-1] for o in outputs if o.strip()))
    samples = sum(int(r[0]) for r in rows)
    window = max(float(r[2]) for r in rows) - min(float(r[1]) for r in rows)
    print(f"  {count} x {kind}: per process " + ", ".join(f"{int(r[0]) / (float(r[2]) - float(r[1])):.0f}" for r in rows) + " samples/s")
    return samples / window


def _train_condition_rate(device: torch.device, n: int, epochs: int, **settings: object) -> float:
    """End to end: a synthetic paper-grid store on disk, ``train_condition`` for ``epochs``
    (``settings`` override the paper profile's speed settings)."""
    import json
    import tempfile

    from defacebench.model.accel.settings import get_speed
    from defacebench.model.profiles import get_profile
    from defacebench.model.train import train_condition
    from defacebench.io.store import write_condition, write_index

    rng = np.random.default_rng(0)
    n_val = n_test = max(4, n // 10)
    index = pd.DataFrame({"participant_id": [f"sub-{i:04d}" for i in range(n)], "session_id": "", "run": "",
                          "age": np.round(rng.uniform(50, 90, n), 1),
                          "split": ["train"] * (n - n_val - n_test) + ["val"] * n_val + ["test"] * n_test})
    with tempfile.TemporaryDirectory() as tmp:
        write_index(tmp, "mni2mm", index)
        rows = [(rng.random(SHAPE, dtype=np.float32) * 2) for _ in range(n)]
        write_condition(tmp, "mni2mm", "raw", rows, index, np.diag([-2.0, 2.0, 2.0, 1.0]))
        t0 = time.perf_counter()
        out = train_condition(tmp, "mni2mm", "raw", 1, get_profile("paper", max_epochs=epochs), device=device, progress=False,
                              speed=get_speed("paper", **settings))
        meta = json.loads((out / "run.json").read_text())
        preds = pd.read_csv(out / "predictions.csv")
        print(f"  train_condition: {epochs} epochs of {n - n_val - n_test} scans in {time.perf_counter() - t0:.0f} s wall "
              f"(compile and evaluation included); run.json samples_per_s {meta['samples_per_s']:.1f} "
              f"(epoch 1 includes compilation), per-epoch s {[round(h, 1) for h in pd.read_csv(out / 'history.csv')['seconds']]}, "
              f"fused={meta['fused_first_block']} compiled={meta['compiled']} mode={meta['speed']['compile_mode']} channels_last={meta['channels_last']} "
              f"triton_block={meta['triton_block']} triton_rotate={meta['triton_rotate']} fused_adam={meta['fused_adam']}, "
              f"{len(preds)} predictions, complete={meta['complete']}")
        hist = pd.read_csv(out / "history.csv")
        return (n - n_val - n_test) / float(hist["seconds"].iloc[-1])  # last epoch: no compilation


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--budget-s", type=float, default=300.0, help="skip remaining variants after this many seconds")
    parser.add_argument("--groups", default="3,6", help="runs trained at once in the vmap variants")
    parser.add_argument("--variants", default="naive,fused+compile,fused+compile+cl,naive+cl,fused+compile+cl+ro,fused+compile+cl+fa,trainer+cl,trainer,vmap+compile,fused")
    parser.add_argument("--shape", default="91,109,91", help="input grid (smaller only to smoke-test the script)")
    parser.add_argument("--barrier-dir", type=Path, default=None, help=argparse.SUPPRESS)  # child of a parK: variant
    parser.add_argument("--barrier-index", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--barrier-count", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    global SHAPE
    SHAPE = tuple(int(v) for v in args.shape.split(","))
    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = True
    start = time.perf_counter()
    if device.type == "cuda":
        print(f"device: {torch.cuda.get_device_name(device)}, torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}")
    else:
        print(f"device: cpu, {torch.get_num_threads()} threads, torch {torch.__version__}")
        args.steps, args.warmup = min(args.steps, 3), 1
    print(describe(BrainAgeCNN(SHAPE)))
    images, ages = _data(64, device)
    wanted = args.variants.split(",")
    results: dict[str, float] = {}

    def report(name: str, rate: float) -> None:
        results[name] = rate
        base = results.get("naive")
        ratio = f"  x{rate / base:.2f} vs naive" if base else ""
        print(f"{name:<22} {rate:8.1f} samples/s{ratio}   [{time.perf_counter() - start:.0f} s elapsed]", flush=True)

    def attempt(name: str, fn: Callable[[], float]) -> None:
        if time.perf_counter() - start > args.budget_s:
            print(f"{name:<22} skipped (time budget)")
            return
        try:
            report(name, fn())
        except Exception as exc:  # a variant that fails is reported, the others still run
            print(f"{name:<22} failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
            traceback.print_exc(limit=2, file=sys.stdout)
        finally:
            if device.type == "cuda":
                torch.cuda.empty_cache()

    def build_single(kind: str) -> Callable[[], None]:
        """``naive`` or ``fused``, then any of ``+compile``, ``+cl``, ``+ro``, ``+fa``, ``+mix``, ``+tb``, ``+tr``, ``+m32``."""
        base, *opts = kind.split("+")
        torch.manual_seed(0)
        model = BrainAgeCNN(SHAPE, output_bias=70.0).to(device)
        cl = "cl" in opts
        if cl:
            model = model.to(memory_format=torch.channels_last_3d)
        fwd: Callable = model if base == "naive" else Fused(model, channels_last=cl, triton_block="tb" in opts)
        if "mix" in opts:  # first block NCDHW (its max pooling backward), blocks 2-3 NDHWC
            model = model.to(memory_format=torch.channels_last_3d)
            fwd = functools.partial(_mixed_layout_forward, model)
        if "compile" in opts or "ro" in opts:
            fwd = torch.compile(fwd, mode="reduce-overhead" if "ro" in opts else None)
        rotate = apply_theta
        if "tr" in opts:
            from defacebench.model.accel.triton_rotate import rotate_volumes as rotate
        return _single_step(fwd, model, images, ages, device, fused_adam="fa" in opts, rotate=rotate)

    barrier = _file_barrier(args.barrier_dir, args.barrier_index, args.barrier_count) if args.barrier_dir else None

    def single(kind: str) -> float:
        moments = fast.patch_moments
        if "m32" in kind.split("+"):  # float32 statistics of the unrounded image
            fast.patch_moments = lambda x, dtype=None: moments(x)
        try:
            rate = _time(build_single(kind), 4, args.steps, args.warmup + (3 if "compile" in kind else 0), device, barrier)
        finally:
            fast.patch_moments = moments
        if "compile" in kind:  # a graph break leaves Python between graphs on every step
            from torch._dynamo.utils import counters

            print(f"  {kind}: {sum(counters['graph_break'].values())} graph break(s)")
            counters.clear()
        return rate

    def profile_kernels(kind: str, steps: int = 8) -> None:
        """Where a step's time goes: the top operators and kernels of ``steps`` steps."""
        from torch.profiler import ProfilerActivity, profile

        step = build_single(kind)
        for _ in range(args.warmup + 3):
            step()
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        if device.type == "cuda":
            torch.cuda.synchronize()
        with profile(activities=activities) as prof:
            for _ in range(steps):
                step()
            if device.type == "cuda":
                torch.cuda.synchronize()
        # self time: the kernels themselves, not the compiled regions and autograd nodes around them
        key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
        print(f"profile of {kind}, {steps} steps of 4 samples, sorted by {key}:")
        print(prof.key_averages().table(sort_by=key, row_limit=30, max_name_column_width=90))

    def vmapped(g: int, compiled: bool = False, fused: bool = True) -> float:
        step, per = _vmap_step(g, images, ages, device, compiled=compiled, fused=fused)
        return _time(step, per, max(5, args.steps // g * 2), 4 if compiled else 3, device)

    def needs_cuda(kind: str) -> bool:
        kind = kind.removeprefix("profile:").split(":")[-1]
        return kind in ("vmap+compile", "compile-max-autotune") or bool({"compile", "ro"} & set(kind.split("+")))

    for kind in wanted:  # in the order given
        if needs_cuda(kind) and device.type != "cuda":
            print(f"{kind:<22} skipped (CUDA only)")
        elif kind.startswith("par") and ":" in kind:
            count, inner = int(kind[3:].split(":")[0]), kind.split(":", 1)[1]
            attempt(kind, lambda count=count, inner=inner: _concurrent(inner, count, args.steps * 2, SHAPE, device))
        elif kind.startswith("profile:"):
            if time.perf_counter() - start > args.budget_s:
                print(f"{kind:<22} skipped (time budget)")
            else:
                profile_kernels(kind.split(":", 1)[1])
        elif kind.split("+")[0] in ("naive", "fused"):
            attempt(kind, lambda kind=kind: single(kind))
        elif kind == "vmap":
            for g in (int(v) for v in args.groups.split(",")):
                attempt(f"vmap{g}-fused", lambda g=g: vmapped(g))
        elif kind == "vmap-naive":
            g = int(args.groups.split(",")[0])
            attempt(f"vmap{g}-naive", lambda g=g: vmapped(g, fused=False))
        elif kind == "vmap+compile":
            g = int(args.groups.split(",")[-1])
            attempt(f"vmap{g}-fused+compile", lambda g=g: vmapped(g, compiled=True))
        elif kind == "compile-max-autotune":

            def maxat() -> float:
                torch.manual_seed(0)
                model = BrainAgeCNN(SHAPE, output_bias=70.0).to(device)
                fwd = torch.compile(Fused(model), mode="max-autotune-no-cudagraphs")
                return _time(_single_step(fwd, model, images, ages, device), 4, args.steps, args.warmup + 3, device)

            attempt("fused+compile(max-autotune-no-cudagraphs)", maxat)
        elif kind.split("+")[0] == "trainer":  # trainer[+cl][+tb][+tr][+ro][+fa]
            n = 240 if device.type == "cuda" else 12
            opts = set(kind.split("+")[1:])
            speed = {"channels_last": "cl" in opts, "triton_block": "tb" in opts, "triton_rotate": "tr" in opts, "fused_adam": "fa" in opts,
                     "compile_mode": "reduce-overhead" if "ro" in opts else "default"} if opts else {}
            attempt(f"{kind} (last epoch, with val)", lambda speed=speed: _train_condition_rate(device, n, 3 if device.type == "cuda" else 1, **speed))
        else:
            print(f"{kind:<22} unknown variant")
    if device.type == "cuda":
        print(f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")
    print(f"total {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
