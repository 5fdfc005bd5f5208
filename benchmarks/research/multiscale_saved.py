"""Window and bag figures of a fine-scale dump combined with a coarse-scale one
(``dump_scores.py --zoom``): each score is normalised per scan (the product's
``scan_norm``), then ``(1 - a) * fine + a * coarse``, then the fine bundle's context.
Research for issue 7 (multi-scale evidence).

    python benchmarks/research/multiscale_saved.py --fine /tmp/dump_val.npz \\
        --coarse /tmp/dump_val_z2.npz --pairs 0:0 --alphas 0 0.25 0.5 \\
        --benign-list /tmp/sixray_lists/benign_val.txt

Prints one JSON line per (pair, alpha).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from calib_analysis import load

from xrayscreen.evaluation.metrics import detection_at_far, roc_auc
from xrayscreen.inference import context, scan_norm
from xrayscreen.model.bundle import load_bundle


def _norm(spec, raw: np.ndarray, belt: np.ndarray) -> torch.Tensor:
    valid = torch.from_numpy(~belt)
    return scan_norm.normalise(spec, torch.from_numpy(raw), valid)


def _bag_threshold(neg_peaks: np.ndarray, far: float = 0.05) -> float:
    """The lowest threshold that alarms at most ``far`` of the benign bags."""
    neg = np.sort(neg_peaks)[::-1]
    k = int(np.floor(far * len(neg)))
    return float(neg[k]) if k < len(neg) else -np.inf


def _bag_tpr(pos_peaks: np.ndarray, neg_peaks: np.ndarray, far: float = 0.05) -> float:
    """Share of threat bags whose peak exceeds :func:`_bag_threshold`."""
    return float(np.mean(pos_peaks > _bag_threshold(neg_peaks, far)))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--fine", required=True)
    p.add_argument("--coarse", nargs="+", required=True, help="one or more zoom dumps")
    p.add_argument("--pairs", nargs="+", default=["0:0"], help="fine_index:coarse_index")
    p.add_argument("--alphas", nargs="+", type=float, default=[0.0, 0.25, 0.5])
    p.add_argument("--benign-list")
    p.add_argument("--context-px", type=float, default=None, help="override the radius")
    p.add_argument(
        "--mix", choices=("mean", "max"), default="mean", help="how the views are combined"
    )
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="score param override"
    )
    p.add_argument(
        "--add-meand",
        type=float,
        default=0.0,
        help="add this weight x the per-scan normalised mean darkness (a combined score)",
    )
    a = p.parse_args(argv)
    fine = load(a.fine)
    coarse = [{b.name: b for b in load(c)} for c in a.coarse]
    zf = np.load(a.fine)
    zcs = [np.load(c) for c in a.coarse]
    keep = None
    if a.benign_list:
        keep = {Path(x.strip()).stem for x in open(a.benign_list) if x.strip()}
    for pair in a.pairs:
        fj, cj = (int(v) for v in pair.split(":"))
        spec = load_bundle(str(zf["bundles"][fj])).score
        if a.context_px is not None:
            spec.params = {**spec.params, "context_px": a.context_px}
        for item in a.set:
            key, _, value = item.partition("=")
            spec.params = {**spec.params, key: float(value)}
        for alpha in a.alphas:
            pos, cls, neg_a, neg_b, peaks_t, peaks_b = [], [], [], [], [], []
            for b in fine:
                if b.kind == "benign" and keep is not None and b.name not in keep:
                    continue
                s = (1.0 - alpha) * _norm(spec, b.raw[fj], b.belt)
                if alpha:
                    parts = [
                        _norm(spec, ix[b.name].raw[cj], b.belt) for ix in coarse if b.name in ix
                    ]
                    if a.mix == "max":
                        s = torch.maximum(_norm(spec, b.raw[fj], b.belt), sum(parts) / len(parts))
                    else:
                        s = s + alpha * sum(parts) / len(parts)
                if a.add_meand:
                    s = s + a.add_meand * _norm(spec, b.meand.astype(np.float32), b.belt)
                s = context.apply(spec, s, b.grid, torch.from_numpy(~b.belt)).double().numpy()
                s_valid = s[~b.belt]
                peak = float(s_valid.max()) if len(s_valid) else float("-inf")
                if b.kind == "threat":
                    pos.append(s[b.pos])
                    cls.append(b.cls[b.pos])
                    neg_b.append(s[b.neg])
                    if b.pos.any():
                        # Bag "on the threat": its peak over the threat windows.
                        peaks_t.append(float(s[b.pos].max()))
                else:
                    neg_a.append(s[b.neg])
                    peaks_b.append(peak)
            pos_a = np.concatenate(pos)
            c = np.concatenate(cls)
            out = {
                "fine": str(zf["bundles"][fj]),
                "coarse": [str(z["bundles"][cj]) for z in zcs],
                "alpha": alpha,
            }
            for pool, neg in (("a", np.concatenate(neg_a)), ("b", np.concatenate(neg_b))):
                out[f"all_{pool}"] = round(roc_auc(pos_a, neg), 4)
                for k, name in ((0, "gun"), (1, "knife")):
                    out[f"{name}_{pool}"] = round(roc_auc(pos_a[c == k], neg), 4)
                out[f"det@1%_{pool}"] = round(detection_at_far(pos_a, neg, 0.01).detection, 4)
            out["bag_on_threat@5%"] = round(_bag_tpr(np.array(peaks_t), np.array(peaks_b)), 4)
            # Where the bag goal's operating point sits at window level: the share of
            # benign (pool a) windows, and of threat windows, above that threshold.
            thr = _bag_threshold(np.array(peaks_b))
            out["bag_thr_window_far_a"] = round(float(np.mean(np.concatenate(neg_a) > thr)), 5)
            out["bag_thr_window_det"] = round(float(np.mean(pos_a > thr)), 4)
            out["n_benign_bags"] = len(peaks_b)
            print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
