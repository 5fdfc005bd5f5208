"""Non-learned controls for the issue-7 score, through the product's evaluation pass.

The shipped X-ray score is GANomaly's *unexplained density*, ``(x - x_hat)+`` in
attenuation units, normalised per scan (``robust_z``) and averaged over a spatial
context. Two questions decide how much of it GANomaly earns:

1. Does a reconstruction that knows nothing about bags do as well? ``blur_excess_s<σ>``
   replaces ``x_hat`` by a Gaussian blur of the window's own attenuation (σ px): "denser
   than its surroundings", no learning.
2. Do the README's floors gain as much from the same per-scan normalisation and
   context? ``<floor>+norm+ctx``.

Every control is scored on the same protocol windows, with the same per-scan robust z
over non-belt windows (``xrayscreen.inference.scan_norm``) and the same tent context
(``xrayscreen.inference.context``) as the product. Prints one JSON object::

    python benchmarks/research/nonlearned_controls.py \\
        --normal /tmp/sixray_lists/benign_val.txt --threat /tmp/sixray_lists/threat_val.txt \\
        --labels ../shared/data/sixray/threat/labels_yolo --masks ../shared/data/sixray/threat/masks
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import cv2
import numpy as np
import torch

from xrayscreen.evaluation.annotations import AnnotationSource, parse_mask_classes
from xrayscreen.evaluation.dataset import PreparedScan, list_scans, prepare_dataset
from xrayscreen.evaluation.floors import floor_scores
from xrayscreen.evaluation.heat import window_means
from xrayscreen.evaluation.runner import evaluate
from xrayscreen.evaluation.scorers import FunctionScorer
from xrayscreen.imaging.representation import model_input
from xrayscreen.inference import context, scan_norm
from xrayscreen.model.bundle import ScoreSpec


def _finish(raw: np.ndarray, scan: PreparedScan, radius: float) -> np.ndarray:
    """The product's per-scan robust z and spatial context, background as the minimum."""
    belt = torch.from_numpy(scan.labels.belt)
    spec = ScoreSpec(params={"scan_norm": "robust_z", "context_px": radius})
    s = scan_norm.normalise(spec, torch.from_numpy(raw).float(), ~belt)
    s = context.apply(spec, s, scan.grid, ~belt).double().numpy().copy()
    if belt.any() and (~belt).any():
        s[scan.labels.belt] = s[~scan.labels.belt].min()
    return s


def blur_excess(sigma: float, radius: float):
    """Window mean of (attenuation - its Gaussian blur)+, normalised and with context."""

    def fn(scan: PreparedScan) -> np.ndarray:
        a = model_input(scan.scan, "rgb_attenuation", None).mean(axis=0)
        excess = np.clip(a - cv2.GaussianBlur(a, (0, 0), sigma), 0, None)
        return _finish(window_means(excess, scan.grid), scan, radius)

    return fn


def floor_ctx(name: str, radius: float):
    def fn(scan: PreparedScan) -> np.ndarray:
        raw = floor_scores(scan.rgb_padded(), scan.grid)[name]
        return _finish(np.asarray(raw, dtype=np.float64), scan, radius)

    return fn


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--normal", nargs="+", default=[])
    p.add_argument("--threat", nargs="+", default=[])
    p.add_argument("--labels")
    p.add_argument("--masks")
    p.add_argument("--sigmas", default="2,4,8,16")
    p.add_argument("--context-px", type=float, default=128.0)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    source = AnnotationSource(
        labels=a.labels, masks=a.masks, mask_classes=parse_mask_classes("gun,knife")
    )
    ds = prepare_dataset(list_scans(a.normal), list_scans(a.threat), source, progress=False)
    scorers = []
    for s in (float(v) for v in a.sigmas.split(",")):
        scorers.append(FunctionScorer(f"blur_excess_s{s:g}+norm+ctx", blur_excess(s, a.context_px)))
    for name in ("max_density", "mean_darkness", "edge_density", "blue_fraction"):
        scorers.append(FunctionScorer(f"{name}+norm+ctx", floor_ctx(name, a.context_px)))
    ev = evaluate(ds, scorers, progress=False, montage_kind=scorers[0].kinds[0])
    out = {"context_px": a.context_px, "seconds": round(time.perf_counter() - t0, 1), "kinds": {}}
    for k, v in ev.summary["kinds"].items():
        w = v["window"]
        ops = {o["target_benign_alarm"]: o for o in v["bag"]["operating"]}
        out["kinds"][k] = {
            **{
                f"{c}_{pool}": w[pool][c]["auc"]
                for pool in ("a", "b")
                for c in ("all", "gun", "knife")
                if c in w[pool]
            },
            "det@1%_a": w["a"]["all"]["detection_at_far"],
            "det@1%_b": w["b"]["all"]["detection_at_far"],
            "bag_auc": v["bag"]["auc_peak"],
            "bag_on_threat@5%": ops.get(0.05, {}).get("threat_alarm_on_threat"),
            "pixel_auroc": (v["pixel"] or {}).get("auroc"),
        }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
