"""A window head trained on threat-image-projected normal bags (``tip_bags.py``), read
beside GANomaly's evidence (issue 7 research; no real threat is used for training).

The head is a logistic regression (or a small MLP) on the feature memory's standardised
embedding of each window (``dump_scores.py --embed``: the pooled G_E map the k-NN reads),
one per view (working scale, 2x zoomed), trained to tell TIP windows (windows the
protocol labels as threat on the synthetic bags) from the box-free windows of the same
bags. On the evaluation scans its logit is normalised per scan like every other
evidence and added with weight ``lam`` to each view's evidence (``density_saved.evidence``,
the product's form), then the context and the protocol's figures::

    python benchmarks/research/tip_head.py --tip /tmp/s8/tip_fine.npz \\
        --emb /tmp/s8/val_emb_fine.npz --raw /tmp/s7/j_p_fine.npz:1 /tmp/s7/k_p_fine.npz:1 \\
        --benign-list /tmp/sixray_lists/benign_val.txt --lams 0 0.25 0.5 1

(``--tip`` / ``--emb`` name the working-scale dumps; the ``_z2`` dumps beside them are
read too. ``--raw`` gives, per bundle of the embedding dumps and in their order, the
working-scale raw-score dump and the bundle's index in it.) Prints one JSON line per
(bundle, head, weight).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from calib_analysis import Tally, load, paired_bag
from density_saved import _zoomed_density

from xrayscreen.evaluation.metrics import roc_auc
from xrayscreen.inference import context, density, scan_norm
from xrayscreen.model.bundle import load_bundle


def _z2(path: str) -> str:
    return path.replace("_fine", "_z2")


def _xy(path: str, j: int, rng: np.random.Generator, neg_per_bag: int) -> tuple:
    """TIP training rows of bundle ``j``: threat-labelled windows and a sample of box-free
    windows per bag, with the bag index for a split by bag."""
    z = np.load(path)
    xs, ys, bags = [], [], []
    for i in range(len(z["names"])):
        k = f"s{i}"
        emb = z[f"{k}_m{j}_emb"].astype(np.float32)
        pos, neg = z[f"{k}_pos"], z[f"{k}_neg"] & ~z[f"{k}_belt"]
        ni = np.nonzero(neg)[0]
        ni = rng.choice(ni, min(neg_per_bag, len(ni)), replace=False)
        for sel, y in ((np.nonzero(pos)[0], 1.0), (ni, 0.0)):
            xs.append(emb[sel])
            ys.append(np.full(len(sel), y, np.float32))
            bags.append(np.full(len(sel), i))
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(bags)


def train_head(x: np.ndarray, y: np.ndarray, hidden: int, seed: int, epochs: int = 30):
    """Balanced logistic regression (``hidden`` 0) or one-hidden-layer MLP, Adam + weight
    decay, full-batch-ish minibatches."""
    torch.manual_seed(seed)
    d = x.shape[1]
    net = (
        torch.nn.Linear(d, 1)
        if hidden == 0
        else torch.nn.Sequential(
            torch.nn.Linear(d, hidden),
            torch.nn.ReLU(),
            torch.nn.Dropout(0.2),
            torch.nn.Linear(hidden, 1),
        )
    )
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, weight_decay=1e-3)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    pw = torch.tensor((1 - y.mean()) / max(y.mean(), 1e-6))
    lossf = torch.nn.BCEWithLogitsLoss(pos_weight=pw)
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        perm = torch.randperm(len(xt), generator=g)
        for b in range(0, len(xt), 512):
            idx = perm[b : b + 512]
            opt.zero_grad()
            lossf(net(xt[idx]).squeeze(1), yt[idx]).backward()
            opt.step()
    return net.eval()


@torch.no_grad()
def logits(net, emb: np.ndarray) -> np.ndarray:
    return net(torch.from_numpy(emb.astype(np.float32))).squeeze(1).numpy()


def tally_of(spec, parts, lam: float, views: str, head_only: bool = False) -> Tally:
    """Figures of each view's evidence plus ``lam`` x the head's (on the views ``views``
    names), or of the head alone; then the views' max and the bundle's context."""
    lf = lam if views in ("both", "fine") else 0.0
    lz = lam if views in ("both", "zoom") else 0.0
    t = Tally()
    for b, valid, ef, ez, nf, nz in parts:
        s = torch.maximum(nf, nz) if head_only else torch.maximum(ef + lf * nf, ez + lz * nz)
        t.add(b, context.apply(spec, s, b.grid, valid).double().numpy())
    return t


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tip", required=True)
    p.add_argument("--emb", required=True)
    p.add_argument("--raw", nargs="+", required=True, help="PATH:INDEX per bundle")
    p.add_argument("--benign-list", required=True)
    p.add_argument("--lams", nargs="+", type=float, default=[0.0, 0.25, 0.5, 1.0])
    p.add_argument("--hidden", nargs="+", type=int, default=[0, 64])
    p.add_argument("--neg-per-bag", type=int, default=300)
    p.add_argument("--density-weight", type=float, default=0.5)
    p.add_argument(
        "--views",
        choices=("both", "fine", "zoom"),
        default="both",
        help="which views get the head's evidence",
    )
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    keep = {Path(x.strip()).stem for x in open(a.benign_list) if x.strip()}
    emb_f, emb_z = np.load(a.emb), np.load(_z2(a.emb))
    names = [str(n) for n in emb_f["names"]]
    for j, path in enumerate(emb_f["bundles"]):
        spec = load_bundle(str(path)).score
        rpath, ridx = a.raw[j].rsplit(":", 1)
        fine = {b.name: b for b in load(rpath)}
        coarse = {b.name: b for b in load(_z2(rpath))}
        for hidden in a.hidden:
            heads = []
            for tip in (a.tip, _z2(a.tip)):
                rng = np.random.default_rng(a.seed)
                x, y, bag = _xy(tip, j, rng, a.neg_per_bag)
                # Synthetic hold-out: the last fifth of the TIP bags.
                cut = bag.max() * 0.8
                net = train_head(x[bag <= cut], y[bag <= cut], hidden, a.seed)
                s = logits(net, x[bag > cut])
                tip_auc = roc_auc(s[y[bag > cut] == 1], s[y[bag > cut] == 0])
                heads.append((train_head(x, y, hidden, a.seed), round(float(tip_auc), 4)))
            # Per bag, once: each view's normalised GANomaly score plus density (the
            # shipped evidence before the views' max) and the head's normalised logits.
            parts = []
            for i, name in enumerate(names):
                b = fine[name]
                if b.kind == "benign" and b.name not in keep:
                    continue
                valid = torch.from_numpy(~b.belt)
                w = a.density_weight
                ef = scan_norm.normalise(spec, torch.from_numpy(b.raw[int(ridx)]), valid)
                ef = ef + w * density.normalise(torch.from_numpy(b.meand), valid)
                ez = scan_norm.normalise(spec, torch.from_numpy(coarse[name].raw[int(ridx)]), valid)
                dz = torch.from_numpy(_zoomed_density(b.meand, b.grid, "meand"))
                ez = ez + w * density.normalise(dz, valid)
                # The head's logits as a robust z within the scan (density's small floor).
                nf = density.normalise(
                    torch.from_numpy(logits(heads[0][0], emb_f[f"s{i}_m{j}_emb"])), valid
                )
                nz = density.normalise(
                    torch.from_numpy(logits(heads[1][0], emb_z[f"s{i}_m{j}_emb"])), valid
                )
                parts.append((b, valid, ef, ez, nf, nz))

            # The shipped evidence (no head): the paired reference.
            reference = tally_of(spec, parts, 0.0, a.views)
            for lam in a.lams:
                tally = tally_of(spec, parts, lam, a.views)
                first = lam == a.lams[0]
                only = tally_of(spec, parts, 0.0, a.views, head_only=True) if first else None
                rows = [("combined", tally)] + ([("head_only", only)] if first else [])
                for label, t in rows:
                    out = {
                        "bundle": Path(str(path)).name,
                        "hidden": hidden,
                        "lam": lam,
                        "row": label + "_" + a.views,
                        "tip_heldout_auc": [h[1] for h in heads],
                    }
                    out.update(t.window_figures())
                    _, on, wf, _ = t.bag_point(0.05)
                    out["bag_on_threat@5%"] = round(on, 4)
                    out["bag_on_threat@5%_ci95"] = t.bag_interval(0.05)
                    out["minus_shipped_paired"] = paired_bag(t, reference)
                    out["bag_auc"] = round(roc_auc(np.array(t.peaks_t_any), np.array(t.peaks_b)), 4)
                    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
