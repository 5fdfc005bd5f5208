"""The shipped default model end to end on one device: milliseconds per scan, windows/s.

Scores simulated bags with the bundled model (``resources/default_model``: feature
memory, zoomed-out view, window density and the projected-threat head, i.e. two model
passes per window) through ``ScoringEngine.score_scan_sync``, after a warm-up, at each
stride. The scan is already decoded (in memory): the time is the engine's, from the
working-scale resample to the finished heat map. Sizes are the input scans' (the bundle
works at longer side 800, so a 1000x1000 scan is scored at 800x800).

Reported per size and stride: median ms per scan, the engine's stage timings (median),
model passes per second of forward time and per second end to end. ``--parity`` also
scores each bag on the CPU in fp32 and reports the agreement of the window scores.

    python benchmarks/bench_default_model.py --device cuda --repeats 10
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from xrayscreen.imaging.simulator import simulate_bag
from xrayscreen.inference.engine import ScoringEngine
from xrayscreen.model.bundle import load_bundle

DEFAULT = Path(str(resources.files("xrayscreen.resources") / "default_model"))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_scans(engine: ScoringEngine, scans: list, stride: int, repeats: int) -> dict:
    """Median ms per scan and stage timings over ``repeats`` passes over ``scans``."""
    ms, stages, fwd_rate, e2e_rate = [], {}, [], []
    for _ in range(repeats):
        for scan in scans:
            _sync(engine.device)
            t = time.perf_counter()
            res = engine.score_scan_sync(scan, stride=stride)
            _sync(engine.device)
            dt = time.perf_counter() - t
            ms.append(1000 * dt)
            tm = res.timings
            for k in ("resample_s", "belt_s", "input_s", "forward_s", "scatter_s", "fold_s"):
                stages.setdefault(k.replace("_s", "_ms"), []).append(1000 * tm.get(k, 0.0))
            fwd_rate.append(tm["n_forwards"] / tm["forward_s"])
            e2e_rate.append(tm["n_forwards"] / dt)
    return {
        "ms_per_scan_median": statistics.median(ms),
        "ms_per_scan_min": min(ms),
        "stage_ms_median": {k: statistics.median(v) for k, v in stages.items()},
        "model_passes_per_scan": res.timings["n_forwards"],
        "working_shape_hw": list(res.latent_map.shape),
        "forward_passes_per_s": statistics.median(fwd_rate),
        "end_to_end_passes_per_s": statistics.median(e2e_rate),
    }


def parity(bundle, scans: list, stride: int, device: torch.device) -> dict:
    """Window-score agreement of ``device`` (default precision) with the CPU in fp32."""
    cpu = ScoringEngine(bundle, "cpu", autocast="off")
    dev = ScoringEngine(bundle, device)
    thr = bundle.calibration.default_threshold
    corr, agree, maxd = [], [], []
    for scan in scans:
        a = cpu.score_scan_sync(scan, stride=stride)
        b = dev.score_scan_sync(scan, stride=stride)
        fg = ~a.background
        sa, sb = a.window_calibrated[fg], b.window_calibrated[fg]
        corr.append(float(np.corrcoef(sa, sb)[0, 1]))
        agree.append(float(np.mean((sa >= thr) == (sb >= thr))))
        maxd.append(float(np.abs(sa - sb).max()))
    return {
        "device_precision": str(dev.dtype),
        "corr_min": min(corr),
        "alarm_agreement_min": min(agree),
        "max_abs_diff_calibrated": max(maxd),
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--model", default=str(DEFAULT))
    ap.add_argument("--sizes", default="600x800,1000x1000", help="HxW of the simulated bags")
    ap.add_argument("--bags", type=int, default=3, help="bags per size")
    ap.add_argument("--strides", default="16,32")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch default)")
    ap.add_argument("--parity", action="store_true", help="also compare with the CPU in fp32")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    bundle = load_bundle(args.model)
    out: dict = {
        "benchmark": "default_model_end_to_end",
        "model": args.model,
        "model_id": str(bundle.model_id),
        "score": bundle.score.kind,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "torch": torch.__version__,
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
    }
    t = time.perf_counter()
    engine = ScoringEngine(bundle, device)
    engine.warmup()
    out["engine"] = {**engine.describe(), "prepare_and_warmup_s": time.perf_counter() - t}
    out["results"] = {}
    for size in args.sizes.split(","):
        h, w = (int(v) for v in size.split("x"))
        scans = [
            simulate_bag(i, size=(h, w), threats=("gun", "knife")).scan for i in range(args.bags)
        ]
        engine.score_scan_sync(scans[0], stride=16)  # warm this size (allocator, kernels)
        for stride in (int(s) for s in args.strides.split(",")):
            rec = time_scans(engine, scans, stride, args.repeats)
            if args.parity:
                rec["parity_vs_cpu_fp32"] = parity(bundle, scans, stride, device)
            out["results"][f"{size}_stride{stride}"] = rec
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
