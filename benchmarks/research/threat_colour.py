"""How dark SIXray shows its threats against how dark the head's projected threats come out
(issue 7, fifteenth session), and in what hue (sixteenth). Grey (mean of R, G, B / 255) of
the pixels under the threat masks of the masked bags in a threat list (masks drawn on the
image resized to 768 x 576), against the pixels under the footprint of simulated knives and
guns projected into normal scans at several thickness factors (pixel pitch x 1.5, the middle
of the head's size range).
Prints JSON::

    python benchmarks/research/threat_colour.py --threat /tmp/sixray_lists/threat_val.txt \\
        --masks ../shared/data/sixray/threat/masks --normal /tmp/sixray_lists/benign_train.txt
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import cv2
import numpy as np

from xrayscreen.evaluation.annotations import DEFAULT_MASK_CLASSES, read_mask
from xrayscreen.imaging.readers import open_scan
from xrayscreen.imaging.tip import project_threat
from xrayscreen.training.tip_head import FIELD_MM, lighten_rgb

MASK_SHAPE = (576, 768)  # (h, w) the masks were drawn at


def _grey(px: list[np.ndarray]) -> dict[str, float]:
    """Grey quantiles of the pixels and, since the sixteenth session, their hue: the median
    R, G, B and the median chromaticity (each channel's share of R + G + B)."""
    rgb = np.concatenate(px).astype(np.float64)
    g = rgb.mean(axis=1) / 255.0
    q10, q50, q90 = np.percentile(g, [10, 50, 90])
    chroma = rgb / np.maximum(rgb.sum(axis=1, keepdims=True), 1.0)
    return {
        "q10": round(q10, 3),
        "median": round(q50, 3),
        "q90": round(q90, 3),
        "pixels": len(g),
        "rgb_median": [int(v) for v in np.median(rgb, axis=0)],
        "chroma_median": [round(float(v), 3) for v in np.median(chroma, axis=0)],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threat", required=True, help="list of threat scans (masked ones are read)")
    p.add_argument("--masks", required=True)
    p.add_argument("--normal", required=True, help="list of normal scans to project into")
    p.add_argument("--bags", type=int, default=10)
    p.add_argument("--thickness", type=float, nargs="+", default=[1.0, 0.5, 0.25, 0.1, 0.05])
    p.add_argument(
        "--lighten",
        type=float,
        nargs="*",
        default=[],
        help="also each thickness's projections lightened with these powers "
        "(training.tip_head.lighten_rgb; sixteenth session)",
    )
    a = p.parse_args(argv)
    real: dict[str, list[np.ndarray]] = {"gun": [], "knife": []}
    bags = 0
    for line in Path(a.threat).read_text().splitlines():
        path = Path(line.strip())
        mask_path = Path(a.masks) / f"{path.stem}.png"
        if not line.strip() or not mask_path.exists():
            continue
        rgb = open_scan(path).rgb
        rgb = cv2.resize(rgb, MASK_SHAPE[::-1], interpolation=cv2.INTER_AREA)
        mask = read_mask(mask_path)
        bags += 1
        for cid, name in DEFAULT_MASK_CLASSES.items():
            if name in real and (mask == cid).any():
                real[name].append(rgb[mask == cid])
    normal = [ln.strip() for ln in Path(a.normal).read_text().splitlines() if ln.strip()]
    projected: dict[str, dict[str, dict[str, float]]] = {}
    scans = []  # read once, projected into at every thickness
    for path in normal[: a.bags]:
        scan = open_scan(path)
        scans.append(dataclasses.replace(scan, pixel_mm=FIELD_MM / max(scan.shape) * 1.5))
    powers = [1.0, *a.lighten]
    for t in a.thickness:
        px: dict[float, dict[str, list[np.ndarray]]] = {g: {"gun": [], "knife": []} for g in powers}
        for i, scan in enumerate(scans):
            for kind in ("gun", "knife"):
                res = project_threat(scan, kind, seed=200 + i, thickness=t)
                for g in powers:
                    rgb = res.scan.rgb if g == 1.0 else lighten_rgb(scan.rgb, res.scan.rgb, g)
                    px[g][kind].append(rgb[res.mask])
        projected[f"{t:g}"] = {k: _grey(v) for k, v in px[1.0].items()}
        for g in a.lighten:
            projected[f"{t:g}_lighten_{g:g}"] = {k: _grey(v) for k, v in px[g].items()}
    print(
        json.dumps(
            {
                "masked_bags": bags,
                "real": {k: _grey(v) for k, v in real.items() if v},
                "real_bags": {k: len(v) for k, v in real.items()},
                "projected_bags": min(a.bags, len(normal)),
                "projected_by_thickness": projected,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
