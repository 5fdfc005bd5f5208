"""Montage of the worst misses and worst false alarms of one scored run, with heat maps.

Reads the raw per-window scores saved by ``run.py`` / ``score_saved.py`` (they carry window
origins), derives the chosen score kind (``metrics.score_kinds``), folds it into a per-pixel
mean heat map per bag, and draws: top row = the threat bags whose threat windows score
lowest (worst misses), bottom row = the benign bags whose peak window scores highest
(worst false alarms). Boxes are drawn in white. Output is written OUTSIDE git by default
(``runs/``): the figure renders research-licensed SIXray scans.

    python benchmarks/research/montage.py --scores r2_stable_unet_s0@test_s16 \
        --kind cond_rec_pool --out runs/research_montage.png
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import data as D
import metrics as M


def heat(bag: str, score: np.ndarray, raw: dict[str, np.ndarray], shape) -> np.ndarray:
    """Per-pixel mean of window scores (belt windows contribute nothing -> NaN)."""
    m = raw["bag"] == bag
    acc = np.zeros(shape, np.float64)
    cnt = np.zeros(shape, np.float64)
    for y, x, s in zip(raw["oy"][m], raw["ox"][m], score[m], strict=True):
        acc[y : y + D.WIN, x : x + D.WIN] += s
        cnt[y : y + D.WIN, x : x + D.WIN] += 1
    with np.errstate(invalid="ignore"):
        return acc / cnt


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--scores", required=True, help="tag of a saved scores .npz")
    p.add_argument("--kind", required=True)
    p.add_argument("--n", type=int, default=3)
    p.add_argument("--out", default=str(D.REPO / "runs" / "research_montage.png"))
    a = p.parse_args(argv)
    with np.load(D.CACHE / "scores" / f"{a.scores}.npz") as z:
        raw = {k: z[k] for k in z.files}
    score = M.score_kinds(raw)[a.kind]
    pool, lab = raw["pool"], raw["label"]
    thr = float(np.quantile(score[pool == "a"], 0.99))  # 1 % window false-alarm rate
    threat_bags = np.unique(raw["bag"][pool == "threat"])
    benign_bags = np.unique(raw["bag"][pool == "a"])
    # Miss severity: best threat-window score of the bag (low = missed).
    best_in_box = {
        b: score[(raw["bag"] == b) & (lab == 1)].max()
        for b in threat_bags
        if ((raw["bag"] == b) & (lab == 1)).any()
    }
    misses = sorted(best_in_box, key=best_in_box.get)[: a.n]
    peaks = {b: score[raw["bag"] == b].max() for b in benign_bags}
    alarms = sorted(peaks, key=peaks.get, reverse=True)[: a.n]
    lo, hi = np.quantile(score[pool == "a"], [0.05, 0.999])
    fig, axes = plt.subplots(2, a.n, figsize=(4.2 * a.n, 7.5))
    for row, (bags, title) in enumerate(((misses, "miss"), (alarms, "false alarm"))):
        for col, b in enumerate(bags):
            ax = axes[row, col]
            rgb = D.load_rgb(b)
            h = heat(b, score, raw, rgb.shape[:2])
            ax.imshow(rgb)
            ax.imshow(np.clip((h - lo) / (hi - lo), 0, 1), cmap="jet", alpha=0.45, vmin=0, vmax=1)
            for _c, x0, y0, x1, y1 in D.boxes(b, rgb.shape[:2]):
                ax.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, ec="w", lw=1.5))
            val = best_in_box[b] if row == 0 else peaks[b]
            ax.set_title(f"{title}: {b}\npeak {val:.2f} (1% FAR thr {thr:.2f})", fontsize=9)
            ax.axis("off")
    fig.suptitle(f"{a.scores}  score = {a.kind}", fontsize=10)
    fig.tight_layout()
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(a.out, dpi=80)
    print(json.dumps({"out": a.out, "misses": misses, "false_alarms": alarms, "thr": thr}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
