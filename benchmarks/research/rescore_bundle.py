"""Give a trained bundle another score kind without retraining (issue-7 ablation).

Same generator weights, a different score: re-reads the training scans, re-creates the
training run's split by scan (same windows, same seed), then fits what the new kind needs
exactly as ``xrayscreen train`` does -- the feature memory on the TRAINING windows, the
component scales and the calibration on the held-out ones, the context calibration on
the held-out scans scored whole -- and writes a new bundle. A clean "one change per row"
comparison of scores on one trained GANomaly::

    python benchmarks/research/rescore_bundle.py --bundle /tmp/models/xray_ex_s0 \\
        --sources /tmp/sixray_lists/benign_train.txt --score-kind feature_knn_excess \\
        --out /tmp/models/xray_ex_s0_knnexc
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from xrayscreen.model.bundle import ScoreSpec, load_bundle, save_bundle
from xrayscreen.training.config import TrainConfig
from xrayscreen.training.data import load_windows, split_by_scan
from xrayscreen.training.pipeline import _score_params, fit_score


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", required=True)
    p.add_argument("--sources", nargs="+", required=True, help="the run's training sources")
    p.add_argument("--out", required=True)
    p.add_argument("--score-kind", required=True)
    p.add_argument("--context-px", type=float, default=None, help="default: the bundle's")
    p.add_argument("--context-self", type=float, default=None, help="default: the bundle's")
    p.add_argument("--target-bag-far", type=float, default=None, help="default: the bundle's")
    p.add_argument("--bag-rule", default=None, help="default: the bundle's")
    p.add_argument("--dfeat-weight", type=float, default=None, help="default: the bundle's")
    p.add_argument("--zoom", type=float, default=None, help="default: the bundle's")
    p.add_argument("--zoom-weight", type=float, default=None, help="default: the bundle's")
    p.add_argument("--zoom-mix", default=None, help="default: the bundle's")
    p.add_argument("--density-weight", type=float, default=None, help="default: the bundle's")
    p.add_argument("--tip-weight", type=float, default=None, help="default: the bundle's")
    p.add_argument("--tip-per-bag", type=int, default=None, help="default: the bundle's")
    p.add_argument("--tip-window-share", type=float, default=None, help="default: the bundle's")
    p.add_argument("--tip-hard", type=int, default=None, help="default: the bundle's")
    p.add_argument("--tip-cells", type=int, default=None, help="default: the bundle's")
    p.add_argument(
        "--tip-cell-max", choices=("on", "off"), default=None, help="default: the bundle's"
    )
    p.add_argument("--tip-conv", type=int, default=None, help="default: the bundle's")
    p.add_argument("--tip-abs-share", type=float, default=None, help="default: the bundle's")
    p.add_argument("--tip-clutter", type=float, default=None, help="default: the bundle's")
    p.add_argument("--tip-members", type=int, default=None, help="default: the bundle's")
    p.add_argument("--tip-draws", type=int, default=None, help="default: the bundle's")
    p.add_argument("--tip-decoys", type=int, default=None, help="default: the bundle's")
    p.add_argument(
        "--tip-thickness-range",
        type=float,
        nargs=2,
        default=None,
        metavar=("LOW", "HIGH"),
        help="default: the bundle's",
    )
    p.add_argument(
        "--tip-size-range", type=float, nargs=2, default=None, help="default: the bundle's"
    )
    p.add_argument(
        "--bank-gammas", nargs="*", type=float, default=None, help="default: the bundle's"
    )
    p.add_argument("--bank-hues", nargs="*", type=float, default=None, help="default: the bundle's")
    p.add_argument(
        "--bank-stride",
        type=int,
        default=None,
        help="cut the memory's training windows at this stride (default: the run's)",
    )
    p.add_argument("--bank-size", type=int, default=None, help="default: the bundle's")
    p.add_argument(
        "--keep-head",
        action="store_true",
        help="reuse the bundle's fitted projected-threat head instead of fitting it again "
        "(for score changes that leave the head alone; its settings must be unchanged)",
    )
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    device = torch.device("cpu")
    b = load_bundle(a.bundle, with_discriminator=True)
    cfg = TrainConfig.from_dict(b.training["config"])
    old_cfg = cfg
    ctx = cfg.context_px if a.context_px is None else a.context_px
    own = cfg.context_self if a.context_self is None else a.context_self
    bag_far = cfg.target_bag_far if a.target_bag_far is None else a.target_bag_far
    cfg = cfg.replace(
        score_kind=a.score_kind,
        context_px=ctx,
        context_self=own,
        target_bag_far=bag_far,
        bag_rule=cfg.bag_rule if a.bag_rule is None else a.bag_rule,
        dfeat_weight=cfg.dfeat_weight if a.dfeat_weight is None else a.dfeat_weight,
        zoom=cfg.zoom if a.zoom is None else a.zoom,
        zoom_weight=cfg.zoom_weight if a.zoom_weight is None else a.zoom_weight,
        zoom_mix=cfg.zoom_mix if a.zoom_mix is None else a.zoom_mix,
        density_weight=cfg.density_weight if a.density_weight is None else a.density_weight,
        tip_weight=cfg.tip_weight if a.tip_weight is None else a.tip_weight,
        tip_per_bag=cfg.tip_per_bag if a.tip_per_bag is None else a.tip_per_bag,
        tip_hard_per_bag=cfg.tip_hard_per_bag if a.tip_hard is None else a.tip_hard,
        tip_window_share=(
            cfg.tip_window_share if a.tip_window_share is None else a.tip_window_share
        ),
        tip_members=cfg.tip_members if a.tip_members is None else a.tip_members,
        tip_draws=cfg.tip_draws if a.tip_draws is None else a.tip_draws,
        tip_decoys=cfg.tip_decoys if a.tip_decoys is None else a.tip_decoys,
        tip_thickness_range=(
            cfg.tip_thickness_range
            if a.tip_thickness_range is None
            else tuple(a.tip_thickness_range)
        ),
        tip_size_range=(
            cfg.tip_size_range if a.tip_size_range is None else tuple(a.tip_size_range)
        ),
        tip_clutter=cfg.tip_clutter if a.tip_clutter is None else a.tip_clutter,
        tip_cells=cfg.tip_cells if a.tip_cells is None else a.tip_cells,
        tip_cell_max=cfg.tip_cell_max if a.tip_cell_max is None else a.tip_cell_max == "on",
        tip_conv=cfg.tip_conv if a.tip_conv is None else a.tip_conv,
        tip_abs_share=cfg.tip_abs_share if a.tip_abs_share is None else a.tip_abs_share,
        bank_gammas=cfg.bank_gammas if a.bank_gammas is None else a.bank_gammas,
        bank_hues=cfg.bank_hues if a.bank_hues is None else a.bank_hues,
    )
    if a.bank_size is not None:
        cfg = cfg.replace(bank_size=a.bank_size)
    ws = load_windows(a.sources, cfg)
    split = split_by_scan(ws, cfg.val_fraction, cfg.seed, cfg.min_val_scans)
    bank_windows = split.train
    if a.bank_stride is not None and a.bank_stride != cfg.stride:
        # Same scans, same split (by scan id and seed), denser windows for the memory only.
        dense = load_windows(a.sources, cfg.replace(stride=a.bank_stride))
        dsplit = split_by_scan(dense, cfg.val_fraction, cfg.seed, cfg.min_val_scans)
        if sorted(dsplit.val.scan_ids) != sorted(split.val.scan_ids):
            raise SystemExit("the dense windows split differently; refusing")
        bank_windows = dsplit.train
        del dense
    if a.keep_head:
        _keep_head(b, old_cfg, cfg)
    b.score = ScoreSpec(kind=cfg.score_kind, norm=cfg.score_norm, params=_score_params(cfg))
    b.feature_bank = None
    b.tip_head = None
    warnings = fit_score(b, cfg, bank_windows, split.val, a.sources, device)
    b.training["config"] = cfg.to_dict()
    b.training["rescored_from"] = str(a.bundle)
    if a.bank_stride is not None:
        b.training["bank_stride"] = a.bank_stride
    save_bundle(b, a.out, half=cfg.half_weights, overwrite=True)
    print(
        json.dumps(
            {
                "bundle": a.out,
                "from": a.bundle,
                "score": b.score.to_dict(),
                "held_out_scans": len(split.val.scan_ids),
                "warnings": warnings,
                "tip_head": b.training.get("tip_head"),
                "seconds": round(time.perf_counter() - t0, 1),
            }
        )
    )
    return 0


#: Settings that shape the fitted head (``--keep-head`` refuses a change to any).
HEAD_SETTINGS = (
    "seed",
    "tip_per_bag",
    "tip_hard_per_bag",
    "tip_members",
    "tip_clutter",
    "tip_cells",
    "tip_cell_max",
    "tip_conv",
    "tip_draws",
    "tip_size_range",
    "tip_decoys",
    "tip_thickness_range",
    "half_weights",
)


def _keep_head(b, old_cfg: TrainConfig, cfg: TrainConfig) -> None:
    """Make the pipeline's head fitting return the bundle's own head and notes."""
    import xrayscreen.training.pipeline as pipeline

    changed = [k for k in HEAD_SETTINGS if getattr(old_cfg, k) != getattr(cfg, k)]
    if b.tip_head is None or changed:
        raise SystemExit(f"--keep-head: no head to keep, or its settings changed: {changed}")
    head, info = b.tip_head, dict(b.training.get("tip_head") or {})
    pipeline.fit_tip_head = lambda *_a, **_k: (head, dict(info, kept=True))


if __name__ == "__main__":
    sys.exit(main())
