"""What each score kind costs in the scoring engine (issue 4 / issue 7).

Same engine settings and the same random-init generator (GANomaly ngf 64, nz 100, 64x64x3)
for every kind; the feature kinds get a memory of ``--memory`` random rows (the X-ray
default keeps up to 20,000), which is what their k-NN search costs. Windows/s of
``ScoringEngine.score_windows`` on the same random windows, rounds interleaved, medians.
Prints one JSON object.

    python benchmarks/bench_score_kinds.py --threads 2 --windows 2048 --rounds 3
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import time

import torch

from xrayscreen.inference.engine import ScoringEngine
from xrayscreen.model.bundle import InputSpec, ModelBundle, ScoreSpec
from xrayscreen.model.feature_bank import FeatureBank
from xrayscreen.model.ganomaly import GANomalyConfig, build_generator

KINDS = ("latent", "residual", "feature_knn", "feature_knn_residual")


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--windows", type=int, default=2048)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--memory", type=int, default=20000)
    ap.add_argument("--ngf", type=int, default=64)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = GANomalyConfig(isize=64, nc=3, nz=100, ngf=args.ngf, ndf=args.ngf)
    gen = build_generator(cfg).eval()
    dim = 4 * args.ngf  # level 2: 2*ngf channels, mean + max pooled
    bank = FeatureBank.fit(torch.randn(args.memory, dim), level=2, k=5, max_size=args.memory)
    engines = {}
    for kind in KINDS:
        params = {**bank.params(), "knn_scale": 1.0, "res_scale": 1.0} if "knn" in kind else {}
        b = ModelBundle(
            config=cfg,
            generator=copy.deepcopy(gen),
            input=InputSpec(window=64),
            score=ScoreSpec(kind=kind, params=params),
            feature_bank=bank if "knn" in kind else None,
        )
        engines[kind] = ScoringEngine(b, "cpu")
        engines[kind].warmup()
    x = (torch.rand(args.windows, 3, 64, 64) * 2 - 1).contiguous(memory_format=torch.channels_last)
    rates: dict[str, list[float]] = {k: [] for k in KINDS}
    for _ in range(args.rounds):
        for kind, eng in engines.items():
            t = time.perf_counter()
            eng.score_windows(x, residual=True)
            rates[kind].append(args.windows / (time.perf_counter() - t))
    med = {k: statistics.median(v) for k, v in rates.items()}
    out = {
        "benchmark": "score_kind_cost",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {args.threads} threads",
        "torch": torch.__version__,
        "load_avg_end": os.getloadavg(),
        "ngf": args.ngf,
        "memory_rows": args.memory,
        "memory_dim": dim,
        "engine": engines["latent"].describe(),
        "windows_per_s_median": {k: round(v, 1) for k, v in med.items()},
        "windows_per_s_rounds": {k: [round(r, 1) for r in v] for k, v in rates.items()},
        "relative_to_latent": {k: round(v / med["latent"], 3) for k, v in med.items()},
    }
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
