"""What making one training batch costs: the host loader against the device-resident path.

A training batch of the X-ray recipe is 64 windows of 64x64x3 taken from the uint8 window
cache, turned by a random dihedral code and rendered by the jitter (gamma 1.25, hue 20),
then moved to the training device. The host loader (``make_loader``) does that work on the
CPU and uploads float32; on an accelerator ``resident_windows`` uploads the cache once and
``device_batches`` does the same work there. Times both (ms per batch, median of rounds,
each round synchronised at its end) and prints JSON; on the CPU only the host path runs::

    python benchmarks/bench_batch_pipeline.py --threads 2
    python benchmarks/bench_batch_pipeline.py --device cuda --threads 16
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

from xrayscreen.training.data import (
    RenderJitter,
    device_batches,
    epoch_batches,
    make_loader,
    resident_windows,
)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--windows", type=int, default=16384, help="cache size (the recipe's ~16k)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--batches", type=int, default=40, help="batches per round")
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    g = torch.Generator().manual_seed(0)
    data = torch.randint(0, 256, (a.windows, 3, 64, 64), dtype=torch.uint8, generator=g)
    jitter = RenderJitter(1.25, 20.0, "rgb", 0)
    batches, codes = epoch_batches(len(data), a.batch, seed=0, epoch=0, augment_on=True)
    batches, codes = batches[: a.batches], codes[: a.batches]

    def host() -> None:
        for x in make_loader(data, batches, codes, jitter=jitter, epoch_seed=1):
            x.to(dev, non_blocking=True)
        _sync(dev)

    paths = {"host_loader": host}
    t_up = None
    if dev.type != "cpu":
        t = time.perf_counter()
        up = resident_windows(data, dev)
        _sync(dev)
        t_up = time.perf_counter() - t
        if up is not None:

            def resident() -> None:
                for _ in device_batches(up, batches, codes, jitter, epoch_seed=1):
                    pass
                _sync(dev)

            paths["device_resident"] = resident
    times: dict[str, list[float]] = {k: [] for k in paths}
    for fn in paths.values():  # warm-up
        fn()
    for _ in range(a.rounds):  # round-robin: load from other jobs hits both alike
        for name, fn in paths.items():
            t = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - t) / len(batches) * 1e3)
    out = {
        "device": str(dev),
        "device_name": torch.cuda.get_device_name(dev)
        if dev.type == "cuda"
        else platform.machine(),
        "threads": a.threads,
        "torch": torch.__version__,
        "batch": a.batch,
        "cache_windows": len(data),
        "cache_upload_s": None if t_up is None else round(t_up, 4),
        "ms_per_batch": {k: round(statistics.median(v), 3) for k, v in times.items()},
        "rounds": {k: [round(x, 3) for x in v] for k, v in times.items()},
    }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
