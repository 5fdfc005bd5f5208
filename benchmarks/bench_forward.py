"""GANomaly generator forward throughput (windows/s): fp32 and bf16, batch 1 and 64.

Two variants of the same weights (ngf 64, nz 100, 64x64x3 unless told otherwise):

* ``plain``: the ``nn.Module`` as built (NCHW, batch-norm layers), eval + inference_mode,
  ``torch.autocast`` for bf16;
* ``engine``: as the scoring engine prepares it (batch-norm folded into the convs,
  channels-last), i.e. what ``ScoringEngine.score_windows`` runs.

Prints one JSON object. Timings are medians over ``--repeats`` timed runs after a
warm-up; on a shared CPU they are noisy, the ratios within one run less so.

    python benchmarks/bench_forward.py [--device cpu|cuda] [--threads 2] [--repeats 5]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import platform
import statistics
import time

import torch

from xrayscreen.inference.engine import cpu_has_bf16, fuse_batchnorm
from xrayscreen.model.ganomaly import GANomalyConfig, build_generator, count_parameters


def generator_flops(config: GANomalyConfig) -> int:
    """Multiply-add FLOPs (2 per MAC) of one generator forward (G_E, G_D, E) on one window."""
    gen = build_generator(config, init=False).eval()
    flops = 0

    def hook(mod, inp, out):
        nonlocal flops
        if isinstance(mod, torch.nn.Conv2d):
            k = mod.kernel_size[0] * mod.kernel_size[1] * mod.in_channels // mod.groups
            flops += 2 * k * out.numel()
        elif isinstance(mod, torch.nn.ConvTranspose2d):
            k = mod.kernel_size[0] * mod.kernel_size[1] * mod.out_channels // mod.groups
            flops += 2 * k * inp[0].numel()

    hs = [m.register_forward_hook(hook) for m in gen.modules()]
    with torch.inference_mode():
        gen(torch.zeros(1, config.nc, config.isize, config.isize))
    for h in hs:
        h.remove()
    return flops


def time_forward(model, x, dtype, device, repeats: int) -> float:
    """Median seconds of one forward of batch ``x``."""
    ctx = (
        torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
    )
    times = []
    with torch.inference_mode(), ctx:
        for i in range(repeats + 2):
            if device.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            model(x)
            if device.type == "cuda":
                torch.cuda.synchronize()
            if i >= 2:  # two warm-up runs (kernel selection, caches)
                times.append(time.perf_counter() - t)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--ngf", type=int, default=64)
    ap.add_argument("--batches", default="1,64")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cfg = GANomalyConfig(isize=64, nc=3, nz=100, ngf=args.ngf, ndf=args.ngf)
    torch.manual_seed(0)
    plain = build_generator(cfg).eval().to(device)
    engine = fuse_batchnorm(copy.deepcopy(plain)).to(memory_format=torch.channels_last)
    flops = generator_flops(cfg)
    bf16_ok = device.type == "cuda" or cpu_has_bf16()
    results = []
    for batch in [int(b) for b in args.batches.split(",")]:
        x = torch.rand(batch, 3, 64, 64, device=device) * 2 - 1
        for variant, model in (("plain", plain), ("engine", engine)):
            xin = x.contiguous(memory_format=torch.channels_last) if variant == "engine" else x
            for name, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
                if dtype is not None and not bf16_ok:
                    continue
                sec = time_forward(model, xin, dtype, device, args.repeats)
                results.append(
                    {
                        "variant": variant,
                        "precision": name,
                        "batch": batch,
                        "windows_per_s": round(batch / sec, 1),
                        "gflops": round(flops * batch / sec / 1e9, 1),
                    }
                )
    out = {
        "benchmark": "generator_forward",
        "model": {"ngf": cfg.ngf, "nz": cfg.nz, "isize": 64, "nc": 3},
        "generator_params": count_parameters(plain),
        "flops_per_window": flops,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cpu_bf16_units": cpu_has_bf16(),
        "machine": platform.machine(),
        "results": results,
    }
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
