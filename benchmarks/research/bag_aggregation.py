"""Two offline screens of how a bag's windows become its bag score (issue 7, eighteenth
session), on ``evidence_terms.py dump`` files, against the shipped reading (each bag's
highest window of the product's score). Prints JSON: per setting, the mean over the dumps
of the 5 % bag point (threat bags alarmed on the threat at 5 % of benign bags), the bag
AUC and the window AUC, and the bag point per dump.

* ``blob``: windows above a level ``t`` joined into 8-connected blobs on the window grid;
  a window's bag-level score is its blob's mass above ``t`` (``mass``), or the blob's peak
  plus ``a * log(area)`` (``logarea``): a long blade lights many windows a little, a
  compact block few windows a lot.
* ``own``: the larger of the context score and ``a`` times the window's own score before
  the context (a strong lone window may alarm by itself).

    python benchmarks/research/bag_aggregation.py /tmp/s12/dec_t12_s6.npz \\
        /tmp/s12/dec_t12_s5.npz /tmp/s12/dec_t12_s0.npz
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parent))
import evidence_terms as et


def blob_scores(bag: dict, t: float, mode: str, a: float = 1.0) -> np.ndarray:
    """Per window, its blob's bag-level score (windows below ``t`` keep their score,
    capped at ``t``, for ``mass``; unchanged for ``logarea``)."""
    g, v = bag["grid"], bag["valid"]
    m = np.where(v, bag["out"], -np.inf).reshape(g.rows, g.cols).astype(np.float64)
    above = m > t
    lab, n = ndimage.label(above, structure=np.ones((3, 3)))
    out = m.copy()
    if n:
        idx = np.arange(1, n + 1)
        if mode == "mass":
            comp = np.r_[0.0, ndimage.sum(np.where(above, m - t, 0.0), lab, idx)][lab]
            out = np.where(above, t + comp, np.minimum(m, t))
        else:
            area = ndimage.sum(above, lab, idx)
            peak = ndimage.maximum(np.where(above, m, -np.inf), lab, idx)
            out = np.where(above, np.r_[0.0, peak + a * np.log(area)][lab], m)
    return out.ravel()


def own_scores(bag: dict, a: float) -> np.ndarray:
    """max(context score, ``a`` x the pre-context score), the product's own formula."""
    pre = np.maximum(bag["m"] + 0.5 * bag["d"] + bag["h"], bag["mz"] + 0.5 * bag["dz"] + bag["hz"])
    return np.maximum(bag["out"], a * pre)


def main() -> None:
    data = [et.load_terms(f) for f in sys.argv[1:]]
    for bags in data:  # the shipped score, recomputed as the product forms it
        for b in bags:
            b["shipped"] = et.combine(b)
    settings = {"shipped": lambda b: b["shipped"]}
    for t in (1.0, 2.0, 3.0):
        settings[f"blob_mass_t{t:g}"] = lambda b, t=t: blob_scores(b, t, "mass")
    for a in (0.25, 0.5, 1.0, 2.0):
        settings[f"blob_logarea_t2_a{a:g}"] = lambda b, a=a: blob_scores(b, 2.0, "logarea", a)
    for a in (0.4, 0.5, 0.6, 0.7, 0.8):
        settings[f"own_{a:g}"] = lambda b, a=a: own_scores(b, a)
    out = {}
    for name, fn in settings.items():
        rows = []
        for bags in data:
            for b in bags:
                b["out"] = b["shipped"]
            scored = [{**b, "out": fn(b).astype(np.float32)} for b in bags]
            rows.append(et.bag_figures(scored, saved=True))
        out[name] = {
            k: round(float(np.mean([r[k] for r in rows])), 4)
            for k in ("bag5", "bag_auc", "window_auc")
        } | {"bag5_per_dump": [r["bag5"] for r in rows]}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
