"""Training throughput (windows/s) of the GANomaly update, ngf 32/64, fp32/bf16 autocast.

Times full training steps (G step + D step + reset check, Adam updates) of
``xrayscreen.training.loop.GanomalyTrainer`` on random 64x64 RGB windows. The
configurations are measured round-robin (several short rounds, median per
configuration) so that load from other jobs on a shared machine hits them alike;
the ratios within one run are the robust figures.

Usage::

    python benchmarks/bench_training.py --threads 2 --steps 6 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

from xrayscreen.training.config import TrainConfig
from xrayscreen.training.loop import GanomalyTrainer


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--window", type=int, default=64)
    ap.add_argument("--steps", type=int, default=6, help="timed steps per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--ngf", type=int, nargs="+", default=[32, 64])
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    x = (
        torch.rand(
            args.batch, 3, args.window, args.window, generator=torch.Generator().manual_seed(0)
        )
        * 2
        - 1
    ).to(dev)
    configs = [(ngf, bf16) for ngf in args.ngf for bf16 in (False, True)]
    trainers = {}
    for ngf, bf16 in configs:
        cfg = TrainConfig(
            window=args.window,
            ngf=ngf,
            ndf=ngf,
            nz=100,
            bf16=bf16,
            batch_size=args.batch,
            device=args.device,
        )
        tr = GanomalyTrainer(cfg, dev)
        for s in range(2):  # warm-up (kernel selection, allocator)
            tr.train_step(x, 0, s)
        trainers[(ngf, bf16)] = tr
    rates: dict[tuple[int, bool], list[float]] = {c: [] for c in configs}
    # Windows per CPU-second of this process: much steadier than wall time when other
    # jobs share the cores (with 1 thread it is the single-core throughput).
    cpu_rates: dict[tuple[int, bool], list[float]] = {c: [] for c in configs}
    for _ in range(args.rounds):
        for c in configs:
            tr = trainers[c]
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t, c0 = time.perf_counter(), time.process_time()
            for s in range(args.steps):
                tr.train_step(x, 0, s)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            rates[c].append(args.batch * args.steps / (time.perf_counter() - t))
            cpu_rates[c].append(args.batch * args.steps / (time.process_time() - c0))
    rows = []
    for ngf, bf16 in configs:
        r = rates[(ngf, bf16)]
        rows.append(
            {
                "ngf": ngf,
                "precision": "bf16 autocast" if bf16 else "fp32",
                "windows_per_s_median": round(statistics.median(r), 1),
                "windows_per_s_rounds": [round(v, 1) for v in r],
                "windows_per_cpu_s_median": round(statistics.median(cpu_rates[(ngf, bf16)]), 1),
            }
        )
    for ngf in args.ngf:
        f32 = next(r for r in rows if r["ngf"] == ngf and r["precision"] == "fp32")
        b16 = next(r for r in rows if r["ngf"] == ngf and r["precision"] != "fp32")
        b16["speedup_vs_fp32"] = round(b16["windows_per_s_median"] / f32["windows_per_s_median"], 2)
        b16["cpu_speedup_vs_fp32"] = round(
            b16["windows_per_cpu_s_median"] / f32["windows_per_cpu_s_median"], 2
        )
    print(
        json.dumps(
            {
                "benchmark": "training_throughput",
                "what": f"G step + D step per batch (Adam), 64x64x3 windows, batch {args.batch}",
                "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
                "device": str(dev),
                "threads": args.threads,
                "torch": torch.__version__,
                "steps_per_round": args.steps,
                "rounds": args.rounds,
                "results": rows,
            },
            indent=1,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
