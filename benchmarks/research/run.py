"""Train one GANomaly configuration on benign SIXray bags and evaluate it (issue 7).

Prints one JSON object and appends it as a line to ``runs/research.jsonl`` (git-ignored).
Per-window raw scores go to ``$XR_RESEARCH_CACHE/scores/<tag>.npz`` (outside the repo) so
score kinds can be re-derived without re-running the model (``benchmarks/research/rescore.py``).

Example::

    python benchmarks/research/run.py --tag r0_paper_s0 --epochs 3 --seed 0
    python benchmarks/research/run.py --tag r1 --d-loss hinge --sn-d --lr-d 4e-4 --reset-stuck

Settings are chosen on the threat ``val`` split; ``--threat-split test`` is for the final,
chosen configuration only.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

import data as D
import metrics as M

from xrayscreen.model.ganomaly import (
    GANomalyConfig,
    build_discriminator,
    weights_init,
)
from xrayscreen.model.variants import build_generator

REPO = Path(__file__).resolve().parents[2]


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tag", required=True)
    p.add_argument("--representation", default="rgb", choices=["rgb", "rgb_attenuation"])
    p.add_argument("--generator", default="dcgan", choices=["dcgan", "unet"])
    p.add_argument("--skip-max-res", type=int, default=16)
    p.add_argument("--ngf", type=int, default=32)
    p.add_argument("--ndf", type=int, default=32)
    p.add_argument("--nz", type=int, default=100)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr-g", type=float, default=2e-4)
    p.add_argument("--lr-d", type=float, default=2e-4)
    p.add_argument("--d-loss", default="bce", choices=["bce", "hinge"])
    p.add_argument("--sn-d", action="store_true")
    p.add_argument("--reset-stuck", action="store_true", help="reset D when its loss is stuck")
    p.add_argument(
        "--windowed-reset",
        action="store_true",
        help="paper's reset threshold on the mean of the last 50 D losses, not one batch",
    )
    p.add_argument("--w-adv", type=float, default=1.0)
    p.add_argument("--w-con", type=float, default=50.0)
    p.add_argument("--w-enc", type=float, default=1.0)
    p.add_argument("--augment", action="store_true")
    p.add_argument("--train-bags", type=int, default=100)
    p.add_argument("--train-stride", type=int, default=64)
    p.add_argument("--eval-stride", type=int, default=32)
    p.add_argument("--threat-split", default="val", choices=["val", "test"])
    p.add_argument("--eval-bags", type=int, default=0, help="cap per eval split (0 = all; smoke)")
    p.add_argument("--calib-bags", type=int, default=10, help="benign calibration bags (<= 20)")
    p.add_argument("--a-bags", type=int, default=30, help="benign pool (a) bags (<= 40)")
    p.add_argument(
        "--also-test",
        action="store_true",
        help="after the val figures, score the threat TEST split + benign test block once "
        "(only for the configuration already chosen on val)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--results", default=str(REPO / "runs" / "research.jsonl"))
    return p.parse_args(argv)


def model_config(a: argparse.Namespace) -> GANomalyConfig:
    extras = {"generator": a.generator}
    if a.generator == "unet":
        extras["skip_max_res"] = a.skip_max_res
    return GANomalyConfig(
        isize=64, nc=3, nz=a.nz, ngf=a.ngf, ndf=a.ndf, spectral_norm_d=a.sn_d, extras=extras
    )


def d_logits(netd, x):
    """Discriminator logits and features (the head's conv output before its sigmoid)."""
    feats = netd.features(x)
    return netd.classifier[0](feats).reshape(-1), feats


def train_windows(names: list[str], a: argparse.Namespace, rng: np.random.Generator):
    """One epoch's windows: every bag on a stride grid at a random offset (jitter)."""
    xs = []
    for n in names:
        off = int(rng.integers(0, a.train_stride)) if a.train_stride > 1 else 0
        bw = D.bag_windows(n, a.representation, a.train_stride, offset=off)
        xs.append(bw.x)
    return torch.cat(xs)


def augment(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Random flips and 90-degree turns (a bag can lie on the belt either way round)."""
    k = int(rng.integers(0, 4))
    if k:
        x = torch.rot90(x, k, dims=(2, 3))
    if rng.random() < 0.5:
        x = torch.flip(x, dims=(3,))
    return x


def train(a: argparse.Namespace, names: list[str]):
    torch.manual_seed(a.seed)
    rng = np.random.default_rng(a.seed)
    cfg = model_config(a)
    netg = build_generator(cfg)
    netd = build_discriminator(cfg)
    opt_g = torch.optim.Adam(netg.parameters(), lr=a.lr_g, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(netd.parameters(), lr=a.lr_d, betas=(0.5, 0.999))
    log = []
    resets = 0
    seen = 0
    d_hist: list[float] = []
    t0 = time.time()
    for epoch in range(a.epochs):
        x_all = train_windows(names, a, rng)
        perm = torch.from_numpy(rng.permutation(len(x_all)))
        sums = {"con": 0.0, "enc": 0.0, "adv": 0.0, "d": 0.0}
        nb = 0
        netg.train()
        netd.train()
        for i in range(0, len(perm) - a.batch + 1, a.batch):
            x = x_all[perm[i : i + a.batch]]
            if a.augment:
                x = augment(x, rng)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                x_hat, z, z_hat = netg(x)
                _, feat_real = d_logits(netd, x)
                _, feat_fake = d_logits(netd, x_hat)
            adv = F.mse_loss(feat_fake.float(), feat_real.float().detach())
            con = F.l1_loss(x_hat.float(), x)
            enc = F.mse_loss(z_hat.float(), z.float())
            loss_g = a.w_adv * adv + a.w_con * con + a.w_enc * enc
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()
            with torch.autocast("cpu", dtype=torch.bfloat16):
                l_real, _ = d_logits(netd, x)
                l_fake, _ = d_logits(netd, x_hat.detach())
            l_real, l_fake = l_real.float(), l_fake.float()
            if a.d_loss == "hinge":
                loss_d = 0.5 * (F.relu(1 - l_real).mean() + F.relu(1 + l_fake).mean())
            else:
                loss_d = 0.5 * (
                    F.binary_cross_entropy_with_logits(l_real, torch.ones_like(l_real))
                    + F.binary_cross_entropy_with_logits(l_fake, torch.zeros_like(l_fake))
                )
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()
            ld = float(loss_d.detach())
            d_hist.append(ld)
            # Paper rule: reset D when its loss is < 1e-5. The trial's collapse was a loss
            # stuck at a constant instead, which that rule never sees: detect both.
            stuck = len(d_hist) >= 50 and (max(d_hist[-50:]) - min(d_hist[-50:])) < 1e-4
            # With a hinge loss one batch at exactly 0 is D winning by the margin, not a
            # collapse: --windowed-reset applies the paper's threshold to the mean of the
            # last 50 losses instead of a single batch.
            level = float(np.mean(d_hist[-50:])) if a.windowed_reset else ld
            full = len(d_hist) >= 50 or not a.windowed_reset
            if (full and level < 1e-5) or (a.reset_stuck and stuck):
                netd.apply(weights_init)
                opt_d = torch.optim.Adam(netd.parameters(), lr=a.lr_d, betas=(0.5, 0.999))
                resets += 1
                d_hist.clear()
            sums["con"] += float(con.detach())
            sums["enc"] += float(enc.detach())
            sums["adv"] += float(adv.detach())
            sums["d"] += ld
            nb += 1
            seen += len(x)
        rec = {k: round(v / max(nb, 1), 5) for k, v in sums.items()}
        rec.update(epoch=epoch + 1, windows=len(x_all), t=round(time.time() - t0, 1))
        tail = d_hist[-50:]
        rec["d_loss_range_last50"] = round(max(tail) - min(tail), 6) if tail else None
        log.append(rec)
        print(json.dumps({"epoch_log": rec}), file=sys.stderr, flush=True)
    train_s = time.time() - t0
    return (
        netg,
        netd,
        cfg,
        {
            "train_s": round(train_s, 1),
            "windows_seen": seen,
            "windows_per_s": round(seen / max(train_s, 1e-9), 1),
            "d_resets": resets,
            "epochs_log": log,
        },
    )


def sobel_mag(grey: torch.Tensor) -> torch.Tensor:
    """Gradient magnitude of ``(N, H, W)`` grey windows (edge strength, same shape)."""
    kx = torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]]) / 8.0
    k = torch.stack([kx, kx.T])[:, None]
    g = F.conv2d(F.pad(grey[:, None], (1, 1, 1, 1), mode="replicate"), k)
    return g.pow(2).sum(1).sqrt()


@torch.inference_mode()
def score_bag(
    netg, netd, bw: D.BagWindows, rep: str = "rgb", batch: int = 256
) -> dict[str, np.ndarray]:
    """Raw per-window quantities; residual maps are summarised, not kept."""
    out: dict[str, list] = {
        k: []
        for k in ("latent", "rec_mean", "rec_max", "rec_pool", "dfeat", "edge_hist", "maxdens")
    }
    out["meandark"] = []
    out["under_mean"] = []
    out["under_pool"] = []
    out["edgemean"] = []
    for i in range(0, len(bw.x), batch):
        x = bw.x[i : i + batch]
        grey = bw.grey[i : i + batch]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            x_hat, z, z_hat = netg(x)
            f_real = netd.features(x)
            f_fake = netd.features(x_hat)
        r = (x - x_hat.float()).abs().mean(1)  # (n, H, W)
        out["latent"].append((z.float() - z_hat.float()).abs().flatten(1).mean(1))
        out["rec_mean"].append(r.mean((1, 2)))
        out["rec_max"].append(r.flatten(1).amax(1))
        out["rec_pool"].append(F.avg_pool2d(r[:, None], 8).flatten(1).amax(1))
        # Signed residual: density the reconstruction does not explain (input denser than
        # x_hat): darker in rgb, larger attenuation in rgb_attenuation.
        d = x_hat.float() - x if rep == "rgb" else x - x_hat.float()
        u = d.clamp_min(0).mean(1)
        out["under_mean"].append(u.mean((1, 2)))
        out["under_pool"].append(F.avg_pool2d(u[:, None], 8).flatten(1).amax(1))
        out["dfeat"].append((f_real.float() - f_fake.float()).pow(2).flatten(1).mean(1))
        e = sobel_mag(grey)
        # Residual by edge-strength bin: (n, NB) sums and counts, for the edge-excess score.
        b = torch.bucketize(e, EDGE_BINS)
        nbins = len(EDGE_BINS) + 1
        sums = torch.zeros(len(r), nbins).scatter_add_(1, b.flatten(1), r.flatten(1))
        cnts = torch.zeros(len(r), nbins).scatter_add_(
            1, b.flatten(1), torch.ones_like(r.flatten(1))
        )
        out["edge_hist"].append(torch.cat([sums, cnts], 1))
        out["maxdens"].append(1 - grey.flatten(1).amin(1))
        out["meandark"].append(1 - grey.mean((1, 2)))
        out["edgemean"].append(e.mean((1, 2)))
    return {k: torch.cat(v).numpy() for k, v in out.items()}


EDGE_BINS = torch.tensor([0.005, 0.01, 0.02, 0.04, 0.06, 0.09, 0.13, 0.2, 0.3])


def score_split(netg, netd, names, rep, stride, pool):
    rows = []
    for n in names:
        bw = D.bag_windows(n, rep, stride)
        s = score_bag(netg, netd, bw, rep)
        s["label"] = bw.label
        s["cls"] = bw.cls
        s["bag"] = np.full(len(bw.label), n)
        s["oy"], s["ox"] = bw.origins[:, 0], bw.origins[:, 1]
        s["pool"] = np.full(len(bw.label), pool)
        rows.append(s)
    return {k: np.concatenate([r[k] for r in rows]) for k in rows[0]}


def save_models(a: argparse.Namespace, netg, netd) -> Path:
    """Weights (safetensors, outside the repo) so the test split can be scored later
    without retraining: ``benchmarks/research/score_saved.py``."""
    from safetensors.torch import save_file

    d = D.CACHE / "models"
    d.mkdir(parents=True, exist_ok=True)
    tensors = {f"g.{k}": v.contiguous() for k, v in netg.state_dict().items()}
    tensors.update({f"d.{k}": v.contiguous() for k, v in netd.state_dict().items()})
    save_file(tensors, str(d / f"{a.tag}.safetensors"))
    (d / f"{a.tag}.json").write_text(json.dumps(vars(a)))
    return d / f"{a.tag}.safetensors"


def main(argv: list[str] | None = None) -> int:
    a = parse(argv)
    torch.set_num_threads(a.threads)
    sp = D.splits()
    t_start = time.time()
    netg, netd, cfg, tinfo = train(a, sp.train[: a.train_bags])
    netg.eval()
    netd.eval()
    save_models(a, netg, netd)
    t1 = time.time()
    threat_names = sp.val if a.threat_split == "val" else sp.test
    benign_a = sp.eval_a if a.threat_split == "val" else sp.test_a
    cap = a.eval_bags or None
    parts = [
        score_split(netg, netd, sp.calib[: cap or a.calib_bags], a.representation, 32, "calib"),
        score_split(netg, netd, benign_a[: cap or a.a_bags], a.representation, a.eval_stride, "a"),
        score_split(netg, netd, threat_names[:cap], a.representation, a.eval_stride, "threat"),
    ]
    raw = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    eval_s = time.time() - t1
    scores_dir = D.CACHE / "scores"
    scores_dir.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(scores_dir / f"{a.tag}.npz", **raw)
    result = {
        "tag": a.tag,
        "args": vars(a),
        "model": cfg.to_dict(),
        "threat_split": a.threat_split,
        **tinfo,
        "eval_s": round(eval_s, 1),
        "total_s": round(time.time() - t_start, 1),
        "hardware": f"{platform.machine()} {os.cpu_count()} cores (shared), torch "
        f"{torch.__version__}, {a.threads} threads, bf16 autocast",
        "loadavg_end": os.getloadavg(),
        "metrics": M.all_metrics(raw),
    }
    D.record(result, a.results)
    if a.also_test:
        import score_saved

        score_saved.main(
            [
                "--tag",
                a.tag,
                "--split",
                "test",
                "--stride",
                str(a.eval_stride),
                "--a-bags",
                str(a.a_bags),
                "--threads",
                str(a.threads),
                "--results",
                a.results,
            ]
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
