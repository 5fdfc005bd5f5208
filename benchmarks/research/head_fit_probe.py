"""Probe (issue 7, fourteenth session): can the projected-threat head be fitted so that its
bag figures depend less on the draw of projected threats, without losing any?

The thirteenth session measured the shipped recipe (``tip_draws`` 3: one MLP per draw of
projected threats, the three averaged) over three independent draw-sets per bundle and
found its val 5 % bag point moving by up to 17.9 points between them. This probe embeds
``--draws`` (9) draws of projected windows ONCE, then fits each head variant on the same
rows for every draw-set (0-2, 3-5, 6-8) and reads all of them on the saved val bags
(``evidence_terms.py dump``; the product's formula, bag point at the highest window):

- ``avg``: the shipped recipe (each draw its own standardisation and MLP, seeds as
  :func:`xrayscreen.training.tip_head.fit_tip_head` gives them; averaged);
- ``union``: ONE MLP of the same shape on the three draws' rows pooled (three times the
  data per fit, the same number of gradient steps as the three fits together);
- ``avg_wd``: the shipped recipe with ten times the weight decay (1e-2);
- ``avg_linear``: the shipped recipe with a linear head per draw (logistic regression,
  stored in the MLP format as ``relu(z) - relu(-z)``);
- ``avg9``: all nine draws' shipped MLPs averaged (the cost of three draw-sets).

Prints JSON (per variant: figures per draw-set, their mean and SD)::

    python benchmarks/research/head_fit_probe.py --bundle /tmp/models/t12_s6 \\
        --sources /tmp/sixray_lists/benign_train.txt --terms /tmp/s12/dec_t12_s6.npz \\
        --normal /tmp/sixray_lists/benign_val.txt --threat /tmp/sixray_lists/threat_val.txt
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from xrayscreen.model.bundle import load_bundle
from xrayscreen.model.tip_head import VIEWS, TipHead
from xrayscreen.training import tip_head as fit
from xrayscreen.training.config import TrainConfig
from xrayscreen.training.data import iter_scans_of, load_windows, split_by_scan

sys.path.insert(0, str(Path(__file__).parent))
from evidence_terms import add_probe_args, bag_figures, figures_with_heads, head_logits, load_terms

VARIANTS = ("avg", "union", "avg_wd", "avg_linear")


def _standardised(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    m, sd = x.mean(0), x.std(0).clamp_min(1e-6)
    return (x - m) / sd, m, sd


def _fit_net(x: torch.Tensor, y: torch.Tensor, seed: int, kind: str) -> nn.Sequential:
    """One view's net on standardised rows: the product's MLP (``avg``, ``union``), its
    ten-times weight decay, or a linear head in the MLP's storage format."""
    if kind != "avg_linear":  # the product's own fit (avg_wd: ten times its weight decay)
        return fit.train_mlp(x, y, seed, weight_decay=1e-2 if kind == "avg_wd" else 1e-3)
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(x.shape[1], 1))
    net = fit._fit_bce(net, x, y, gen, fit.EPOCHS)  # the product's loop and weight decay
    lin = net[0]  # z = relu(z) - relu(-z): the MLP format, exactly
    first, last = nn.Linear(lin.in_features, 2), nn.Linear(2, 1)
    with torch.no_grad():
        first.weight.copy_(torch.cat([lin.weight, -lin.weight]))
        first.bias.copy_(torch.cat([lin.bias, -lin.bias]))
        last.weight.copy_(torch.tensor([[1.0, -1.0]]))
        last.bias.zero_()
    return nn.Sequential(first, nn.ReLU(), last).eval()


def _head(xs: list[torch.Tensor], y: torch.Tensor, seed: int, kind: str) -> TipHead:
    """Both views' nets on raw rows (standardised here, folded back)."""
    nets = []
    for v in range(len(VIEWS)):
        xv, m, sd = _standardised(xs[v])
        nets.append(fit.fold_standardisation(_fit_net(xv, y, seed + v, kind), m, sd))
        del xv
    return TipHead.from_modules(nets)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_probe_args(p)
    p.add_argument("--draws", type=int, default=9)
    p.add_argument("--set-size", type=int, default=3)
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    b = load_bundle(a.bundle)
    cfg = TrainConfig.from_dict(b.training["config"])
    ws = load_windows(a.sources, cfg)
    split = split_by_scan(ws, cfg.val_fraction, cfg.seed, cfg.min_val_scans)
    rows = []
    for k in range(a.draws):  # draw k's seed as fit_tip_head's: cfg.seed + k
        scans = iter_scans_of(a.sources, split.train.scan_ids, split.train.scan_names)
        r = fit.collect_rows(
            b, scans, torch.device("cpu"), cfg.tip_per_bag, cfg.seed + k, cells=cfg.tip_cells
        )
        rows.append(r)
    t1 = time.perf_counter()

    sets = [list(range(s, s + a.set_size)) for s in range(0, a.draws - a.set_size + 1, a.set_size)]
    heads: dict[str, list[TipHead]] = {}
    fit_s: dict[str, float] = {}
    per_draw: dict[int, TipHead] = {}
    for kind in a.variants.split(","):
        ts = time.perf_counter()
        heads[kind] = []
        for draws in sets:
            if kind == "union":
                xs = [torch.cat([rows[k].x[v] for k in draws]) for v in range(len(VIEWS))]
                y = torch.cat([rows[k].y for k in draws])
                heads[kind].append(_head(xs, y, cfg.seed + draws[0], kind))
                del xs
                continue
            members = []
            for k in draws:
                h = _head(rows[k].x, rows[k].y, cfg.seed + k, kind)
                members.append(h)
                if kind == "avg":
                    per_draw[k] = h
            heads[kind].append(TipHead.average(members))
        fit_s[kind] = round(time.perf_counter() - ts, 1)
    if "avg" in heads and len(per_draw) == a.draws and len(sets) > 1:
        heads["avg9"] = [TipHead.average([per_draw[k] for k in range(a.draws)])]
    del rows
    t2 = time.perf_counter()

    bags = load_terms(a.terms)
    names = [(kind, i) for kind, hs in heads.items() for i in range(len(hs))]
    logits = head_logits(b, bags, [heads[k][i] for k, i in names], cfg.tip_cells, a)
    out: dict[str, dict] = {}
    for j, (kind, _) in enumerate(names):
        res = out.setdefault(kind, {"sets": []})
        res["sets"].append(figures_with_heads(bags, logits, j))
    for res in out.values():
        for f in ("bag5", "bag_auc", "window_auc"):
            vals = [s[f] for s in res["sets"]]
            res[f"{f}_mean"] = round(float(np.mean(vals)), 4)
            res[f"{f}_sd"] = round(float(np.std(vals, ddof=1)), 4) if len(vals) > 1 else None
    print(
        json.dumps(
            {
                "bundle": a.bundle,
                "terms": a.terms,
                "draws": a.draws,
                "sets": sets,
                "saved": bag_figures(bags, saved=True),
                "variants": out,
                "fit_s": fit_s,
                "embed_s": round(t1 - t0, 1),
                "read_s": round(time.perf_counter() - t2, 1),
                "seconds": round(time.perf_counter() - t0, 1),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
