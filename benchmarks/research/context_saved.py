"""Spatial context on scores saved by ``run.py`` / ``feature_knn.py`` (issue 7, third session).

Each saved window carries its bag and origin (``oy``, ``ox``; stride 32), so the product's
context (``xrayscreen.inference.context``: tent-weighted mean over a bag's scored windows)
can be applied on the saved grid. For each run: the per-scan-normalised score
(``bagnorm``) of unexplained density (``under_mean``), the plain residual (``rec_mean``),
memory + residual and memory + unexplained density (each part in units of its spread on
the calibration bags), at each radius. Prints one JSON line per run and score::

    python benchmarks/research/context_saved.py r3_stable_atten_s0 r3_stable_atten_s1 \\
        --radii 0,64,96,128,160
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import data as D
import metrics as M
from combine_saved import spread
from feature_knn import bag_norm

from xrayscreen.inference.context import spread as context_spread
from xrayscreen.inference.windows import WindowGrid

STRIDE = 32


def with_context(score: np.ndarray, d: dict[str, np.ndarray], radius: float) -> np.ndarray:
    """The product's context on each bag's saved windows (absent windows = belt)."""
    if radius <= 0:
        return score
    out = np.empty_like(score, dtype=np.float64)
    for bag in np.unique(d["bag"]):
        i = np.where(d["bag"] == bag)[0]
        r, c = d["oy"][i] // STRIDE, d["ox"][i] // STRIDE
        rows, cols = int(r.max()) + 1, int(c.max()) + 1
        grid = WindowGrid((rows - 1) * STRIDE + 64, (cols - 1) * STRIDE + 64, 64, STRIDE)
        g = torch.zeros(rows * cols, dtype=torch.float64)
        valid = torch.zeros(rows * cols, dtype=torch.bool)
        flat = torch.from_numpy(r * cols + c)
        g[flat] = torch.from_numpy(score[i].astype(np.float64))
        valid[flat] = True
        out[i] = context_spread(g.float(), grid, valid, radius).double().numpy()[flat.numpy()]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("tags", nargs="+", help="runs saved by run.py (knn scores: <tag>@knn_val_s32)")
    p.add_argument("--radii", default="0,64,96,128,160")
    a = p.parse_args(argv)
    radii = [float(v) for v in a.radii.split(",")]
    for tag in a.tags:
        d = dict(np.load(D.CACHE / "scores" / f"{tag}.npz", allow_pickle=True))
        raw = {k: d[k] for k in ("label", "cls", "bag", "pool", "maxdens")}
        cal = d["pool"] == "calib"
        under, rec = d["under_mean"].astype(np.float64), d["rec_mean"].astype(np.float64)
        scores = {"under": under, "residual": rec}
        knn_file = D.CACHE / "scores" / f"{tag}@knn_val_s32.npz"
        if knn_file.exists():
            k = np.load(knn_file, allow_pickle=True)
            assert (k["bag"] == d["bag"]).all(), "knn scores are not aligned with the run's"
            knn = k["knn5_enc2"]
            scores["memory+residual"] = knn / spread(knn[cal]) + rec / spread(rec[cal])
            scores["memory+under"] = knn / spread(knn[cal]) + under / spread(under[cal])
        for name, s in scores.items():
            normed = bag_norm(s, d["bag"])
            for radius in radii:
                m = M.evaluate(with_context(normed, d, radius), raw)
                print(
                    json.dumps({"tag": tag, "score": f"bagnorm_{name}", "context_px": radius, **m})
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
