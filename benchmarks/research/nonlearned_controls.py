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
from xrayscreen.evaluation.floors import BLUE_MARGIN, BLUE_MAX_GREY, LAPLACE_4, floor_scores
from xrayscreen.evaluation.heat import window_means
from xrayscreen.evaluation.runner import evaluate
from xrayscreen.evaluation.scorers import FunctionScorer
from xrayscreen.imaging.representation import model_input
from xrayscreen.inference import zoom as zoom_view
from xrayscreen.inference.engine import air_value
from xrayscreen.model.bundle import ScoreSpec

ZOOM = {"factor": 1.0}  # --zoom: the controls get the product's zoomed-out view too


def _zoomed(scan: PreparedScan, representation: str) -> torch.Tensor:
    """The scan's zoomed-out windows (one per protocol window) in ``representation``."""
    view = zoom_view.ZoomedView(
        scan.scan,
        scan.grid,
        ZOOM["factor"],
        representation,
        torch.tensor(air_value(representation)),
    )
    return view.windows(torch.arange(len(scan.grid)))


def _window_floors(rgb: torch.Tensor) -> dict[str, np.ndarray]:
    """The four floors of a stack of ``(n, 3, w, w)`` RGB windows in 0..1 (edge density
    with the Laplacian taken inside each window)."""
    grey = rgb.mean(dim=1, keepdim=True)
    r, g, b = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    blue = ((b > g + BLUE_MARGIN) & (b > r + BLUE_MARGIN) & (grey[:, 0] < BLUE_MAX_GREY)).float()
    lap = torch.nn.functional.conv2d(
        torch.nn.functional.pad(grey, (1, 1, 1, 1), mode="reflect"), LAPLACE_4[None, None]
    ).abs()
    return {
        "max_density": (1.0 - grey.amin(dim=(1, 2, 3))).numpy(),
        "mean_darkness": (1.0 - grey.mean(dim=(1, 2, 3))).numpy(),
        "edge_density": lap.mean(dim=(1, 2, 3)).numpy(),
        "blue_fraction": blue.mean(dim=(1, 2)).numpy(),
    }


def _finish(
    raw: np.ndarray, scan: PreparedScan, radius: float, raw_zoom: np.ndarray | None = None
) -> np.ndarray:
    """The product's per-scan robust z (zoomed view), spatial context, background as the
    minimum."""
    belt = torch.from_numpy(scan.labels.belt)
    params = {"scan_norm": "robust_z", "context_px": radius}
    if raw_zoom is not None:
        params["zoom"] = ZOOM["factor"]
    spec = ScoreSpec(params=params)
    rz = None if raw_zoom is None else torch.from_numpy(raw_zoom).float()
    s = zoom_view.evidence(spec, torch.from_numpy(raw).float(), rz, scan.grid, ~belt)
    s = s.double().numpy().copy()
    if belt.any() and (~belt).any():
        s[scan.labels.belt] = s[~scan.labels.belt].min()
    return s


def blur_excess(sigma: float, radius: float):
    """Window mean of (attenuation - its Gaussian blur)+, normalised and with context."""

    def fn(scan: PreparedScan) -> np.ndarray:
        a = model_input(scan.scan, "rgb_attenuation", None).mean(axis=0)
        excess = np.clip(a - cv2.GaussianBlur(a, (0, 0), sigma), 0, None)
        rz = None
        if ZOOM["factor"] > 1:
            # Inside each zoomed window (the blur does not see past its edges).
            w = _zoomed(scan, "rgb_attenuation").mean(dim=1).numpy()
            blur = np.stack([cv2.GaussianBlur(x, (0, 0), sigma) for x in w])
            rz = np.clip(w - blur, 0, None).mean(axis=(1, 2))
        return _finish(window_means(excess, scan.grid), scan, radius, rz)

    return fn


def floor_ctx(name: str, radius: float):
    def fn(scan: PreparedScan) -> np.ndarray:
        raw = floor_scores(scan.rgb_padded(), scan.grid)[name]
        rz = None
        if ZOOM["factor"] > 1:
            rz = _window_floors((_zoomed(scan, "rgb") + 1.0) / 2.0)[name]
        return _finish(np.asarray(raw, dtype=np.float64), scan, radius, rz)

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
    p.add_argument(
        "--zoom", type=float, default=1.0, help="also the zoomed-out view (max), as the product"
    )
    a = p.parse_args(argv)
    ZOOM["factor"] = a.zoom
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
    out = {
        "context_px": a.context_px,
        "zoom": a.zoom,
        "seconds": round(time.perf_counter() - t0, 1),
        "kinds": {},
    }
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
