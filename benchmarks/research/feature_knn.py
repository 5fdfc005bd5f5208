"""Feature-density scores from a trained GANomaly (issue 7): "unlike anything normal"
measured in the networks' own feature spaces instead of by reconstruction error.

For a model saved by ``run.py``: embed windows of NORMAL training bags (the memory
bank: the bags the model was trained on, never an evaluation bag), then score every
evaluation window by its mean distance to the k nearest bank entries, per feature:

- ``z``        G_E(x), the paper's latent (nz)
- ``enc2``/``enc3``  G_E's intermediate maps (16x16 and 8x8), mean+max pooled
- ``dfeat``    the discriminator's last feature map (4x4), mean+max pooled
- ``dflat``    the same map flattened (keeps the spatial layout)

Features are standardised with the bank's per-dimension statistics. Prints JSON and
appends a line to ``runs/research.jsonl``; metrics as in ``run.py`` (same pools).

    python benchmarks/research/feature_knn.py --tag r1_stable_s1 --bank-bags 100
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

import data as D
import metrics as M
import run as R
import score_saved as S

FEATURES = ("z", "enc1", "enc2", "enc3", "enc123", "dfeat", "dflat")


def _pool(f: torch.Tensor) -> torch.Tensor:
    return torch.cat([f.mean((2, 3)), f.amax((2, 3))], 1)


@torch.inference_mode()
def embed(netg, netd, x: torch.Tensor, batch: int = 256) -> dict[str, torch.Tensor]:
    """Per-window feature vectors (float32) of ``x``."""
    out: dict[str, list[torch.Tensor]] = {k: [] for k in FEATURES}
    for i in range(0, len(x), batch):
        xb = x[i : i + batch]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            h = xb
            maps = []
            for layer in netg.encoder1.body:
                h = layer(h)
                if isinstance(layer, torch.nn.LeakyReLU):
                    maps.append(h)
            z = netg.encoder1.final(h)
            fd = netd.features(xb)
        out["z"].append(z.float().flatten(1))
        pooled = [_pool(m.float()) for m in maps[:3]]
        out["enc1"].append(pooled[0])
        out["enc2"].append(pooled[1])
        out["enc3"].append(pooled[2])
        out["enc123"].append(torch.cat(pooled, 1))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            x_hat = netg.decoder(z)
        r = (xb - x_hat.float()).abs()
        out.setdefault("rec_mean", []).append(r.mean((1, 2, 3)))
        out["dfeat"].append(_pool(fd.float()))
        out["dflat"].append(F.avg_pool2d(fd.float(), 2).flatten(1))
    return {k: torch.cat(v) for k, v in out.items()}


def random_init_like(netg, netd, seed: int = 0):
    """Control: the same architecture with fresh DCGAN-initialised weights (eval mode).

    Batch-norm running statistics are re-estimated on ``calib`` windows by the caller,
    since untrained running stats (0 / 1) would make the features meaningless."""
    import copy

    from xrayscreen.model.ganomaly import weights_init

    torch.manual_seed(seed)
    g, d = copy.deepcopy(netg), copy.deepcopy(netd)
    for m in (g, d):
        for mod in m.modules():
            if hasattr(mod, "reset_running_stats"):
                mod.reset_running_stats()
        m.apply(weights_init)
    return g, d


@torch.no_grad()
def refresh_bn(netg, netd, x: torch.Tensor) -> None:
    """Re-estimate batch-norm running statistics on ``x`` (cumulative average)."""
    for m in (netg, netd):
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.momentum = None
        m.train()
    for i in range(0, len(x), 256):
        netg(x[i : i + 256])
        netd(x[i : i + 256])
    netg.eval()
    netd.eval()


def knn_score(q: torch.Tensor, bank: torch.Tensor, k: int, chunk: int = 2048) -> np.ndarray:
    """Mean Euclidean distance of each query to its ``k`` nearest bank rows."""
    res = []
    for i in range(0, len(q), chunk):
        d = torch.cdist(q[i : i + chunk], bank)
        res.append(d.topk(k, dim=1, largest=False).values.mean(1))
    return torch.cat(res).numpy()


def bag_norm(s: np.ndarray, bags: np.ndarray) -> np.ndarray:
    """Robust z-score of each window's score among the windows of its own scan."""
    out = np.empty_like(s, dtype=np.float64)
    for b in np.unique(bags):
        m = bags == b
        q1, med, q3 = np.percentile(s[m], [25, 50, 75])
        out[m] = (s[m] - med) / max((q3 - q1) / 1.349, 1e-9)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tag", required=True)
    p.add_argument("--bank-bags", type=int, default=100)
    p.add_argument("--bank-stride", type=int, default=32)
    p.add_argument("--bank-max", type=int, default=40000, help="random subsample of the bank")
    p.add_argument("--ks", default="1,5")
    p.add_argument("--split", default="val", choices=["val", "test"])
    p.add_argument("--stride", type=int, default=32)
    p.add_argument("--a-bags", type=int, default=30)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--random-init", action="store_true", help="control: untrained weights")
    p.add_argument(
        "--bank-resampled",
        action="store_true",
        help="add the bank bags resampled through the threat scans' path to the memory",
    )
    p.add_argument("--calib-bags", type=int, default=10)
    p.add_argument("--results", default=str(R.REPO / "runs" / "research.jsonl"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    netg, netd, a = S.load(args.tag)
    sp = D.splits()
    t0 = time.time()
    rng = np.random.default_rng(0)
    if args.random_init:
        netg, netd = random_init_like(netg, netd)
        refresh_bn(
            netg,
            netd,
            torch.cat([D.bag_windows(n, a.representation, 64).x for n in sp.train[:20]]),
        )
    bank_names = sp.train[: args.bank_bags]
    bank_x = torch.cat([D.bag_windows(n, a.representation, args.bank_stride).x for n in bank_names])
    if args.bank_resampled:
        # Same bags once more through the threat scans' storage path (data.py).
        extra = [
            D.bag_windows(n, a.representation, args.bank_stride, resampled=0).x for n in bank_names
        ]
        bank_x = torch.cat([bank_x, *extra])
    if len(bank_x) > args.bank_max:
        bank_x = bank_x[torch.from_numpy(rng.choice(len(bank_x), args.bank_max, replace=False))]
    bank = embed(netg, netd, bank_x)
    del bank_x
    threat = sp.val if args.split == "val" else sp.test
    benign = (sp.eval_a if args.split == "val" else sp.test_a)[: args.a_bags or None]
    raw: dict[str, list] = {}
    feats: dict[str, list] = {k: [] for k in FEATURES}
    calib = sp.calib[: args.calib_bags]
    for pool, names in (("calib", calib), ("a", benign), ("threat", threat)):
        for n in names:
            bw = D.bag_windows(n, a.representation, args.stride)
            e = embed(netg, netd, bw.x)
            for k in FEATURES:
                feats[k].append(e[k])
            raw.setdefault("rec_mean", []).append(e["rec_mean"].numpy())
            for key, val in (
                ("label", bw.label),
                ("cls", bw.cls),
                ("bag", np.full(len(bw.label), n)),
                ("pool", np.full(len(bw.label), pool)),
                ("maxdens", (1 - bw.grey.flatten(1).amin(1)).numpy()),
            ):
                raw.setdefault(key, []).append(val)
    raw = {k: np.concatenate(v) for k, v in raw.items()}
    calib_m = raw["pool"] == "calib"
    rec = raw["rec_mean"].astype(np.float64)
    dens = raw["maxdens"].astype(np.float64)
    metrics = {
        "floor_maxdens": M.evaluate(dens, raw),
        "rec_mean": M.evaluate(rec, raw),
    }
    metrics_scores: dict[str, np.ndarray] = {"floor_maxdens": dens, "rec_mean": rec}
    zr = M.robust_z(rec, rec[calib_m])
    zd = M.robust_z(dens, dens[calib_m])
    for k in FEATURES:
        mu, sd = bank[k].mean(0), bank[k].std(0).clamp_min(1e-6)
        b = (bank[k] - mu) / sd
        q = (torch.cat(feats[k]) - mu) / sd
        for kk in (int(s) for s in args.ks.split(",")):
            s_knn = knn_score(q, b, kk).astype(np.float64)
            metrics[f"knn{kk}_{k}"] = M.evaluate(s_knn, raw)
            metrics_scores[f"knn{kk}_{k}"] = s_knn
            if kk == 5 and k.startswith("enc"):
                zk = M.robust_z(s_knn, s_knn[calib_m])
                metrics[f"knn{kk}_{k}+rec"] = M.evaluate(zk + zr, raw)
                metrics[f"knn{kk}_{k}+dens"] = M.evaluate(zk + zd, raw)
    # Scores relative to the scan they come from: (s - bag median) / bag IQR-scale. Removes
    # scan-level offsets (scanner, bag type) that a novelty score otherwise reports.
    for name, sc in list(metrics_scores.items()):
        if name in ("floor_maxdens", "rec_mean") or name.startswith("knn5_"):
            metrics[f"bagnorm_{name}"] = M.evaluate(bag_norm(sc, raw["bag"]), raw)
    saved = {**raw, **metrics_scores}
    tag = (
        f"{args.tag}@knn_{args.split}_s{args.stride}"
        + ("_randinit" if args.random_init else "")
        + ("_bankrs" if args.bank_resampled else "")
    )
    np.savez_compressed(D.CACHE / "scores" / f"{tag}.npz", **saved)
    result = {
        "tag": tag,
        "model_tag": args.tag,
        "threat_split": args.split,
        "bank_windows": len(bank["z"]),
        "bank_bags": args.bank_bags,
        "eval_s": round(time.time() - t0, 1),
        "metrics": metrics,
    }
    D.record(result, args.results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
