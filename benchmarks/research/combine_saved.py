"""Memory + residual, normalised per scan, from scores saved by ``feature_knn.py`` (issue 7).

The product's ``feature_knn_residual`` score with ``scan_norm="robust_z"``: the k-NN
distance of G_E's level-2 features (``knn5_enc2``) and the reconstruction residual
(``rec_mean``), each divided by its spread (IQR / 1.349) on the calibration pool's normal
windows, added, then expressed as a robust z-score within each scan. Prints one JSON
object per saved run (metrics as in ``run.py``)::

    python benchmarks/research/combine_saved.py r3_stable_atten_s0@knn_val_s32 ...
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import data as D
import metrics as M
from feature_knn import bag_norm


def spread(x: np.ndarray) -> float:
    q1, q3 = np.percentile(x, [25, 75])
    return float(max((q3 - q1) / 1.349, 1e-12))


def main(argv: list[str] | None = None) -> int:
    for tag in argv if argv is not None else sys.argv[1:]:
        d = dict(np.load(D.CACHE / "scores" / f"{tag}.npz", allow_pickle=True))
        raw = {k: d[k] for k in ("label", "cls", "bag", "pool", "maxdens")}
        cal = d["pool"] == "calib"
        knn, rec = d["knn5_enc2"], d["rec_mean"]
        combined = knn / spread(knn[cal]) + rec / spread(rec[cal])
        out = {
            "tag": tag,
            "metrics": {
                "combined": M.evaluate(combined, raw),
                "bagnorm_combined": M.evaluate(bag_norm(combined, d["bag"]), raw),
            },
        }
        print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
