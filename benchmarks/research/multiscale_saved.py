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
from calib_analysis import Tally, load

from xrayscreen.inference import context, scan_norm
from xrayscreen.model.bundle import load_bundle


def _norm(spec, raw: np.ndarray, belt: np.ndarray) -> torch.Tensor:
    valid = torch.from_numpy(~belt)
    return scan_norm.normalise(spec, torch.from_numpy(raw), valid)


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
            tally = Tally()
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
                tally.add(
                    b, context.apply(spec, s, b.grid, torch.from_numpy(~b.belt)).double().numpy()
                )
            out = {
                "fine": str(zf["bundles"][fj]),
                "coarse": [str(z["bundles"][cj]) for z in zcs],
                "alpha": alpha,
            }
            out.update(tally.window_figures())
            # Bag "on the threat" (its peak over the threat windows), and where the bag goal's
            # operating point sits at window level: the share of benign (pool a) windows, and
            # of threat windows, above that threshold.
            _, on_threat, window_far, window_det = tally.bag_point(0.05)
            out["bag_on_threat@5%"] = round(on_threat, 4)
            out["bag_thr_window_far_a"] = round(window_far, 5)
            out["bag_thr_window_det"] = round(window_det, 4)
            out["n_benign_bags"] = len(tally.peaks_b)
            print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
