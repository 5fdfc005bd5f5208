"""Wall time of the shipped X-ray training recipe on simulated normal bags, by stage.

Simulates ``--bags`` threat-free bags (``simulate_bag``, seeds 200000+, in a process
pool), then runs ``xrayscreen.training.pipeline.iter_train`` with
``TrainConfig.xray(...)``: what ``xrayscreen train`` and the GUI's retraining run (5
epochs, ngf 32, non-overlapping windows, bf16 where the device has bf16 units -- since the
seventeenth session; before it 25 epochs, ngf 64, stride 32 -- the stabilised
discriminator, the feature memory, the projected-threat head, calibration on held-out bags
scored whole), with only the changes given on the command line. Stage times come from the pipeline's progress
events (loading / train / validate / calibrate / saving).

    python benchmarks/bench_recipe_training.py --device cuda --bags 60

Simulated bags stand in for the SIXray ones, which never leave the development machine:
the figure is the recipe's cost per window, not a model to ship.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from multiprocessing import get_context
from pathlib import Path

import torch

SEED0 = 200_000


def _bag(seed: int):
    from xrayscreen.imaging.simulator import simulate_bag

    return simulate_bag(seed, size=(600, 800)).scan


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--bags", type=int, default=60)
    ap.add_argument("--epochs", type=int, default=None, help="default: the recipe's 25")
    ap.add_argument("--ngf", type=int, default=None, help="default: the recipe's 64")
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast (recipe: off)")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch default)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="simulation pool")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    # Simulate before anything touches CUDA (forked workers must not inherit a context).
    with get_context("fork").Pool(max(1, args.workers)) as pool:
        scans = pool.map(_bag, range(SEED0, SEED0 + args.bags))
    simulate_s = time.perf_counter() - t0

    from xrayscreen.training.config import TrainConfig
    from xrayscreen.training.pipeline import iter_train

    changes: dict = {"device": args.device, "threads": args.threads}
    if args.epochs:
        changes["epochs"] = args.epochs
    if args.ngf:
        changes["ngf"] = changes["ndf"] = args.ngf
    if args.bf16:
        changes["bf16"] = True
    cfg = TrainConfig.xray(**changes)
    stages: dict[str, float] = {}
    last_phase, last_t = None, time.perf_counter()
    t_train = last_t
    result = None
    with tempfile.TemporaryDirectory() as tmp:
        for ev in iter_train(cfg, scans, Path(tmp) / "model"):
            now = time.perf_counter()
            if last_phase is not None:
                stages[last_phase] = stages.get(last_phase, 0.0) + now - last_t
            if ev.phase != last_phase:  # progress on stderr survives a time limit
                print(f"{now - t_train:7.1f} s  {ev.phase}  epoch {ev.epoch}", file=sys.stderr)
            last_phase, last_t = ev.phase, now
            if ev.phase == "done":
                result = ev.result
        total_s = time.perf_counter() - t_train
    assert result is not None
    windows = result.n_train_windows
    out = {
        "benchmark": "recipe_training",
        "device": args.device,
        "device_name": torch.cuda.get_device_name() if args.device.startswith("cuda") else None,
        "torch": torch.__version__,
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "bags": args.bags,
        "simulate_s": round(simulate_s, 1),
        "train_windows": windows,
        "val_windows": result.n_val_windows,
        "epochs": cfg.epochs,
        "ngf": cfg.ngf,
        "stride": cfg.stride,
        "bf16": cfg.bf16,  # None = auto: bf16 where the device has bf16 units
        "precision": result.bundle.provenance.get("precision"),
        "fit_s": round(result.elapsed_s, 1),
        "fit_windows_per_s": round(windows * cfg.epochs / result.elapsed_s, 1),
        "stage_s": {k: round(v, 1) for k, v in stages.items()},
        "total_s": round(total_s, 1),
        "tip_head": result.bundle.training.get("tip_head"),
    }
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
