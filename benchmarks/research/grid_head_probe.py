"""Probe (issue 7, tenth session): would a projected-threat head that sees WHERE in the
window the encoder fires do better at bag level than one on the pooled embedding?

The ninth session's head read the feature memory's embedding (G_E's level-2 map mean- and
max-pooled over space): a thin blade along a tube pools like the tube. This probe fits the
same head (same projected threats, same windows, same MLP) on that embedding plus the
level-2 map average-pooled to a ``--cells`` x ``--cells`` grid (what ``tip_cells`` now
does in the product), scores the val bags' windows with it and recombines its per-scan
z-score with the other evidence terms saved by ``evidence_terms.py`` (same formula as
the product's score, bag point read at the highest window) -- minutes, where the product
path (``rescore_bundle.py --tip-cells`` + ``xrayscreen evaluate``) takes a quarter hour
per seed. It was run before ``tip_cells`` existed, with its own copy of the grid pooling;
it now calls the product's. Since the thirteenth session it also measures how much of a
head's bag figures is the luck of its draws of projected threats: ``--draws 9 --subsets
0-2,3-5,6-8`` fits nine draws once and reads three independent three-draw heads (the
shipped recipe is draws 0-2). Prints JSON::

    python benchmarks/research/grid_head_probe.py --bundle /tmp/models/jt1_s6 \\
        --sources /tmp/sixray_lists/benign_train.txt --terms /tmp/s10/dec_jt1_s6.npz \\
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
import torch.nn.functional as F

from xrayscreen.inference.engine import ScoringEngine
from xrayscreen.model.bundle import load_bundle
from xrayscreen.training import tip_head as fit
from xrayscreen.training.config import TrainConfig
from xrayscreen.training.data import iter_scans_of, load_windows, split_by_scan

sys.path.insert(0, str(Path(__file__).parent))
from evidence_terms import (
    add_contents,
    add_probe_args,
    bag_figures,
    bag_views,
    figures_with_heads,
    head_logits,
    load_terms,
)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_probe_args(p)
    p.add_argument("--cells", type=int, default=4)
    p.add_argument("--threads", type=int, default=2)
    # Research variants (eleventh session), each off by default:
    p.add_argument(
        "--extra-levels",
        default="",
        help="more encoder maps for the head, LEVEL:CELLS[,LEVEL:CELLS] (e.g. 1:4 = the "
        "first activation averaged over a 4 x 4 grid; LEVEL:CELLS:max max-pools the cells)",
    )
    p.add_argument("--thickness", type=float, nargs=2, default=list(fit.THICKNESS_RANGE))
    p.add_argument("--size", type=float, nargs=2, default=list(fit.SIZE_RANGE))
    p.add_argument(
        "--knife-size",
        type=float,
        nargs=2,
        default=None,
        help="knives get their own pitch factor range (fourteenth session: SIXray's knives are "
        "larger than its guns relative to the bag); other threats keep --size",
    )
    p.add_argument(
        "--knife-thickness",
        type=float,
        nargs=2,
        default=None,
        help="knives get their own thickness range (fifteenth session: SIXray shows its knives "
        "lighter than the projections); other threats keep --thickness",
    )
    p.add_argument("--per-bag", type=int, default=None, help="threats per bag (bundle's)")
    p.add_argument(
        "--head-zoom",
        type=float,
        default=None,
        help="the head's zoomed view shrinks the scan this many times, in training and on the "
        "val bags (GANomaly's zoomed terms stay the dump's; fifteenth session)",
    )
    p.add_argument(
        "--wide",
        type=float,
        default=None,
        help="a THIRD view for the head: each window's view shrunk this many times, its own head "
        "per draw (same projections), scored as GANomaly's zoomed terms plus its z; the score "
        "the max of the three views (fifteenth session)",
    )
    p.add_argument(
        "--joint",
        action="store_true",
        help="one head per draw on both views' inputs side by side (a window and its zoomed-out "
        "view read together), its within-scan z added to both views (fifteenth session)",
    )
    p.add_argument(
        "--decoys",
        type=int,
        default=0,
        help="benign dense objects projected per bag as negatives (fifteenth session)",
    )
    p.add_argument("--hidden", type=int, default=fit.HIDDEN)
    p.add_argument(
        "--negatives",
        type=int,
        default=fit.NEGATIVES_PER_BAG,
        help="threat-free windows drawn per projected bag (fourteenth session)",
    )
    p.add_argument(
        "--skip-heldout",
        action="store_true",
        help="fit each draw's head once, on all its bags (no held-out separation: half the fit)",
    )
    p.add_argument(
        "--draws",
        type=int,
        default=1,
        help="heads averaged, each fitted on its own draw of projected threats",
    )
    p.add_argument(
        "--subsets",
        default="",
        help="also the figures of these subsets of the draws averaged, FIRST-LAST[,FIRST-LAST] "
        "(e.g. 0-2,3-5: two three-draw ensembles from one six-draw run)",
    )
    p.add_argument(
        "--seed-offset",
        type=int,
        default=0,
        help="added to the bundle's seed for the projections and the head's fit (how much "
        "one fit's luck moves the bag point)",
    )
    p.add_argument(
        "--lighten",
        type=float,
        nargs=2,
        default=None,
        metavar=("LO", "HI"),
        help="each projected threat's darkening raised to a power drawn from LO-HI "
        "(tip_head.lighten_rgb: lighter, hue kept; sixteenth session)",
    )
    p.add_argument(
        "--line",
        type=int,
        default=0,
        metavar="REACH",
        help="also every figure with line evidence of this reach beside the context "
        "(evidence_terms.combine's line_reach; sixteenth session)",
    )
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    _variants(a)
    t0 = time.perf_counter()
    b = load_bundle(a.bundle)
    if a.head_zoom is not None:  # every head view is cut through the bundle's score spec
        b.score.params = {**b.score.params, "zoom": float(a.head_zoom)}
    cfg = TrainConfig.from_dict(b.training["config"])
    ws = load_windows(a.sources, cfg)
    split = split_by_scan(ws, cfg.val_fraction, cfg.seed, cfg.min_val_scans)
    per_bag = a.per_bag or cfg.tip_per_bag
    heads, infos, wide_heads = [], [], []
    b_wide = _with_zoom(b, a.wide) if a.wide else None
    for k in range(a.draws):  # draw k's seed = offset k's: draws 0 and 1 ARE offsets 0 and 1
        seed = cfg.seed + a.seed_offset + k

        def rows_of(bundle, seed):  # the draw's projections (same seed: same windows), standardised
            scans = iter_scans_of(a.sources, split.train.scan_ids, split.train.scan_names)
            rows = fit.collect_rows(
                bundle,
                scans,
                torch.device("cpu"),
                per_bag,
                seed,
                cells=a.cells,
                size_range=tuple(a.size),
                decoys=a.decoys,
            )
            rows.standardise()
            return rows

        rows = rows_of(b, seed)
        if a.joint:
            head, info = _fit_joint(rows, seed)
        else:
            head, info = fit.fit_heads(rows, seed)  # folded: reads the raw input
        heads.append(head)
        infos.append(info.get("heldout_auc"))
        del rows
        if b_wide is not None:  # the same projections and windows (same seed), cut wider
            rows = rows_of(b_wide, seed)
            wide_heads.append(fit.fit_heads(rows, seed)[0])
            del rows
    t1 = time.perf_counter()

    # The val bags, in the order evidence_terms.py saved them.
    bags = load_terms(a.terms)
    add_contents(bags, a.threat, a.labels, a.masks)
    base = bag_figures(bags)
    base_line = bag_figures(bags, line_reach=a.line) if a.line else None  # the dump's own head
    subsets = [tuple(int(v) for v in part.split("-")) for part in a.subsets.split(",") if part]
    per_draw = (joint_logits if a.joint else head_logits)(b, bags, heads, a.cells, a)
    if b_wide is not None:
        per_wide = head_logits(b_wide, bags, wide_heads, a.cells, a)

    def figures(first: int, last: int) -> dict[str, float]:
        if b_wide is None:
            return figures_with_heads(bags, per_draw, slice(first, last + 1))
        return _figures_wide(bags, per_draw, per_wide, slice(first, last + 1))

    by_subset = {f"{f}-{la}": figures(f, la) for f, la in subsets}
    grid = figures(0, len(heads) - 1)
    # Sixteenth session: the same heads with line evidence beside the context (paired).
    line = {}
    if a.line and b_wide is None:
        kw = {"line_reach": a.line}
        line = {
            "grid_head_line": figures_with_heads(bags, per_draw, slice(0, len(heads)), **kw),
            "pooled_head_line": base_line,
            "subsets_line": {
                f"{f}-{la}": figures_with_heads(bags, per_draw, slice(f, la + 1), **kw)
                for f, la in subsets
            },
        }
    print(
        json.dumps(
            {
                "bundle": a.bundle,
                "cells": a.cells,
                "extra_levels": a.extra_levels,
                "thickness": a.thickness,
                "size": a.size,
                "knife_size": a.knife_size,
                "knife_thickness": a.knife_thickness,
                "lighten": a.lighten,
                "per_bag": per_bag,
                "decoys": a.decoys,
                "head_zoom": a.head_zoom,
                "joint": a.joint,
                "wide": a.wide,
                "hidden": a.hidden,
                "negatives": a.negatives,
                "seed_offset": a.seed_offset,
                "draws": a.draws,
                "dim": getattr(heads[0], "dim", None),
                "tip_head": info,
                "pooled_head": base,
                "grid_head": grid,
                "subsets": by_subset,
                "line_reach": a.line,
                **line,
                "heldout_auc_draws": infos,
                "fit_s": round(t1 - t0, 1),
                "seconds": round(time.perf_counter() - t0, 1),
            }
        )
    )
    return 0


def _with_zoom(bundle, factor: float):
    """A shallow copy of ``bundle`` whose score spec cuts the zoomed view ``factor`` times
    smaller (the head's views are cut through it)."""
    import copy

    out = copy.copy(bundle)
    out.score = copy.copy(bundle.score)
    out.score.params = {**bundle.score.params, "zoom": float(factor)}
    return out


def _figures_wide(bags, per_draw, per_wide, which) -> dict[str, float]:
    """Bag figures with the head's two views' z as usual and a third, wide view scored as
    GANomaly's zoomed terms plus the wide head's within-scan z, the window score the max of
    the three views before the spatial context (the product's combine otherwise)."""
    from evidence_terms import bag_figures as _bag_figures

    from xrayscreen.inference import context, tip_evidence
    from xrayscreen.model.bundle import ScoreSpec

    spec = ScoreSpec(params={"scan_norm": "robust_z", "context_px": 128.0, "context_self": 0.25})
    for bag, kept, wide in zip(bags, per_draw, per_wide):
        valid = torch.from_numpy(bag["valid"])
        z = {k: tip_evidence.normalise(lg[which].mean(0), valid).numpy() for k, lg in kept.items()}
        hw = tip_evidence.normalise(wide["hz"][which].mean(0), valid).numpy()
        fine = bag["m"] + 0.5 * bag["d"] + z["h"]
        coarse = bag["mz"] + 0.5 * bag["dz"] + z["hz"]
        far = bag["mz"] + 0.5 * bag["dz"] + hw
        s = torch.from_numpy(np.maximum(np.maximum(fine, coarse), far).astype(np.float32))
        bag["out"] = context.apply(spec, s, bag["grid"], valid).numpy()
    return _bag_figures(bags, saved=True)


def _fit_joint(rows: fit.TipRows, seed: int) -> tuple[torch.nn.Sequential, dict]:
    """One MLP on both views' standardised inputs side by side (the shipped recipe's MLP,
    loss and optimiser), folded to read the raw inputs."""
    x = torch.cat([rows.x[0], rows.x[1]], dim=1)
    net = fit.train_mlp(x, rows.y, seed)
    mean = torch.cat([rows.scale[0][0], rows.scale[1][0]])
    std = torch.cat([rows.scale[0][1], rows.scale[1][1]])
    info = {"threat_windows": int(rows.y.sum()), "normal_windows": int((rows.y == 0).sum())}
    return fit.fold_standardisation(net, mean, std), info


@torch.no_grad()
def joint_logits(bundle, bags, heads, cells: int, a: argparse.Namespace) -> list[dict]:
    """:func:`evidence_terms.head_logits` for joint heads: every head's logit on each
    window's two views read together, given to both views' keys."""
    engine = ScoringEngine(bundle, torch.device("cpu"))
    out = []
    for bag, idx, views in bag_views(bundle, bags, a.normal, a.threat, a.labels, a.masks):
        x = torch.cat([engine.embed_windows(w, cells) for w in views], dim=1).float()
        lg = torch.zeros(len(heads), len(bag["valid"]))
        lg[:, idx] = torch.stack([h(x).squeeze(1) for h in heads])
        out.append({"h": lg, "hz": lg})
    return out


def _variants(a: argparse.Namespace) -> None:
    """Patch the research variants into the fitting and embedding code (probe only)."""
    fit.HIDDEN = a.hidden
    fit.NEGATIVES_PER_BAG = a.negatives
    if a.skip_heldout:
        fit.HOLDOUT = 0.0
    real_project = fit.project_bag

    kinds = {"knife": tuple(a.knife_size)} if a.knife_size else None
    thick = {"knife": tuple(a.knife_thickness)} if a.knife_thickness else None

    def project(scan, rng, per_bag, size_range=fit.SIZE_RANGE, thickness_range=None, **kw):
        return real_project(
            scan,
            rng,
            per_bag,
            size_range,
            tuple(a.thickness),
            kind_sizes=kinds,
            kind_thickness=thick,
            lighten=tuple(a.lighten) if a.lighten else None,
            **kw,
        )

    fit.project_bag = project
    extra = [part.split(":") for part in a.extra_levels.split(",") if part]
    if not extra:
        return
    from xrayscreen.model import feature_bank

    real_embed = ScoringEngine.embed_windows

    def embed(self, windows, cells=0, cell_max=False):
        base = real_embed(self, windows, cells, cell_max)
        body = feature_bank.encoder_body(self.generator)
        out = []
        with torch.inference_mode(), self._autocast():
            for xb in self.model_batches(windows):
                parts = []
                for level, c, *how in extra:
                    fmap = feature_bank.encoder_map(body, xb, int(level)).float()
                    pool = F.adaptive_max_pool2d if how == ["max"] else F.adaptive_avg_pool2d
                    parts.append(pool(fmap, int(c)).flatten(1))
                out.append(torch.cat(parts, dim=1))
        self._tap.clear()
        return torch.cat([base, torch.cat(out).to(base.device)], dim=1)

    ScoringEngine.embed_windows = embed


if __name__ == "__main__":
    sys.exit(main())
