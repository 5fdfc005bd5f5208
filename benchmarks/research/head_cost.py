"""What the projected-threat head costs when scoring whole scans (issue 7).

Scores the same scans with one bundle twice per scan, alternating: as it ships (with its
``tip_weight``) and with the head switched off (the same bundle, ``tip_weight`` removed),
and prints the median seconds per scan of each and their ratio (one JSON line). Ratios
measured in one run on a shared CPU are the figure to read, not the seconds::

    python benchmarks/research/head_cost.py --bundle /tmp/models/jt_s6 \\
        --scans /tmp/sixray_lists/benign_val.txt --n 8 --threads 2
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from xrayscreen.imaging.readers import open_scan
from xrayscreen.inference.engine import ScoringEngine
from xrayscreen.model.bundle import load_bundle


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", required=True)
    p.add_argument("--scans", required=True, help="a .txt list of scan files")
    p.add_argument("--n", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    with_head = load_bundle(a.bundle)
    if with_head.tip_head is None:
        raise SystemExit(f"{a.bundle} has no projected-threat head")
    without = copy.copy(with_head)
    without.score = copy.deepcopy(with_head.score)
    without.score.params.pop("tip_weight", None)
    engines = {"head": ScoringEngine(with_head, "cpu"), "no_head": ScoringEngine(without, "cpu")}
    for e in engines.values():
        e.warmup()
    paths = [Path(x.strip()) for x in open(a.scans) if x.strip()][: a.n]
    times: dict[str, list[float]] = {k: [] for k in engines}
    for path in paths:
        scan = open_scan(path)
        for name, eng in engines.items():
            t = time.perf_counter()
            eng.score_scan_sync(scan, stride=16, residual=False)
            times[name].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    out = {
        "bundle": a.bundle,
        "scans": len(paths),
        "threads": a.threads,
        "median_s_per_scan": {k: round(v, 3) for k, v in med.items()},
        "head_over_no_head": round(med["head"] / med["no_head"], 3),
    }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
