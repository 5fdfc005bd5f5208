"""Imaging timings: open + render a 2000x1500 dual-energy pair, per-mode enhancement, simulator.

Writes a simulated 2000x1500 bag as a 16-bit PNG pair (``bench_high.png`` /
``bench_low.png``) into a temporary folder, then times:

* ``open_scan`` of the pair (read + decode + false colour), and its parts;
* the first render after opening (builds the per-scan cache) and each display
  mode with the enhancement controls set (median of ``--repeats``);
* the simulator at 600x800 (the training-data size), CPU and wall seconds per bag;
* threat image projection into the 2000x1500 scan.

Prints one JSON object. Wall times on a shared CPU are noisy; CPU seconds
(``process_time``) and ratios within one run are the steadier figures.

    python benchmarks/bench_imaging.py [--repeats 5] [--bags 10]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np


def _timed(fn, repeats: int) -> dict[str, float]:
    walls, cpus = [], []
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return {
        "wall_ms_median": round(statistics.median(walls) * 1000, 2),
        "wall_ms_min": round(min(walls) * 1000, 2),
        "cpu_ms_median": round(statistics.median(cpus) * 1000, 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--bags", type=int, default=10, help="simulated 600x800 bags to time")
    parser.add_argument("--threads", type=int, default=2, help="OpenCV threads")
    args = parser.parse_args(argv)
    cv2.setNumThreads(args.threads)

    from xrayscreen.imaging import decoders, enhance, material
    from xrayscreen.imaging.readers import open_scan
    from xrayscreen.imaging.simulator import simulate_bag
    from xrayscreen.imaging.tip import project_threat

    out: dict = {
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
            "opencv_threads": args.threads,
        },
        "size_hw": [1500, 2000],
        "repeats": args.repeats,
    }
    bag = simulate_bag(2024, size=(1500, 2000), threats=("gun", "knife"))
    with tempfile.TemporaryDirectory() as tmp:
        hp, lp = Path(tmp) / "bench_high.png", Path(tmp) / "bench_low.png"
        for k, p in enumerate((hp, lp)):
            cv2.imwrite(str(p), np.round(bag.scan.raw[k] * 65535).astype(np.uint16))
        out["pair_bytes"] = hp.stat().st_size + lp.stat().st_size
        open_scan(hp)  # warm-up (imports, colour table)
        out["open_scan_pair"] = _timed(lambda: open_scan(hp), args.repeats)
        data = hp.read_bytes()
        out["decode_one_png16"] = _timed(lambda: decoders.decode_raster(data, "png"), args.repeats)
        scan = open_scan(hp)
    raw = scan.raw
    out["false_colour_only"] = _timed(lambda: material.false_colour(raw[0], raw[1]), args.repeats)

    def first_render():
        enhance._CACHE.clear()
        enhance.render(scan, "organic")

    out["first_render_with_cache_build"] = _timed(first_render, args.repeats)
    enhance.render(scan, "organic")
    modes = {}
    for mode in enhance.MODES:
        enhance.render(scan, mode, brightness=0.05, contrast=1.2, gamma=1.1)  # warm
        modes[mode] = _timed(
            lambda m=mode: enhance.render(scan, m, brightness=0.05, contrast=1.2, gamma=1.1),
            args.repeats,
        )
    out["render_per_mode_with_controls"] = modes

    out["tip_gun_into_2000x1500"] = _timed(
        lambda: project_threat(scan, "gun", seed=1), args.repeats
    )

    simulate_bag(0)  # warm-up
    w, c = time.perf_counter(), time.process_time()
    for i in range(args.bags):
        simulate_bag(i, threats=("gun",) if i % 2 else ())
    n = max(args.bags, 1)
    out["simulator_600x800"] = {
        "bags": args.bags,
        "wall_s_per_bag": round((time.perf_counter() - w) / n, 3),
        "cpu_s_per_bag": round((time.process_time() - c) / n, 3),
    }
    out["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
