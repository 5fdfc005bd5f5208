"""Reproduce the GANomaly paper's Table 1 (MNIST, one digit as the anomaly) and print JSON.

Protocol (see ``xrayscreen.training.mnist``): t10k digits only (the 60k training split is
not available here); the nine normal digits split 80/20 by a fixed seed; all images of the
anomalous digit in the test split; 32x32; 15 epochs; the final epoch's model; eval-mode
latent scores. AUC is reported for the paper's text score (mean |z - z_hat|, "l1") and for
the paper code's score (mean (z - z_hat)^2, "l2").

Usage::

    python benchmarks/mnist_table1.py --digits 0 1 2 --ngf 32 --out /work/main/runs/mnist.json

The JSON file is rewritten after every digit, so a partial run keeps what finished.
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
from scipy.stats import rankdata

from xrayscreen.model.score import latent_score
from xrayscreen.training.config import TrainConfig
from xrayscreen.training.data import WindowSet, decode
from xrayscreen.training.loop import FitOutcome, iter_fit
from xrayscreen.training.mnist import PAPER_TABLE1, digit_split, load_mnist

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC via the rank-sum statistic (ties count half)."""
    r = rankdata(scores)
    pos = labels == 1
    n1, n0 = int(pos.sum()), int((~pos).sum())
    return float((r[pos].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


@torch.no_grad()
def eval_scores(gen: torch.nn.Module, x_u8: torch.Tensor, bf16: bool) -> dict[str, np.ndarray]:
    gen.eval()
    out: dict[str, list[np.ndarray]] = {"l1": [], "l2": []}
    for i in range(0, x_u8.shape[0], 512):
        x = decode(x_u8[i : i + 512])
        ctx = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else torch.no_grad()
        with ctx:
            _, z, z_hat = gen(x)
        out["l1"].append(latent_score(z, z_hat, "l1").numpy())
        out["l2"].append(latent_score(z, z_hat, "l2").numpy())
    return {k: np.concatenate(v) for k, v in out.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--digits", type=int, nargs="+", default=list(range(10)))
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--ngf", type=int, default=64)
    ap.add_argument("--nz", type=int, default=100)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--seed", type=int, default=0, help="split and training seed")
    ap.add_argument("--bf16", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None, help="JSON file rewritten after each digit")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    images, labels = load_mnist(args.data, 32)
    result = {
        "benchmark": "mnist_table1",
        "protocol": "t10k only; normals 80/20 by seed; all anomalies to test; 32x32; "
        "final epoch; eval-mode latent score",
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "machine": f"{platform.machine()} {torch.get_num_threads()} threads, torch {torch.__version__}",
        "paper": list(PAPER_TABLE1),
        "digits": {},
    }
    t_all = time.perf_counter()
    for d in args.digits:
        split = digit_split(images, labels, d, args.seed)
        cfg = TrainConfig(
            nc=1,
            window=32,
            stride=32,
            epochs=args.epochs,
            batch_size=args.batch,
            lr=args.lr,
            ngf=args.ngf,
            ndf=args.ngf,
            nz=args.nz,
            augment=False,
            val_fraction=0.0,
            seed=args.seed,
            bf16=args.bf16,
            device="cpu",
            keep="final",
        )
        t0 = time.perf_counter()
        empty = WindowSet(split.train.data[:0], split.train.scan_index[:0], [], [])
        outs: list[FitOutcome] = []
        for ev in iter_fit(cfg, split.train, empty, outcome=outs):
            if ev.phase == "validate" and ev.message:  # end of an epoch
                el = time.perf_counter() - t0
                print(f"digit {d} {ev.message} ({el:.0f} s)", file=sys.stderr, flush=True)
        out = outs[0]
        train_s = time.perf_counter() - t0
        scores = eval_scores(out.generator, split.test_x, args.bf16)
        row = {
            "auc_l1": auc(scores["l1"], split.test_y),
            "auc_l2": auc(scores["l2"], split.test_y),
            "paper": PAPER_TABLE1[d],
            "n_train": len(split.train),
            "n_test_normal": int((split.test_y == 0).sum()),
            "n_test_anomalous": int(split.test_y.sum()),
            "train_s": round(train_s, 1),
            "d_resets": out.d_resets,
            "final_losses": {
                k: round(v, 5) for k, v in out.history[-1].items() if isinstance(v, float)
            },
        }
        result["digits"][str(d)] = row
        done = list(result["digits"].values())
        result["mean_auc_l1"] = float(np.mean([r["auc_l1"] for r in done]))
        result["mean_auc_l2"] = float(np.mean([r["auc_l2"] for r in done]))
        result["paper_mean_same_digits"] = float(np.mean([r["paper"] for r in done]))
        result["total_s"] = round(time.perf_counter() - t_all, 1)
        print(json.dumps({"digit": d, **row}), file=sys.stderr, flush=True)
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
