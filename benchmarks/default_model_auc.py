"""Window AUC of a bundle (default: the bundled default model) on held-out simulated bags.

Held-out bags come from the project's simulator with seeds disjoint from the default
model's training seeds (``xrayscreen.training.default_model.SEED0 + i``):

* threat bags (seeds 200000 + i): one gun, knife or blade each (cycling), ground truth =
  the simulator's pixel masks;
* clean bags (seeds 300000 + i): pool (a), windows of bags with no threat.

Protocol as for SIXray (``../shared/data/README.md``): working scale longer side 800, 64 px
windows, stride 16, empty-belt windows left out; a window is anomalous when >= 30 % of its
pixels are threat (mask rule), normal when it touches no threat pixel. Pools: (a) clean
bags' windows, (b) threat-free windows of the threat bags. Scores: the bundle's calibrated
window score through the scoring engine, beside the four non-learned floors.

Usage::

    python benchmarks/default_model_auc.py --threat-bags 12 --clean-bags 6 --threads 1
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from xrayscreen.evaluation.floors import FLOOR_NAMES, floor_scores
from xrayscreen.evaluation.labelling import ANOMALOUS, NORMAL, label_mask
from xrayscreen.evaluation.metrics import detection_at_far, roc_auc
from xrayscreen.imaging.representation import resize
from xrayscreen.imaging.simulator import THREATS, simulate_bag
from xrayscreen.inference.engine import ScoringEngine
from xrayscreen.inference.windows import pad_to_grid
from xrayscreen.model.bundle import load_bundle

REPO = Path(__file__).resolve().parents[1]
SIZE = (600, 800)


def _bag_windows(engine: ScoringEngine, scan, mask: np.ndarray | None, stride: int):
    res = engine.score_scan_sync(scan, stride=stride, residual=False)
    grid = res.grid
    f = res.scale_factor  # 1.0 for the default model (bags are simulated at 800 px)
    rgb = torch.from_numpy(resize(scan.rgb, f)).permute(2, 0, 1).float() / 255.0
    floors = floor_scores(pad_to_grid(rgb, grid, 1.0), grid)
    if mask is None:
        label = np.zeros(len(grid), dtype=np.int8)
    else:
        m = resize(mask.astype(np.uint8), f, nearest=True)
        label, _ = label_mask(grid, m, {1: "threat"}, ("threat",))
    keep = ~res.background
    return res.window_calibrated[keep], {k: v[keep] for k, v in floors.items()}, label[keep]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bundle", type=Path, default=REPO / "resources" / "default_model")
    ap.add_argument("--threat-bags", type=int, default=12)
    ap.add_argument("--clean-bags", type=int, default=6)
    ap.add_argument("--stride", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--drop-param",
        action="append",
        default=[],
        metavar="KEY",
        help="score the same bundle without this score setting (e.g. tip_weight: the same "
        "weights without the projected-threat head); repeatable",
    )
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    bundle = load_bundle(args.bundle)
    if args.drop_param:
        missing = [k for k in args.drop_param if k not in bundle.score.params]
        if missing:
            raise SystemExit(f"the bundle's score has no {', '.join(missing)}")
        bundle.score.params = {
            k: v for k, v in bundle.score.params.items() if k not in args.drop_param
        }
    engine = ScoringEngine(bundle, "cpu")
    t0 = time.perf_counter()
    pools: dict[str, dict[str, list[np.ndarray]]] = {
        name: {"model": [], **{f: [] for f in FLOOR_NAMES}} for name in ("anom", "a", "b")
    }
    per_class: dict[str, dict[str, list[np.ndarray]]] = {t: {"model": []} for t in THREATS}
    for i in range(args.threat_bags):
        threat = THREATS[i % len(THREATS)]
        bag = simulate_bag(200_000 + i, size=SIZE, threats=(threat,))
        model, floors, label = _bag_windows(engine, bag.scan, bag.masks[threat], args.stride)
        for key, sel in (("anom", label == ANOMALOUS), ("b", label == NORMAL)):
            pools[key]["model"].append(model[sel])
            for f in FLOOR_NAMES:
                pools[key][f].append(floors[f][sel])
        per_class[threat]["model"].append(model[label == ANOMALOUS])
        print(
            f"threat bag {i} ({threat}): {int((label == ANOMALOUS).sum())} anomalous windows",
            file=sys.stderr,
            flush=True,
        )
    for i in range(args.clean_bags):
        bag = simulate_bag(300_000 + i, size=SIZE)
        model, floors, _ = _bag_windows(engine, bag.scan, None, args.stride)
        pools["a"]["model"].append(model)
        for f in FLOOR_NAMES:
            pools["a"][f].append(floors[f])
    cat = {p: {k: np.concatenate(v) for k, v in d.items()} for p, d in pools.items()}
    rows = {}
    for score in ("model", *FLOOR_NAMES):
        pos = cat["anom"][score]
        row = {}
        for pool in ("a", "b"):
            neg = cat[pool][score]
            row[f"auc_{pool}"] = round(roc_auc(pos, neg), 4)
            row[f"det_at_1pct_far_{pool}"] = round(detection_at_far(pos, neg, 0.01).detection, 4)
        rows[score] = row
    by_class = {
        t: {
            "auc_a": round(roc_auc(np.concatenate(d["model"]), cat["a"]["model"]), 4),
            "auc_b": round(roc_auc(np.concatenate(d["model"]), cat["b"]["model"]), 4),
        }
        for t, d in per_class.items()
        if d["model"]
    }
    # Bag level: peak calibrated window score, threat bags vs clean bags.
    print(
        json.dumps(
            {
                "benchmark": "default_model_window_auc",
                "bundle": str(args.bundle),
                "dropped_params": args.drop_param,
                "model_id": bundle.model_id,
                "threat_bags": args.threat_bags,
                "clean_bags": args.clean_bags,
                "seeds": {
                    "threat": [200_000, 200_000 + args.threat_bags - 1],
                    "clean": [300_000, 300_000 + args.clean_bags - 1],
                },
                "stride": args.stride,
                "n_windows": {
                    "anomalous": int(cat["anom"]["model"].size),
                    "normal_a": int(cat["a"]["model"].size),
                    "normal_b": int(cat["b"]["model"].size),
                },
                "scores": rows,
                "model_by_threat": by_class,
                "engine": engine.describe(),
                "machine": f"{platform.machine()}, {args.threads} thread(s)",
                "elapsed_s": round(time.perf_counter() - t0, 1),
            },
            indent=1,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
