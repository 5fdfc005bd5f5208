"""Score a model saved by ``run.py`` on a split without retraining; prints JSON, appends a line.

Used once, for the chosen configuration, on the threat ``test`` split with benign pool (a)
= the standard benign ``test`` block (stride 16, the protocol's)::

    python benchmarks/research/score_saved.py --tag r2_stable_unet_s0 --split test --stride 32
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parent))

import data as D
import metrics as M
import run as R

from xrayscreen.model.ganomaly import build_discriminator
from xrayscreen.model.variants import build_generator


def load(tag: str):
    """Generator, discriminator and the run's arguments of a saved run."""
    d = D.CACHE / "models"
    a = argparse.Namespace(**json.loads((d / f"{tag}.json").read_text()))
    cfg = R.model_config(a)
    netg, netd = build_generator(cfg, init=False), build_discriminator(cfg, init=False)
    t = load_file(str(d / f"{tag}.safetensors"))
    netg.load_state_dict({k[2:]: v for k, v in t.items() if k.startswith("g.")})
    netd.load_state_dict({k[2:]: v for k, v in t.items() if k.startswith("d.")})
    return netg.eval(), netd.eval(), a


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tag", required=True)
    p.add_argument("--split", default="test", choices=["val", "test"])
    p.add_argument("--stride", type=int, default=16)
    p.add_argument("--calib-bags", type=int, default=10)
    p.add_argument("--a-bags", type=int, default=0, help="cap benign pool (a) bags (0 = all)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--results", default=str(R.REPO / "runs" / "research.jsonl"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    netg, netd, a = load(args.tag)
    sp = D.splits()
    threat = sp.val if args.split == "val" else sp.test
    benign = sp.eval_a if args.split == "val" else sp.test_a
    benign = benign[: args.a_bags or None]
    t0 = time.time()
    parts = [
        R.score_split(netg, netd, sp.calib[: args.calib_bags], a.representation, 32, "calib"),
        R.score_split(netg, netd, benign, a.representation, args.stride, "a"),
        R.score_split(netg, netd, threat, a.representation, args.stride, "threat"),
    ]
    raw = {k: np.concatenate([q[k] for q in parts]) for k in parts[0]}
    out_tag = f"{args.tag}@{args.split}_s{args.stride}"
    (D.CACHE / "scores").mkdir(parents=True, exist_ok=True)
    np.savez_compressed(D.CACHE / "scores" / f"{out_tag}.npz", **raw)
    result = {
        "tag": out_tag,
        "model_tag": args.tag,
        "threat_split": args.split,
        "benign_pool_a": "standard benign test block" if args.split == "test" else "val[20:]",
        "stride": args.stride,
        "benign_bags": len(benign),
        "threat_bags": len(threat),
        "eval_s": round(time.time() - t0, 1),
        "metrics": M.all_metrics(raw),
    }
    D.record(result, args.results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
