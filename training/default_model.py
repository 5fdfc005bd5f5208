"""Regenerate the bundled default model (``resources/default_model/``) from the project's
own simulated dual-energy bags (never from research-licensed data).

    python -m xrayscreen.training.default_model --out resources/default_model --overwrite

The bags are simulated by :func:`xrayscreen.imaging.simulator.simulate_bag` with seeds
``SEED0 .. SEED0 + bags - 1`` (no threats), rendered to false-colour RGB by the
simulator, and trained with the X-ray configuration (``TrainConfig.xray()``: -log RGB
input, GANomaly's unexplained density plus a feature memory of normal windows,
normalised per scan, with a 128 px spatial context) at the SIXray working scale
(longer side 800 px), so the model accepts every kind of scan the readers open.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from .config import TrainConfig

SEED0 = 100_000  # normal training bags: SEED0 + i; evaluation bags use other seeds
SIZE = (600, 800)  # (H, W): the working scale's longer side, so no resampling


def default_config(**changes) -> TrainConfig:
    """The default model's training settings.

    Small on purpose: ngf 24 / ndf 16 / nz 100 with float16 weights keeps the bundle
    (generator + discriminator) under 5 MB (ngf 32 would be 8 MB); bf16 autocast and
    64 windows per bag keep training to minutes on a laptop CPU.
    """
    # The X-ray configuration chosen by the issue-7 ablation (TrainConfig.xray(): stable
    # D, -log RGB input, memory + unexplained density per scan with context), small.
    base = TrainConfig.xray(
        window=64,
        stride=32,
        longer_side=800,
        ngf=24,
        ndf=16,
        nz=100,
        epochs=6,
        batch_size=64,
        bf16=True,
        max_windows_per_scan=64,
        val_fraction=0.15,
        half_weights=True,
        seed=0,
        device="cpu",
        bank_size=1500,  # the feature memory: ~0.3 MB in float16, keeps the bundle < 5 MB
    )
    return base.replace(**changes)


def simulate_normal_bags(n: int, seed0: int = SEED0):
    """Yield ``n`` simulated normal (threat-free) scans."""
    from xrayscreen.imaging.simulator import simulate_bag

    for i in range(n):
        yield simulate_bag(seed0 + i, size=SIZE).scan


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("resources/default_model"))
    ap.add_argument("--bags", type=int, default=48, help="simulated normal bags")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--max-windows-per-scan", type=int, default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--overwrite", action="store_true")
    args = ap.parse_args(argv)
    changes = {"threads": args.threads}
    if args.epochs:
        changes["epochs"] = args.epochs
    if args.max_windows_per_scan is not None:
        changes["max_windows_per_scan"] = args.max_windows_per_scan
    cfg = default_config(**changes)
    from .cli import _Bars
    from .pipeline import iter_train

    t0 = time.perf_counter()
    print(f"simulating {args.bags} normal bags ...", file=sys.stderr, flush=True)
    scans = list(simulate_normal_bags(args.bags))
    t_sim = time.perf_counter() - t0
    bars = _Bars(True)
    result = None
    for ev in iter_train(cfg, scans, args.out, overwrite=args.overwrite):
        bars.update(ev)
        if ev.phase == "done":
            result = ev.result
    bars.close()
    assert result is not None
    size = sum(f.stat().st_size for f in args.out.iterdir())
    print(
        json.dumps(
            {
                "bundle": str(args.out),
                "model_id": result.bundle.model_id,
                "bags": args.bags,
                "seeds": [SEED0, SEED0 + args.bags - 1],
                "train_windows": result.n_train_windows,
                "val_windows": result.n_val_windows,
                "simulate_s": round(t_sim, 1),
                "train_s": round(result.elapsed_s, 1),
                "bundle_bytes": size,
                "config": cfg.to_dict(),
            },
            indent=1,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
