"""What the zoomed-out view and the window density cost end to end in the scoring
engine (issue 7).

The same bundle (default: the bundled default model) scores the same scans three ways:
``plain`` (no zoomed-out view, no density), ``zoom`` (the view, ``zoom`` 2) and
``zoom_density`` (the view plus the window-density term, ``density_weight`` 0.5 unless
the bundle has its own), rounds interleaved, medians of seconds per scan (file already
read; resample, belt, model, normalisation, context, heat map). Scans: the first ``--scans`` SIXray benign
bags when ``--sixray`` exists (resized to the bundle's working scale by the engine),
else simulated bags. Prints one JSON object; compare the ratio, not the seconds (the
CPU is shared).

    python benchmarks/bench_zoom.py --threads 2 --scans 6 --rounds 3
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from xrayscreen.imaging.readers import open_scan
from xrayscreen.inference.engine import ScoringEngine
from xrayscreen.model.bundle import load_bundle

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SIXRAY = REPO.parent / "shared" / "data" / "sixray" / "normal"


def _scans(folder: Path, n: int) -> tuple[list, str]:
    files = sorted(folder.glob("*.jpg")) + sorted(folder.glob("*.png")) if folder.is_dir() else []
    if files:
        return [open_scan(p) for p in files[:n]], f"SIXray benign bags from {folder}"
    from xrayscreen.imaging.simulator import simulate_bag

    return [simulate_bag(seed=900 + i).scan for i in range(n)], "simulated bags"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", default=str(REPO / "resources" / "default_model"))
    ap.add_argument("--sixray", default=str(DEFAULT_SIXRAY))
    ap.add_argument("--scans", type=int, default=6)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--stride", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--zoom", type=float, default=2.0)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    base = load_bundle(a.bundle)
    scans, source = _scans(Path(a.sixray), a.scans)
    engines = {}
    w_dens = float(base.score.params.get("density_weight", 0.0)) or 0.5
    keep = {
        k: v
        for k, v in base.score.params.items()
        if not k.startswith("zoom") and k != "density_weight"
    }
    zoomed = {"zoom": a.zoom, "zoom_mix": base.score.params.get("zoom_mix", "max")}
    variants = {
        "plain": keep,
        "zoom": {**keep, **zoomed},
        "zoom_density": {**keep, **zoomed, "density_weight": w_dens},
    }
    for name, params in variants.items():
        b = copy.copy(base)
        b.score = copy.deepcopy(base.score)
        b.score.params = params
        engines[name] = ScoringEngine(b, "cpu")
        engines[name].warmup()
    times: dict[str, list[float]] = {k: [] for k in engines}
    forwards: dict[str, int] = {}
    for _ in range(a.rounds):
        for name, eng in engines.items():
            t = time.perf_counter()
            for s in scans:
                r = eng.score_scan_sync(s, stride=a.stride, residual=False)
                forwards[name] = forwards.get(name, 0) + int(r.timings["n_forwards"])
            times[name].append((time.perf_counter() - t) / len(scans))
    med = {k: statistics.median(v) for k, v in times.items()}
    print(
        json.dumps(
            {
                "benchmark": "zoomed_view_and_density_cost",
                "bundle": a.bundle,
                "scans": len(scans),
                "source": source,
                "stride": a.stride,
                "zoom": a.zoom,
                "seconds_per_scan": {k: round(v, 3) for k, v in med.items()},
                "density_weight": w_dens,
                "ratio_zoom_plain": round(med["zoom"] / med["plain"], 2),
                "ratio_density_zoom": round(med["zoom_density"] / med["zoom"], 3),
                "forwards_per_scan": {k: v // (a.rounds * len(scans)) for k, v in forwards.items()},
                "machine": f"{platform.machine()}, {a.threads} thread(s)",
                "torch": torch.__version__,
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
